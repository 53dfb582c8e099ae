"""Parse, strip and format stated confidence ("Confidence: 8", "80%", "0.8", "8/10", hedges).

Rules (a generalisation of the PPO-M/PPO-C regex ``Confidence:\\s*(\\d+(\\.\\d+)?)``, see methods.md 1):

- Explicit forms, case-insensitive, tolerant of tokenizer spacing (``confidence : 8``, ``8 / 10``,
  ``8. 5``) and markdown emphasis (``**Confidence:** 8``):
  ``Confidence: 8`` / ``confidence 8`` / ``Confidence level: 8`` / ``Confidence (0-10): 8`` /
  ``Confidence is 8``; with a unit ``Confidence: 80%``, ``80 percent``, ``8/10``, ``80/100``;
  ``I'm 90% confident`` (also "sure", "certain"); and a bare ``8/10`` or ``80/100`` ending its line
  (``Paris (8/10)``) unless it reads as the answer itself (``the answer is 3/10``, ``= 3/10``).
- The number after "confidence" without a unit: written with a decimal point and within [0, 1] it is
  a probability (``0.8``, ``1.0``); otherwise up to 10 it is on the 0-10 scale (``8``, ``8.5``, and
  the integers ``0`` and ``1``); above 10 it is a percent (``80``). A ``%``/``percent`` or ``/D``
  unit says the scale (``Confidence: 12`` is 12 %). Out-of-range values are clamped to [0, 1]
  (``Confidence: 150`` and ``Confidence: 12/10`` -> 1.0, ``Confidence: -3`` -> 0.0), as the
  reference clamps to [0, 10].
- Several statements: the LAST one counts (a model that revises its confidence ends with it); for a reward,
  two statements with the word "confidence" and text between them are malformed (below).
- A confidence cue without a value (``Paris. Confidence: Paris. Confidence: 10``: the first ``Confidence:``
  states nothing) is malformed: :func:`has_dangling_cue` finds it, and rewards read such a response as
  missing (:class:`calrl.confidence.ConfidenceReader`); evaluation reads the statement that is there. So is
  text between two such statements, a second answer or a revision (``bube. Confidence: 2 sura. Confidence:
  10``, :func:`text_between_statements`): rewards read it as missing, evaluation reads the last statement.
- No explicit statement: with ``use_hedges`` the last verbal probability phrase of ``HEDGE_LEXICON``
  gives the value (source "hedge"); otherwise value None, source "missing". calrl never invents the
  reference's default 0.5: the missing policy is the metrics' business.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from dataclasses import dataclass
from typing import Literal, get_args

from calrl.confidence.lexicon import _RECENT, find_probability_phrases, normalise_spacing, original_span
from calrl.errors import InputError

_NUM = r"[-+]?(?:\d+(?:[ ]?\.[ ]?\d+)?|\.\d+)"  # "8", "8.5", "8. 5" (tokenizer spacing), ".8"
_EMPH = r"[\s*_]*"
# the cue that introduces a stated value: "confidence", "confidence level", "**confidence (0-10)**" (lowercase text)
_CUE = r"(?<![\w'*_])[*_]{0,3}confidence(?:\s+(?:level|score|rating))?(?:\s*\([^()\n]{0,24}\))?" + _EMPH
_KEYWORD_RE = re.compile(
    _CUE
    + r"(?:(?:[:=]|-(?!\d)|\bis\b|\bof\b|\bat\b)" + _EMPH + r")?"
    r"(?:(?:about|around|approximately|roughly|~)\s*)?"
    r"(?P<num>" + _NUM + r")"
    r"(?:\s*(?P<pct>%|percent\b)|\s*/\s*(?P<den>\d+(?:\.\d+)?))?(?:[*_]+(?![\w*]))?"
)
_PERCENT_CONFIDENT_RE = re.compile(
    r"(?<![\w.'])(?:(?:i'm|i\s+am)\s+(?:about\s+|around\s+|roughly\s+)?)?"
    r"(?P<num>" + _NUM + r")\s*(?P<pct>%|percent\b)\s*"
    r"(?:confident|sure|certain|confidence)\b(?!\s+interval)"
)
_BARE_FRACTION_RE = re.compile(
    r"(?<![\w./])(?P<num>\d+(?:[ ]?\.[ ]?\d+)?)\s*/\s*(?P<den>10|100)(?![\w/]|\.\d)"
    r"(?=[ \t*_)\].!;,]*$)",
    re.MULTILINE,
)
# a bare fraction preceded by these is the answer ("the answer is 3/10"), not a confidence
_ANSWER_LEAD_RE = re.compile(r"(?:\banswer\s*(?:is|:)?|=|#|\bequals?|\bis|\bof|\bbe|\bwas|\bare)\s*$")
_NEGATED_RE = re.compile(r"\bnot\s*$")

_CUE_RE = re.compile(_CUE + r"[:=]")  # the cue with its colon or equals sign, whatever follows

#: The scales a confidence is stated on (the type that configs annotate, its names) and the one asked for
#: when none is named.
Scale = Literal["0-10", "percent", "unit"]
SCALES: tuple[str, ...] = get_args(Scale)
DEFAULT_SCALE: Scale = "0-10"


@dataclass(frozen=True)
class ConfidenceParse:
    """The stated confidence of a response.

    ``value`` in [0, 1] or None; ``source`` "explicit" | "hedge" | "missing"; ``span`` the characters
    of the statement in the text; ``phrase`` the statement as written (explicit) or the lexicon key
    (hedge).
    """

    value: float | None
    source: str
    span: tuple[int, int] | None = None
    phrase: str | None = None


@dataclass(frozen=True)
class _Explicit:
    value: float
    span: tuple[int, int]
    cued: bool  # led by the word "confidence" ("Confidence: 8"), not "90% sure" or a bare "8/10"


def _number(raw: str) -> float:
    return float(raw.replace(" ", ""))


def _value(num: str, pct: str | None, den: str | None) -> float | None:
    v = _number(num)
    if den is not None:
        d = float(den)
        if d <= 0:
            return None
        v = v / d
    elif pct:
        v = v / 100.0
    elif "." in num and 0.0 <= v <= 1.0:
        pass  # a probability
    elif v <= 10.0:
        v = v / 10.0
    else:
        v = v / 100.0
    return min(1.0, max(0.0, v))


@functools.lru_cache(maxsize=_RECENT)  # a response is read by parse_confidence and stripped twice (abstention, answer)
def _explicit_statements(text: str) -> tuple[_Explicit, ...]:
    """All explicit confidence statements of ``text``, ordered by position, without overlaps."""
    norm, index = normalise_spacing(text)
    found: list[tuple[int, int, float, bool]] = []
    for m in _KEYWORD_RE.finditer(norm):
        v = _value(m["num"], m["pct"], m["den"])
        if v is not None:
            found.append((m.start(), m.end(), v, True))
    for m in _PERCENT_CONFIDENT_RE.finditer(norm):
        if _NEGATED_RE.search(norm[:m.start()]):  # "I'm not 100% sure" is a hedge, not 1.0
            continue
        found.append((m.start(), m.end(), _value(m["num"], m["pct"], None), False))
    for m in _BARE_FRACTION_RE.finditer(norm):
        line_start = norm.rfind("\n", 0, m.start()) + 1
        if _ANSWER_LEAD_RE.search(norm[line_start:m.start()]):
            continue
        if _number(m["num"]) > float(m["den"]):
            continue
        found.append((m.start(), m.end(), _value(m["num"], None, m["den"]), False))
    found.sort(key=lambda t: (t[0], -t[1]))
    kept: list[_Explicit] = []
    last_end = -1
    for start, end, v, cued in found:
        if start < last_end:
            continue  # inside an earlier statement ("Confidence: 8/10" contains "8/10")
        kept.append(_Explicit(v, original_span(index, start, end), cued))
        last_end = end
    return tuple(kept)


def parse_confidence(text: str, *, use_hedges: bool = True) -> ConfidenceParse:
    """The confidence stated in ``text``: the last explicit statement, else a hedge, else missing."""
    statements = _explicit_statements(text or "")
    if statements:
        last = statements[-1]
        return ConfidenceParse(last.value, "explicit", last.span, text[last.span[0]:last.span[1]])
    if use_hedges:
        phrases = find_probability_phrases(text or "")
        if phrases:
            m = phrases[-1]
            return ConfidenceParse(m.probability, "hedge", m.span, m.phrase)
    return ConfidenceParse(None, "missing")


def _remove_spans(text: str, spans: list[tuple[int, int]]) -> str:
    out = text
    for start, end in sorted(spans, reverse=True):
        before, after = out[:start], out[end:]
        b = before.rstrip(" \t")
        a = after.lstrip(" \t")
        if b.endswith(("(", "[")) and a.startswith((")", "]")):  # "Paris (Confidence: 8)"
            b, a = b[:-1].rstrip(" \t"), a[1:]
        if a[:1] in {".", ";", ","} and (not b.strip() or b.rstrip()[-1:] in {".", "!", "?", ":", ";", ","}):
            a = a[1:]  # the statement's own full stop: "Paris. Confidence: 8." -> "Paris."
        elif b.rstrip()[-1:] in {",", ";"} and not a.strip(" \t").split("\n", 1)[0]:
            b = b.rstrip()[:-1]  # "Paris, confidence 0.8" -> "Paris"
        sep = " " if b and a and not b[-1].isspace() and not a[0].isspace() and a[0] not in ".,;:!?" else ""
        out = b + sep + a
    lines = [re.sub(r"[ \t]{2,}", " ", line).rstrip() for line in out.split("\n")]
    return "\n".join(lines).strip()


@functools.lru_cache(maxsize=_RECENT)  # is_abstention and extract_answer both strip the same response
def strip_confidence(text: str) -> str:
    """``text`` without its explicit confidence statements (all of them), for reward-model scoring.

    Hedge words stay: they are part of the answer's wording. Surrounding brackets and the statement's
    own full stop go with it; whitespace is then tidied and the result stripped. A text without a
    statement is returned unchanged.
    """
    if not text:
        return ""
    spans = [s.span for s in _explicit_statements(text)]
    return _remove_spans(text, spans) if spans else text


def has_dangling_cue(text: str) -> bool:
    """Whether ``text`` holds a confidence cue (``Confidence:``, ``confidence level =``...) that states no value:
    one left once every explicit statement is removed. A policy under a reward that reads the last statement can
    learn such a text (``Paris. Confidence: Paris. Confidence: 10``); rewards read it as missing.

    Example:
        >>> has_dangling_cue("Paris. Confidence: 8")
        False
        >>> has_dangling_cue("sina. confidence: sina. confidence: 10")
        True
    """
    if not text or "confidence" not in normalise_spacing(text)[0]:  # cached: the parse reads the same text
        return False
    return _CUE_RE.search(normalise_spacing(strip_confidence(text))[0]) is not None


def text_between_statements(text: str) -> bool:
    """Whether ``text`` states a confidence with the word "confidence", goes on with more than punctuation and
    states another the same way: a second answer between two statements (``bube. Confidence: 2 sura.
    Confidence: 10``) or a revision (``Paris. Confidence: 3. No, Confidence: 9``). Rewards read such a response as
    missing: a reward needs one stated confidence at the end of the answer, as calrl's elicitation prompt asks.
    Stripped of its statements the first kind is two answers run together, a text the reward model never saw, and
    the parser reads the last value, so a policy can state a low confidence on one answer and a high one behind a
    second (the demo's PPO-C, ``docs/history/demo_findings.md``, thirteenth version). Not counted: statements with
    only punctuation or brackets between (``Confidence: 80% (8/10)``), and statements without the word, such as
    "I'm 90% sure" in a chain of thought before the final ``Confidence: 7``.

    Example:
        >>> text_between_statements("bube. Confidence: 2 sura. Confidence: 10")
        True
        >>> text_between_statements("Paris. Confidence: 8.")
        False
        >>> text_between_statements("Step 1 is right, I'm 90% sure. So: Paris. Confidence: 7")
        False
    """
    spans = [s.span for s in _explicit_statements(text or "") if s.cued]
    return any(text[a[1]:b[0]].strip(_BETWEEN_STATEMENTS) for a, b in itertools.pairwise(spans))


_BETWEEN_STATEMENTS = " \t\n.,;:!?()[]*_-"  # what may separate two statements of one confidence


def format_confidence(p: float, scale: str = DEFAULT_SCALE) -> str:
    """``"Confidence: 8"`` (0-10), ``"Confidence: 80%"`` (percent) or ``"Confidence: 0.8"`` (unit).

    ``p`` is rounded half up to the scale's resolution (tenths, percents, hundredths); the unit scale
    always writes a decimal point so that ``parse_confidence`` reads it back as a probability.
    """
    if scale not in SCALES:
        raise InputError(f"unknown confidence scale {scale!r}; known: {', '.join(SCALES)}", field="scale")
    if not isinstance(p, (int, float)) or not math.isfinite(p) or not 0.0 <= p <= 1.0:
        raise InputError(f"confidence {p!r} is not a number in [0, 1]", field="confidence")
    if scale == "0-10":
        return f"Confidence: {math.floor(p * 10 + 0.5 + 1e-9)}"
    if scale == "percent":
        return f"Confidence: {math.floor(p * 100 + 0.5 + 1e-9)}%"
    hundredths = math.floor(p * 100 + 0.5 + 1e-9)
    text = f"{hundredths / 100:.2f}".rstrip("0")
    return f"Confidence: {text}0" if text.endswith(".") else f"Confidence: {text}"
