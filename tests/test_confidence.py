"""Confidence parsing, hedges, stripping, formatting, abstention and answer extraction."""

import pytest

from calrl.confidence import (
    ABSTENTION_PATTERNS,
    HEDGE_LEXICON,
    SCALES,
    detect_hedge,
    extract_answer,
    find_probability_phrases,
    format_confidence,
    is_abstention,
    parse_confidence,
    strip_confidence,
)
from calrl.errors import InputError


@pytest.mark.parametrize("text, value", [
    ("Paris. Confidence: 8", 0.8),
    ("Confidence: 80%", 0.8),
    ("It is 4. confidence 0.8", 0.8),
    ("confidence: 0.8", 0.8),
    ("Paris 8/10", 0.8),
    ("Paris (8 / 10)", 0.8),
    ("Confidence: 8.5", 0.85),
    ("confidence : 8", 0.8),
    ("CONFIDENCE: 7", 0.7),
    ("Confidence: 10", 1.0),
    ("Confidence: 0", 0.0),
    ("Confidence: 1", 0.1),          # an integer is on the 0-10 scale
    ("Confidence: 1.0", 1.0),        # a decimal in [0, 1] is a probability
    ("Confidence: 0.5", 0.5),
    ("Confidence: 35", 0.35),        # above 10: percent
    ("Confidence: 5%", 0.05),
    ("Confidence level: 80 percent", 0.8),
    ("Confidence (0-10): 6", 0.6),
    ("**Confidence:** 7/10", 0.7),
    ("Confidence: 75/100", 0.75),
    ("I'm 90% confident it is Paris", 0.9),
    ("the answer is 42. confidence: 8. 5", 0.85),  # tokenizer spacing in a decimal
    ("answer: 3\nconfidence: 9", 0.9),
])
def test_explicit_forms(text, value):
    parsed = parse_confidence(text)
    assert parsed.source == "explicit"
    assert parsed.value == pytest.approx(value)
    start, end = parsed.span
    assert text[start:end] == parsed.phrase


@pytest.mark.parametrize("text, value", [
    ("Confidence: 150", 1.0),
    ("Confidence: 12/10", 1.0),
    ("Confidence: -3", 0.0),
    ("Confidence: 250%", 1.0),
])
def test_out_of_range_is_clamped(text, value):
    assert parse_confidence(text).value == value


def test_last_statement_wins():
    text = "Confidence: 3\nOn reflection I am sure. Confidence: 9"
    parsed = parse_confidence(text)
    assert parsed.value == pytest.approx(0.9)
    assert parsed.span[0] == text.rindex("Confidence")
    assert parse_confidence("8/10 at first, now Confidence: 20%").value == pytest.approx(0.2)


@pytest.mark.parametrize("text", [
    "The answer is 3/10",
    "x = 3/10",
    "with a 95% confidence interval of 2 to 4",
    "Paris",
    "",
    "I have 8/10 of the pie left over and ate it",
])
def test_not_explicit(text):
    assert parse_confidence(text, use_hedges=False).source == "missing"
    assert parse_confidence(text, use_hedges=False).value is None


@pytest.mark.parametrize("text, phrase, value", [
    ("I think it's Paris", "i think", 0.6),
    ("It is probably 42.", "probably", 0.7),
    ("I'm not sure, it could be Rome", "i'm not sure", 0.4),
    ("i ' m not sure", "i'm not sure", 0.4),          # tokenizer spacing
    ("I am not sure about this", "i'm not sure", 0.4),  # long form
    ("It is almost certainly Paris", "almost certainly", 0.95),
    ("It's almost certainly not Paris", "almost certainly not", 0.05),
    ("It is highly unlikely to be 5", "highly unlikely", 0.1),
    ("I doubt it is Rome", "i doubt", 0.25),
    ("Maybe 12", "maybe", 0.5),
    ("I\u2019m confident: Paris", "i'm confident", 0.9),  # curly apostrophe
    ("I'm not 100% sure, it's 5", "i'm not 100% sure", 0.7),
    ("'Maybe' is my answer: 12", "maybe", 0.5),        # quoted
])
def test_hedge_fallback(text, phrase, value):
    parsed = parse_confidence(text)
    assert (parsed.source, parsed.phrase, parsed.value) == ("hedge", phrase, value)
    assert parse_confidence(text, use_hedges=False).source == "missing"


def test_hedge_uses_last_phrase_and_explicit_beats_hedge():
    assert parse_confidence("I'm not sure, but I think it's 42").value == 0.6
    parsed = parse_confidence("I think it's Paris. Confidence: 9")
    assert (parsed.source, parsed.value) == ("explicit", 0.9)


def test_lexicon_is_documented_and_in_range():
    assert 20 <= len(HEDGE_LEXICON) <= 50
    assert all(0.0 <= p <= 1.0 for p in HEDGE_LEXICON.values())
    assert HEDGE_LEXICON["probably"] == HEDGE_LEXICON["likely"] == 0.7
    assert HEDGE_LEXICON["maybe"] == HEDGE_LEXICON["perhaps"] == HEDGE_LEXICON["possibly"] == 0.5
    assert HEDGE_LEXICON["almost certainly"] > HEDGE_LEXICON["i think"] > HEDGE_LEXICON["unlikely"]
    for phrase in HEDGE_LEXICON:  # every phrase is found in a sentence that contains it
        found = find_probability_phrases(f"Well, {phrase} it is 7.")
        assert [m.phrase for m in found] == [phrase]


def test_detect_hedge_with_explicit_confidence_and_boosters():
    text = "I think the answer is 42.\nConfidence: 9"
    match = detect_hedge(text)
    assert match is not None and match.phrase == "i think" and match.probability == 0.6
    assert text[match.span[0]:match.span[1]] == "I think"
    assert detect_hedge("The answer is definitely 42. Confidence: 10") is None  # a booster, not a hedge
    assert detect_hedge("Paris") is None
    assert detect_hedge("i don ' t know for sure , but 42").phrase == "don't know for sure"
    assert detect_hedge("It is unlikely to be 3, so 4").phrase == "unlikely"
    assert detect_hedge("This is a likelihood question") is None  # whole words only


@pytest.mark.parametrize("text, stripped", [
    ("Paris. Confidence: 8", "Paris."),
    ("Paris.\nConfidence: 8", "Paris."),
    ("Paris (Confidence: 80%)", "Paris"),
    ("Paris, confidence 0.8", "Paris"),
    ("Paris. Confidence: 8. It is in France.", "Paris. It is in France."),
    ("Confidence: 3. Paris. Confidence: 9", "Paris."),
    ("**Confidence:** 7/10\nParis", "Paris"),
    ("I'm 90% confident it is Paris", "it is Paris"),
    ("I think it is Paris", "I think it is Paris"),  # hedges are wording, kept
    ("The answer is 3/10", "The answer is 3/10"),
    ("", ""),
])
def test_strip_confidence(text, stripped):
    assert strip_confidence(text) == stripped
    assert parse_confidence(strip_confidence(text), use_hedges=False).source == "missing"


@pytest.mark.parametrize("scale", SCALES)
def test_format_round_trip(scale):
    resolution = {"0-10": 10, "percent": 100, "unit": 100}[scale]
    for k in range(1001):
        p = k / 1000
        text = format_confidence(p, scale)
        back = parse_confidence(text).value
        assert back == pytest.approx(int(p * resolution + 0.5 + 1e-9) / resolution), (p, text)
        assert strip_confidence(f"Paris. {text}") == "Paris."


def test_format_examples_and_errors():
    assert format_confidence(0.8) == "Confidence: 8"
    assert format_confidence(0.8, "percent") == "Confidence: 80%"
    assert format_confidence(0.8, "unit") == "Confidence: 0.8"
    assert format_confidence(1.0, "unit") == "Confidence: 1.0"
    assert format_confidence(0.85) == "Confidence: 9"  # half up
    with pytest.raises(InputError, match="known: 0-10, percent, unit"):
        format_confidence(0.5, "stars")
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(InputError):
            format_confidence(bad)


def test_tiny_tokenizer_spacing_round_trip():
    from calrl.tiny.models import build_word_tokenizer

    texts = ["The answer is 42. Confidence: 8", "I don't know.", "I'm not sure, maybe 8/10", "confidence 0.8"]
    tok = build_word_tokenizer(texts)
    decoded = [tok.decode(tok(t)["input_ids"]) for t in texts]
    assert parse_confidence(decoded[0]).value == pytest.approx(0.8)
    assert is_abstention(decoded[1])
    assert parse_confidence(decoded[2]).value == pytest.approx(0.8)
    assert detect_hedge(decoded[2]).phrase == "maybe"
    assert parse_confidence(decoded[3]).value == pytest.approx(0.8)
    assert extract_answer(decoded[0]) == "42"


@pytest.mark.parametrize("text", [
    "I don't know.",
    "i don ' t know",
    "I do not know the answer to that.",
    "I cannot answer that question.",
    "I can't answer this.",
    "I'm not able to answer this.",
    "I am unable to determine that.",
    "Unknown",
    "The answer is unknown.",
    "No idea.",
    "I have no idea.",
    "I'm unsure and will not guess.",
    "I don't have enough information to answer.",
    "Do you mean X or Y?",
    "Which one do you mean?",
    "The question is ambiguous. Do you mean the city or the state?",
    "I don't know. Confidence: 0",
    "I'm not sure.",
    "I don't know what the answer is, sorry.",
])
def test_abstention_positives(text):
    assert is_abstention(text)


@pytest.mark.parametrize("text", [
    "I don't know for sure, but the answer is 42",
    "I don't know exactly; I'd guess 40.",
    "I can't be certain, but it's Paris.",
    "I'm not sure, but I think it's 42.",
    "Paris. Did you mean the capital?",
    "42",
    "The answer is 42. Confidence: 3",
    "There are an unknown number of apples, so 5.",
    "Paris is known for its food.",
    "",
])
def test_abstention_negatives(text):
    assert not is_abstention(text)


def test_abstention_patterns_are_documented():
    assert isinstance(ABSTENTION_PATTERNS, tuple) and len(ABSTENTION_PATTERNS) >= 5


@pytest.mark.parametrize("text, answer", [
    ("The answer is 42. Confidence: 8", "42"),
    ("She has 9 eggs, so 18 in all.\n#### 18", "18"),
    ("Answer: B\nConfidence: 7", "B"),
    ("Reasoning first.\nAnswer: Paris\nConfidence: 90%", "Paris"),
    ("I think it's Paris.", "Paris"),
    ("Probably Rome. It is old.", "Rome"),
    ("I'm not sure, but I think it's 42.", "42"),
    ("Paris\nConfidence: 8", "Paris"),
    ("The final answer is \\boxed{7}.", "7"),
    ("-5", "-5"),
    ("The answer is 3.5 meters. Confidence: 6", "3.5 meters"),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize("text, answer", [
    ("I'm fairly sure but 2 of them", "2 of them"),  # was "I'm but 2 of them": half a clause removed
    ("I'm likely but 2 of them", "2 of them"),
    ("I'm not sure but 2 of them. Confidence: 5", "2 of them"),
    ("I believe it is the Eiffel Tower, but I am not certain.", "the Eiffel Tower"),
    ("Paris, I think.", "Paris"),
    ("Paris probably", "Paris"),
    ("Definitely 42!", "42"),
    ("The capital is probably Paris.", "The capital is Paris"),
    ("The answer is probably 7 (I think).", "7"),
    ("Red, I guess, or blue", "Red, or blue"),
])
def test_hedges_go_only_as_whole_phrases(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize("text", [
    "I'm probably wrong but 2 of them",  # the hedge is inside a clause with other words: kept as written
    "Possibly",  # nothing but a hedge: an answer of its own (e.g. a TruthfulQA option)
    "Most likely",
    "The most likely cause",
])
def test_hedges_inside_other_words_are_kept(text):
    assert extract_answer(text) == text


def test_gsm8k_gold_solutions():
    """Real solutions: no confidence or abstention is read into them, and the answer after #### is found."""
    import json
    from pathlib import Path

    from calrl.grading import grade

    path = Path("/work/shared/data/heldout/gsm8k/test.jsonl")
    if not path.exists():
        pytest.skip("held-out data not present")
    rows = [json.loads(line) for line in path.read_text().splitlines()[:400]]
    for row in rows:
        solution = row["answer"]
        final = solution.split("####")[-1].strip()
        assert parse_confidence(solution, use_hedges=False).source == "missing"
        assert not is_abstention(solution)
        assert strip_confidence(solution) == solution
        answer = extract_answer(f"{solution}\nConfidence: 7")
        assert answer == final
        assert grade(answer, [final]) and not grade(answer, [str(float(final.replace(",", "")) + 1)])
