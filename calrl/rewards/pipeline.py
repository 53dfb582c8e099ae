"""The reward pipeline of calibration-aware PPO: reward model, correctness, PPO-C, abstention.

For each rollout (prompt, response, optional references) the final score is computed as:

(a) the reward model scores the prompt plus the response *with its confidence statement removed*
    (the ``confidence_parser``'s strip, :class:`calrl.confidence.ConfidenceReader`; on by default with
    PPO-C, off for vanilla PPO, which scores the response as generated); with ``normalize_reward`` the
    score becomes ``(r - mean) / std`` with the RM's stored mean and std (written by ``calrl train-rm``
    into the RM's ``config.json``, :mod:`calrl.reward_modeling.stats`), as the reference's PPO-C scripts do;
(b) optionally a rule-based correctness reward for items with references, added to the RM score
    (``correctness_mode="add"``) or replacing it (``"replace"``: the RM is run only on the items
    without references);
(c) the PPO-C adjustment by the stated confidence (read by the ``confidence_parser``, ``calrl`` or
    ``reference``) when ``ppo_c_variant`` is ``"threshold"`` or ``"difference"``, then the reward is
    clamped to [-reward_clamp, reward_clamp] again (``reward_final_clamp``, on by default, as the
    reference's trainer does; for every variant, vanilla PPO included). The moving average starts from
    ``ppo_c_init_average``: ``auto`` (the RM's stored mean, in the units the pipeline sees it: 0 after
    normalisation; the first batch's statistic when the RM has none), ``rm_mean`` (the same, an error
    without stored statistics), ``first_batch``, or a number. A response without a confidence is
    handled by ``missing_confidence`` (:mod:`calrl.confidence.missing`): ``"half"`` (c = 0.5, i.e. no
    adjustment; it still counts in the moving average, as in the reference), ``"penalty"`` (no adjustment,
    ``missing_confidence_penalty`` subtracted from its score), ``"exclude"`` (no adjustment and left out
    of the moving average); every policy counts the missing ones (``confidence/missing``,
    ``confidence/parsable_rate``);
(d) an abstention (``calrl.confidence.is_abstention``) gets ``abstention_reward`` (a number) or
    keeps its score (``"rm"``).

A non-finite reward raises ``TrainingFault`` naming the step and the offending sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from calrl.confidence.missing import PPO_MISSING, check_missing_policy
from calrl.confidence.reading import ConfidenceReader, check_parser
from calrl.data.chat import Prompt, render_prompt
from calrl.errors import ConfigError, TrainingFault
from calrl.reward_modeling.sequence_scores import forward_scores, reward_model_ids, tokenizers_agree
from calrl.reward_modeling.stats import stored_reward_stats
from calrl.rewards.abstention import AbstentionReward
from calrl.rewards.correctness import CorrectnessReward
from calrl.rewards.ppo_c import PPOCAdjuster, PPOCConfig, batch_statistic
from calrl.rewards.rm_inputs import rebuild_rows, rows_in_own_tokens

MissingConfidencePolicy = Literal["half", "penalty", "exclude"]
INIT_AVERAGE_CHOICES = ("auto", "rm_mean", "first_batch")
References = Sequence[Sequence[str] | str | None]
_STAT_FIELDS = ("n", "rm_sum", "rm_n", "adj_sum", "final_sum", "conf_sum", "conf_n", "missing",
                "abstained", "correct", "graded")


@dataclass
class RewardPipelineConfig:
    """How a rollout's score is computed (see the module docstring for the order of the steps)."""

    ppo_c_variant: Literal["none", "threshold", "difference"] = "none"
    ppo_c_weight: float = 0.5
    ppo_c_alpha: float = 0.1
    ppo_c_init_average: float | str = "auto"
    ppo_c_update_before_adjust: bool = True
    ppo_c_avg_type: Literal["mean", "std"] = "mean"
    ppo_c_average_chunk: int | None = None  # None: one update per batch over every process; N: per N local rows
    reward_clamp: float = 10.0
    reward_final_clamp: bool = True
    normalize_reward: bool = False
    confidence_parser: Literal["calrl", "reference"] = "calrl"
    strip_confidence: bool | None = None  # None: strip iff PPO-C is on
    strip_append_eos: bool = False  # the reference's " " + EOS after some stripped rollouts (score_rollouts)
    use_hedges: bool = False  # also read confidence from hedge words (the reference reads only "Confidence: N")
    missing_confidence: MissingConfidencePolicy = "half"
    missing_confidence_penalty: float = 1.0
    abstention_reward: float | Literal["rm"] = "rm"
    correctness_mode: Literal["off", "add", "replace"] = "off"
    correct_reward: float = 1.0
    wrong_reward: float = 0.0
    grader: str = "auto"

    def __post_init__(self) -> None:
        choices = {"ppo_c_variant": ("none", "threshold", "difference"),
                   "correctness_mode": ("off", "add", "replace")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"must be one of {', '.join(allowed)}; got {getattr(self, name)!r}", field=name)
        check_missing_policy(self.missing_confidence, PPO_MISSING)
        check_parser(self.confidence_parser)
        init = self.ppo_c_init_average
        if isinstance(init, bool) or not (isinstance(init, (int, float)) or init in INIT_AVERAGE_CHOICES):
            raise ConfigError(f"must be a number or one of {', '.join(INIT_AVERAGE_CHOICES)}; got {init!r}",
                              field="ppo_c_init_average")
        chunk = self.ppo_c_average_chunk
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise ConfigError(f"must be a positive integer or null, got {chunk!r}", field="ppo_c_average_chunk")
        if self.ppo_c_variant != "none":
            self.ppo_c_config()  # validates weight/alpha/clamp
        if self.strip_append_eos and not self.strips:
            raise ConfigError("appends to the texts whose confidence statement is removed, and none is (PPO-C off "
                              "and strip_confidence not true)", field="strip_append_eos")
        AbstentionReward(self.abstention_reward)  # validates the value
        if self.correctness_mode != "off":
            CorrectnessReward(self.correct_reward, self.wrong_reward)

    @property
    def adjust(self) -> bool:
        return self.ppo_c_variant != "none"

    @property
    def strips(self) -> bool:
        return self.adjust if self.strip_confidence is None else self.strip_confidence

    def reader(self) -> ConfidenceReader:
        """The confidence-reading step of the rewards (the parser's training rules)."""
        return ConfidenceReader(self.confidence_parser, purpose="reward", use_hedges=self.use_hedges)

    def ppo_c_config(self, rm_stats: dict[str, float] | None = None) -> PPOCConfig:
        """The PPO-C settings, the initial average resolved against the RM's stored statistics."""
        init = self.ppo_c_init_average
        if isinstance(init, str):
            if init == "rm_mean" and rm_stats is None and self.adjust:
                raise ConfigError("the reward model has no stored mean (train it with calrl train-rm, or give "
                                  "a number)", field="ppo_c_init_average")
            if init == "first_batch" or rm_stats is None:
                init = None
            else:
                init = 0.0 if self.normalize_reward else float(rm_stats["mean"])
        return PPOCConfig(variant=self.ppo_c_variant if self.adjust else "threshold", weight=self.ppo_c_weight,
                          alpha=self.ppo_c_alpha, clamp=self.reward_clamp, init_average=init,
                          update_before_adjust=self.ppo_c_update_before_adjust, avg_type=self.ppo_c_avg_type,
                          final_clamp=self.reward_final_clamp)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class _LazyDecoded(Sequence):
    """Rows of a token tensor, decoded (special tokens skipped) on first access."""

    def __init__(self, tokenizer: Any, ids: torch.Tensor) -> None:
        self._tokenizer, self._ids, self._texts = tokenizer, ids, None

    def _all(self) -> list[str]:
        if self._texts is None:
            self._texts = self._tokenizer.batch_decode(self._ids, skip_special_tokens=True)
        return self._texts

    def __getitem__(self, i):
        return self._all()[i]

    def __len__(self) -> int:
        return self._ids.shape[0]


@dataclass
class RolloutRewards:
    """Per-rollout record of the last scored batch (tensors of length B, on CPU)."""

    rm_raw: torch.Tensor  # NaN where the RM was not run
    base: torch.Tensor  # after the correctness reward, before PPO-C
    confidence: torch.Tensor  # NaN where missing
    adjustment: torch.Tensor
    final: torch.Tensor
    abstained: torch.Tensor
    correct: torch.Tensor
    graded: torch.Tensor
    average: float | None  # the moving average the adjustment used
    stripped: list[str] = field(default_factory=list)


class RewardPipeline:
    """Compute final rollout scores and per-batch statistics.

    Args:
        config: the pipeline settings.
        reward_model: a sequence-classification reward model (one output).
        reward_tokenizer: its tokenizer; ``None`` means it shares the policy's tokenizer (fast path:
            the rollout's tokens are reused, re-tokenising only responses whose confidence statement was removed).
        policy_tokenizer: the policy's tokenizer (decodes rollouts); needed by :meth:`score_rollouts`.
        stop_token_id: the token that ends a policy response (default the policy's EOS): a re-tokenised response
            keeps it, and a reward model with its own tokenizer reads its own EOS in its place.
        accelerator: with several processes, the moving-average mean and the stats are reduced over ranks.
        abstention_detector: overrides ``calrl.confidence.is_abstention``.

    With ``normalize_reward``, or ``ppo_c_init_average`` ``auto``/``rm_mean``, the RM's stored mean and std
    are read from ``reward_model.config`` (:func:`calrl.reward_modeling.stats.stored_reward_stats`).
    """

    def __init__(self, config: RewardPipelineConfig, reward_model: torch.nn.Module, *,
                 reward_tokenizer: Any = None, policy_tokenizer: Any = None, accelerator: Any = None,
                 abstention_detector: Callable[[str], bool] | None = None,
                 rm_scorer: Callable[[torch.nn.Module, torch.Tensor, int, int], tuple] | None = None,
                 stop_token_id: int | None = None) -> None:
        self.config = config
        self.reward_model = reward_model
        self.reward_tokenizer = reward_tokenizer
        self.policy_tokenizer = policy_tokenizer
        # the RM reads the rollout's own tokens when its tokenizer agrees with the policy's, else the text
        self.reuses_tokens = (reward_tokenizer is None or policy_tokenizer is None
                              or tokenizers_agree(reward_tokenizer, policy_tokenizer))
        self.stop_token_id = stop_token_id if stop_token_id is not None else getattr(policy_tokenizer, "eos_token_id",
                                                                                     None)
        self.accelerator = accelerator
        self.reader = config.reader()
        self.rm_stats = stored_reward_stats(reward_model)
        if config.normalize_reward and self.rm_stats is None:
            raise ConfigError("the reward model has no stored mean and std (train it with calrl train-rm, "
                              "which writes them into its config.json)", field="normalize_reward")
        self.abstention = (AbstentionReward(config.abstention_reward) if abstention_detector is None
                           else AbstentionReward(config.abstention_reward, detector=abstention_detector))
        self.correctness = (CorrectnessReward(config.correct_reward, config.wrong_reward, config.grader)
                            if config.correctness_mode != "off" else None)
        self.adjuster = (PPOCAdjuster(config.ppo_c_config(self.rm_stats), accelerator=accelerator)
                         if config.adjust else None)
        if rm_scorer is None:
            from calrl.reward_modeling.sequence_scores import sequence_scores as rm_scorer
        self._rm_scorer = rm_scorer  # (per-position outputs, score at the last non-pad token)
        self.last: RolloutRewards | None = None
        self._totals = dict.fromkeys(_STAT_FIELDS, 0.0)
        self.missing_total = 0  # rollouts without a parsable confidence, over the whole run

    # ------------------------------------------------------------------ public API
    def score_texts(self, prompts: Sequence[Prompt], responses: Sequence[str], references: References | None = None,
                    *, step: int | None = None, update: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
        """Score finished rollouts given as text: each prompt (text or conversation) and its whole response.

        The RM reads them in its own tokens (:func:`~calrl.reward_modeling.sequence_scores.reward_model_ids`, ended).
        """
        tok = self.reward_tokenizer or self.policy_tokenizer
        if tok is None:
            raise ValueError("score_texts needs a reward_tokenizer (or policy_tokenizer)")

        def rm_fn(idx: list[int], stripped: list[str]) -> torch.Tensor:
            return self._rm_on_ids(tok, [reward_model_ids(tok, prompts[i], stripped[i], ended=True) for i in idx])

        shown = [p if isinstance(p, str) else render_prompt(tok, p) for p in prompts]
        return self._score(shown, list(responses), references, rm_fn, step=step, update=update)

    @torch.no_grad()
    def score_rollouts(self, query_responses: torch.Tensor, context_length: int, pad_token_id: int,
                       references: References | None = None, *, prompts: Sequence[Prompt | None] | None = None,
                       step: int | None = None, update: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
        """Score PPO rollouts: ``query_responses`` = left-padded queries + (truncated, pad-filled) responses.

        ``prompts``: each row's prompt as given (text or conversation; ``None`` rows and ``prompts=None`` are read
        from the query's tokens, decoded with their special tokens), for a reward model with its own tokenizer.
        """
        tok = self.policy_tokenizer
        queries, responses_ids = query_responses[:, :context_length], query_responses[:, context_length:]
        responses = tok.batch_decode(responses_ids, skip_special_tokens=True)
        decoded = _LazyDecoded(tok, queries)  # decoded only if needed (other RM tokenizer, fault message)

        def rm_fn(idx: list[int], stripped: list[str]) -> torch.Tensor:
            # strip_append_eos (the reference's calibrated_experience_maker.py L183-185): a stripped text, right-stripped,
            # + " " + EOS unless its row (decoded with special tokens) ends with EOS: here, with the stop token
            stop = self.stop_token_id
            space_eos = [self.config.strip_append_eos and stop is not None and s != r and last != stop
                         for s, r, last in zip(stripped, responses, query_responses[:, -1].tolist())]
            if not self.reuses_tokens:
                return self._rm_on_ids(self.reward_tokenizer, rows_in_own_tokens(
                    self.policy_tokenizer, self.reward_tokenizer, self.stop_token_id, queries, responses_ids,
                    pad_token_id, prompts, stripped, idx, space_eos))
            rows = rebuild_rows(self.policy_tokenizer, self.stop_token_id, query_responses, context_length,
                                pad_token_id, [(i, stripped[i] if stripped[i] != responses[i] else None) for i in idx],
                                space_eos)
            # Drop trailing columns that are padding in every row: the RM is causal and read at each row's
            # last non-pad token, so the scores are unchanged and the forward is shorter.
            used = (rows[:, context_length:] != pad_token_id).any(0).nonzero()
            width = int(used[-1]) + 1 if used.numel() else 1
            return self._rm_scorer(self.reward_model, rows[:, :context_length + width], pad_token_id,
                                   context_length)[1]

        scores, stats = self._score(decoded, responses, references, rm_fn, step=step, update=update)
        return scores.to(query_responses.device), stats

    def pop_stats(self) -> dict[str, float]:
        """Statistics over every rollout scored (with ``update=True``) since the last call; resets them."""
        totals, self._totals = self._totals, dict.fromkeys(_STAT_FIELDS, 0.0)
        return self._summarise(totals)

    def _summarise(self, t: dict[str, float]) -> dict[str, float]:
        if t["n"] == 0:
            return {}
        stats = {
            "reward/final": t["final_sum"] / t["n"],
            "reward/adjustment": t["adj_sum"] / t["n"],
            "confidence/parsable_rate": t["conf_n"] / t["n"],
            "confidence/missing": t["missing"],
            "abstention/rate": t["abstained"] / t["n"],
        }
        if t["rm_n"]:
            stats["reward/rm_raw"] = t["rm_sum"] / t["rm_n"]
        if t["conf_n"]:
            stats["confidence/mean"] = t["conf_sum"] / t["conf_n"]
        if t["graded"]:
            stats["correctness/accuracy"] = t["correct"] / t["graded"]
        if self.adjuster is not None and self.adjuster.average is not None:
            stats["reward/moving_average"] = self.adjuster.average
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"adjuster": None if self.adjuster is None else self.adjuster.state_dict(),
                "missing_total": self.missing_total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.adjuster is not None and state.get("adjuster") is not None:
            self.adjuster.load_state_dict(state["adjuster"])
        self.missing_total = int(state.get("missing_total", 0))

    # ------------------------------------------------------------------ steps
    def _score(self, prompts: Sequence[str], responses: list[str], references: References | None,
               rm_fn: Callable[[list[int], list[str]], torch.Tensor], *, step: int | None,
               update: bool) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        n = len(responses)
        if references is not None and len(references) != n:
            raise ValueError(f"{n} responses but {len(references)} reference lists")

        texts = self._read_texts(responses)
        confidence = torch.tensor([t[0] for t in texts])
        missing = torch.isnan(confidence)
        stripped = [t[1] for t in texts]
        abstained = torch.tensor([t[2] for t in texts], dtype=torch.bool)

        # (b) correctness, graded on the response as generated
        correct = torch.zeros(n, dtype=torch.bool)
        graded = torch.zeros(n, dtype=torch.bool)
        corr_reward = torch.zeros(n)
        if self.correctness is not None and references is not None:
            corr_reward, graded = self.correctness(responses, references)
            correct = graded & (corr_reward == self.correctness.correct_reward)

        # (a) reward model on the rows that need it
        needs_rm = ~graded if cfg.correctness_mode == "replace" else torch.ones(n, dtype=torch.bool)
        rm_raw = torch.full((n,), float("nan"))
        idx = needs_rm.nonzero().flatten().tolist()
        if idx:
            rm_raw[idx] = rm_fn(idx, stripped).detach().float().cpu()
            if cfg.normalize_reward:
                rm_raw[idx] = (rm_raw[idx] - self.rm_stats["mean"]) / self.rm_stats["std"]
        elif self._distributed():
            rm_fn([0], stripped)  # keep the RM forward collective (ZeRO-3 gathers weights) on every rank
        base = torch.where(needs_rm, rm_raw, torch.zeros(n))
        if cfg.correctness_mode != "off":
            base = base + corr_reward

        self._check_finite(torch.where(needs_rm, rm_raw, base), prompts, responses, step, update, "reward model")

        # (c) PPO-C
        adjustment = torch.zeros(n)
        average = None
        if self.adjuster is not None:
            clamped = self.adjuster.clamp(base)
            in_average = ~(missing & torch.tensor(cfg.missing_confidence == "exclude"))
            c = torch.where(missing, torch.full((n,), 0.5), confidence)
            if update and cfg.ppo_c_average_chunk:
                final, adjustment = self._adjust_per_chunk(clamped, c, in_average, cfg.ppo_c_average_chunk)
            else:
                mean = self._global_stat(clamped[in_average]) if update else None
                do_update = update and mean is not None
                final, adjustment = self.adjuster(clamped, c, update=do_update, batch_mean=mean)
            average = self.adjuster.average
        else:
            final = base.clone()
            if cfg.reward_final_clamp:
                final = final.clamp(-cfg.reward_clamp, cfg.reward_clamp)
        if cfg.missing_confidence == "penalty":
            final = torch.where(missing, final - cfg.missing_confidence_penalty, final)

        # (d) abstention
        final = self.abstention.apply(final, abstained)
        self._check_finite(final, prompts, responses, step, update, "final")

        self.last = RolloutRewards(rm_raw=rm_raw, base=base, confidence=confidence, adjustment=adjustment,
                                   final=final, abstained=abstained, correct=correct, graded=graded,
                                   average=average, stripped=stripped)
        stats = self._batch_stats(update)
        return final, stats

    def _adjust_per_chunk(self, clamped: torch.Tensor, c: torch.Tensor, in_average: torch.Tensor,
                          chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """PPO-C with the moving average updated per ``chunk`` consecutive rows of this process, in order, each
        chunk adjusted with the average its own statistic just moved: the reference's cadence (one update per
        micro-batch of experience on each process, the processes' averages apart)."""
        finals, adjustments = [], []
        for start in range(0, clamped.numel(), chunk):
            rows = slice(start, start + chunk)
            v = clamped[rows][in_average[rows]].double()
            mean = batch_statistic(float(v.sum()), float((v * v).sum()), float(v.numel()), self.config.ppo_c_avg_type)
            final, adjustment = self.adjuster(clamped[rows], c[rows], update=mean is not None, batch_mean=mean)
            finals.append(final)
            adjustments.append(adjustment)
        return torch.cat(finals), torch.cat(adjustments)

    def _read_texts(self, responses: list[str]) -> list[tuple[float, str, bool]]:
        """(confidence or NaN, text for the RM, abstained) per response; each distinct text is read once."""
        cache: dict[str, tuple[float, str, bool]] = {}
        strips = self.config.strips
        out = []
        for r in responses:
            hit = cache.get(r)
            if hit is None:
                parse = self.reader.read(r)
                value = float("nan") if parse.value is None else float(parse.value)
                # the strip leaves a text without an explicit statement unchanged: skip the call then
                stripped = self.reader.strip_statements(r) if strips and parse.source == "explicit" else r
                hit = cache[r] = (value, stripped, bool(self.abstention.detector(r)))
            out.append(hit)
        return out

    def _batch_stats(self, update: bool) -> dict[str, float]:
        r = self.last
        local = torch.tensor([
            float(r.final.numel()),
            float(torch.nan_to_num(r.rm_raw, nan=0.0).sum()), float((~torch.isnan(r.rm_raw)).sum()),
            float(r.adjustment.sum()), float(r.final.sum()),
            float(torch.nan_to_num(r.confidence, nan=0.0).sum()), float((~torch.isnan(r.confidence)).sum()),
            float(torch.isnan(r.confidence).sum()),
            float(r.abstained.sum()), float(r.correct.sum()), float(r.graded.sum()),
        ], dtype=torch.float64)
        totals = self._all_sum(local) if update else local
        batch = dict(zip(_STAT_FIELDS, totals.tolist()))
        if update:
            for k, v in batch.items():
                self._totals[k] += v
            self.missing_total += int(batch["missing"])
        return self._summarise(batch)

    # ------------------------------------------------------------------ helpers
    def _distributed(self) -> bool:
        return self.accelerator is not None and getattr(self.accelerator, "num_processes", 1) > 1

    def _all_sum(self, vec: torch.Tensor) -> torch.Tensor:
        if not self._distributed():
            return vec
        device = self.accelerator.device
        return self.accelerator.reduce(vec.to(device), reduction="sum").cpu()

    def _global_stat(self, values: torch.Tensor) -> float | None:
        """The moving average's batch statistic (mean or std) of ``values`` over every process."""
        v = values.double()
        total = self._all_sum(torch.tensor([float(v.sum()), float((v * v).sum()), float(v.numel())],
                                           dtype=torch.float64))
        return batch_statistic(float(total[0]), float(total[1]), float(total[2]), self.config.ppo_c_avg_type)

    def _check_finite(self, values: torch.Tensor, prompts: Sequence[str], responses: list[str],
                      step: int | None, update: bool, what: str) -> None:
        bad = ~torch.isfinite(values)
        # every rank takes part in the count, so all stop together when one rank sees a bad reward
        n_bad = int(self._all_sum(torch.tensor([float(bad.sum())], dtype=torch.float64))[0]) if update \
            else int(bad.sum())
        if n_bad == 0:
            return
        where = f"step {step}" if step is not None else "scoring"
        if not bad.any():
            raise TrainingFault(f"{where}: non-finite {what} reward on another process")
        i = int(bad.nonzero()[0])
        raise TrainingFault(
            f"{where}: non-finite {what} reward ({float(values[i])}) for rollout {i} "
            f"(prompt: {_short(prompts[i])!r}; response: {_short(responses[i])!r})")

    def _rm_on_ids(self, tokenizer: Any, rows: list[list[int]]) -> torch.Tensor:
        """RM scores of rows of the RM's own token ids, each as if scored alone."""
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return forward_scores(self.reward_model, rows, pad)
