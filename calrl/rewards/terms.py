"""Reward terms: the one reward interface of PPO, GRPO and RLOO; each term is an object with a name, what it
needs and its statistics, registered by name in ``REWARD_TERMS``.

A PPO recipe lists its terms in order under ``training.rewards``; each term takes the running score of
every rollout of a batch and returns the new one::

    rewards:
      - {name: rm, normalize: true}              # + the reward model's score
      - {name: correctness, mode: add}           # + 1 / 0 for a correct / wrong answer
      - {name: clamp, value: 10}                 # into [-10, 10]
      - {name: ppo_c, variant: difference}       # PPO-C: adjust by the stated confidence
      - {name: clamp, value: 10}                 # again, as the reference's trainer does
      - {name: missing_penalty, value: 1.0}      # - 1 for a response without a stated confidence
      - {name: abstention, value: 0.3}           # an abstention gets 0.3
      - {name: log_score, weight: 0.5}           # + 0.5 x the log score of the stated confidence

A term is a :class:`RewardTerm` subclass registered under its name with :func:`register_reward_term`;
adding a reward to PPO is one registration and a recipe (``docs/architecture.md``). The
:class:`~calrl.rewards.pipeline.RewardPipeline` reads every response once (its confidence, the text the
reward model sees, whether it abstains) into a :class:`RolloutBatch`, calls each term's ``prepare`` and
then each term's ``apply`` in order, and logs each term's statistics.

Recipes written with the earlier flat keys (``ppo_c_variant``, ``correctness_mode``, ``abstention_reward``
...) keep working: :func:`terms_from_flat_keys` translates them into this list.

GRPO and RLOO (TRL's trainers) sum weighted per-completion rewards, so a GRPO/RLOO recipe lists the terms that
have a value of their own per completion (``correctness``, ``brier``, ``log_score``, ``abstention``, ``format``
or any registered term with :meth:`RewardTerm.values`), each with TRL's ``weight``::

    rewards:
      - {name: brier}
      - {name: format, weight: 0.1}
      - {name: abstention, value: 0.3, weight: 1.0}

:mod:`calrl.rewards.reward_funcs` turns each into a TRL reward function; ``rm``, ``clamp``, ``ppo_c`` and
``missing_penalty`` transform PPO's running score and are refused there with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch

from calrl.errors import ConfigError, did_you_mean
from calrl.rewards.confidence_terms import AbstentionTerm, BrierTerm, FormatTerm, LogScoreTerm
from calrl.rewards.ppo_c import PPOCAdjuster, PPOCConfig, batch_statistic
from calrl.rewards.term_base import (
    NEEDS,
    REWARD_TERMS,
    References,
    RewardTerm,
    RolloutBatch,
    TermContext,
    find_term,
    register_reward_term,
)

__all__ = ["FLAT_KEYS", "NEEDS", "REWARD_TERMS", "AbstentionTerm", "BrierTerm", "ClampTerm", "CorrectnessTerm",
           "FormatTerm", "LogScoreTerm", "MissingPenaltyTerm", "PPOCTerm", "RMTerm", "References", "RewardTerm",
           "RolloutBatch", "TermContext", "build_reward_terms", "find_term", "register_reward_term",
           "terms_from_flat_keys"]

INIT_AVERAGE_CHOICES = ("auto", "rm_mean", "first_batch")


def build_reward_terms(specs: Iterable[Mapping[str, Any] | str], context: TermContext | None = None
                       ) -> list[RewardTerm]:
    """The terms of ``specs`` (recipe entries ``{name: ..., option: value}`` or bare names), in order."""
    context = context or TermContext()
    terms: list[RewardTerm] = []
    for i, spec in enumerate(specs):
        entry = {"name": spec} if isinstance(spec, str) else dict(spec) if isinstance(spec, Mapping) else None
        if entry is None or "name" not in entry:
            raise ConfigError(f"entry {i} must be a term name or a mapping with a 'name', got {spec!r}",
                              field="rewards")
        name = entry.pop("name")
        cls = REWARD_TERMS.get(name)
        if cls is None:
            raise ConfigError(f"unknown reward term {name!r}; choose from {', '.join(REWARD_TERMS)}"
                              + did_you_mean(name, REWARD_TERMS), field=f"rewards[{i}].name")
        unknown = [k for k in entry if k not in cls.options]
        if unknown:
            raise ConfigError(f"unknown option {unknown[0]!r} of the {name} term; it takes "
                              f"{', '.join(cls.options) or 'no options'}"
                              + did_you_mean(unknown[0], cls.options), field=f"rewards[{i}]")
        ctx = TermContext(context.rm_stats, context.accelerator, context.average_chunk, tuple(terms),
                          context.model_loaded)
        terms.append(cls(ctx, **entry))
    return terms


# ----------------------------------------------------------------------------------------------- the terms
@register_reward_term
class RMTerm(RewardTerm):
    """The reward model's score of the prompt and the response (without its confidence statement when the
    pipeline strips), ``(r - mean) / std`` with the RM's stored statistics under ``normalize``; added to the
    score. Rows a ``correctness`` term in ``replace`` mode grades are not scored by the RM.

    Example:
        >>> from calrl.rewards.terms import RMTerm, RolloutBatch
        >>> batch = RolloutBatch.of(["Paris. Confidence: 9", "Lyon. Confidence: 2"], rm_scores=[1.5, -0.5])
        >>> RMTerm().apply(batch, torch.zeros(2))
        tensor([ 1.5000, -0.5000])
    """

    additive = True
    name = "rm"
    transforms = ("scores with a reward model, which the GRPO/RLOO recipes do not load (give TRL's trainer the "
                  "reward model itself)")
    needs = frozenset({"texts", "rm"})
    options: ClassVar[dict[str, Any]] = {"normalize": False}

    def check(self) -> None:
        if not isinstance(self.normalize, bool):
            raise self._error("normalize", f"must be true or false, got {self.normalize!r}")
        if self.normalize and self.context.rm_stats is None and self.context.model_loaded:
            raise self._error("normalize", "the reward model has no stored mean and std (train it with calrl "
                                           "train-rm, which writes them into its config.json; the flat key: "
                                           "normalize_reward)")

    def apply(self, batch: RolloutBatch, score: torch.Tensor) -> torch.Tensor:
        n = batch.n
        needs_rm = ~batch.rm_skip if batch.rm_skip is not None else torch.ones(n, dtype=torch.bool)
        rm_raw = torch.full((n,), float("nan"))
        idx = needs_rm.nonzero().flatten().tolist()
        if idx:
            rm_raw[idx] = batch.rm_fn(idx, batch.stripped).detach().float().cpu()
            if self.normalize:
                stats = self.context.rm_stats
                rm_raw[idx] = (rm_raw[idx] - stats["mean"]) / stats["std"]
        elif batch.distributed:
            batch.rm_fn([0], batch.stripped)  # keep the RM forward collective (ZeRO-3 gathers weights) on every rank
        batch.rm_raw = rm_raw
        batch.check_finite(torch.where(needs_rm, rm_raw, torch.zeros(n)), "reward model")
        return score + torch.where(needs_rm, rm_raw, torch.zeros(n))


@register_reward_term
class CorrectnessTerm(RewardTerm):
    """``correct`` or ``wrong`` for a response graded against its references (none: 0), added to the score
    (``mode: add``) or in place of the reward model's score (``mode: replace``: the RM scores only the rows
    without references).

    How a response is graded is the batch's, one of two named modes: PPO's pipeline grades
    ``extract_answer(response)`` against its references, an abstention like any answer, a row without
    references ungraded (:meth:`calrl.rewards.correctness.CorrectnessReward.grade`); the GRPO/RLOO reward
    functions grade ``extract_answer(text).strip()`` with the item's choices (multiple choice), every completion
    graded, an abstention, an empty answer or a missing reference as wrong
    (:func:`calrl.rewards.correctness.grade_completions`). Per completion (GRPO/RLOO) the term's value is the one
    it adds here; ``mode: replace`` means nothing there (no reward model) and is refused.

    Example:
        >>> from calrl.rewards.terms import CorrectnessTerm, RolloutBatch
        >>> batch = RolloutBatch.of(["Paris. Confidence: 9", "Lyon. Confidence: 2"], [["Paris"], ["Paris"]])
        >>> CorrectnessTerm(correct=1.0, wrong=-1.0).apply(batch, torch.zeros(2))
        tensor([ 1., -1.])
    """

    additive = True
    name = "correctness"
    needs = frozenset({"texts", "references"})
    options: ClassVar[dict[str, Any]] = {"mode": "add", "correct": 1.0, "wrong": 0.0, "grader": "auto"}

    def check(self) -> None:
        self._choice("mode", ("add", "replace"))
        if self._number("correct") <= self._number("wrong"):
            raise self._error("correct", f"{self.correct} must exceed wrong ({self.wrong})")
        if not isinstance(self.grader, str):
            raise self._error("grader", f"must be a grader name, got {self.grader!r}")

    def prepare(self, batch: RolloutBatch) -> None:
        _, graded = batch.grade()
        if self.mode == "replace":
            batch.rm_skip = graded

    def apply(self, batch: RolloutBatch, score: torch.Tensor) -> torch.Tensor:
        correct, graded = batch.grade()
        value = torch.where(correct, torch.tensor(float(self.correct)), torch.tensor(float(self.wrong)))
        return score + torch.where(graded, value, torch.tensor(0.0))

    def check_per_completion(self) -> None:
        if self.mode == "replace":
            raise self._error("mode", "'replace' puts correctness in the reward model's place (PPO); GRPO and RLOO "
                                      "have no reward model here: use 'add'")

    def values(self, batch: RolloutBatch) -> torch.Tensor:
        correct, graded = batch.grade()
        f64 = torch.float64
        value = torch.where(correct, torch.tensor(float(self.correct), dtype=f64), torch.tensor(float(self.wrong),
                                                                                             dtype=f64))
        return torch.where(graded, value, torch.tensor(0.0, dtype=f64))


@register_reward_term
class ClampTerm(RewardTerm):
    """The score clamped into [-value, value] (before PPO-C, and again after it as the reference's trainer does).

    Example:
        >>> from calrl.rewards.terms import ClampTerm, RolloutBatch
        >>> ClampTerm(value=1.0).apply(RolloutBatch.of(["a", "b"]), torch.tensor([3.0, -0.5]))
        tensor([ 1.0000, -0.5000])
    """

    name = "clamp"
    transforms = "clamps the running score"
    options: ClassVar[dict[str, Any]] = {"value": 10.0}

    def check(self) -> None:
        self._number("value", positive=True)

    def apply(self, batch: RolloutBatch, score: torch.Tensor) -> torch.Tensor:
        return score.clamp(-self.value, self.value)


@register_reward_term
class PPOCTerm(RewardTerm):
    """PPO-C (:mod:`calrl.rewards.ppo_c`): the score adjusted by the stated confidence c against a moving
    average of the scores (``variant`` threshold or difference, ``weight`` w, ``alpha``, ``init_average``:
    ``auto``, ``rm_mean``, ``first_batch`` or a number, ``update_before_adjust``, ``avg_type`` mean or std).
    A response without a confidence reads c = 0.5 (no adjustment); under the pipeline's ``missing_confidence:
    exclude`` it is also left out of the moving average.

    Example (difference variant, average starting at 0: r + w (r - avg)(c - 0.5) with avg updated to 0.1 x 1 first):
        >>> from calrl.rewards.terms import PPOCTerm, RolloutBatch
        >>> term = PPOCTerm(variant="difference", weight=0.5, init_average=0.0)
        >>> batch = RolloutBatch.of(["Paris. Confidence: 10", "Lyon. Confidence: 0"])
        >>> term.apply(batch, torch.tensor([2.0, 0.0]))
        tensor([2.4750, 0.0250])
        >>> round(term.adjuster.average, 4)
        0.1
    """

    name = "ppo_c"
    transforms = "adjusts the running score against a moving average of the scores"
    needs = frozenset({"confidences"})
    options: ClassVar[dict[str, Any]] = {"variant": "threshold", "weight": 0.5, "alpha": 0.1, "init_average": "auto",
               "update_before_adjust": True, "avg_type": "mean"}

    def check(self) -> None:
        self._choice("variant", ("threshold", "difference"))
        self._choice("avg_type", ("mean", "std"))
        self._number("weight")
        alpha = self._number("alpha")
        if not 0.0 < alpha <= 1.0:
            raise self._error("alpha", f"must be in (0, 1], got {alpha}")
        if not isinstance(self.update_before_adjust, bool):
            raise self._error("update_before_adjust", f"must be true or false, got {self.update_before_adjust!r}")
        init = self.init_average
        if isinstance(init, bool) or not (isinstance(init, int | float) or init in INIT_AVERAGE_CHOICES):
            raise self._error("init_average", f"must be a number or one of {', '.join(INIT_AVERAGE_CHOICES)}; "
                                              f"got {init!r}")
        self.adjuster = PPOCAdjuster(self.ppo_c_config())

    def ppo_c_config(self) -> PPOCConfig:
        """The adjuster's settings, the initial average resolved against the RM's stored statistics (in the
        units the term sees the score: 0 after an earlier ``rm`` term's normalisation)."""
        init, stats = self.init_average, self.context.rm_stats
        if isinstance(init, str):
            if init == "rm_mean" and stats is None and self.context.model_loaded:
                raise self._error("init_average", "the reward model has no stored mean (train it with calrl "
                                                  "train-rm, or give a number; the flat key: ppo_c_init_average)")
            if init == "first_batch" or stats is None:
                init = None
            else:
                rm = find_term(self.context.earlier, "rm")
                init = 0.0 if rm is not None and rm.normalize else float(stats["mean"])
        return PPOCConfig(variant=self.variant, weight=float(self.weight), alpha=float(self.alpha),
                          init_average=init, update_before_adjust=self.update_before_adjust, avg_type=self.avg_type)

    def apply(self, batch: RolloutBatch, score: torch.Tensor) -> torch.Tensor:
        missing = batch.missing
        in_average = ~(missing & torch.tensor(batch.missing_policy == "exclude"))
        c = torch.where(missing, torch.full((batch.n,), 0.5), batch.confidence)
        chunk = self.context.average_chunk
        if batch.update and chunk:
            final, adjustment = self._per_chunk(score, c, in_average, chunk)
        else:
            mean = self._global_stat(batch, score[in_average]) if batch.update else None
            final, adjustment = self.adjuster(score, c, update=batch.update and mean is not None, batch_mean=mean)
        batch.adjustment, batch.average = adjustment, self.adjuster.average
        return final

    def _global_stat(self, batch: RolloutBatch, values: torch.Tensor) -> float | None:
        v = values.double()
        total = batch.all_sum(torch.tensor([float(v.sum()), float((v * v).sum()), float(v.numel())],
                                           dtype=torch.float64))
        return batch_statistic(float(total[0]), float(total[1]), float(total[2]), self.avg_type)

    def _per_chunk(self, score: torch.Tensor, c: torch.Tensor, in_average: torch.Tensor,
                   chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The moving average updated per ``chunk`` consecutive rows of this process, each chunk adjusted with
        the average its own statistic just moved: the reference's cadence (one update per micro-batch of
        experience on each process, the processes' averages apart)."""
        finals, adjustments = [], []
        for start in range(0, score.numel(), chunk):
            rows = slice(start, start + chunk)
            v = score[rows][in_average[rows]].double()
            mean = batch_statistic(float(v.sum()), float((v * v).sum()), float(v.numel()), self.avg_type)
            final, adjustment = self.adjuster(score[rows], c[rows], update=mean is not None, batch_mean=mean)
            finals.append(final)
            adjustments.append(adjustment)
        return torch.cat(finals), torch.cat(adjustments)

    def state_dict(self) -> dict[str, Any]:
        return self.adjuster.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adjuster.load_state_dict(state)


@register_reward_term
class MissingPenaltyTerm(RewardTerm):
    """``value`` subtracted from the score of a response that states no confidence (the pipeline's
    ``missing_confidence: penalty``).

    Example:
        >>> from calrl.rewards.terms import MissingPenaltyTerm, RolloutBatch
        >>> batch = RolloutBatch.of(["Paris. Confidence: 9", "Paris."])
        >>> MissingPenaltyTerm(value=1.0).apply(batch, torch.tensor([0.5, 0.5]))
        tensor([ 0.5000, -0.5000])
    """

    name = "missing_penalty"
    transforms = ("subtracts from the running score under PPO's missing_confidence: penalty (GRPO/RLOO: give the "
                  "scoring rule's missing option, half, worst or exclude)")
    needs = frozenset({"confidences"})
    options: ClassVar[dict[str, Any]] = {"value": 1.0}

    def check(self) -> None:
        self._number("value")

    def apply(self, batch: RolloutBatch, score: torch.Tensor) -> torch.Tensor:
        return torch.where(batch.missing, score - self.value, score)


# the terms of a response's own answer and confidence live in calrl.rewards.confidence_terms; registered here, after
# the PPO ones above (the registry's order is the order error messages list the names in)
for _term in (AbstentionTerm, BrierTerm, LogScoreTerm, FormatTerm):
    register_reward_term(_term)
__test__ = {cls.__name__: cls for cls in (RewardTerm, AbstentionTerm, BrierTerm, LogScoreTerm, FormatTerm)}  # examples


# ------------------------------------------------------------------------------------ the earlier flat keys
FLAT_KEYS = {"ppo_c_variant": "none", "ppo_c_weight": 0.5, "ppo_c_alpha": 0.1, "ppo_c_init_average": "auto",
             "ppo_c_update_before_adjust": True, "ppo_c_avg_type": "mean", "reward_clamp": 10.0,
             "reward_final_clamp": True, "normalize_reward": False, "missing_confidence_penalty": 1.0,
             "abstention_reward": "rm", "correctness_mode": "off", "correct_reward": 1.0, "wrong_reward": 0.0,
             "grader": "auto"}


def terms_from_flat_keys(keys: Mapping[str, Any], missing_confidence: str = "half") -> list[dict[str, Any]]:
    """The ``rewards`` list that the earlier flat keys (``FLAT_KEYS``, defaults for those not given) meant:
    rm (or correctness in its place), clamp, PPO-C, the final clamp, the missing penalty, abstention."""
    k = {**FLAT_KEYS, **{key: v for key, v in keys.items() if key in FLAT_KEYS}}
    terms: list[dict[str, Any]] = [{"name": "rm", "normalize": k["normalize_reward"]}]
    if k["correctness_mode"] != "off":
        terms.append({"name": "correctness", "mode": k["correctness_mode"], "correct": k["correct_reward"],
                      "wrong": k["wrong_reward"], "grader": k["grader"]})
    clamp = {"name": "clamp", "value": k["reward_clamp"]}
    if k["ppo_c_variant"] != "none":
        terms += [clamp, {"name": "ppo_c", "variant": k["ppo_c_variant"], "weight": k["ppo_c_weight"],
                          "alpha": k["ppo_c_alpha"], "init_average": k["ppo_c_init_average"],
                          "update_before_adjust": k["ppo_c_update_before_adjust"], "avg_type": k["ppo_c_avg_type"]}]
    if k["reward_final_clamp"]:
        terms.append(clamp)
    if missing_confidence == "penalty":
        terms.append({"name": "missing_penalty", "value": k["missing_confidence_penalty"]})
    if k["abstention_reward"] != "rm":
        terms.append({"name": "abstention", "value": _abstention_value(k["abstention_reward"])})
    return terms


def _abstention_value(value: Any) -> float:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"must be a number or 'rm', got {value!r}", field="abstention_reward") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a number or 'rm', got {value!r}", field="abstention_reward")
    return float(value)
