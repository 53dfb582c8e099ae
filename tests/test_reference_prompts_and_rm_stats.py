"""The paper's evaluation prompts (methods.md sec 9), the eval CLI's reference options, and train-rm's stored
reward statistics end to end (docs/fidelity.md rows "evaluation prompts", "RM normalisation")."""

import json
from pathlib import Path

import pytest
import torch

from calrl.cli import eval_cmd
from calrl.cli.main import main
from calrl.confidence import reading
from calrl.data.heldout import EvalItem
from calrl.generation import prompts
from calrl.generation.prompts import ElicitationPrompt
from calrl.tiny.models import build_word_tokenizer

REPO = Path(__file__).resolve().parents[1]
ITEM = EvalItem(id="q1", question="how many legs has a spider ?", reference=["8"])
MC = EvalItem(id="q2", question="which is a fruit ?", reference=["B"], choices=["stone", "apple"])


def test_standard_prompt_asks_for_only_the_answer_then_a_0_10_confidence_in_two_lines():
    text = ElicitationPrompt(style="standard").instruction()
    assert "only your final answer" in text and "exactly two lines" in text
    assert "Answer: <your answer>\nConfidence: <a whole number from 0 to 10" in text  # the fixed two-line format
    assert "'Answer: B'" in text and "'Answer: 42'" in text  # an option letter or a number, with an example
    assert "Explanation" not in text and "I don't know" not in text
    # the style fixes the 0-10 scale whatever scale is asked for
    assert ElicitationPrompt(style="standard", scale="percent").instruction() == text


def test_cot_prompt_asks_for_explanation_then_answer_then_confidence():
    text = ElicitationPrompt(style="cot").instruction()
    e, a, c = (text.index(k) for k in ("Explanation: <", "\nAnswer: <", "\nConfidence: <"))
    assert e < a < c
    assert "from 0 to 10" in text and "step by step" in text


def test_chat_template_puts_the_instruction_in_the_system_turn():
    tok = build_word_tokenizer(["how many legs has a spider"])
    prompt = ElicitationPrompt(style="standard")
    rendered = prompt.render(tok, ITEM)
    assert rendered.startswith(f"<|system|> {prompt.instruction()} <|end|> <|user|> Question: {ITEM.question}")
    assert rendered.endswith("<|assistant|>")
    options = ElicitationPrompt(style="cot").render(tok, MC)
    assert "Options:\nA. stone\nB. apple" in options


def test_template_without_a_system_role_gets_the_instruction_at_the_head_of_the_user_turn():
    tok = build_word_tokenizer(["how many legs has a spider"])
    tok.chat_template = (
        "{% for message in messages %}{% if message['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<|{{ message['role'] }}|> {{ message['content'] }} <|end|> {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    prompt = ElicitationPrompt(style="cot")
    rendered = prompt.render(tok, ITEM)
    assert rendered == f"<|user|> {prompt.instruction()}\n\nQuestion: {ITEM.question} <|end|> <|assistant|>"
    assert "<|system|>" not in rendered


def test_eval_cli_choices_are_the_modules_lists():
    assert eval_cmd.PROMPT_STYLES is prompts.PROMPT_STYLES and eval_cmd.PARSERS is reading.PARSERS
    assert set(prompts.PROMPT_STYLES) == {"calrl", "standard", "cot"}
    assert set(reading.PARSERS) == {"calrl", "reference"}


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--prompt-style", "fancy", "argument --prompt-style: invalid choice: 'fancy'"),
    ("--confidence-parser", "regex", "argument --confidence-parser: invalid choice: 'regex'"),
    ("--confidence-retries", "-1", "argument --confidence-retries: must be from 0 to 100, got -1"),
    ("--confidence-retries", "two", "argument --confidence-retries: expected an integer, got 'two'"),
])
def test_eval_cli_bad_reference_options_are_one_line(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--model", "tiny-model", "--dataset", "gsm8k", "--out", str(tmp_path / "o"), flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_eval_cli_accepts_the_reference_options():
    parser_args = ["eval", "--predictions", "p.jsonl", "--out", "o", "--confidence-parser", "reference"]
    from calrl.cli.main import build_parser

    args = build_parser().parse_args(parser_args)
    assert args.confidence_parser == "reference"
    args = build_parser().parse_args(["eval", "--model", "m", "--dataset", "gsm8k", "--out", "o", "--prompt-style",
                                      "cot", "--confidence-retries", "10"])
    assert (args.prompt_style, args.confidence_retries) == ("cot", 10)


@pytest.mark.slow
def test_train_rm_writes_reward_statistics_over_the_training_responses(tmp_path, monkeypatch):
    from datasets import load_dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from calrl.reward_modeling.probe import score_texts

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "rm"
    code = main(["train-rm", "--config", str(REPO / "configs" / "tests" / "tiny_rm.yaml"),
                 f"training.output_dir={out}", "training.report_to=none"])
    assert code == 0
    stats = json.loads((out / "reward_stats.json").read_text())
    # the recipe's split: 32 pairs, eval_fraction 0.25 -> round(8) held out with seed 0; 24 x 2 responses
    pairs = load_dataset("json", data_files=str(REPO / "calrl" / "data" / "tiny" / "pairs.jsonl"), split="train")
    train = pairs.train_test_split(test_size=8, seed=0, shuffle=True)["train"]
    assert stats["count"] == 48
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    # the tiny tokenizer has a chat template, so train-rm reads the pairs as conversations
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in train]
    scores = torch.cat([score_texts(model, tok, rows, c, batch_size=8)  # eval.probe_batch_size 8
                        for c in ("chosen", "rejected")]).double()
    # observed: the saved model's scores reproduce the stored mean to ~7e-4, not 1e-6 (open: see the report)
    assert stats["mean"] == pytest.approx(float(scores.mean()), abs=2e-3)
    assert stats["std"] == pytest.approx(float(scores.std()), rel=2e-2)  # unbiased, as documented
    config = json.loads((out / "config.json").read_text())
    assert (config["calrl_reward_mean"], config["calrl_reward_std"], config["calrl_reward_count"]) == \
        (stats["mean"], stats["std"], 48)
    card = (out / "README.md").read_text()
    assert "Reward statistics (training responses" in card
    assert "reward mean" in card and "reward std" in card and "48" in card
