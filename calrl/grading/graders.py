"""Graders: is an extracted answer right? Exact match, numeric equality, multiple choice; pluggable.

A grader is ``fn(answer: str, references: Sequence[str], *, choices: Sequence[str] | None) -> bool``
registered under a name with ``@register_grader("name")``. From the command line (``--grader``) a grader
is named by its registered name, by ``module:function`` (imported, then registered under that text), or
by the name of an entry point in the ``calrl.graders`` group of an installed package. ``grade`` takes the *extracted* answer
(``calrl.confidence.extract_answer``), not the raw response: a raw response's last number may be its
stated confidence.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence

from calrl.errors import InputError
from calrl.grading.normalize import final_number, normalize_answer, numbers_equal, parse_number

Grader = Callable[..., bool]
_GRADERS: dict[str, Grader] = {}
ENTRY_POINT_GROUP = "calrl.graders"  # installed packages may offer graders under this entry-point group

_MC_PREFIX_RE = re.compile(
    r"^\s*(?:the\s+)?(?:correct\s+|final\s+|best\s+)?(?:answer|option|choice)\s*(?:is|would\s+be)?\s*:?\s*",
    re.IGNORECASE,
)
_LONE_LETTER_RE = re.compile(r"^[(\[]?\s*([A-Za-z])\s*[)\]]?\s*[.:]?$")
_BRACKETED_LETTER_RE = re.compile(r"^[(\[]\s*([A-Za-z])\s*[)\]]")
_UPPER_LETTER_RE = re.compile(r"^([A-Z])\s*[).:](?:\s|$)")
# the final phrase of an answer: what follows its last separator or copula
_FINAL_PHRASE_SPLIT_RE = re.compile(r"[:;,\n=]|\b(?:is|are|was|were|be|equals)\b", re.IGNORECASE)


def register_grader(name: str, *, overwrite: bool = False) -> Callable[[Grader], Grader]:
    """Decorator registering ``fn(answer, references, *, choices=None) -> bool`` under ``name``."""
    if not name or not isinstance(name, str):
        raise ValueError("a grader name must be a non-empty string")

    def decorate(fn: Grader) -> Grader:
        if name in _GRADERS and not overwrite and _GRADERS[name] is not fn:
            raise ValueError(f"a grader named {name!r} is already registered (pass overwrite=True)")
        _GRADERS[name] = fn
        return fn

    return decorate


def get_grader(name: str) -> Grader:
    """The grader registered under ``name``, loading it first when ``name`` names code.

    ``name`` is a registered name; or ``module:function`` (the module is imported, which may register
    graders itself, and the function is registered under ``name``); or an entry point of the
    ``calrl.graders`` group of an installed package. InputError naming the known graders otherwise.
    """
    if name not in _GRADERS:
        _load_grader(name)
    try:
        return _GRADERS[name]
    except KeyError:
        raise InputError(f"unknown grader {name!r}; known: {', '.join(sorted(_GRADERS))} (or MODULE:FUNCTION, "
                         f"or an entry point of the '{ENTRY_POINT_GROUP}' group)", field="grader") from None


def _load_grader(name: str) -> None:
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise InputError(f"cannot load grader {name!r}: {str(exc).splitlines()[0]}", field="grader") from None
        if not callable(fn):
            raise InputError(f"{name!r} is not a function", field="grader")
        register_grader(name, overwrite=True)(fn)
        return
    from importlib.metadata import entry_points  # 20 ms: only entry-point graders need it, not calrl --help

    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name == name:
            register_grader(name, overwrite=True)(point.load())
            return


def known_graders() -> list[str]:
    return sorted(_GRADERS)


def _final_phrase(answer: str) -> str:
    parts = _FINAL_PHRASE_SPLIT_RE.split(answer)
    return parts[-1] if parts else answer


@register_grader("exact")
def exact_match(answer: str, references: Sequence[str], *, choices: Sequence[str] | None = None) -> bool:
    """Normalised exact match, also against the answer's final phrase ("It is Paris" vs "Paris")."""
    candidates = {normalize_answer(answer), normalize_answer(_final_phrase(answer))} - {""}
    return any(normalize_answer(ref) in candidates for ref in references)


@register_grader("numeric")
def numeric_match(answer: str, references: Sequence[str], *, choices: Sequence[str] | None = None) -> bool:
    """Numeric equality (relative tolerance 1e-6) with the answer's number, or else its last number.

    A reference that is not a number is compared by normalised exact match.
    """
    value = parse_number(answer)
    if value is None:
        value = final_number(answer)
    for ref in references:
        ref_value = parse_number(ref)
        if ref_value is None:
            if exact_match(answer, [ref]):
                return True
        elif value is not None and numbers_equal(value, ref_value):
            return True
    return False


def _letter(text: str, n_choices: int | None) -> int | None:
    """The choice index a letter answer names ("B", "(B)", "B)", "B. text", "Answer: B"), or None.

    A lone letter may be lower case; before more text it needs a bracket, or upper case and ".", ")"
    or ":" ("A cat" is not choice A).
    """
    body = _MC_PREFIX_RE.sub("", text or "", count=1).strip().strip("*_\"'`").strip()
    m = (_LONE_LETTER_RE.match(body) or _BRACKETED_LETTER_RE.match(body)
         or _UPPER_LETTER_RE.match(body))
    if m is None:
        return None
    index = ord(m.group(1).upper()) - ord("A")
    if n_choices is not None and index >= n_choices:
        return None
    return index


def _choice_index(text: str, choices: Sequence[str] | None) -> int | None:
    index = _letter(text, len(choices) if choices else None)
    if index is not None or not choices:
        return index
    norm = normalize_answer(_MC_PREFIX_RE.sub("", text or "", count=1))
    matches = [i for i, c in enumerate(choices) if normalize_answer(c) == norm]
    return matches[0] if len(matches) == 1 else None


@register_grader("mc")
def multiple_choice(answer: str, references: Sequence[str], *,
                    choices: Sequence[str] | None = None) -> bool:
    """Multiple choice: the answer's letter or choice text names the reference's choice.

    References may be letters or choice texts. Without ``choices`` only letters are compared.
    """
    picked = _choice_index(answer, choices)
    if picked is None:
        return False
    for ref in references:
        ref_index = _choice_index(ref, choices)
        if ref_index is not None and ref_index == picked:
            return True
    return False


@register_grader("auto")
def auto(answer: str, references: Sequence[str], *, choices: Sequence[str] | None = None) -> bool:
    """``mc`` when choices are given; else per reference ``numeric`` if it is a number, else ``exact``."""
    if choices:
        return multiple_choice(answer, references, choices=choices)
    return any(numeric_match(answer, [ref]) if parse_number(ref) is not None else exact_match(answer, [ref])
               for ref in references)


#: The grader used when none is named (the eval, the gate, the training callback and the CLI).
DEFAULT_GRADER = "auto"


def grade(answer: str | None, references: Sequence[str] | str, *, choices: Sequence[str] | None = None,
          grader: str = DEFAULT_GRADER) -> bool:
    """True if ``answer`` (the extracted answer) matches any of ``references`` under ``grader``."""
    fn = get_grader(grader)
    refs = [references] if isinstance(references, str) else list(references)
    if not refs or not all(isinstance(r, str) for r in refs):
        raise InputError("references must be a non-empty list of strings", field="reference")
    if answer is None or not answer.strip():
        return False
    return bool(fn(answer, refs, choices=list(choices) if choices else None))
