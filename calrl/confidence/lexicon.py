"""Verbal probability phrases ("probably", "I'm not sure") mapped to probabilities, and their detection.

``HEDGE_LEXICON`` is a calrl convention. Its values loosely follow the medians of W. Fagen-Ulmschneider's
survey "Perception of Probability Words" (2015; e.g. "almost certainly" ~95 %, "highly likely" ~90 %,
"probably"/"likely" ~70 %, "about even"/"maybe" ~50 %, "unlikely"/"we doubt" ~20-25 %, "highly
unlikely" ~5-10 %), rounded to one decimal and extended with first-person phrases models write
("I think", "I'm not sure", "I'm confident") that the survey does not cover. The numbers are a
documented heuristic, not a measurement: they are used only when a response states no explicit
confidence.

Matching is case-insensitive, on whole words, and tolerant of tokenizer spacing (``"i ' m not
sure"`` and ``"i don ' t think"`` match like ``"i'm not sure"``); ``i'm`` also matches ``i am``,
``don't`` matches ``do not``, ``can't`` matches ``cannot``. Where phrases overlap the longest wins
("almost certainly not" over "almost certainly" over "certainly").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

# phrase (lowercase, contractions with a straight apostrophe) -> probability that the answer is right
HEDGE_LEXICON: dict[str, float] = {
    # near certainty (boosters)
    "almost certainly": 0.95,
    "certainly": 0.95,
    "definitely": 0.95,
    "without a doubt": 0.95,
    "i'm certain": 0.95,
    # high
    "highly likely": 0.9,
    "very likely": 0.9,
    "i'm confident": 0.9,
    "very confident": 0.9,
    "i'm sure": 0.9,
    "most likely": 0.8,
    "pretty sure": 0.8,
    "fairly sure": 0.8,
    "fairly confident": 0.8,
    # moderate
    "probably": 0.7,
    "likely": 0.7,
    "not 100% sure": 0.7,
    "i'm not 100% sure": 0.7,
    "i think": 0.6,
    "i believe": 0.6,
    "not entirely sure": 0.6,
    # even
    "maybe": 0.5,
    "perhaps": 0.5,
    "possibly": 0.5,
    "might be": 0.5,
    "don't know for sure": 0.5,
    "my best guess": 0.5,
    "i guess": 0.45,
    # low
    "i'm not sure": 0.4,
    "not sure": 0.4,
    "i'm unsure": 0.4,
    "i'm not certain": 0.4,
    "not very confident": 0.35,
    "i'm not confident": 0.35,
    "probably not": 0.3,
    "unlikely": 0.25,
    "not likely": 0.25,
    "i doubt": 0.25,
    "doubtful": 0.25,
    "highly unlikely": 0.1,
    "very unlikely": 0.1,
    "almost certainly not": 0.05,
}

# A lexicon phrase expresses doubt (is a *hedge*) when its probability is below this; phrases at or
# above it ("certainly", "I'm confident") are boosters: they feed ``parse_confidence`` but do not
# make a response count as hedged.
HEDGE_BELOW = 0.9

_CONTRACTION_SUFFIX = r"(?:t|m|s|re|ve|ll|d)\b"
# deletions that join tokenizer-split contractions: "don ' t" -> "don't", "i 'm" -> "i'm"
_SPACE_BEFORE_APOSTROPHE = re.compile(r"(?<=\w)\s+(?='\s*" + _CONTRACTION_SUFFIX + ")")
_SPACE_AFTER_APOSTROPHE = re.compile(r"(?<=\w')\s+(?=" + _CONTRACTION_SUFFIX + ")")
_APOSTROPHES = {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"}


@dataclass(frozen=True)
class HedgeMatch:
    """A lexicon phrase found in a response: the lexicon key, its probability, its span in the text."""

    phrase: str
    probability: float
    span: tuple[int, int]

    @property
    def is_hedge(self) -> bool:
        """True for phrases that express doubt (probability below ``HEDGE_BELOW``)."""
        return self.probability < HEDGE_BELOW


_APOSTROPHE_TABLE = str.maketrans(_APOSTROPHES)


# Parsing one response reads its normalised form several times (confidence statements, abstention, answer,
# hedges): the last few results are kept, so each text is normalised and scanned once. Every cached result
# is immutable (strings, tuples, frozen matches); the caches are bounded, so they hold a few texts at most.
_RECENT = 32


@functools.lru_cache(maxsize=_RECENT)
def normalise_spacing(text: str) -> tuple[str, Sequence[int]]:
    """Lowercase ``text``, straighten apostrophes and join split contractions.

    Returns the normalised string and, for each of its characters, the index of the character of
    ``text`` it came from, so a match in the normalised string maps back to a span of ``text``.

    Done with ``str.translate``, ``str.lower`` and, when there is an apostrophe, two regex searches; the
    index is ``range(len(text))`` (no list) when nothing changed length, which is almost every response.
    Characters whose lowercase is longer (e.g. "İ") take the per-character path.
    """
    norm = text.translate(_APOSTROPHE_TABLE).lower()
    index: Sequence[int]
    if len(norm) == len(text):
        index = range(len(text))
    else:
        chars, positions = [], []
        for i, ch in enumerate(text.translate(_APOSTROPHE_TABLE)):
            low = ch.lower()
            chars.append(low)
            positions.extend([i] * len(low))
        norm, index = "".join(chars), positions
    for pattern in (_SPACE_BEFORE_APOSTROPHE, _SPACE_AFTER_APOSTROPHE) if "'" in norm else ():
        spans = [m.span() for m in pattern.finditer(norm)]
        if spans:
            bounds = [0, *(x for span in spans for x in span), len(norm)]
            keep = list(zip(bounds[::2], bounds[1::2], strict=True))  # the text between the dropped spans
            norm = "".join(norm[a:b] for a, b in keep)
            index = [j for a, b in keep for j in index[a:b]]
    return norm, index if isinstance(index, range) else tuple(index)  # immutable: the result is cached


def original_span(index: Sequence[int], start: int, end: int) -> tuple[int, int]:
    """Map a ``[start, end)`` span of a normalised string back to the original text."""
    return index[start], index[end - 1] + 1


def phrase_pattern(phrase: str) -> str:
    """A regex for ``phrase``: whole words, flexible whitespace, contractions or their long forms."""
    words = []
    for word in phrase.split():
        w = re.escape(word)
        w = {"i'm": r"i(?:'m|\s+am)", "don't": r"(?:don't|do\s+not)",
             "can't": r"(?:can't|cannot|can\s+not)"}.get(word, w)
        words.append(w)
    return r"(?<!\w)(?<!\w')" + r"\s+".join(words) + r"(?!\w)(?!'\w)"


_FIRST_WORD_FORMS = {"i'm": ("i'm", "i"), "don't": ("don't", "do"), "can't": ("can't", "cannot", "can")}
_WORD_RE = re.compile(r"\w+(?:'\w+)*")


def _phrases_by_first_word() -> dict[str, list[tuple[str, re.Pattern[str]]]]:
    table: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
    for phrase in sorted(HEDGE_LEXICON, key=len, reverse=True):  # longest first
        first = phrase.split()[0]
        for form in _FIRST_WORD_FORMS.get(first, (first,)):
            table.setdefault(form, []).append((phrase, re.compile(phrase_pattern(phrase))))
    return table


_BY_FIRST_WORD = _phrases_by_first_word()


def find_probability_phrases(text: str) -> list[HedgeMatch]:
    """Every lexicon phrase in ``text`` (hedges and boosters), left to right, without overlaps.

    At each word the longest phrase starting there wins.
    """
    return list(_probability_phrases(text))


@functools.lru_cache(maxsize=_RECENT)
def _probability_phrases(text: str) -> tuple[HedgeMatch, ...]:
    norm, index = normalise_spacing(text)
    found: list[HedgeMatch] = []
    if _BY_FIRST_WORD.keys().isdisjoint(_WORD_RE.findall(norm)):  # most responses: no phrase can start
        return ()
    resume = 0
    for word in _WORD_RE.finditer(norm):
        if word.start() < resume:
            continue
        for phrase, pattern in _BY_FIRST_WORD.get(word.group(), ()):
            m = pattern.match(norm, word.start())
            if m is not None:
                found.append(HedgeMatch(phrase, HEDGE_LEXICON[phrase], original_span(index, m.start(), m.end())))
                resume = m.end()
                break
    return tuple(found)


def detect_hedge(text: str) -> HedgeMatch | None:
    """The last phrase of ``text`` that expresses doubt ("probably", "I'm not sure"), or None.

    Boosters ("certainly", "I'm confident") are not hedges and are skipped. Works whether or not the
    response also states an explicit confidence (it gives the ``hedged`` flag of the metrics).
    """
    hedges = [m for m in find_probability_phrases(text) if m.is_hedge]
    return hedges[-1] if hedges else None
