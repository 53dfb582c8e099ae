"""The evaluation protocol as data: a prompt-template file, the option format, the retry condition, the forced
retry's length and the sampling settings, from ``calrl eval`` and from a recipe's ``eval`` section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from calrl.cli.main import main
from calrl.confidence import ConfidenceReader
from calrl.data.heldout import EvalItem, load_eval_items
from calrl.errors import ConfigError
from calrl.generation.generate import generate_predictions, retry_rule
from calrl.generation.prompt_template import load_prompt_template
from calrl.generation.prompts import ElicitationPrompt
from calrl.tiny.models import (
    build_scripted_causal_lm,
    build_tiny_causal_lm,
    build_word_tokenizer,
    save_pretrained,
)

REPO = Path(__file__).resolve().parents[1]
SCIQ = REPO / "tests" / "fixtures" / "heldout" / "sciq" / "test.jsonl"
TEMPLATE = """\
# a made-up protocol: the words are this test's own
system: "Answer with the {answer_type} (like {demo}), then 'Confidence: N' from 0 to 10."
user: "Q: {question}"
options_intro: "Pick one:"
option: "[{letter}] {text}"
answer_type:
  multiple_choice: letter
  open: number
demo:
  multiple_choice: "[A]"
  open: 7
"""


def _template(tmp_path: Path, text: str = TEMPLATE) -> Path:
    path = tmp_path / "protocol.yaml"
    path.write_text(text)
    return path


# -------------------------------------------------------------------------------------------------- prompt
def test_template_words_fill_the_system_and_user_turns_per_kind_of_question(tmp_path):
    prompt = ElicitationPrompt(template=load_prompt_template(_template(tmp_path)))
    mc = EvalItem(id="1", question="Which is red?", reference=["B"], choices=["sky", "blood"])
    open_ = EvalItem(id="2", question="How many legs has a cat?", reference=["4"])
    assert prompt.build_messages(mc) == [
        {"role": "system", "content": "Answer with the letter (like [A]), then 'Confidence: N' from 0 to 10."},
        {"role": "user", "content": "Q: Which is red?\nPick one:\n[A] sky\n[B] blood\n"}]
    assert prompt.build_messages(open_)[0]["content"].startswith("Answer with the number (like 7)")
    assert prompt.build_messages(open_)[1]["content"] == "Q: How many legs has a cat?"
    # --option-format replaces the template's option line; without a template it formats calrl's options
    paren = ElicitationPrompt(template=load_prompt_template(_template(tmp_path)), option_format="({letter}) {text}")
    assert paren.user_message(mc) == "Q: Which is red?\nPick one:\n(A) sky\n(B) blood\n"
    assert ElicitationPrompt(option_format="({letter}) {text}").user_message(mc) == (
        "Question: Which is red?\nOptions:\n(A) sky\n(B) blood")
    assert ElicitationPrompt().user_message(mc) == "Question: Which is red?\nOptions:\nA. sky\nB. blood"


@pytest.mark.parametrize("text, pattern", [
    ("system: x\nsytem: y\n", r"protocol\.yaml:2: unknown key 'sytem'"),
    ("user: 'Q: {question}'\n", r"missing key 'system'"),
    ("system: 'Answer {answr_type}'\n", r"protocol\.yaml:1: key 'system': unknown placeholder \{answr_type\}"),
    ("system: x\noption: '{letter} {txt}'\n", r":2: key 'option': unknown placeholder \{txt\}"),
    ("system: x\ndemo: {multiple_choice: A}\n", r":2: key 'demo' must map multiple_choice and open"),
    ("system: 'a { b'\n", r"key 'system': .*literal brace"),
])
def test_bad_template_files_are_one_line_errors_naming_the_line(tmp_path, text, pattern):
    import re

    with pytest.raises(ConfigError) as info:
        load_prompt_template(_template(tmp_path, text))
    assert re.search(pattern, str(info.value)) and "\n" not in str(info.value), str(info.value)


# --------------------------------------------------------------------------------------------------- retry
def test_the_reference_retry_condition_differs_from_calrls_parser():
    parsed, reference = retry_rule("parsed", ConfidenceReader()), retry_rule("reference", ConfidenceReader())
    # (response, retried under 'parsed', retried under 'reference')
    cases = [("Answer: B\nConfidence: 8", False, False),
             ("Answer: B\nconfidence: 8", False, True),  # the reference's test is case-sensitive
             ("I'm 90% confident it is B", False, True),  # calrl reads other phrasings
             ("Answer: B\nConfidence: eight", True, True),
             ("Answer: B", True, True)]
    for text, by_parser, by_reference in cases:
        assert (parsed(text), reference(text)) == (by_parser, by_reference), text


def _looping_model():
    """Answers 'paris paris ...' and never states a confidence; after 'Confidence:' it writes 'paris' too."""
    tok = build_word_tokenizer(["paris capital confidence"])
    model = build_scripted_causal_lm(tok, [("<|assistant|>", ["paris"]), ("paris", ["paris"]), (":", ["paris"])])
    return model, tok


def test_forced_retry_length_is_its_own_setting():
    model, tok = _looping_model()
    items = [EvalItem(id="a", question="capital", reference=["paris"])]
    for forced, expected in ((None, 8), (3, 3)):
        record = generate_predictions(model, tok, items, prompt=ElicitationPrompt(), max_new_tokens=8,
                                      confidence_retries=2, retry_when="reference", forced_max_new_tokens=forced,
                                      show_progress=False)[0]
        assert record.retries == 2
        after = record.response.split("Confidence:")[1].split()
        assert after == ["paris"] * expected, record.response


# ------------------------------------------------------------------------------------------------ sampling
def _random_model():
    tok = build_word_tokenizer(["a b c d e f g h i j question capital"])
    model = build_tiny_causal_lm(tok, seed=0, hidden_size=32, num_layers=1, num_heads=2)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape,
                                                          generator=torch.Generator().manual_seed(1)) * 3)
    return model, tok


def test_seeded_sampling_repeats_passes_top_k_and_leaves_the_callers_random_state(monkeypatch):
    model, tok = _random_model()
    items = [EvalItem(id=str(i), question=f"question {w}", reference=["a"]) for i, w in enumerate("abcdef")]
    seen = []
    generate = model.generate

    def spy(*args, **kwargs):
        seen.append({k: kwargs.get(k) for k in ("do_sample", "top_k", "temperature")})
        return generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    before = torch.get_rng_state()

    def run(seed):
        return [r.response for r in generate_predictions(model, tok, items, prompt=ElicitationPrompt(), do_sample=True,
                                                         top_k=50, seed=seed, max_new_tokens=6, show_progress=False)]

    first, again, other = run(1234), run(1234), run(7)
    assert first == again and first != other
    assert torch.equal(torch.get_rng_state(), before)
    assert seen[0] == {"do_sample": True, "top_k": 50, "temperature": 1.0}


# ------------------------------------------------------------------------------------------ CLI and recipe
def test_eval_cli_runs_the_protocol_and_records_it_in_metrics(tmp_path, capsys):
    items = load_eval_items(f"sciq:{SCIQ}")
    tok = build_word_tokenizer([i.question + " " + " ".join(i.choices or []) for i in items] + [TEMPLATE])
    model_dir = save_pretrained(build_tiny_causal_lm(tok, seed=0, hidden_size=32, num_layers=1, num_heads=2), tok,
                                tmp_path / "model")
    out = tmp_path / "eval"
    code = main(["eval", "--model", str(model_dir), "--dataset", f"sciq:{SCIQ}", "--out", str(out),
                 "--prompt-template", str(_template(tmp_path)), "--option-format", "({letter}) {text}",
                 "--do-sample", "--top-k", "50", "--generation-seed", "1234", "--retry-when", "reference",
                 "--confidence-retries", "2", "--forced-retry-tokens", "3", "--max-new-tokens", "4",
                 "--bootstrap", "0", "--missing-confidence", "half"])
    capsys.readouterr()
    assert code == 0
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["prompt_template"] == str(tmp_path / "protocol.yaml")
    assert (config["option_format"], config["prompt_style"]) == ("({letter}) {text}", "template")
    assert {k: config["generation"][k] for k in ("do_sample", "top_k", "seed", "retry_when", "forced_max_new_tokens",
                                                  "confidence_retries")} == {
        "do_sample": True, "top_k": 50, "seed": 1234, "retry_when": "reference", "forced_max_new_tokens": 3,
        "confidence_retries": 2}
    first = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert "answer with the letter (like [a])" in first["prompt"].lower() and "(a)" in first["prompt"].lower()


def test_eval_cli_refuses_a_bad_template_before_loading_a_model(tmp_path, capsys):
    bad = _template(tmp_path, "system: 'x {nope}'\n")
    code = main(["eval", "--model", str(tmp_path / "no_model"), "--dataset", f"sciq:{SCIQ}", "--out",
                 str(tmp_path / "o"), "--prompt-template", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "unknown placeholder {nope}" in err[0]


def test_recipe_eval_section_carries_the_protocol_and_checks_its_template(tmp_path, capsys, no_models):
    tiny = REPO / "configs" / "tests" / "tiny_ppo.yaml"
    from calrl.runners.data import calibration_eval_config, eval_prompt
    from calrl.runners.recipe import load_recipe

    overrides = [f"eval.prompt_template={_template(tmp_path)}", "eval.option_format=({letter}) {text}",
                 "eval.retry_when=reference", "eval.forced_retry_tokens=16", "eval.do_sample=true", "eval.top_k=50",
                 "eval.generation_seed=1234"]
    recipe = load_recipe(tiny, overrides)
    mc = EvalItem(id="1", question="Which?", reference=["A"], choices=["x", "y"])
    assert eval_prompt(recipe).user_message(mc) == "Q: Which?\nPick one:\n(A) x\n(B) y\n"
    config = calibration_eval_config(recipe, [mc])
    assert config.generation == {"do_sample": True, "temperature": 1.0, "top_k": 50, "seed": 1234,
                                 "retry_when": "reference", "forced_max_new_tokens": 16}
    code = main(["train-ppo", "--config", str(tiny), "--dry-run", f"training.output_dir={tmp_path / 'out'}",
                 f"eval.prompt_template={tmp_path / 'missing.yaml'}"])
    err = capsys.readouterr().err
    assert code == 2 and "key 'eval.prompt_template'" in err and "missing.yaml' is not a file" in err
    code = main(["train-ppo", "--config", str(tiny), "--dry-run", "eval.top_k=-1"])
    assert code == 2 and "key 'eval.top_k'" in capsys.readouterr().err
