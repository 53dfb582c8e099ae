"""Answer grading: normalisation, exact match, numeric equality, multiple choice; pluggable."""

from calrl.grading.graders import (
    DEFAULT_GRADER,
    exact_match,
    get_grader,
    grade,
    known_graders,
    multiple_choice,
    numeric_match,
    register_grader,
)
from calrl.grading.normalize import (
    WORD_NUMBERS,
    final_number,
    normalize_answer,
    number_to_words,
    numbers_equal,
    parse_number,
    words_to_number,
)

__all__ = [
    "DEFAULT_GRADER", "WORD_NUMBERS", "exact_match", "final_number", "get_grader", "grade", "known_graders",
    "multiple_choice", "normalize_answer", "number_to_words", "numbers_equal", "numeric_match",
    "parse_number", "register_grader", "words_to_number",
]
