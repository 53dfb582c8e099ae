"""Confidence parsing, hedge lexicon and abstention detection on model responses."""

from calrl.confidence.abstention import (
    ABSTENTION_PATTERNS,
    ANSWER_CUES,
    CLARIFICATION_CUES,
    extract_answer,
    is_abstention,
)
from calrl.confidence.lexicon import (
    HEDGE_BELOW,
    HEDGE_LEXICON,
    HedgeMatch,
    detect_hedge,
    find_probability_phrases,
)
from calrl.confidence.missing import MISSING_CONFIDENCE, check_missing_policy
from calrl.confidence.parse import (
    SCALES,
    ConfidenceParse,
    format_confidence,
    has_dangling_cue,
    parse_confidence,
    strip_confidence,
    text_between_statements,
)
from calrl.confidence.reading import PARSERS, ConfidenceReader, check_parser

__all__ = [
    "ABSTENTION_PATTERNS",
    "ANSWER_CUES",
    "CLARIFICATION_CUES",
    "HEDGE_BELOW",
    "HEDGE_LEXICON",
    "MISSING_CONFIDENCE",
    "PARSERS",
    "SCALES",
    "ConfidenceParse",
    "ConfidenceReader",
    "HedgeMatch",
    "check_missing_policy",
    "check_parser",
    "detect_hedge",
    "extract_answer",
    "find_probability_phrases",
    "format_confidence",
    "has_dangling_cue",
    "is_abstention",
    "parse_confidence",
    "strip_confidence",
    "text_between_statements",
]
