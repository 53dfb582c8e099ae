"""The typed schema of ``metrics.json``: what ``calrl eval`` writes and every eval reader reads.

``EvalResults`` is the whole file. Its overall metrics sit at the top level (the fields of
``GroupMetrics``: ``n``, ``accuracy``, ``ece``, ``smece.value`` ...), beside ``slices`` (the same metrics
per slice value), ``settings`` (how the metrics were computed), ``source``, and, like
lm-evaluation-harness results, a ``config`` block (how the predictions were produced: model, adapter,
dataset, split, limit, sample seed, prompt, generation settings, grader), a ``provenance`` block (date,
duration, the sha256 of every local file read) and a ``versions`` block (calrl, python, torch, transformers,
trl, and the git hash of a checkout).

``to_json`` gives the JSON-ready mapping; ``from_json`` reads it back, checking every known key's type
(an InputError names the file and the key) and keeping keys it does not know in ``extra`` (a newer calrl,
or a caller such as the training callback, may add some).
"""

from __future__ import annotations

import dataclasses
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from calrl.config import build
from calrl.errors import InputError
from calrl.formatting import json_safe

SCHEMA_VERSION = 1


@dataclass(kw_only=True)
class SmoothECE:
    value: float | None
    low: float | None = None
    high: float | None = None


@dataclass(kw_only=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    mean_confidence: float | None
    accuracy: float | None


@dataclass(kw_only=True)
class MissingConfidence:
    count: int
    policy: str


@dataclass(kw_only=True)
class Signal:
    """A consistency signal: its mean and its AUROC as a predictor of correctness."""

    mean: float | None
    auroc: float | None


@dataclass(kw_only=True)
class Consistency:
    n_items: int
    mean_samples: float
    agreement_rate: Signal
    semantic_entropy: Signal


@dataclass(kw_only=True)
class StandardErrors:
    """Standard errors of the headline metrics (None where undefined), as lm-evaluation-harness' ``*_stderr``:
    of a mean (accuracy, accuracy on answered items, refusal rate, Brier, mean confidence) the items' sample
    standard deviation over sqrt(n); of the AUROC, Hanley and McNeil's (1982); of the ECE, the standard deviation
    of its ``settings.n_boot`` bootstrap resamples (None without resamples, as in small slices)."""

    accuracy: float | None = None
    accuracy_answered: float | None = None
    refusal_rate: float | None = None
    ece: float | None = None
    brier: float | None = None
    auroc: float | None = None
    mean_confidence: float | None = None


@dataclass(kw_only=True)
class GroupMetrics:
    """The metrics of one group of items (all of them, or one slice value)."""

    n: int
    n_answered: int
    n_abstained: int
    n_scored: int
    accuracy: float
    accuracy_answered: float | None
    refusal_rate: float
    ece: float | None
    ece_equal_mass: float | None
    mce: float | None
    smece: SmoothECE
    brier: float | None
    auroc: float | None
    aurc: float | None
    mean_confidence: float | None
    hedged_error_rate: float | None
    overconfident_error_rate: float | None
    missing_confidence: MissingConfidence
    confidence_sources: dict[str, int]
    reliability: list[ReliabilityBin]
    consistency: Consistency | None = None
    stderr: StandardErrors | None = None  # None in files written before calrl recorded it


@dataclass(kw_only=True)
class SliceMetrics(GroupMetrics):
    small: bool  # fewer items than ``settings.min_slice_size``: noisy


@dataclass(kw_only=True)
class Settings:
    """How the metrics were computed from the resolved items."""

    n_bins: int
    missing_policy: str
    min_slice_size: int
    n_boot: int
    seed: int


@dataclass(kw_only=True)
class Generation:
    batch_size: int
    max_new_tokens: int
    num_samples: int
    temperature: float
    do_sample: bool = False
    confidence_retries: int = 0  # the retry rule's N (0: off)
    retried_items: int = 0  # items generated again because no confidence was stated
    retry_generations: int = 0  # extra generations in all
    top_k: int = 0  # sampling's top-k (0: off)
    seed: int | None = None  # seed of the sampled answers
    retry_when: str = "parsed"  # what counts as no confidence: parsed or reference (calrl.generation.generate)
    forced_max_new_tokens: int | None = None  # new tokens of the forced retry (None: max_new_tokens)


@dataclass(kw_only=True)
class RunConfig:
    """How the predictions were produced and read: enough to run the evaluation again."""

    predictions: str | None = None  # the predictions file (calrl eval --predictions)
    model: str | None = None
    adapter: str | None = None
    dataset: str | None = None
    split: str | None = None
    limit: int | None = None
    sample_seed: int | None = None  # seed of the stratified --limit subset
    prompt_scale: str | None = None
    prompt_style: str | None = None  # --prompt-style: "calrl", "standard" or "cot"
    reasons_first: bool | None = None  # the calrl prompt asked for reasons before the answer
    distractor: bool | None = None  # the prompt held a misleading hint
    prompt_template: str | None = None  # the --prompt-template file, when one gave the prompt's words
    option_format: str | None = None  # the --option-format of multiple-choice options
    generation: Generation | None = None
    missing_confidence: str | None = None
    grader: str | None = None
    confidence_parser: str | None = None  # "calrl" or "reference"
    use_hedges: bool | None = None
    bins: int | None = None


@dataclass(kw_only=True)
class Provenance:
    """When an evaluation ran, for how long, and what it read (as lm-evaluation-harness records it)."""

    date: str  # when the command started: ISO 8601, UTC
    duration_s: float  # from the start until the metrics were computed (writing the outputs excluded)
    inputs: dict[str, str] = field(default_factory=dict)  # every local file read -> "sha256:<hex digest>"


@dataclass(kw_only=True)
class Versions:
    calrl: str | None = None
    python: str | None = None
    torch: str | None = None
    transformers: str | None = None
    trl: str | None = None
    git_hash: str | None = None  # of the calrl checkout, when calrl runs from one


@dataclass(kw_only=True)
class EvalResults(GroupMetrics):
    """The whole ``metrics.json``."""

    slices: dict[str, dict[str, SliceMetrics]] = field(default_factory=dict)
    settings: Settings
    source: str | None = None  # what was evaluated, as said on the command line
    config: RunConfig | None = None
    provenance: Provenance | None = None
    versions: Versions | None = None
    schema_version: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this schema does not know, kept as read

    def to_json(self) -> dict[str, Any]:
        """The mapping written to ``metrics.json`` (JSON-safe: NaN and infinities as null)."""
        out = _as_json(self)
        out.update(self.extra)
        return json_safe(out)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, path: str | None = None) -> EvalResults:
        """Read a ``metrics.json`` mapping; InputError naming ``path`` and the key when it is malformed."""
        if not isinstance(data, Mapping):
            raise InputError("expected a JSON object of metrics", path=path)
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        extra = {k: v for k, v in data.items() if k not in known}
        results = build(cls, {k: v for k, v in data.items() if k in known}, path=path, ignore_unknown=True)
        results.extra = extra
        return results

    @property
    def model_label(self) -> str:
        """What was evaluated, for legends and titles: the model (and adapter), else the source."""
        if self.config is not None and self.config.model:
            name = self.config.model
            return f"{name} + {self.config.adapter}" if self.config.adapter else name
        return self.source or "model"


# optional blocks left out of the JSON when absent (consistency: only when items carried samples)
_OMITTED_WHEN_NONE = frozenset({"consistency", "source", "config", "provenance", "versions", "schema_version"})


def _as_json(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            if f.name == "extra":
                continue
            value = getattr(obj, f.name)
            if value is None and f.name in _OMITTED_WHEN_NONE:
                continue
            out[f.name] = _as_json(value)
        return out
    if isinstance(obj, dict):
        return {k: _as_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_as_json(v) for v in obj]
    return obj


def lookup(metrics: Any, dotted: str) -> Any:
    """``lookup(m, "smece.value")``: a dotted key in a metrics mapping or a schema object; None when absent."""
    value: Any = metrics
    for part in dotted.split("."):
        if isinstance(value, Mapping):
            if part not in value:
                return None
            value = value[part]
        elif dataclasses.is_dataclass(value) and hasattr(value, part):
            value = getattr(value, part)
        else:
            return None
    return value


def as_results(metrics: EvalResults | Mapping[str, Any]) -> EvalResults:
    return metrics if isinstance(metrics, EvalResults) else EvalResults.from_json(metrics)


# ------------------------------------------------------------------------------------------ versions
def collect_versions() -> Versions:
    """Installed versions of calrl and its stack (no imports: a broken package still reports its version)."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return Versions(calrl=version("calrl"), python=platform.python_version(), torch=version("torch"),
                    transformers=version("transformers"), trl=version("trl"), git_hash=git_hash())


def git_hash(where: str | Path | None = None) -> str | None:
    """The commit of the calrl checkout (``+dirty`` with uncommitted tracked changes) when calrl runs from
    one (an editable install), else None."""
    folder = Path(where) if where is not None else Path(__file__).resolve().parents[2]
    if not (folder / ".git").exists():  # an installed calrl (site-packages) reports no hash
        return None
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if head and dirty else (head or None)
