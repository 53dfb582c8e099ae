"""Answer normalisation (SQuAD convention), numbers (digits, separators, currency, words) and letters."""

from __future__ import annotations

import functools
import math
import re
import string
import unicodedata

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation) | {"\u2018", "\u2019", "\u201c", "\u201d", "\u2013", "\u2014", "\u2026"}
_DROP_PUNCT = str.maketrans("", "", "".join(sorted(_PUNCT)))
# Grading one item normalises the answer, its final phrase and each reference, and the references of an
# eval repeat: the last results are kept (strings and floats, immutable).
_RECENT = 1024

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
          "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
# the words of numbers written out: units and teens, tens, "hundred" and the scales
WORD_NUMBERS: dict[str, int] = {w: i for i, w in enumerate(_UNITS)}
WORD_NUMBERS.update({w: 10 * t for t, w in enumerate(_TENS, start=2)})
WORD_NUMBERS["hundred"] = 100
WORD_NUMBERS.update(_SCALES)
_TOKEN_SPLIT_RE = re.compile(r"[\s\-\u2010\u2011]+")


def words_to_number(text: str) -> int | None:
    """The integer that ``text`` writes out in English words, or None.

    Units to trillions: ``"forty-two"``, ``"three hundred sixty-six"``, ``"one thousand and one"``,
    ``"two million five hundred thousand"``, ``"a hundred"``, ``"twelve hundred"``. Words out of order
    (``"one two"``, ``"thousand million"``) are not a number.
    """
    tokens = [t for t in _TOKEN_SPLIT_RE.split(unicodedata.normalize("NFKC", text or "").lower().strip()) if t]
    if tokens[:1] == ["a"] and len(tokens) > 1 and (tokens[1] == "hundred" or tokens[1] in _SCALES):
        tokens[0] = "one"
    words = [t for i, t in enumerate(tokens) if not (t == "and" and 0 < i < len(tokens) - 1)]
    if not words or any(w not in WORD_NUMBERS for w in words):
        return None
    if "zero" in words:
        return 0 if words == ["zero"] else None
    total, current, last_scale = 0, 0, None
    for i, word in enumerate(words):
        value = WORD_NUMBERS[word]
        if value < 10:  # a unit: first in its group, or after a tens word ("sixty-six")
            if current % 100 and not (current % 100 >= 20 and current % 10 == 0):
                return None
            current += value
        elif value < 100:  # a teen or a tens word: first in the group's last two places
            if current % 100:
                return None
            current += value
        elif value == 100:  # "three hundred", "twelve hundred", a bare "hundred"
            if current >= 100 or (current == 0 and i > 0):
                return None
            current = 100 * (current or 1)
        else:  # a scale closes a group: scales must fall ("million ... thousand")
            if current == 0 or (last_scale is not None and value >= last_scale):
                return None
            total, current, last_scale = total + current * value, 0, value
    return total + current


_DIGITS = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
def number_to_words(n: int) -> str:
    """``n`` (0 to under a quadrillion) written out: 366 -> ``"three hundred sixty-six"`` (the inverse of
    :func:`words_to_number`)."""
    if not 0 <= n < 10**15:
        raise ValueError(f"number_to_words covers 0 to 10**15 - 1, got {n}")
    if n < 20:
        return _UNITS[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens - 2] + (f"-{_UNITS[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_UNITS[hundreds]} hundred" + (f" {number_to_words(rest)}" if rest else "")
    scale, value = next((w, v) for w, v in sorted(_SCALES.items(), key=lambda kv: -kv[1]) if n >= v)
    high, rest = divmod(n, value)
    return f"{number_to_words(high)} {scale}" + (f" {number_to_words(rest)}" if rest else "")


_NUMBER_TOKEN = r"(?:(?<!\w)[-\u2212])?[$\u20ac\u00a3\u00a5]?\s?(?:" + _DIGITS + r")"
_STRICT_NUMBER_RE = re.compile(
    r"^[-\u2212+]?\s*[$\u20ac\u00a3\u00a5]?\s*(?P<num>" + _DIGITS + r")"
    r"(?:\s*/\s*(?P<den>\d+(?:\.\d+)?))?\s*(?:%|percent)?$"
)
_WORD_NUMBER_ALT = "(?:" + "|".join(re.escape(w) for w in sorted(WORD_NUMBERS, key=len, reverse=True)) + ")"
_WORD_RUN = (r"(?:a[ \t]+)?" + _WORD_NUMBER_ALT
             + r"(?:(?:[ \t]+and[ \t]+|[ \t]+|-)" + _WORD_NUMBER_ALT + r")*")
_ANY_NUMBER_RE = re.compile(
    r"(?P<digits>" + _NUMBER_TOKEN + r")|(?<![\w-])(?P<word>" + _WORD_RUN + r")(?![\w-])",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=_RECENT)
def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD convention).

    Unicode is NFKC-normalised first, so full-width digits and curly quotes behave like ASCII.
    """
    s = unicodedata.normalize("NFKC", s or "").lower()
    s = s.translate(_DROP_PUNCT)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


@functools.lru_cache(maxsize=_RECENT)
def parse_number(s: str) -> float | None:
    """The number that ``s`` is, or None: ``"1,234"``, ``"42.0"``, ``"$42"``, ``"42%"`` (-> 42),
    ``"-3"``, ``"3/4"`` (-> 0.75), ``"three"``, ``"twenty-one"``, ``"three hundred sixty-six"``,
    ``"two million five hundred thousand"`` (see :func:`words_to_number`). Surrounding whitespace, a trailing
    full stop and wrapping ``**``/quotes are ignored; anything else makes it not a number.
    """
    t = unicodedata.normalize("NFKC", s or "").strip().strip("*_`\"'").strip()
    t = t.rstrip(".").strip().replace("\u2212", "-")
    if not t:
        return None
    words = words_to_number(t)
    if words is not None:
        return float(words)
    if t.lower().startswith(("minus ", "negative ")) and (rest := words_to_number(t.split(None, 1)[1])) is not None:
        return -float(rest)
    m = _STRICT_NUMBER_RE.match(t)
    if m is None:
        return None
    value = float(m["num"].replace(",", ""))
    if m["den"] is not None:
        den = float(m["den"])
        if den == 0:
            return None
        value /= den
    return -value if t.startswith("-") else value


def final_number(s: str) -> float | None:
    """The last number written in ``s`` (digits, or words such as "three hundred sixty-six"), or None."""
    last = None
    for m in _ANY_NUMBER_RE.finditer(unicodedata.normalize("NFKC", s or "")):
        if m["word"] is None or words_to_number(m["word"]) is not None:
            last = m
    if last is None:
        return None
    if last["word"] is not None:
        return float(words_to_number(last["word"]) or 0)
    token = last["digits"].replace("\u2212", "-")
    value = float(re.sub(r"[^\d.]", "", token))
    return -value if token.startswith("-") else value


def numbers_equal(a: float, b: float, *, rel_tol: float = 1e-6) -> bool:
    """Equal within a relative tolerance (``1e-6`` by default; exact zero compares with 1e-12)."""
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-12)
