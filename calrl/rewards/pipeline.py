"""The reward pipeline of calibration-aware PPO: read each rollout once, then apply the recipe's reward terms.

For each batch of rollouts (prompt, response, optional references) the pipeline reads every response once
with the one confidence-reading step (:class:`calrl.confidence.ConfidenceReader`, ``confidence_parser``):
its stated confidence (NaN when it states none), the text the reward model reads (the response without its
confidence statement when the pipeline strips: ``strip_confidence``, on by default when a ``ppo_c`` term is
present, as the reference's PPO-C does; vanilla PPO scores the response as generated) and whether it
abstains. Then every term of ``rewards`` (:mod:`calrl.rewards.terms`: ``rm``, ``correctness``, ``clamp``,
``ppo_c``, ``missing_penalty``, ``abstention``, ``brier``, ``log_score``, ``format`` or any registered term) is
prepared and applied in order to the running score, which starts at 0.

A response without a confidence is handled by ``missing_confidence`` (:mod:`calrl.confidence.missing`):
``"half"`` (c = 0.5, i.e. no PPO-C adjustment; it still counts in the moving average, as in the reference),
``"penalty"`` (the same, and a ``missing_penalty`` term subtracts its value), ``"exclude"`` (no adjustment and
left out of the moving average); every policy counts the missing ones (``confidence/missing``,
``confidence/parsable_rate``).

Without ``rewards``, the earlier flat keys (``ppo_c_variant``, ``reward_clamp``, ``correctness_mode``,
``abstention_reward`` ...) give the terms (:func:`calrl.rewards.terms.terms_from_flat_keys`): the reward model's
score (``normalize_reward``: ``(r - mean) / std`` with the RM's stored statistics, as the reference's PPO-C
scripts do), plus or in place of the correctness reward, clamped to [-reward_clamp, reward_clamp], adjusted by
PPO-C, clamped again (``reward_final_clamp``), the missing penalty, the abstention's value.

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
from calrl.reward_modeling.sequence_scores import (
    forward_scores,
    reward_model_ids,
    sequence_scores,
    tokenizers_agree,
)
from calrl.reward_modeling.stats import stored_reward_stats
from calrl.rewards.abstention import default_detector
from calrl.rewards.correctness import CorrectnessReward
from calrl.rewards.ppo_c import PPOCAdjuster
from calrl.rewards.rm_inputs import rebuild_rows, rows_in_own_tokens
from calrl.rewards.terms import (
    FLAT_KEYS,
    RewardTerm,
    RolloutBatch,
    TermContext,
    build_reward_terms,
    find_term,
    terms_from_flat_keys,
)

MissingConfidencePolicy = Literal["half", "penalty", "exclude"]
References = Sequence[Sequence[str] | str | None]
_STAT_FIELDS = ("n", "rm_sum", "rm_n", "adj_sum", "final_sum", "conf_sum", "conf_n", "missing",
                "abstained", "correct", "graded")


def _flat_key(name: str, help_text: str) -> Any:
    """A field of an earlier flat reward key: its default is :data:`calrl.rewards.terms.FLAT_KEYS`'s (one home)."""
    return field(default=FLAT_KEYS[name], metadata={"help": help_text})


@dataclass
class RewardPipelineConfig:
    """How a rollout's score is computed: the reading settings and the reward terms (see the module docstring).

    ``rewards`` lists the terms (recipe entries, :mod:`calrl.rewards.terms`); ``None`` takes them from the
    earlier flat keys below, which are then the only reward keys that may differ from their defaults. PPO's
    config (:class:`calrl.trainers.ppo_config.CalibratedPPOConfig`) is one of these: the keys live here only.
    """

    rewards: list | None = field(
        default=None, metadata={"help": "The reward terms in order (calrl.rewards.terms), e.g. [{name: rm}, {name: "
                                        "clamp, value: 10}, {name: ppo_c, variant: difference}, {name: clamp, value: "
                                        "10}]; None: the flat keys below (ppo_c_variant, reward_clamp ...)."})
    confidence_parser: str = field(
        default="calrl", metadata={"help": "'calrl' or 'reference' (the paper's training regex)."})
    strip_confidence: bool | None = field(
        default=None, metadata={"help": "Score the response without its confidence statement; None: iff a ppo_c "
                                        "term is present."})
    strip_append_eos: bool = field(
        default=False, metadata={"help": "Read a stripped rollout that does not end with the stop token (cut at "
                                         "response_length, or padded with another token) with ' ' and the stop "
                                         "token after it, as the reference does (score_rollouts)."})
    use_hedges: bool = field(default=False, metadata={"help": "Read confidence from hedge words too (the reference "
                                                             "reads only 'Confidence: N')."})
    missing_confidence: str = field(
        default="half", metadata={"help": "'half' (c=0.5, no adjustment), 'penalty' (with a missing_penalty term) "
                                          "or 'exclude' (calrl.confidence.missing)."})
    # ---- the earlier flat keys: read only when rewards is None, translated into terms (calrl.rewards.terms)
    ppo_c_variant: str = _flat_key("ppo_c_variant", "'none' (PPO / PPO-M), 'threshold' or 'difference' (PPO-C).")
    ppo_c_weight: float = _flat_key("ppo_c_weight", "PPO-C weight w.")
    ppo_c_alpha: float = _flat_key("ppo_c_alpha", "Moving-average rate alpha.")
    ppo_c_init_average: float | str = _flat_key(
        "ppo_c_init_average", "Initial moving average: 'auto' (the RM's stored mean, else the first batch), "
                              "'rm_mean', 'first_batch' or a number.")
    ppo_c_update_before_adjust: bool = _flat_key(
        "ppo_c_update_before_adjust", "Update the moving average before adjusting the batch (reference order).")
    ppo_c_avg_type: str = _flat_key("ppo_c_avg_type", "Running statistic: 'mean' or 'std' (reference).")
    reward_clamp: float = _flat_key("reward_clamp", "Clamp the RM score to [-c, c] for PPO-C.")
    reward_final_clamp: bool = _flat_key(
        "reward_final_clamp", "Clamp the reward to [-reward_clamp, reward_clamp] again after PPO-C (the reference's "
                              "trainer does).")
    normalize_reward: bool = _flat_key(
        "normalize_reward", "Normalise the RM score with the RM's stored mean and std (reference PPO-C scripts); a "
                            "separate value model's outputs likewise, with its own stored statistics (the reference's "
                            "critic).")
    missing_confidence_penalty: float = _flat_key("missing_confidence_penalty", "Subtracted under 'penalty'.")
    abstention_reward: float | str = _flat_key(
        "abstention_reward", "Reward of an abstention: a number (a float or a numeric string), or 'rm' to keep its "
                             "score.")
    correctness_mode: str = _flat_key("correctness_mode", "'off', 'add' or 'replace'.")
    correct_reward: float = _flat_key("correct_reward", "Reward of a correct answer.")
    wrong_reward: float = _flat_key("wrong_reward", "Reward of a wrong answer.")
    grader: str = _flat_key("grader", "Grader name (calrl.grading).")

    def __post_init__(self) -> None:
        check_missing_policy(self.missing_confidence, PPO_MISSING)
        check_parser(self.confidence_parser)
        if self.rewards is None:
            allowed = {"ppo_c_variant": ("none", "threshold", "difference"), "correctness_mode": ("off", "add", "replace")}
            for name, choices in allowed.items():
                if getattr(self, name) not in choices:
                    raise ConfigError(f"must be one of {', '.join(choices)}; got {getattr(self, name)!r}", field=name)
        else:
            changed = [k for k, default in FLAT_KEYS.items() if getattr(self, k) != default]
            if changed:
                raise ConfigError(f"give the reward terms under 'rewards' or the flat key {changed[0]!r}, not both",
                                  field=changed[0])
        terms = self.terms()  # validates every term's options
        penalty = find_term(terms, "missing_penalty") is not None
        if penalty != (self.missing_confidence == "penalty"):
            raise ConfigError("'penalty' subtracts the value of a missing_penalty term: give both or neither",
                              field="missing_confidence")
        graders = {t.grader for t in terms if "grader" in t.options}
        if len(graders) > 1:
            raise ConfigError(f"the terms name different graders ({', '.join(sorted(graders))}); one grader grades "
                              "a batch", field="rewards")
        if self.strip_append_eos and not self.strips_with(terms):
            raise ConfigError("appends to the texts whose confidence statement is removed, and none is (no ppo_c "
                              "term and strip_confidence not true)", field="strip_append_eos")

    def term_specs(self) -> list[Any]:
        """The terms as recipe entries: ``rewards``, or the flat keys translated."""
        if self.rewards is not None:
            return list(self.rewards)
        return terms_from_flat_keys({k: getattr(self, k) for k in FLAT_KEYS}, self.missing_confidence)

    def terms(self, context: TermContext | None = None) -> list[RewardTerm]:
        """The reward terms, built (``context``: the loaded reward model's statistics, the accelerator, PPO-C's
        averaging chunk; none when checking a config)."""
        return build_reward_terms(self.term_specs(), context)

    def strips_with(self, terms: list[RewardTerm]) -> bool:
        """Whether the response is read without its confidence statement, given the built ``terms``
        (``strip_confidence``, by default: iff a ``ppo_c`` term is present)."""
        return find_term(terms, "ppo_c") is not None if self.strip_confidence is None else self.strip_confidence

    @property
    def needs_references(self) -> bool:
        """Whether a term reads each prompt's references (the dataset's reference column)."""
        return any("references" in t.needs for t in self.terms())

    @property
    def normalizes_rm(self) -> bool:
        """Whether the ``rm`` term normalises the reward model's score with its stored statistics."""
        rm = find_term(self.terms(), "rm")
        return bool(rm is not None and rm.normalize)

    @property
    def strips(self) -> bool:
        return self.strips_with(self.terms())

    def reader(self) -> ConfidenceReader:
        """The confidence-reading step of the rewards (the parser's training rules)."""
        return ConfidenceReader(self.confidence_parser, purpose="reward", use_hedges=self.use_hedges)


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
    base: torch.Tensor  # the sum of the additive terms (rm, correctness ...) before the first other term
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
        average_chunk: PPO-C's moving average updated per this many local rows (the reference's cadence, PPO's
            ``ppo_c_average_cadence: per_micro_batch``); None: once per batch over every process.

    With ``normalize_reward``, or ``ppo_c_init_average`` ``auto``/``rm_mean``, the RM's stored mean and std
    are read from ``reward_model.config`` (:func:`calrl.reward_modeling.stats.stored_reward_stats`).
    """

    def __init__(self, config: RewardPipelineConfig, reward_model: torch.nn.Module, *,
                 reward_tokenizer: Any = None, policy_tokenizer: Any = None, accelerator: Any = None,
                 abstention_detector: Callable[[str], bool] | None = None,
                 rm_scorer: Callable[[torch.nn.Module, torch.Tensor, int, int], tuple] | None = None,
                 stop_token_id: int | None = None, average_chunk: int | None = None) -> None:
        if average_chunk is not None and (isinstance(average_chunk, bool) or not isinstance(average_chunk, int)
                                          or average_chunk < 1):
            raise ConfigError(f"must be a positive integer or null, got {average_chunk!r}", field="average_chunk")
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
        self.terms = config.terms(TermContext(self.rm_stats, accelerator, average_chunk, model_loaded=True))
        self.abstention_detector = abstention_detector or default_detector
        grader = next((t.grader for t in self.terms if "grader" in t.options), "auto")  # one grader (config checks)
        self.correctness = CorrectnessReward(grader=grader)  # grades the batches the terms ask about
        self.strips = config.strips_with(self.terms)
        # (per-position outputs, score at the last non-pad token)
        self._rm_scorer = rm_scorer if rm_scorer is not None else sequence_scores
        self.last: RolloutRewards | None = None
        self._totals: dict[str, float] = {}
        self.missing_total = 0  # rollouts without a parsable confidence, over the whole run

    @property
    def adjuster(self) -> PPOCAdjuster | None:
        """The PPO-C adjuster (its moving average) of the ``ppo_c`` term; None without one."""
        term = find_term(self.terms, "ppo_c")
        return None if term is None else term.adjuster

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
        totals, self._totals = self._totals, {}
        return self._summarise(totals)

    def _summarise(self, t: dict[str, float]) -> dict[str, float]:
        if t.get("n", 0) == 0:
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
        for key, total in t.items():
            if key.startswith("sum:") and t["count:" + key[4:]]:
                stats[key[4:]] = total / t["count:" + key[4:]]
        return stats

    def state_dict(self) -> dict[str, Any]:
        """The terms' state (PPO-C's moving average under its earlier key ``adjuster``) and the missing count."""
        state: dict[str, Any] = {"adjuster": None if self.adjuster is None else self.adjuster.state_dict(),
                                 "missing_total": self.missing_total}
        terms = {f"{i}:{t.name}": t.state_dict() for i, t in enumerate(self.terms)
                 if t.name != "ppo_c" and t.state_dict() is not None}
        if terms:
            state["terms"] = terms
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.adjuster is not None and state.get("adjuster") is not None:
            self.adjuster.load_state_dict(state["adjuster"])
        for i, term in enumerate(self.terms):
            saved = state.get("terms", {}).get(f"{i}:{term.name}")
            if saved is not None:
                term.load_state_dict(saved)
        self.missing_total = int(state.get("missing_total", 0))

    # ------------------------------------------------------------------ steps
    def _score(self, prompts: Sequence[str], responses: list[str], references: References | None,
               rm_fn: Callable[[list[int], list[str]], torch.Tensor], *, step: int | None,
               update: bool) -> tuple[torch.Tensor, dict[str, float]]:
        n = len(responses)
        if references is not None and len(references) != n:
            raise ValueError(f"{n} responses but {len(references)} reference lists")
        texts = self._read_texts(responses)
        batch = RolloutBatch(
            prompts=prompts, responses=responses, references=references,
            confidence=torch.tensor([t[0] for t in texts]), stripped=[t[1] for t in texts],
            abstained=torch.tensor([t[2] for t in texts], dtype=torch.bool),
            explicit=torch.tensor([t[3] for t in texts], dtype=torch.bool),
            missing_policy=self.config.missing_confidence, update=update, rm_fn=rm_fn, all_sum=self._all_sum,
            check_finite=lambda values, what: self._check_finite(values, prompts, responses, step, update, what),
            grader=lambda r, refs: self.correctness.grade(r, refs), distributed=self._distributed())
        for term in self.terms:
            term.prepare(batch)
        final, base = torch.zeros(n), None
        for term in self.terms:
            if base is None and not term.additive:
                base = final
            final = term.apply(batch, final)
        self._check_finite(final, prompts, responses, step, update, "final")
        graded = batch.graded is not None
        self.last = RolloutRewards(
            rm_raw=batch.rm_raw if batch.rm_raw is not None else torch.full((n,), float("nan")),
            base=final if base is None else base, confidence=batch.confidence,
            adjustment=batch.adjustment if batch.adjustment is not None else torch.zeros(n), final=final,
            abstained=batch.abstained, correct=batch.correct if graded else torch.zeros(n, dtype=torch.bool),
            graded=batch.graded if graded else torch.zeros(n, dtype=torch.bool), average=batch.average,
            stripped=batch.stripped)
        return final, self._batch_stats(update, batch)

    def _read_texts(self, responses: list[str]) -> list[tuple[float, str, bool, bool]]:
        """(confidence or NaN, text for the RM, abstained, stated explicitly) per response; each distinct text is
        read once."""
        cache: dict[str, tuple[float, str, bool, bool]] = {}
        strips = self.strips
        out = []
        for r in responses:
            hit = cache.get(r)
            if hit is None:
                parse = self.reader.read(r)
                value = float("nan") if parse.value is None else float(parse.value)
                # the strip leaves a text without an explicit statement unchanged: skip the call then
                stripped = self.reader.strip_statements(r) if strips and parse.source == "explicit" else r
                hit = cache[r] = (value, stripped, bool(self.abstention_detector(r)), parse.source == "explicit")
            out.append(hit)
        return out

    def _batch_stats(self, update: bool, batch: RolloutBatch) -> dict[str, float]:
        r = self.last
        names, values = list(_STAT_FIELDS), [
            float(r.final.numel()),
            float(torch.nan_to_num(r.rm_raw, nan=0.0).sum()), float((~torch.isnan(r.rm_raw)).sum()),
            float(r.adjustment.sum()), float(r.final.sum()),
            float(torch.nan_to_num(r.confidence, nan=0.0).sum()), float((~torch.isnan(r.confidence)).sum()),
            float(torch.isnan(r.confidence).sum()),
            float(r.abstained.sum()), float(r.correct.sum()), float(r.graded.sum()),
        ]
        for term in self.terms:  # every process has the same terms: the vector lines up across ranks
            for key, (total, count) in term.stat_sums(batch).items():
                names += ["sum:" + key, "count:" + key]
                values += [total, count]
        local = torch.tensor(values, dtype=torch.float64)
        totals = self._all_sum(local) if update else local
        batch_totals = dict(zip(names, totals.tolist()))
        if update:
            for k, v in batch_totals.items():
                self._totals[k] = self._totals.get(k, 0.0) + v
            self.missing_total += int(batch_totals["missing"])
        return self._summarise(batch_totals)

    # ------------------------------------------------------------------ helpers
    def _distributed(self) -> bool:
        return self.accelerator is not None and getattr(self.accelerator, "num_processes", 1) > 1

    def _all_sum(self, vec: torch.Tensor) -> torch.Tensor:
        if not self._distributed():
            return vec
        device = self.accelerator.device
        return self.accelerator.reduce(vec.to(device), reduction="sum").cpu()

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
