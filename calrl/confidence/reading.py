"""The one confidence-reading step of calrl: which parser reads a stated confidence, and how it is removed.

Every consumer (the PPO reward pipeline, the GRPO/RLOO reward functions, the per-epoch calibration
callback and ``calrl eval``) reads confidence through :class:`ConfidenceReader`; two parsers are named:

- ``calrl`` (default): :func:`calrl.confidence.parse_confidence` (documented there: many phrasings, a
  decimal in [0, 1] is a probability, the LAST statement counts, optional hedge lexicon) and
  :func:`calrl.confidence.strip_confidence`; the same rules for rewards and for evaluation, but two malformed
  kinds of response are read as missing for a reward, so the ``missing_confidence`` policy prices them:
  a confidence cue that states no value (:func:`calrl.confidence.has_dangling_cue`, e.g. ``Paris. Confidence:
  Paris. Confidence: 10``: PPO-C's reward model would read the cue left after stripping, and a policy learnt to
  state 10 behind it on questions it could not know), and text between two ``Confidence: N`` statements, a
  second answer or a revision (:func:`calrl.confidence.text_between_statements`, e.g. ``bube. Confidence: 2
  sura. Confidence: 10``: the reward model would score two answers run together, and a policy learnt to state
  8-10 behind a second wrong answer; the demo's PPO-C both times, ``docs/history/demo_findings.md``).
  Evaluation reads the last statement.
- ``reference``: the rules of the paper's code (methods.md section 9), which differ by purpose:

  * ``purpose="reward"`` (PPO-C training): ``Confidence:\\s*(\\d+(\\.\\d+)?)``, case-insensitive, the FIRST
    match counts, the number is divided by 10 and clamped to [0, 1] (``Confidence: 12`` -> 1.0,
    ``Confidence: 0.8`` -> 0.08). Every ``Confidence: N`` (with an optional ``/D``, trailing
    punctuation and spaces) is removed before the reward model scores; ``Confidence level: 8``,
    ``**Confidence:** 9`` and a ``%`` sign are left in the text.
  * ``purpose="eval"``: ``Confidence:`` (case-sensitive, repeated colons allowed) followed by a number,
    the FIRST match: up to 10 it is on the 0-10 scale, up to 100 a percent, above 100 it is 1.0. With no
    such statement, the last number on the last line (when there are several lines) counts unless it
    is above 100 or has a decimal other than .0 or .5; above 10 it is divided by 10 first.

  One departure is kept: the reference searches the decoded prompt + response for the reward; calrl
  reads the response only, since calrl's own elicitation prompt holds an example statement
  (``Confidence: 8``) that the prompt-wide search would read on every rollout.

No parser invents a value for a missing confidence: the caller's ``missing_confidence`` policy
(:mod:`calrl.confidence.missing`) decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from calrl.confidence.parse import (
    ConfidenceParse,
    has_dangling_cue,
    parse_confidence,
    strip_confidence,
    text_between_statements,
)
from calrl.errors import ConfigError

#: The named parsers (the type that configs annotate, its names) and the one used when none is named.
ParserName = Literal["calrl", "reference"]
PARSERS: tuple[str, ...] = get_args(ParserName)
DEFAULT_PARSER: ParserName = "calrl"
PURPOSES = ("reward", "eval")

_REF_REWARD_RE = re.compile(r"Confidence:\s*(\d+(\.\d+)?)", re.IGNORECASE)
_REF_STRIP_RE = re.compile(r"Confidence:\s*\d+(?:\.\d+)?(?:/\d+)?\s*[,.!?]* *", re.IGNORECASE)
_REF_EVAL_RE = re.compile(r"Confidence:[:]*\s*(\d+(?:\.\d+)?)")
_NUMBER_RE = re.compile(r"[-+]?\d+(?:\.\d+)?")


def check_parser(name: str, field: str = "confidence_parser") -> str:
    """``name`` if it is a known parser, else a :class:`ConfigError` naming ``field``."""
    if name not in PARSERS:
        raise ConfigError(f"unknown confidence parser {name!r}; choose from {', '.join(PARSERS)}", field=field)
    return name


def _reference_reward(text: str) -> ConfidenceParse:
    m = _REF_REWARD_RE.search(text)
    if m is None:
        return ConfidenceParse(None, "missing")
    value = min(10.0, max(0.0, float(m.group(1)))) / 10.0
    return ConfidenceParse(value, "explicit", m.span(), m.group(0))


def _eval_scale(value: float) -> float:
    if value <= 10.0:
        return value / 10.0
    if value <= 100.0:
        return value / 100.0
    return 1.0


def _valid_fallback(number: str) -> float | None:
    value = float(number)
    if value > 100.0:
        return None
    if "." in number and number.split(".")[1].rstrip("0") not in ("", "5"):
        return None
    return value / 10.0 if value > 10.0 else value


def _reference_eval(text: str) -> ConfidenceParse:
    m = _REF_EVAL_RE.search(text)
    if m is not None:
        return ConfidenceParse(_eval_scale(float(m.group(1))), "explicit", m.span(), m.group(0))
    lines = text.split("\n")
    if len(lines) > 1:
        last = lines[-1]
        numbers = list(_NUMBER_RE.finditer(last))
        if numbers:
            value = _valid_fallback(numbers[-1].group(0))
            if value is not None:
                start = len(text) - len(last) + numbers[-1].start()
                span = (start, start + len(numbers[-1].group(0)))
                return ConfidenceParse(_eval_scale(value), "explicit", span, numbers[-1].group(0))
    return ConfidenceParse(None, "missing")


@dataclass(frozen=True)
class ConfidenceReader:
    """Reads and strips stated confidence with one named parser, for rewards or for evaluation.

    ``use_hedges`` applies to the ``calrl`` parser only (the reference reads numbers only).
    """

    parser: str = DEFAULT_PARSER
    purpose: str = "eval"
    use_hedges: bool = True

    def __post_init__(self) -> None:
        check_parser(self.parser)
        if self.purpose not in PURPOSES:
            raise ConfigError(f"unknown purpose {self.purpose!r}; choose from {', '.join(PURPOSES)}",
                              field="purpose")

    def read(self, text: str) -> ConfidenceParse:
        """The stated confidence of ``text`` (value in [0, 1], or None with source "missing")."""
        text = text or ""
        if self.parser == "calrl":
            if self.purpose == "reward" and (has_dangling_cue(text) or text_between_statements(text)):
                return ConfidenceParse(None, "missing")
            return parse_confidence(text, use_hedges=self.use_hedges)
        return _reference_reward(text) if self.purpose == "reward" else _reference_eval(text)

    def strip_statements(self, text: str) -> str:
        """``text`` without its confidence statements, as the reward model should read it."""
        if self.parser == "calrl":
            return strip_confidence(text)
        return _REF_STRIP_RE.sub("", text or "").rstrip()
