"""From prediction records to the metrics written to ``metrics.json`` (typed in :mod:`calrl.eval.schema`).

Two steps: :func:`resolve_records` parses confidence, detects abstention and grades each answer;
:func:`compute_results` turns resolved records into calibration, selective-prediction and consistency
metrics, overall and per slice (:func:`compute_metrics`: the same as a JSON-ready dict). Abstentions are a class of their own: they are never wrong answers and
carry no confidence, so every calibration metric is computed on answered items only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from operator import attrgetter
from typing import Any

import torch

from calrl import metrics as M
from calrl.confidence import ConfidenceReader, detect_hedge, extract_answer, is_abstention
from calrl.confidence.missing import DEFAULT_EVAL_MISSING, EVAL_MISSING, check_missing_policy
from calrl.confidence.reading import DEFAULT_PARSER
from calrl.data.records import PredictionRecord, ResolvedRecord
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
from calrl.grading import DEFAULT_GRADER, get_grader, grade, normalize_answer, parse_number
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


# --------------------------------------------------------------------------------------------- resolve
def resolve_records(records: Iterable[PredictionRecord], *, use_hedges: bool = True,
                    grader: str = DEFAULT_GRADER, confidence_parser: str = DEFAULT_PARSER) -> list[ResolvedRecord]:
    """Parse, detect and grade each record; given fields always win over derived ones.

    confidence: given > explicit statement in the response > hedge phrase (``use_hedges``) > missing.
    abstained: given > ``is_abstention(response)``; an item given as correct is an answer.
    correct: given > ``grade(extract_answer(response), reference, choices=..., grader=...)``; an
    abstention is never correct and its confidence is dropped (source ``"abstained"``). The resolved record
    shares the slice mapping of its prediction record (not copied: 10^6 items would hold two copies).
    ``confidence_parser``: ``calrl`` or ``reference`` (the paper's evaluation rules), through
    :class:`calrl.confidence.ConfidenceReader`.
    """
    memo = TextMemo(ConfidenceReader(confidence_parser, purpose="eval", use_hedges=use_hedges), grader)
    return [resolve_record(rec, memo=memo) for rec in records]


#: Most distinct texts (and graded answers) whose results a :class:`TextMemo` keeps.
MAX_MEMO = 1 << 16
_UNSEEN = object()


class TextMemo:
    """What a response text alone decides (hedge, abstention, extracted answer, stated confidence) and the
    grade of an (answer, references, choices) triple, each worked out once per distinct value.

    An eval file of 10^6 answers often holds far fewer distinct texts (short answers, letters, numbers):
    these steps were most of ``calrl eval --predictions``' time. The functions are pure, so a kept result
    is the one a new call would give; up to :data:`MAX_MEMO` values are kept per step (an answer after that
    is worked out each time). Grades are kept only for calrl's own graders (a registered grader may count
    its calls or keep state).
    """

    def __init__(self, reader: ConfidenceReader, grader: str = DEFAULT_GRADER) -> None:
        self.reader, self.grader = reader, grader
        self._keep_grades: bool | None = None  # known at the first grade (an unknown grader fails there)
        self._hedged: dict[str, bool] = {}
        self._abstains: dict[str, bool] = {}
        self._answers: dict[str, str] = {}
        self._reads: dict[str, tuple[float | None, str]] = {}
        self._grades: dict[tuple[Any, ...], bool] = {}

    @staticmethod
    def _kept(table: dict, key: Any, compute: Any, arg: Any) -> Any:
        value = table.get(key, _UNSEEN)
        if value is _UNSEEN:
            value = compute(arg)
            if len(table) < MAX_MEMO:
                table[key] = value
        return value

    def hedged(self, response: str) -> bool:
        return self._kept(self._hedged, response, _is_hedged, response)

    def abstains(self, response: str) -> bool:
        return self._kept(self._abstains, response, is_abstention, response)

    def answer(self, response: str) -> str:
        return self._kept(self._answers, response, extract_answer, response)

    def read(self, response: str) -> tuple[float | None, str]:
        return self._kept(self._reads, response, self._read, response)

    def _read(self, response: str) -> tuple[float | None, str]:
        parsed = self.reader.read(response)
        return parsed.value, parsed.source

    def keeps_grades(self) -> bool:
        """Whether grades are kept (calrl's own graders): then a record's resolution depends only on its
        :func:`group_key`. InputError for an unknown grader."""
        if self._keep_grades is None:
            self._keep_grades = getattr(get_grader(self.grader), "__module__", None) == "calrl.grading.graders"
        return self._keep_grades

    def grade(self, answer: str, reference: list[str], choices: list[str] | None) -> bool:
        if not self.keeps_grades():
            return bool(grade(answer, reference, choices=choices, grader=self.grader))
        key = (answer, tuple(reference), None if choices is None else tuple(choices))
        return self._kept(self._grades, key, self._grade, key)

    def _grade(self, key: tuple[Any, ...]) -> bool:
        answer, reference, choices = key
        return bool(grade(answer, list(reference), choices=None if choices is None else list(choices),
                          grader=self.grader))


def _is_hedged(response: str) -> bool:
    return detect_hedge(response) is not None


def resolve_record(rec: PredictionRecord, *, reader: ConfidenceReader | None = None,
                   grader: str = DEFAULT_GRADER, memo: TextMemo | None = None) -> ResolvedRecord:
    """One record of :func:`resolve_records`, its confidence read by ``reader`` (or by the ``memo``'s reader
    and graded with its grader, when a memo shared by many records is given)."""
    if memo is None:
        if reader is None:
            raise TypeError("resolve_record needs a reader or a memo")
        memo = TextMemo(reader, grader)
    response = rec.response
    hedged = bool(response) and memo.hedged(response)

    if rec.abstained is not None:
        abstained = rec.abstained
        if abstained and rec.correct:
            raise InputError(f"id {rec.id!r}: 'abstained' and 'correct' are both true; an abstention "
                             "is never a correct answer")
    elif rec.correct is True:
        abstained = False
    else:
        abstained = bool(response) and memo.abstains(response)

    if abstained:
        return ResolvedRecord(id=rec.id, abstained=True, correct=False, confidence=None,
                              confidence_source="abstained", hedged=hedged, slice=rec.slice, samples=rec.samples,
                              answer=None, response=response, reference=rec.reference)
    answer = memo.answer(response) if response is not None else None
    if answer and rec.reference:  # a right answer holds its reference's string, not an equal copy (memory)
        answer = next((ref for ref in rec.reference if ref == answer), answer)

    if rec.confidence is not None:
        confidence, source = float(rec.confidence), "given"
    elif response is not None:
        confidence, source = memo.read(response)
    else:
        confidence, source = None, "missing"

    if rec.correct is not None:
        correct = bool(rec.correct)
    else:
        if not rec.reference:
            raise InputError(f"id {rec.id!r}: no 'reference' to grade the response against "
                             "(give 'reference' or 'correct')")
        correct = memo.grade(answer or "", rec.reference, rec.choices)

    return ResolvedRecord(id=rec.id, abstained=False, correct=correct, confidence=confidence,
                          confidence_source=source, hedged=hedged, slice=rec.slice, samples=rec.samples,
                          answer=answer, response=response, reference=rec.reference)


def group_records(records: Sequence[PredictionRecord]) -> list[int]:
    """Records that resolve alike, grouped: each record's group, named by the index of its first record.

    A group's records are equal in every field but the id, question and prompt: the same response (text),
    given confidence, correctness and abstention, and the very same reference, choices, samples and slice
    objects (:func:`calrl.eval.loading.iter_predictions` shares equal ones). Resolved with a memo that keeps
    grades (:meth:`TextMemo.keeps_grades`), they resolve to records equal but for the id, and are written
    alike (:meth:`calrl.jsonio.JsonRows.write`'s ``groups``). An error of :func:`resolve_record` depends only on
    these fields, so the group's first record is the first record that has it.
    """
    confidences = list(map(attrgetter("confidence"), records))
    if 0.0 in confidences:  # 0.0 and -0.0 are equal keys but written differently
        confidences = [(c, math.copysign(1.0, c)) if c == 0.0 else c for c in confidences]
    keys = zip(map(attrgetter("response"), records), confidences, map(attrgetter("correct"), records),
               map(attrgetter("abstained"), records), *(map(id, map(attrgetter(name), records))
                                                       for name in ("reference", "choices", "samples", "slice")))
    first: dict[tuple[Any, ...], int] = {}
    return list(map(first.setdefault, keys, itertools.count()))


def group_starts(groups: Sequence[int]) -> list[int]:
    """The first record of each group of :func:`group_records`, in order."""
    return list(dict.fromkeys(groups))


def resolved_in_groups(records: Sequence[PredictionRecord], firsts: Sequence[ResolvedRecord],
                       groups: Sequence[int]) -> list[ResolvedRecord]:
    """Each record resolved as the first of its group (``firsts``, in the order of :func:`group_starts`),
    with its own id."""
    fields: list[Any] = [None] * len(records)
    for start, r in zip(group_starts(groups), firsts, strict=True):
        fields[start] = (r.abstained, r.correct, r.confidence, r.confidence_source, r.hedged, r.slice, r.samples,
                         r.answer, r.response, r.reference)
    return [ResolvedRecord(rec.id, *fields[g]) for rec, g in zip(records, groups, strict=True)]


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
    (InputError naming the first such id). ``groups``: each record's group, records of a group equal but for
    their id (:func:`group_records`): their fields are read once per group.
    """
    check_missing_policy(missing_policy, EVAL_MISSING, field="missing_policy")
    check_bins(n_bins)
    check_bootstrap(n_boot)
    check_seed(seed)
    if not resolved:
        raise InputError("no predictions to evaluate (empty input)")
    if missing_policy == "error":
        for r in resolved:
            if not r.abstained and r.confidence is None:
                raise InputError(f"id {r.id!r} has no confidence (stated, hedged or given) and the "
                                 "missing-confidence policy is 'error'")

    settings = Settings(n_bins=n_bins, missing_policy=missing_policy, min_slice_size=min_slice_size,
                        n_boot=n_boot, seed=seed)
    with _one_thread():
        if groups is None:
            units, per_record = resolved, None
        else:  # one record of each group, and each record's index into them
            first = dict(zip(reversed(groups), range(len(groups) - 1, -1, -1)))
            units, number = [resolved[i] for i in first.values()], {g: k for k, g in enumerate(first)}
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
