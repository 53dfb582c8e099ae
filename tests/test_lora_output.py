"""A LoRA run's output folder is a PEFT adapter folder that loads on its own (issue 20, point 3): PEFT's
``AutoPeftModelForCausalLM`` from any working directory, and calrl's loader wherever the run was moved."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import torch

from calrl.generation.adapters import split_adapter_folder
from calrl.runners.models import finish_adapter_folder
from calrl.runners.output import final_stage, publish_final
from calrl.tiny.models import build_tiny_causal_lm, build_word_tokenizer


def _tiny_lora_run(out: Path):
    """Save a tiny-base LoRA adapter the way the runner does: into the staging folder, then renamed."""
    from peft import LoraConfig, get_peft_model

    tokenizer = build_word_tokenizer(["what is the capital of france", "paris confidence"])
    model = get_peft_model(build_tiny_causal_lm(tokenizer, seed=3),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():  # a trained-looking adapter (PEFT starts lora_B at zero)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(generator=torch.Generator().manual_seed(1))
    out.mkdir(parents=True)
    stage = final_stage(out)
    model.save_pretrained(str(stage))
    tokenizer.save_pretrained(str(stage))
    ids = tokenizer("what is the capital of france", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    trainer = SimpleNamespace(model=model, accelerator=SimpleNamespace(unwrap_model=lambda m: m))
    finish_adapter_folder(trainer, str(stage), "tiny", tokenizer, final_dir=str(out))
    publish_final(stage, out)
    return ids, expected


def test_peft_loads_a_tiny_base_lora_run_from_another_folder(tmp_path):
    from peft import AutoPeftModelForCausalLM

    run = tmp_path / "work" / "runs" / "lora"
    ids, expected = _tiny_lora_run(run)
    config = json.loads((run / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]) == run.resolve() / "base_model"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    model = AutoPeftModelForCausalLM.from_pretrained(str(run))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, expected)
    # a relative path to the run works too, from its parent
    os.chdir(run.parent)
    assert AutoPeftModelForCausalLM.from_pretrained("lora") is not None


def test_a_moved_run_still_finds_the_base_it_carries(tmp_path):
    from calrl.generation.checkpoint import load_model_for_eval

    run = tmp_path / "runs" / "lora"
    ids, expected = _tiny_lora_run(run)
    moved = tmp_path / "archive" / "lora"
    moved.parent.mkdir()
    shutil.move(str(run), str(moved))
    assert split_adapter_folder(str(moved)) == (str(moved / "base_model"), str(moved))
    model, _ = load_model_for_eval(str(moved), device="cpu", merge_adapter=False)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, expected)


def test_a_checkpoint_adapter_takes_the_runs_base(tmp_path):
    """PEFT saves a checkpoint's adapter of an in-memory base naming no base: calrl reads the run's base_model."""
    run = tmp_path / "runs" / "lora"
    _tiny_lora_run(run)
    checkpoint = run / "checkpoint-4"
    checkpoint.mkdir()
    config = json.loads((run / "adapter_config.json").read_text())
    (checkpoint / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": None}))
    shutil.copy(run / "adapter_model.safetensors", checkpoint)
    assert split_adapter_folder(str(checkpoint)) == (str(run / "base_model"), str(checkpoint))
