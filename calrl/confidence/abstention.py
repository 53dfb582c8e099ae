"""The answer part of a response, and whether the response abstains instead of answering.

An abstention ("I don't know", "I cannot answer", a clarifying question) is an outcome of its own
(methods.md sec 5), never a wrong answer. A response that disclaims but then answers ("I don't know
for sure, but the answer is 42") answered. Matching runs on the response with its explicit confidence
statement removed, lowercased and with tokenizer-split contractions joined ("i don ' t know").
"""

from __future__ import annotations

import re

from calrl.confidence.lexicon import find_probability_phrases, normalise_spacing
from calrl.confidence.parse import strip_confidence

_NEG = r"(?:do\s+not|don't|dont)"
_CANNOT = r"(?:cannot|can't|can\s+not|am\s+unable\s+to|'m\s+unable\s+to|am\s+not\s+able\s+to|'m\s+not\s+able\s+to)"
_SAY = r"(?:answer|say|tell|determine|provide\s+an\s+answer|help\s+with|know)"

# Each pattern, searched in the normalised response, marks an abstention unless an answer follows it.
ABSTENTION_PATTERNS: tuple[str, ...] = (
    r"\bi\s+" + _NEG + r"\s+know\b",                              # I don't know / I do not know
    r"\bi\s*" + _CANNOT + r"\s+" + _SAY + r"\b",                  # I cannot answer / I'm not able to answer
    r"\bi\s+(?:have|'ve\s+got|'ve)\s+no\s+idea\b|^\s*no\s+idea\b",  # I have no idea / No idea.
    r"\bi\s+" + _NEG + r"\s+have\s+(?:enough\s+)?(?:the\s+)?(?:information|knowledge|data)\b",
    (r"\b(?:will\s+not|won't|would\s+rather\s+not|'d\s+rather\s+not|prefer\s+not\s+to)\s+"
     r"(?:guess|answer|speculate)\b"),                            # I'm unsure and will not guess
    r"\bi\s+(?:must\s+|have\s+to\s+)?(?:abstain|decline\s+to\s+answer|refuse\s+to\s+answer)\b",
    r"\bnot\s+enough\s+information\s+to\s+(?:answer|determine|say)\b",
    # the whole response is only "unknown" / "not sure" / "I'm unsure"
    r"^\W*(?:(?:the\s+)?answer\s*(?:is|:)\s*|it\s+is\s+|it's\s+)?(?:unknown|not\s+known|unclear)\W*$",
    r"^\W*(?:i'm\s+|i\s+am\s+)?(?:not\s+sure|unsure)\W*$",
)
_ABSTENTION_RES = tuple(re.compile(p, re.MULTILINE) for p in ABSTENTION_PATTERNS)

# Phrases after which the rest of the response is an answer.
ANSWER_CUES: tuple[str, ...] = (
    r"\b(?:the\s+)?(?:final\s+|correct\s+)?answer\s*(?:is|would\s+be|:)\s*",
    r"####\s*",
    r"\bmy\s+(?:best\s+)?guess\s+(?:is|would\s+be)\s*",
    r"\bi(?:'d|\s+would)\s+(?:say|guess)\s*",
    (r"\bbut\s+(?:i\s+(?:think|believe|guess)\s+)?(?:it's|it\s+is|it\s+was|it\s+should\s+be|probably|"
     r"likely|maybe|perhaps|possibly|the\s+answer)\b\s*"),
)
_ANSWER_CUE_RES = tuple(re.compile(p) for p in ANSWER_CUES)
# what may follow a cue without being an answer: "I don't know what the answer is, sorry"
_NOT_AN_ANSWER_RE = re.compile(r"(?:sorry|unfortunately|i\b|but\s+i\b|\?)")

# A question that asks for clarification rather than answering.
CLARIFICATION_CUES: tuple[str, ...] = (
    r"\bdo\s+you\s+mean\b", r"\bdid\s+you\s+mean\b", r"\bclarify\b", r"\bcould\s+you\s+specify\b",
    r"\bcan\s+you\s+specify\b", r"\bwhich\s+(?:one|of)\b", r"\bmore\s+(?:context|information|details)\b",
    r"\bare\s+you\s+asking\b", r"\bambiguous\b", r"\bunclear\b", r"\bnot\s+clear\b", r"\bneed\s+more\b",
    r"\bdepends\s+on\b",
)
_CLARIFICATION_RES = tuple(re.compile(p) for p in CLARIFICATION_CUES)
_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+")


def _answers_after_cue(norm: str) -> bool:
    """True if an answer cue is followed by content that is not itself an abstention."""
    for cue in _ANSWER_CUE_RES:
        for m in cue.finditer(norm):
            rest = norm[m.end():].split("\n", 1)[0].strip(" \t.,;:!")
            if rest and not _NOT_AN_ANSWER_RE.match(rest) and not any(p.search(rest) for p in _ABSTENTION_RES):
                return True
    return False


def _is_clarifying_question(norm: str) -> bool:
    text = norm.strip()
    if not text.endswith("?"):
        return False
    sentences = [s for s in _SENTENCE_SPLIT_RE.split(text) if s.strip(" \t\n.!?")]
    # every statement before the question must itself be about the question, not an answer
    statements = [s for s in sentences if not s.rstrip().endswith("?")]
    return all(any(c.search(s) for c in _CLARIFICATION_RES) or any(p.search(s) for p in _ABSTENTION_RES)
               for s in statements)


def is_abstention(text: str) -> bool:
    """True if the response declines to answer or only asks a clarifying question.

    An empty response is not an abstention (it is a failed answer, graded wrong).
    """
    norm, _ = normalise_spacing(strip_confidence(text or ""))
    if not norm.strip():
        return False
    if _answers_after_cue(norm):
        return False
    if any(p.search(norm) for p in _ABSTENTION_RES):
        return True
    return _is_clarifying_question(norm)


_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")
_HASHES_RE = re.compile(r"####\s*")
_ANSWER_COLON_RE = re.compile(r"\b(?:final\s+)?answer\s*:\s*", re.IGNORECASE)
_ANSWER_IS_RE = re.compile(r"\b(?:final\s+|correct\s+)?answer\s+(?:is|would\s+be)\s*:?\s*", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)")
_LEADING_FILLER_RE = re.compile(
    r"^(?:[\s,;:]|\b(?:but|so|and|well|then|that|thus|hence)\b)*"
    r"(?:\b(?:it's|it\s+is|it\s+was|that's|that\s+is|this\s+is|the\s+answer\s+is|would\s+be|should\s+be)\b)?"
    r"[\s,;:]*",
    re.IGNORECASE,
)


def _first_sentence(text: str) -> str:
    line = next((ln for ln in text.split("\n") if ln.strip()), "")
    m = _SENTENCE_END_RE.search(line)
    return line[:m.start()] if m else line


# Where an answer's clauses meet: punctuation (with a contrast word after it), dashes between spaces,
# and contrast words.
_CONTRAST = r"(?:but|although|though)"
_CLAUSE_SEP_RE = re.compile(r"(\s*[,;()\u2013\u2014]\s*(?:" + _CONTRAST + r"\s+)?|\s+-\s+|\s+" + _CONTRAST + r"\s+)",
                            re.IGNORECASE)
# a subject that may stand before a hedge in a clause of its own ("I'm fairly sure", "it's likely")
_HEDGE_SUBJECT_RE = re.compile(r"^(?:i'm|i\s+am|i|it's|it\s+is|that's|that\s+is)\s+", re.IGNORECASE)
# a hedge right after a copula is the edge of the predicate: "the capital is probably Paris"
_COPULA_RE = re.compile(r"\b(?:is|are|was|were|be)\s+$", re.IGNORECASE)
_EDGE_PUNCT = " \t\n.,;:!*_\""


def _whole_phrase(text: str) -> bool:
    """True when ``text`` is one lexicon phrase and nothing else (a subject such as "I'm" may lead)."""
    body = text.strip(_EDGE_PUNCT)
    for candidate in (body, _HEDGE_SUBJECT_RE.sub("", body, count=1)):
        phrases = find_probability_phrases(candidate)
        if len(phrases) == 1 and phrases[0].span == (0, len(candidate)):
            return True
    return False


def _drop_hedge_clauses(text: str) -> str:
    """Remove the clauses that are only a hedge ("I'm fairly sure, but 2" -> "2"), with their separator.

    Each kept clause keeps the separator before it, unless what stood before it was dropped; a text of
    nothing but hedges is returned as it is.
    """
    parts = _CLAUSE_SEP_RE.split(text)  # clause, separator, clause, ...
    clauses, seps = parts[0::2], parts[1::2]
    hedge = [bool(c.strip()) and _whole_phrase(c) for c in clauses]
    if not any(hedge) or all(h or not c.strip() for h, c in zip(hedge, clauses, strict=True)):
        return text
    out, dropped_before = "", False
    for i, clause in enumerate(clauses):
        if hedge[i] or (not clause.strip() and (dropped_before or i == len(clauses) - 1)):
            dropped_before = True
            continue
        if out:
            out += seps[i - 1]
        out += clause
        dropped_before = False
    return out


def _strip_edge_hedges(text: str) -> str:
    """Remove whole lexicon phrases that open or close the text, or open the predicate after a copula
    ("Probably Paris", "Paris, I think", "it is probably Paris"); never one inside other words."""
    while True:
        body = text.strip(_EDGE_PUNCT)
        phrases = find_probability_phrases(body)
        if not phrases:
            return body
        first, last = phrases[0], phrases[-1]
        if first.span[0] == 0 and body[first.span[1]:].strip(_EDGE_PUNCT):
            text = body[first.span[1]:]
        elif last.span[1] == len(body) and body[:last.span[0]].strip(_EDGE_PUNCT):
            text = body[:last.span[0]]
        elif (after := next((m for m in phrases if _COPULA_RE.search(body[:m.span[0]])
                            and body[m.span[1]:].strip(_EDGE_PUNCT)), None)) is not None:
            text = body[:after.span[0]] + body[after.span[1]:].lstrip()
        else:
            return body
        text = _LEADING_FILLER_RE.sub("", text, count=1)


def extract_answer(text: str) -> str:
    """The answer part of a response: confidence statement and hedges removed, the answer's words kept.

    Order: ``\\boxed{X}``; else the text after the last ``####``; else after the last ``Answer:``;
    else after the last "the answer is" (to the end of its sentence); else the first sentence of the
    first non-empty line. Then hedges go, only as whole lexicon phrases that stand alone: a clause that is
    only a hedge ("I'm fairly sure, but 2 of them" -> "2 of them"), a phrase opening or closing the answer
    ("Probably Paris", "Paris, I think"), or right after a copula ("it is probably Paris" -> "Paris");
    a hedge inside other words stays ("I'm probably wrong but 2" is kept as written). Leading fillers
    ("but it's") and trailing punctuation are removed.
    """
    body = strip_confidence(text or "")
    if (boxed := _BOXED_RE.findall(body)):
        part = boxed[-1]
    elif (hashes := list(_HASHES_RE.finditer(body))):
        part = body[hashes[-1].end():].split("\n", 1)[0]
    elif (colon := list(_ANSWER_COLON_RE.finditer(body))):
        part = body[colon[-1].end():].split("\n", 1)[0]
        part = part.strip() or next((ln for ln in body[colon[-1].end():].split("\n") if ln.strip()), "")
    elif (answer_is := list(_ANSWER_IS_RE.finditer(body))):
        part = _first_sentence(body[answer_is[-1].end():])
    else:
        part = _first_sentence(body)
    part = _LEADING_FILLER_RE.sub("", _drop_hedge_clauses(part), count=1)
    part = _strip_edge_hedges(part)
    part = re.sub(r"\s{2,}", " ", part)
    return part.strip(_EDGE_PUNCT)
