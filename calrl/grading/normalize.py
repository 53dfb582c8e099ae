"""Answer normalisation (SQuAD convention), numbers (digits, separators, currency, words) and letters."""

from __future__ import annotations

import math
import re
import string
import unicodedata

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation) | {"\u2018", "\u2019", "\u201c", "\u201d", "\u2013", "\u2014", "\u2026"}

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
          "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
# small integers written as words, 0-100 ("three", "twenty-one", "twenty one", "one hundred")
WORD_NUMBERS: dict[str, int] = {w: i for i, w in enumerate(_UNITS)}
for _t, _tens in enumerate(_TENS, start=2):
    WORD_NUMBERS[_tens] = 10 * _t
    for _u in range(1, 10):
        WORD_NUMBERS[f"{_tens}-{_UNITS[_u]}"] = 10 * _t + _u
        WORD_NUMBERS[f"{_tens} {_UNITS[_u]}"] = 10 * _t + _u
WORD_NUMBERS["hundred"] = WORD_NUMBERS["one hundred"] = WORD_NUMBERS["a hundred"] = 100

_DIGITS = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_NUMBER_TOKEN = r"(?:(?<!\w)[-\u2212])?[$\u20ac\u00a3\u00a5]?\s?(?:" + _DIGITS + r")"
_STRICT_NUMBER_RE = re.compile(
    r"^[-\u2212+]?\s*[$\u20ac\u00a3\u00a5]?\s*(?P<num>" + _DIGITS + r")"
    r"(?:\s*/\s*(?P<den>\d+(?:\.\d+)?))?\s*(?:%|percent)?$"
)
_WORD_NUMBER_ALT = "|".join(re.escape(w) for w in sorted(WORD_NUMBERS, key=len, reverse=True))
_ANY_NUMBER_RE = re.compile(
    r"(?P<digits>" + _NUMBER_TOKEN + r")|(?<![\w-])(?P<word>" + _WORD_NUMBER_ALT + r")(?![\w-])",
    re.IGNORECASE,
)


def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD convention).

    Unicode is NFKC-normalised first, so full-width digits and curly quotes behave like ASCII.
    """
    s = unicodedata.normalize("NFKC", s or "").lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def parse_number(s: str) -> float | None:
    """The number that ``s`` is, or None: ``"1,234"``, ``"42.0"``, ``"$42"``, ``"42%"`` (-> 42),
    ``"-3"``, ``"3/4"`` (-> 0.75), ``"three"``, ``"twenty-one"``. Surrounding whitespace, a trailing
    full stop and wrapping ``**``/quotes are ignored; anything else makes it not a number.
    """
    t = unicodedata.normalize("NFKC", s or "").strip().strip("*_`\"'").strip()
    t = t.rstrip(".").strip().replace("\u2212", "-")
    if not t:
        return None
    low = " ".join(t.lower().split())
    if low in WORD_NUMBERS:
        return float(WORD_NUMBERS[low])
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
    """The last number written in ``s`` (digits or a small number word), or None."""
    last = None
    for m in _ANY_NUMBER_RE.finditer(unicodedata.normalize("NFKC", s or "")):
        last = m
    if last is None:
        return None
    if last["word"] is not None:
        return float(WORD_NUMBERS[" ".join(last["word"].lower().split())])
    token = last["digits"].replace("\u2212", "-")
    value = float(re.sub(r"[^\d.]", "", token))
    return -value if token.startswith("-") else value


def numbers_equal(a: float, b: float, *, rel_tol: float = 1e-6) -> bool:
    """Equal within a relative tolerance (``1e-6`` by default; exact zero compares with 1e-12)."""
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-12)
