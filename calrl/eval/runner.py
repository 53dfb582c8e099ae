"""From prediction records to the metrics written to ``metrics.json`` (typed in :mod:`calrl.eval.schema`).

Two steps: :func:`resolve_records` (:mod:`calrl.eval.resolving`) parses confidence, detects abstention and grades
each answer; :func:`compute_results` turns resolved records into calibration, selective-prediction and consistency
metrics, overall and per slice (:func:`compute_metrics`: the same as a JSON-ready dict). Abstentions are a class of their own: they are never wrong answers and
carry no confidence, so every calibration metric is computed on answered items only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence
from operator import attrgetter
from typing import Any

import torch

from calrl import metrics as M
from calrl.confidence import extract_answer
from calrl.confidence.missing import DEFAULT_EVAL_MISSING, EVAL_MISSING, check_missing_policy
from calrl.data.records import ResolvedRecord
from calrl.errors import InputError
from calrl.eval.schema import (
    Consistency,
    EvalResults,
    GroupMetrics,
    MissingConfidence,
    ReliabilityBin,
    Settings,
    Signal,
    SliceMetrics,
    SmoothECE,
    StandardErrors,
)
from calrl.grading import normalize_answer, parse_number
from calrl.limits import (
    DEFAULT_BINS,
    DEFAULT_BOOTSTRAP,
    DEFAULT_MIN_SLICE_SIZE,
    check_bins,
    check_bootstrap,
    check_seed,
    check_slice_values,
)
from calrl.metrics import reliability_bins

CONFIDENCE_SOURCES = ("given", "explicit", "hedge", "missing", "abstained")
HEDGE_THRESHOLD = 0.5  # a wrong answer below this stated confidence counts as hedged
OVERCONFIDENT_THRESHOLD = 0.9  # a wrong answer at or above this stated confidence is overconfident


# --------------------------------------------------------------------------------------------- metrics
def compute_metrics(resolved: Sequence[ResolvedRecord], *, n_bins: int = DEFAULT_BINS,
                    missing_policy: str = DEFAULT_EVAL_MISSING, min_slice_size: int = DEFAULT_MIN_SLICE_SIZE,
                    n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """:func:`compute_results` as the JSON-ready dict of ``metrics.json`` (NaN -> null)."""
    return compute_results(resolved, n_bins=n_bins, missing_policy=missing_policy,
                           min_slice_size=min_slice_size, n_boot=n_boot, seed=seed).to_json()


def compute_results(resolved: Sequence[ResolvedRecord], *, n_bins: int = DEFAULT_BINS,
                    missing_policy: str = DEFAULT_EVAL_MISSING, min_slice_size: int = DEFAULT_MIN_SLICE_SIZE,
                    n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, groups: Sequence[int] | None = None,
                    ) -> EvalResults:
    """All metrics of the records, overall and per slice value.

    ``missing_policy`` says what an answered item without a confidence does: ``exclude`` (left out of
    the confidence metrics, still counted in accuracy), ``half`` (scored as 0.5) or ``error``
    (InputError naming the first such id). ``groups``: each record's group, named by the index of its first
    record, the records of a group equal but for their id (:func:`group_records`): read once per group.
    """
    check_missing_policy(missing_policy, EVAL_MISSING, field="missing_policy")
    check_bins(n_bins)
    check_bootstrap(n_boot)
    check_seed(seed)
    if not resolved:
        raise InputError("no predictions to evaluate (empty input)")
    units = resolved if groups is None else [resolved[g] for g in dict.fromkeys(groups)]  # first of each, in order
    if missing_policy == "error":
        for r in units:
            if not r.abstained and r.confidence is None:
                raise InputError(f"id {r.id!r} has no confidence (stated, hedged or given) and the "
                                 "missing-confidence policy is 'error'")

    settings = Settings(n_bins=n_bins, missing_policy=missing_policy, min_slice_size=min_slice_size,
                        n_boot=n_boot, seed=seed)
    with _one_thread():
        per_record = None  # each record's index into units
        if groups is not None:
            number = {g: k for k, g in enumerate(dict.fromkeys(groups))}
            per_record = torch.tensor(list(map(number.__getitem__, groups)), dtype=torch.long)
        columns = _Columns.of(units).take(per_record)
        overall = _group_metrics(columns, None, resolved, settings)
        slices = _slice_metrics(resolved, columns, settings, units, per_record)
    return EvalResults(**_fields(overall), slices=slices, settings=settings)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run the metrics on one CPU thread, then restore torch's thread count.

    The metrics are many small tensor operations: on 10^6 items they took 2.1 s on one thread and
    8-12 s on two (a 2-core machine with other work on it). One thread also makes metrics.json the same
    on every machine: torch splits a large sum across threads, so the last digit of e.g. the Brier score
    of 5x10^4 items depended on the machine's thread count.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fields(group: GroupMetrics) -> dict[str, Any]:
    return {f.name: getattr(group, f.name) for f in dataclasses.fields(GroupMetrics)}


@dataclasses.dataclass
class _Columns:
    """The fields the metrics read, one tensor per field over all records (read once, indexed per group)."""

    abstained: torch.Tensor
    correct: torch.Tensor
    confidence: torch.Tensor  # NaN where missing
    hedged: torch.Tensor
    source: torch.Tensor  # index into CONFIDENCE_SOURCES (len(CONFIDENCE_SOURCES) for another source)
    has_samples: bool

    @classmethod
    def of(cls, resolved: Sequence[ResolvedRecord]) -> _Columns:
        codes = {s: i for i, s in enumerate(CONFIDENCE_SOURCES)}
        other = len(CONFIDENCE_SOURCES)
        nan = math.nan
        return cls(abstained=torch.tensor([r.abstained for r in resolved], dtype=torch.bool),
                   correct=torch.tensor([bool(r.correct) for r in resolved], dtype=torch.bool),
                   confidence=torch.tensor([nan if r.confidence is None else r.confidence for r in resolved],
                                           dtype=torch.float64),
                   hedged=torch.tensor([bool(r.hedged) for r in resolved], dtype=torch.bool),
                   source=torch.tensor([codes.get(r.confidence_source, other) for r in resolved], dtype=torch.long),
                   has_samples=any(r.samples for r in resolved))

    def take(self, index: torch.Tensor | None) -> _Columns:
        if index is None:
            return self
        return _Columns(self.abstained[index], self.correct[index], self.confidence[index], self.hedged[index],
                        self.source[index], self.has_samples)


def _slice_metrics(resolved: Sequence[ResolvedRecord], columns: _Columns, settings: Settings,
                   units: Sequence[ResolvedRecord], per_record: torch.Tensor | None,
                   ) -> dict[str, dict[str, SliceMetrics]]:
    groups = _slice_rows(units, per_record)
    # a slice below min_slice_size is flagged small and gets no bootstrap interval: its interval would be too
    # wide to read, and the bootstrap is most of the cost of a slice
    small = dataclasses.replace(settings, n_boot=0)
    out: dict[str, dict[str, SliceMetrics]] = {}
    for key in sorted(groups):
        out[key] = {}
        for value, rows in sorted(groups[key].items()):
            is_small = int(rows.numel()) < settings.min_slice_size
            members = [resolved[i] for i in rows.tolist()] if columns.has_samples else []
            metrics = _group_metrics(columns, rows, members, small if is_small else settings)
            out[key][value] = SliceMetrics(**_fields(metrics), small=is_small)
    return out


def _slice_rows(units: Sequence[ResolvedRecord], per_record: torch.Tensor | None = None,
                ) -> dict[str, dict[str, torch.Tensor]]:
    """For each slice key and value, the indices of its records (increasing, a long tensor): the records are
    ``units``, or, with ``per_record``, the unit of each record is ``units[per_record[i]]``.

    The slices are read once per slice object (records share them), into a code per object and key; a code
    per record and key is then one index into those, and one stable sort per key groups the records, so the
    cost does not grow with the number of values (a comparison per value took hours on 10^6 rows of 200,000
    values). More than ``MAX_SLICE_VALUES`` values in all is an InputError (see :func:`check_slice_values`).
    """
    slices = list(map(attrgetter("slice"), units))
    objects = dict(zip(map(id, slices), slices))  # each distinct slice object (all alive: ids are unique)
    number = {key: k for k, key in enumerate(objects)}
    codes: dict[str, dict[str, int]] = {}
    tables: dict[str, list[int]] = {}
    for k, slice_ in enumerate(objects.values()):
        for key, value in slice_.items():
            table = tables.get(key)
            if table is None:
                table = tables[key] = [-1] * len(objects)
                codes[key] = {}
            table[k] = codes[key].setdefault(value, len(codes[key]))
    check_slice_values({key: len(values) for key, values in codes.items()})
    per_unit = torch.tensor(list(map(number.__getitem__, map(id, slices))), dtype=torch.long)
    of_record = per_unit if per_record is None else per_unit[per_record]
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, table in tables.items():
        column = torch.tensor(table, dtype=torch.long)[of_record]
        counts = torch.bincount(column + 1, minlength=len(codes[key]) + 1)  # code -1: no value for this key
        groups = torch.split(torch.argsort(column, stable=True), counts.tolist())
        out[key] = {value: groups[code + 1] for value, code in codes[key].items()}
    return out


def _group_metrics(all_columns: _Columns, index: torch.Tensor | None, members: Sequence[ResolvedRecord],
                   settings: Settings) -> GroupMetrics:
    """The metrics of the records at ``index`` (None: all); ``members`` are those records (read only for
    the sampled answers' consistency, and only when some record has samples)."""
    cols = all_columns.take(index)
    n_bins = settings.n_bins
    n = int(cols.abstained.numel())
    answered = ~cols.abstained
    n_answered = int(answered.sum())
    n_correct = int((cols.correct & answered).sum())
    missing = answered & torch.isnan(cols.confidence)
    if settings.missing_policy == "half":
        keep = answered
        conf = torch.where(missing, 0.5, cols.confidence)[keep]
    else:
        keep = answered & ~missing
        conf = cols.confidence[keep]
    corr = cols.correct[keep]
    calibration: dict[str, Any] = {"ece": None, "ece_equal_mass": None, "mce": None,
                                   "smece": SmoothECE(value=None), "brier": None, "auroc": None,
                                   "aurc": None, "mean_confidence": None}
    if conf.numel():
        calibration = _calibration(M, conf, corr, n_bins, settings)

    wrong = answered & ~cols.correct
    n_wrong = int(wrong.sum())
    sources = torch.bincount(cols.source, minlength=len(CONFIDENCE_SOURCES) + 1)
    with_conf = ~torch.isnan(cols.confidence)
    return GroupMetrics(
        n=n,
        n_answered=n_answered,
        n_abstained=n - n_answered,
        n_scored=int(conf.numel()),
        accuracy=n_correct / n,
        accuracy_answered=_ratio(n_correct, n_answered),
        refusal_rate=(n - n_answered) / n,
        **calibration,
        hedged_error_rate=_ratio(
            int((wrong & (cols.hedged | (with_conf & (cols.confidence < HEDGE_THRESHOLD)))).sum()), n_wrong),
        overconfident_error_rate=_ratio(
            int((wrong & with_conf & (cols.confidence >= OVERCONFIDENT_THRESHOLD)).sum()), n_wrong),
        missing_confidence=MissingConfidence(count=int(missing.sum()), policy=settings.missing_policy),
        confidence_sources={s: int(sources[i]) for i, s in enumerate(CONFIDENCE_SOURCES)},
        reliability=_reliability(conf, corr, n_bins) if conf.numel() else [],
        consistency=_consistency(members) if all_columns.has_samples else None,
        stderr=_standard_errors(M, cols, answered, conf, corr, calibration["auroc"], settings),
    )


def _standard_errors(M: Any, cols: _Columns, answered: torch.Tensor, conf: torch.Tensor, corr: torch.Tensor,
                     auroc: float | None, settings: Settings) -> StandardErrors:
    """The standard errors of a group's headline metrics (see :class:`~calrl.eval.schema.StandardErrors`)."""
    ece = None
    if settings.n_boot >= 2 and conf.numel():
        generator = torch.Generator().manual_seed(settings.seed)  # the smooth-ECE bootstrap's resamples
        ece = M.ece_resamples(conf, corr, n_bins=settings.n_bins, n_boot=settings.n_boot, generator=generator)
        ece = ece.std(correction=1)
    n_right = int(corr.sum())
    return StandardErrors(
        accuracy=_f(M.mean_stderr((cols.correct & answered).double())),
        accuracy_answered=_f(M.mean_stderr(cols.correct[answered].double())),
        refusal_rate=_f(M.mean_stderr(cols.abstained.double())),
        ece=_f(ece),
        brier=_f(M.mean_stderr((conf - corr.double()) ** 2)),
        auroc=_f(M.auroc_stderr(auroc, n_right, int(corr.numel()) - n_right)) if auroc is not None else None,
        mean_confidence=_f(M.mean_stderr(conf)),
    )


def _calibration(M: Any, conf: torch.Tensor, corr: torch.Tensor, n_bins: int, settings: Settings) -> dict[str, Any]:
    both_classes = bool(corr.any()) and not bool(corr.all())
    generator = torch.Generator().manual_seed(settings.seed)
    if settings.n_boot > 0:
        value, low, high = M.smooth_ece_bootstrap(conf, corr, n_boot=settings.n_boot, generator=generator)
    else:
        value, low, high = M.smooth_ece(conf, corr), None, None
    return {
        "ece": _f(M.expected_calibration_error(conf, corr, n_bins=n_bins, norm="l1")),
        "ece_equal_mass": _f(M.equal_mass_ece(conf, corr, n_bins=n_bins)),
        "mce": _f(M.max_calibration_error(conf, corr, n_bins=n_bins)),
        "smece": SmoothECE(value=_f(value), low=_f(low), high=_f(high)),
        "brier": _f(M.brier_score(conf, corr)),
        "auroc": _f(M.binary_auroc(conf, corr)) if both_classes else None,
        "aurc": _f(M.aurc(conf, corr)),
        "mean_confidence": _f(conf.mean()),
    }


def _reliability(conf: torch.Tensor, corr: torch.Tensor, n_bins: int) -> list[ReliabilityBin]:
    bins = reliability_bins(conf, corr, n_bins=n_bins)
    rows = []
    for i in range(n_bins):
        count = int(bins["count"][i])
        rows.append(ReliabilityBin(
            lower=_f(bins["lower"][i]),
            upper=_f(bins["upper"][i]),
            count=count,
            mean_confidence=_f(bins["mean_confidence"][i]) if count else None,
            accuracy=_f(bins["accuracy"][i]) if count else None,
        ))
    return rows


# ----------------------------------------------------------------------------------------- consistency
def answer_cluster_key(text: str) -> str:
    """Cluster key of a short answer: its numeric value (9 significant digits) when it is a number, else
    its normalised text."""
    answer = extract_answer(text)
    value = parse_number(answer)
    if value is not None and math.isfinite(value):
        return f"#num:{value:.9g}"
    return normalize_answer(answer)


def _consistency(resolved: Sequence[ResolvedRecord]) -> Consistency | None:
    """Agreement rate and discrete semantic entropy of the sampled answers (answered items with samples).

    Samples and the graded answer are clustered together by :func:`answer_cluster_key`. Agreement is the
    share of samples in the answer's cluster; entropy is over the samples' cluster shares (nats). AUROC
    rates agreement, and entropy negated, as scores of correctness.
    """
    items = [r for r in resolved if not r.abstained and r.samples]
    if not items:
        return None
    width = max(len(r.samples or []) for r in items)
    cluster_ids = torch.full((len(items), width), -1, dtype=torch.long)
    answer_ids = torch.empty(len(items), dtype=torch.long)
    for i, r in enumerate(items):
        index: dict[str, int] = {}
        for j, sample in enumerate(r.samples or []):
            cluster_ids[i, j] = index.setdefault(answer_cluster_key(sample), len(index))
        answer_ids[i] = index.get(answer_cluster_key(r.answer or ""), len(index))
    agreement = M.agreement_rate(cluster_ids, answer_ids).to(torch.float64)
    entropy = M.discrete_semantic_entropy(cluster_ids).to(torch.float64)
    corr = torch.tensor([r.correct for r in items], dtype=torch.bool)
    both = bool(corr.any()) and not bool(corr.all())
    return Consistency(
        n_items=len(items),
        mean_samples=sum(len(r.samples or []) for r in items) / len(items),
        agreement_rate=Signal(mean=_f(agreement.mean()),
                              auroc=_f(M.binary_auroc(agreement, corr)) if both else None),
        semantic_entropy=Signal(mean=_f(entropy.mean()),
                                auroc=_f(M.binary_auroc(-entropy, corr)) if both else None),
    )


# ------------------------------------------------------------------------------------------- helpers
def _ratio(num: float, den: int) -> float | None:
    return num / den if den else None


def _f(x: Any) -> float | None:
    """A metric as a Python float; None, NaN and infinities (undefined metrics) as None."""
    if x is None:
        return None
    value = float(x.item() if isinstance(x, torch.Tensor) else x)
    return value if math.isfinite(value) else None
