"""Elicitation prompts, batched generation and checkpoint loading on a tiny locally built model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from calrl.data.heldout import EvalItem, load_eval_items
from calrl.errors import InputError
from calrl.generation.checkpoint import load_model_for_eval, predict_from_checkpoint
from calrl.generation.generate import generate_predictions
from calrl.generation.prompts import ElicitationPrompt, distractor_hint
from calrl.tiny.models import build_tiny_causal_lm, build_word_tokenizer, save_pretrained

FIXTURES = Path(__file__).parent / "fixtures" / "heldout"
GSM8K = f"gsm8k:{FIXTURES / 'gsm8k' / 'test.jsonl'}"
SCIQ = f"sciq:{FIXTURES / 'sciq' / 'test.jsonl'}"


def eval_items() -> list[EvalItem]:
    return load_eval_items(GSM8K) + load_eval_items(SCIQ)


def build_model(seed: int = 0):
    """A tiny Qwen2 with an untied random output layer, so greedy decoding emits varied words."""
    prompts = [ElicitationPrompt(scale=s, reasons_first=r) for s in ("0-10", "percent", "unit") for r in (0, 1)]
    texts = [i.question for i in eval_items()] + [p.instruction() for p in prompts] + ["options question response"]
    tok = build_word_tokenizer(texts)
    model = build_tiny_causal_lm(tok, seed=seed, hidden_size=32, num_layers=2, num_heads=2, max_positions=1024)
    model.config.tie_word_embeddings = False
    generator = torch.Generator().manual_seed(seed + 1)
    model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape, generator=generator))
    return model, tok


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    model, tok = build_model()
    return save_pretrained(model, tok, tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_model_for_eval(str(model_dir), device="cpu")


# ---------------------------------------------------------------------------------------------- prompts


def test_messages_carry_the_instruction_question_and_lettered_options():
    item = load_eval_items(SCIQ)[0]
    messages = ElicitationPrompt().build_messages(item)
    assert [m["role"] for m in messages] == ["system", "user"]
    system, user = messages[0]["content"], messages[1]["content"]
    assert "Confidence: N" in system and "0 to 10" in system and "I don't know" in system
    assert user.startswith(f"Question: {item.question}")
    for letter, choice in zip("ABCD", item.choices, strict=True):
        assert f"\n{letter}. {choice}" in user
    assert "Confidence: N%" in ElicitationPrompt(scale="percent").instruction()
    assert "between 0 and 1" in ElicitationPrompt(scale="unit").instruction()
    assert "reasoning" in ElicitationPrompt(reasons_first=True).instruction()
    assert "reasoning" not in ElicitationPrompt().instruction()
    assert ElicitationPrompt(system_prompt="Be brief.").build_messages(item)[0]["content"] == "Be brief."
    with pytest.raises(InputError, match="scale"):
        ElicitationPrompt(scale="0-5")


def test_distractor_names_a_wrong_option_or_a_wrong_number():
    for item in load_eval_items(SCIQ):
        hint = distractor_hint(item)
        assert hint is not None and item.reference[1] not in hint and f"({item.reference[0]})" not in hint
        assert distractor_hint(item) == hint  # seeded by the id
        user = ElicitationPrompt(distractor=True).build_messages(item)[1]["content"]
        assert f"I think the answer might be {hint}, but I'm not sure." in user
    math = load_eval_items(GSM8K)[0]
    assert distractor_hint(math) in {"16", "17", "19", "20"}
    open_item = EvalItem("x", "Who wrote Hamlet?", ["Shakespeare"])
    assert distractor_hint(open_item) is None
    assert "I think" not in ElicitationPrompt(distractor=True).build_messages(open_item)[1]["content"]


def test_render_uses_the_chat_template_or_a_plain_fallback(loaded):
    _, tok = loaded
    item = load_eval_items(GSM8K)[0]
    prompt = ElicitationPrompt()
    text = prompt.render(tok, item)
    assert text.startswith("<|system|>") and text.endswith("<|assistant|>")
    template = tok.chat_template
    try:
        tok.chat_template = None
        plain = prompt.render(tok, item)
        tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                             "{{ raise_exception('System role not supported') }}{% endif %}"
                             "<|user|> {{ m['content'] }} <|end|> {% endfor %}<|assistant|>")
        merged = prompt.render(tok, item)
    finally:
        tok.chat_template = template
    assert plain.startswith(prompt.instruction()) and plain.endswith("Response:") and item.question in plain
    assert merged.startswith("<|user|> " + prompt.instruction()) and item.question in merged


# ------------------------------------------------------------------------------------------- generation


def test_records_are_complete_and_in_item_order(loaded):
    model, tok = loaded
    items = eval_items()
    records = generate_predictions(model, tok, items, prompt=ElicitationPrompt(), batch_size=4,
                                   max_new_tokens=8, show_progress=False)
    assert [r.id for r in records] == [i.id for i in items]
    for record, item in zip(records, items, strict=True):
        assert record.question == item.question and record.reference == item.reference
        assert record.choices == item.choices and record.slice == item.slice
        assert isinstance(record.response, str) and record.samples is None
        assert record.to_json()["id"] == item.id
    assert sum(bool(r.response) for r in records) >= len(records) // 2  # the model says something


def test_batched_equals_unbatched_greedy(loaded):
    model, tok = loaded
    items = eval_items()
    prompt = ElicitationPrompt(scale="percent", reasons_first=True)
    one = generate_predictions(model, tok, items, prompt=prompt, batch_size=1, max_new_tokens=10,
                               show_progress=False)
    many = generate_predictions(model, tok, items, prompt=prompt, batch_size=4, max_new_tokens=10,
                                show_progress=False)
    shuffled = generate_predictions(model, tok, items[::-1], prompt=prompt, batch_size=3, max_new_tokens=10,
                                    show_progress=False)
    # Exact: greedy words, not floats. The CPU's code path moves the logits by ~1e-6; the smallest gap between
    # the top two logits on these greedy steps is 3.7e-3 under every path tried (default, MKL_CBWR=COMPATIBLE,
    # ATEN_CPU_CAPABILITY=default), so no word can flip.
    assert [r.response for r in one] == [r.response for r in many]
    assert [r.response for r in shuffled] == [r.response for r in one][::-1]
    assert len({r.response for r in one}) > 1


def test_num_samples_draws_that_many_answers(loaded):
    model, tok = loaded
    items = eval_items()[:5]
    torch.manual_seed(0)
    records = generate_predictions(model, tok, items, prompt=ElicitationPrompt(), batch_size=2,
                                   max_new_tokens=6, num_samples=3, temperature=1.5, show_progress=False)
    greedy = generate_predictions(model, tok, items, prompt=ElicitationPrompt(), batch_size=2,
                                  max_new_tokens=6, show_progress=False)
    assert [r.response for r in records] == [r.response for r in greedy]  # samples leave the answer greedy
    assert all(len(r.samples) == 3 and all(isinstance(s, str) for s in r.samples) for r in records)
    assert len({s for r in records for s in r.samples}) > 3  # sampled, not copies of one answer
    with pytest.raises(InputError, match="temperature"):
        generate_predictions(model, tok, items, prompt=ElicitationPrompt(), num_samples=2, temperature=0.0)


def test_generation_stops_at_eos_and_decodes_only_new_tokens(loaded):
    model, tok = loaded
    item = eval_items()[0]
    prompt = ElicitationPrompt()
    enc = tok([prompt.render(tok, item)], return_tensors="pt")
    raw = model.generate(**enc, max_new_tokens=10, do_sample=False)[0, enc["input_ids"].shape[1]:].tolist()
    stop = raw[3]
    cut = raw.index(stop)
    saved = model.generation_config.eos_token_id
    try:
        model.generation_config.eos_token_id = stop
        record = generate_predictions(model, tok, [item], prompt=prompt, max_new_tokens=10,
                                      show_progress=False)[0]
    finally:
        model.generation_config.eos_token_id = saved
    assert record.response == tok.decode(raw[:cut], skip_special_tokens=True).strip()
    assert item.question.lower()[:20] not in record.response


# ------------------------------------------------------------------------------------------ checkpoints


def test_load_model_for_eval_round_trips_the_tokenizer(model_dir, loaded):
    model, tok = loaded
    assert tok.padding_side == "left" and tok.pad_token == "<pad>"
    assert tok.decode(tok("confidence: 8")["input_ids"]) == "confidence: 8"
    assert not model.training and model.dtype == torch.float32 and model.device.type == "cpu"


def test_pad_token_falls_back_to_eos(tmp_path):
    model, tok = build_model()
    tok.pad_token = None
    save_pretrained(model, tok, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "tokenizer_config.json").read_text())
    assert config.get("pad_token") is None
    _, loaded_tok = load_model_for_eval(str(tmp_path / "m"), device="cpu")
    assert loaded_tok.pad_token == loaded_tok.eos_token and loaded_tok.padding_side == "left"


def test_lora_adapter_is_applied(tmp_path, model_dir, loaded):
    from peft import LoraConfig, get_peft_model

    base, tok = build_model()
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # lora_B starts at zero; give the adapter a real effect
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()

    enc = tok(["question : how many eggs ?"], return_tensors="pt")
    with torch.no_grad():
        expected = peft_model(**enc).logits
    merged, _ = load_model_for_eval(str(model_dir), adapter=str(tmp_path / "adapter"), device="cpu")
    kept, _ = load_model_for_eval(str(model_dir), adapter=str(tmp_path / "adapter"), device="cpu",
                                  merge_adapter=False)
    plain, _ = loaded
    with torch.no_grad():
        assert torch.allclose(merged(**enc).logits, expected, atol=1e-4)
        assert torch.allclose(kept(**enc).logits, expected, atol=1e-4)
        assert not torch.allclose(plain(**enc).logits, expected, atol=1e-2)
    records = predict_from_checkpoint(model=str(model_dir), adapter=str(tmp_path / "adapter"), dataset=GSM8K,
                                      limit=2, prompt="0-10", max_new_tokens=5)
    assert [r.id for r in records] == ["gsm8k-test-0", "gsm8k-test-1"]


def test_predict_from_checkpoint_end_to_end(model_dir, loaded):
    records = predict_from_checkpoint(model=str(model_dir), dataset=SCIQ, limit=3,
                                      prompt=ElicitationPrompt(scale="unit"), batch_size=2, max_new_tokens=6,
                                      num_samples=2, temperature=1.0)
    assert [r.id for r in records] == ["sciq-test-0", "sciq-test-1", "sciq-test-2"]
    assert all(r.choices and len(r.samples) == 2 for r in records)
    model, tok = loaded
    direct = generate_predictions(model, tok, load_eval_items(SCIQ, limit=3), prompt=ElicitationPrompt(scale="unit"),
                                  max_new_tokens=6, show_progress=False)
    assert [r.response for r in records] == [r.response for r in direct]


def test_bad_checkpoints_are_one_line_input_errors(tmp_path, model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="model folder not found"):
        load_model_for_eval(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        load_model_for_eval(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="adapter folder not found"):
        load_model_for_eval(str(model_dir), adapter=str(tmp_path / "nope"))
    with pytest.raises(InputError, match="not a PEFT adapter"):
        load_model_for_eval(str(model_dir), adapter=str(tmp_path / "empty"))
    with pytest.raises(InputError) as err:
        load_model_for_eval("calrl-nonexistent-org/tiny-model")
    assert "\n" not in str(err.value) and "hub" in str(err.value)
    with pytest.raises(InputError, match="dtype"):
        load_model_for_eval(str(model_dir), dtype="int3")
    with pytest.raises(InputError, match="neither an existing file"):  # dataset checked before the model
        predict_from_checkpoint(model=str(tmp_path / "missing"), dataset="nope", prompt="0-10")


# ------------------------------------------------------------------------------------------ distributed

_WORKER = """
import json, sys
import torch
from accelerate import Accelerator
from calrl.data.heldout import load_eval_items
from calrl.generation.checkpoint import load_model_for_eval
import calrl.generation.generate as gen
from calrl.generation.generate import generate_predictions
from calrl.generation.prompts import ElicitationPrompt
torch.set_num_threads(1)
local_counts = []
original = gen._generate_local
def counting(model, tok, items, **kwargs):
    local_counts.append(len(items))
    return original(model, tok, items, **kwargs)
gen._generate_local = counting
acc = Accelerator(cpu=True)
model, tok = load_model_for_eval(sys.argv[1], device="cpu")
items = load_eval_items(sys.argv[2]) + load_eval_items(sys.argv[3])
records = generate_predictions(model, tok, items, prompt=ElicitationPrompt(), batch_size=2, max_new_tokens=6,
                               accelerator=acc, show_progress=False)
with open(f"{sys.argv[4]}/rank{acc.process_index}.json", "w") as f:
    json.dump({"records": [[r.id, r.response] for r in records], "local": local_counts}, f)
acc.wait_for_everyone()
torch.distributed.destroy_process_group()  # a gloo group left open can abort the process at exit
"""


@pytest.mark.slow
def test_accelerator_shards_items_and_gathers_each_once(tmp_path, model_dir, loaded):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(model_dir), GSM8K, SCIQ, str(tmp_path)]
    done = subprocess.run(cmd, check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    model, tok = loaded
    items = eval_items()
    single = generate_predictions(model, tok, items, prompt=ElicitationPrompt(), batch_size=2, max_new_tokens=6,
                                  show_progress=False)
    expected = [[r.id, r.response] for r in single]
    outputs = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(out["records"] == expected for out in outputs)  # every rank gets all records, in order
    shards = [out["local"] for out in outputs]
    assert shards == [[6], [5]]  # 11 items split between the two processes, each generated once
