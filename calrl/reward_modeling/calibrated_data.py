"""Calibrated preference pairs for PPO-M (methods.md section 2).

Every preference pair (prompt, chosen, rejected) gains four texts that differ from the originals
only by an appended confidence statement: chosen with a high and a low stated confidence, rejected
with a high and a low stated confidence. The statement is written by
:func:`calrl.confidence.format_confidence`, the same phrasing the policy is asked to produce, and the
stated values are stored beside the texts.
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import Dataset

from calrl.confidence import SCALES, format_confidence, parse_confidence, strip_confidence
from calrl.errors import ConfigError, InputError

# Grid on which confidences are sampled, in steps per unit probability: what each scale can state.
DEFAULT_RESOLUTION = {"0-10": 10, "percent": 100, "unit": 100}
# (text column, response it is built from, high or low)
CALIBRATED_COLUMNS = (
    ("chosen_high", "chosen", "high"),
    ("chosen_low", "chosen", "low"),
    ("rejected_high", "rejected", "high"),
    ("rejected_low", "rejected", "low"),
)
CALIBRATED_TEXT_COLUMNS = tuple(name for name, _, _ in CALIBRATED_COLUMNS)
CONFIDENCE_COLUMN_SUFFIX = "_confidence"
PAIRINGS = ("ranges", "ordered")


@dataclass
class CalibratedPairsConfig:
    """How the confidence-augmented texts are built.

    Ranges are inclusive and on the 0-10 scale whatever ``scale`` the statement is written in;
    values are sampled uniformly on the grid the scale can state (integers for ``"0-10"``,
    whole percents for ``"percent"``, hundredths for ``"unit"``, or ``resolution`` steps per unit).
    ``template`` places the statement (``{confidence}``) after the response; ``strip_existing``
    first removes a confidence statement the response already has (the reference keeps it).
    ``system_prompt``: a system message put before each of the four texts (the reference puts its
    elicitation prompt there); plain-text pairs get it at the head of the prompt column or, without
    one, of the text; None: the texts keep the pair's own prompt.
    The reference's format is ``template: "\n{confidence}."`` (``\nConfidence: N.``) on the 0-10 scale.
    ``pairing``: ``"ranges"`` (the reference) draws the high text's value from ``high_range`` and the low text's
    from ``low_range``, independently, so a reward model learns high against low and nothing inside a range;
    ``"ordered"`` (calrl) draws two different values from the whole span ``[low_range[0], high_range[1]]`` and
    gives the higher to the high text, so the calibration terms order every pair of values (on a right answer
    9 over 7, on a wrong one 2 over 4). Departure from the reference, offered as a mode: with ``"ranges"`` a
    reward model is flat inside each range, and a policy trained on it has no reason to state 10 rather than 7
    about what it knows (seen in the demo: stated confidence on known facts drifting from 0.95 to 0.77).
    """

    high_range: tuple[float, float] = (7.0, 10.0)
    low_range: tuple[float, float] = (0.0, 3.0)
    scale: str = "0-10"
    seed: int = 0
    template: str = "\n{confidence}"
    strip_existing: bool = True
    resolution: int | None = None
    system_prompt: str | None = None
    pairing: str = "ranges"

    def __post_init__(self) -> None:
        self.high_range = _check_range(self.high_range, "high_range")
        self.low_range = _check_range(self.low_range, "low_range")
        if self.low_range[1] >= self.high_range[0]:
            raise ConfigError(
                f"low_range {list(self.low_range)} must lie below high_range {list(self.high_range)}",
                field="low_range",
            )
        if self.pairing not in PAIRINGS:
            close = difflib.get_close_matches(str(self.pairing), PAIRINGS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown pairing {self.pairing!r}; expected one of {list(PAIRINGS)}{hint}",
                              field="pairing")
        if self.scale not in SCALES:
            raise ConfigError(f"unknown scale {self.scale!r}; expected one of {list(SCALES)}", field="scale")
        if "{confidence}" not in self.template:
            raise ConfigError(f"template {self.template!r} has no '{{confidence}}' placeholder", field="template")
        if self.resolution is not None and (not isinstance(self.resolution, int) or self.resolution < 1):
            raise ConfigError(f"resolution must be a positive integer, got {self.resolution!r}", field="resolution")
        for name, rng in (("high_range", self.high_range), ("low_range", self.low_range)):
            lo, hi = self.grid_bounds(rng)
            if lo > hi:
                raise ConfigError(f"{name} {list(rng)} holds no value the {self.scale!r} scale can state",
                                  field=name)

    @property
    def steps(self) -> int:
        """Grid steps per unit probability."""
        return self.resolution or DEFAULT_RESOLUTION[self.scale]

    def grid_bounds(self, rng: tuple[float, float]) -> tuple[int, int]:
        """Inclusive integer grid indices (value = index / steps) inside a 0-10 range."""
        lo = math.ceil(round(rng[0] * self.steps / 10, 9))
        hi = math.floor(round(rng[1] * self.steps / 10, 9))
        return lo, hi

    def statement(self, p: float) -> str:
        """The text appended to a response stating confidence ``p`` in [0, 1]."""
        return self.template.format(confidence=format_confidence(p, scale=self.scale))


def _check_range(value: Any, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"expected two numbers [low, high], got {value!r}", field=name) from None
    if not (0.0 <= lo <= hi <= 10.0):
        raise ConfigError(f"expected 0 <= low <= high <= 10 on the 0-10 scale, got {[lo, hi]}", field=name)
    return lo, hi


def is_message_list(value: Any) -> bool:
    """True for a conversation: a list of dicts with a ``role``."""
    return isinstance(value, list) and len(value) > 0 and all(isinstance(m, dict) and "role" in m for m in value)


def _strip_statement(text: str) -> str:
    """``text`` without an explicit confidence statement; unchanged (leading space kept) when it has none."""
    if parse_confidence(text, use_hedges=False).source != "explicit":
        return text
    return text[:len(text) - len(text.lstrip())] + strip_confidence(text)


def append_to_response(response: str | list[dict[str, Any]], statement: str, *, strip_existing: bool = True,
                       row: int | None = None, column: str = "chosen") -> str | list[dict[str, Any]]:
    """``response`` with ``statement`` appended: to the text, or to the last assistant message's content."""
    if isinstance(response, str):
        text = _strip_statement(response) if strip_existing else response
        return text + statement
    if not is_message_list(response):
        raise InputError(f"row {row}: expected a string or a list of messages, got {type(response).__name__}",
                         field=column)
    messages = copy.deepcopy(response)
    for message in reversed(messages):
        if message.get("role") == "assistant":
            message["content"] = _append_to_content(message.get("content"), statement, strip_existing, row, column)
            return messages
    raise InputError(f"row {row}: the conversation has no assistant message to append a confidence to",
                     field=column)


def _append_to_content(content: Any, statement: str, strip_existing: bool, row: int | None, column: str) -> Any:
    if isinstance(content, str):
        return (_strip_statement(content) if strip_existing else content) + statement
    if isinstance(content, list):  # content parts, e.g. [{"type": "text", "text": ...}]
        for part in reversed(content):
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                text = part["text"]
                part["text"] = (_strip_statement(text) if strip_existing else text) + statement
                return content
        content.append({"type": "text", "text": statement.lstrip()})
        return content
    raise InputError(f"row {row}: the last assistant message has no text content", field=column)


def with_system_prompt(value: str | list[dict[str, Any]], system_prompt: str) -> str | list[dict[str, Any]]:
    """``value`` with ``system_prompt`` in front: a system message (replacing one already there), or text."""
    if isinstance(value, str):
        return f"{system_prompt}\n\n{value}"
    messages = [dict(m) for m in value if m.get("role") != "system"]
    return [{"role": "system", "content": system_prompt}, *messages]


def sample_confidences(n: int, config: CalibratedPairsConfig) -> dict[str, np.ndarray]:
    """Per-row stated confidences in [0, 1] for the four texts, from a generator seeded by ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    out = {}
    if config.pairing == "ordered":
        lo, hi = config.grid_bounds((config.low_range[0], config.high_range[1]))
        for source in ("chosen", "rejected"):
            first = rng.integers(lo, hi + 1, size=n)
            second = rng.integers(lo, hi, size=n)  # uniform over the values other than ``first``
            second = second + (second >= first)
            out[f"{source}_high"] = np.maximum(first, second) / config.steps
            out[f"{source}_low"] = np.minimum(first, second) / config.steps
        return {name: out[name] for name in CALIBRATED_TEXT_COLUMNS}
    for name, _, level in CALIBRATED_COLUMNS:
        lo, hi = config.grid_bounds(config.high_range if level == "high" else config.low_range)
        out[name] = rng.integers(lo, hi + 1, size=n) / config.steps
    return out


def check_preference_columns(column_names: list[str], *, path: str | None = None) -> None:
    """Raise :class:`ConfigError` naming the first missing preference column."""
    for required in ("chosen", "rejected"):
        if required not in column_names:
            raise ConfigError(f"missing dataset column '{required}' (have {sorted(column_names)})",
                              path=path, field=required)


def build_calibrated_pairs(dataset: Dataset, config: CalibratedPairsConfig | None = None) -> Dataset:
    """Add ``chosen_high``, ``chosen_low``, ``rejected_high``, ``rejected_low`` and their stated confidences.

    Plain (strings, explicit or implicit prompt) and conversational (lists of messages: the statement
    goes at the end of the last assistant message) datasets are both accepted; the prompt is left
    as it is. The stated values are stored in ``<column>_confidence`` (probability in [0, 1]).
    """
    config = config or CalibratedPairsConfig()
    if not isinstance(dataset, Dataset):
        raise InputError(f"expected a datasets.Dataset, got {type(dataset).__name__}")
    check_preference_columns(dataset.column_names)
    clash = [c for c in CALIBRATED_TEXT_COLUMNS if c in dataset.column_names]
    if clash:
        raise ConfigError(f"dataset already has calibrated columns {clash}", field=clash[0])
    values = sample_confidences(len(dataset), config)
    with_prompt = "prompt" in dataset.column_names

    def augment(example: dict[str, Any], idx: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, source, _ in CALIBRATED_COLUMNS:
            p = float(values[name][idx])
            text = append_to_response(example[source], config.statement(p),
                                      strip_existing=config.strip_existing, row=idx, column=source)
            if config.system_prompt is not None and not with_prompt:
                text = with_system_prompt(text, config.system_prompt)
            out[name] = text
            out[name + CONFIDENCE_COLUMN_SUFFIX] = p
        if config.system_prompt is not None and with_prompt:
            out["calibrated_prompt"] = with_system_prompt(example["prompt"], config.system_prompt)
        return out

    return dataset.map(augment, with_indices=True, desc="Building calibrated pairs")
