"""``calrl train-* --dry-run``: the memory per process of every model (from configs alone), and every problem
of the run listed at once (model paths included).

The arithmetic is checked against numbers worked by hand from the formulas in ``calrl/runners/memory.py`` (which
follow DeepSpeed's ``estimate_zero2/3_model_states_mem_needs`` at ZeRO-2 and ZeRO-3); parameter counts against
counts worked by hand from the architecture and against real tiny models saved with their weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calrl.cli.main import main
from calrl.runners.memory import (
    GIB,
    ModelSize,
    Strategy,
    frozen_states,
    model_size,
    read_accelerate_config,
    read_config,
    strategy_from_environment,
    trained_states,
)

REPO = Path(__file__).resolve().parents[1]
TINY_PPO = REPO / "configs" / "tests" / "tiny_ppo.yaml"
B = 10**9


def size(params: int, largest: int = 0, block: int = 0, dtype: str = "bfloat16") -> ModelSize:
    return ModelSize(params=params, largest_layer=largest, largest_block=block, dtype=dtype, architecture="x")


# ------------------------------------------------------------------------------------- hand-worked arithmetic
def test_ddp_keeps_the_stored_dtype_for_weights_gradients_and_both_adam_moments():
    s = trained_states(size(B), Strategy(kind="ddp", processes=8, mixed_precision="bf16"))
    assert (s.params, s.grads, s.optimizer, s.host) == (2 * B, 2 * B, 4 * B, 0)  # 2 + 2 + 2 x 2 bytes
    s = trained_states(size(B, dtype="float32"), Strategy(mixed_precision="bf16"))
    assert s.device == 16 * B  # fp32 weights: 4 + 4 + 8, autocast keeps them


def test_the_issue_s_8b_ppo_under_plain_ddp_needs_about_155_gb_per_gpu():
    """Policy and value model trained, reference and reward model frozen, all bf16, under DDP: 8 bytes per
    trained parameter and 2 per frozen one: 8 x (8.03 + 7.50) + 2 x (8.03 + 7.50) = 155.3 GB."""
    policy, rm = size(8_030_261_248), size(7_504_928_768)
    ddp = Strategy(kind="ddp", processes=8, mixed_precision="bf16")
    total = sum(trained_states(m, ddp).device for m in (policy, rm)) + sum(
        frozen_states(m, ddp).device for m in (policy, rm))
    assert total == 10 * (8_030_261_248 + 7_504_928_768)
    assert round(total / 1e9, 1) == 155.4


def test_zero2_matches_deepspeed_s_estimator():
    """estimate_zero2_model_states_mem_needs: GPU 4P + 16P/N; offloaded: GPU 2P, host P max(4N, 16) 1.5."""
    z2 = Strategy(kind="deepspeed", zero_stage=2, processes=4, mixed_precision="bf16")
    s = trained_states(size(B), z2)
    assert (s.params, s.grads, s.optimizer) == (2 * B, 2 * B + B, 3 * B)  # 2P; 2P + 4P/4; 12P/4
    assert s.device == 4 * B + 16 * B / 4
    off = trained_states(size(B), Strategy(kind="deepspeed", zero_stage=2, processes=4, mixed_precision="bf16",
                                           offload_optimizer=True))
    assert (off.device, off.host) == (2 * B, B * 16 * 1.5)
    off8 = trained_states(size(B), Strategy(kind="deepspeed", zero_stage=2, processes=8, mixed_precision="bf16",
                                            offload_optimizer=True))
    assert off8.host == B * 32 * 1.5  # max(4 x 8, 16)
    assert trained_states(size(B), Strategy(kind="deepspeed", zero_stage=1, processes=4,
                                            mixed_precision="bf16")).device == 8 * B  # stage 1 and 2 share it
    assert trained_states(size(B), Strategy(kind="deepspeed", zero_stage=0, processes=4,
                                            mixed_precision="bf16")).device == 20 * B


def test_zero3_matches_deepspeed_s_estimator():
    """estimate_zero3_model_states_mem_needs: 4L + 18P/N; optimiser offloaded 4L + 2P/N, host 16P/M x 1.5;
    parameters too: 4L, host 18P/M x 1.5 (zero_init)."""
    big, layer = 8 * B, B // 2
    base = {"kind": "deepspeed", "zero_stage": 3, "processes": 8, "mixed_precision": "bf16", "zero_init": True}
    assert trained_states(size(big, layer), Strategy(**base)).device == 4 * layer + 18 * big / 8
    off = trained_states(size(big, layer), Strategy(**base, offload_optimizer=True))
    assert (off.device, off.host) == (4 * layer + 2 * big / 8, big * 16 * 1.5)
    both = trained_states(size(big, layer), Strategy(**base, offload_optimizer=True, offload_params=True))
    assert (both.device, both.host) == (4 * layer, big * 18 * 1.5)


def test_fsdp_holds_trained_weights_in_fp32_under_mixed_precision_and_shards_them():
    full = trained_states(size(B), Strategy(kind="fsdp", processes=4, mixed_precision="bf16"))
    assert (full.params, full.grads, full.optimizer) == (B, B, 2 * B)  # 16 bytes / 4 processes
    grad_op = trained_states(size(B), Strategy(kind="fsdp", processes=4, mixed_precision="bf16",
                                               fsdp_sharding="SHARD_GRAD_OP"))
    assert grad_op.params == B + 2 * B  # the 16-bit parameters stay gathered
    hybrid = trained_states(size(B), Strategy(kind="fsdp", processes=8, machines=2, mixed_precision="bf16",
                                              fsdp_sharding="HYBRID_SHARD"))
    assert hybrid.device == 16 * B / 4


def test_frozen_models_stay_whole_except_trl_s_reference_under_zero3():
    z3 = Strategy(kind="deepspeed", zero_stage=3, processes=8, mixed_precision="bf16")
    assert frozen_states(size(B), z3).device == 2 * B
    assert frozen_states(size(B), z3, sharded_under_zero3=True).device == 2 * B / 8


def test_ppo_s_frozen_reference_and_reward_model_count_sharded_under_zero3():
    """calrl's PPO wraps both with TRL's prepare_deepspeed (tests/test_ppo_sharded.py runs it); the trained ones
    and a LoRA policy's absent reference are unaffected."""
    from calrl.runners.preflight import model_sources
    from calrl.runners.recipe import load_recipe

    recipe = load_recipe(REPO / "configs" / "paper" / "llama3-8b_ppo_c_difference.yaml", check_hardware=False)
    sharded = {use.role: use.sharded_under_zero3 for use in model_sources(recipe)}
    assert sharded == {"policy": False, "value model": False, "reference": True, "reward model": True}


# ------------------------------------------------------------------------------------------- model sizes
def _llama_config(folder: Path, *, tied: bool, vocab: int = 100, hidden: int = 32, inter: int = 48, layers: int = 2,
                  heads: int = 4, kv: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "tie_word_embeddings": tied, "dtype": "bfloat16"}))
    return folder


def test_parameter_count_from_a_config_only_folder_matches_the_hand_count(tmp_path):
    v, h, i, n, heads, kv = 100, 32, 48, 2, 4, 2
    kv_dim = h // heads * kv
    layer = h * h + 2 * h * kv_dim + h * h + 3 * h * i + 2 * h  # q, k, v, o; gate, up, down; two norms
    body = v * h + n * layer + h  # embeddings, layers, final norm
    untied = model_size(read_config(str(_llama_config(tmp_path / "untied", tied=False))), "causal_lm")
    tied = model_size(read_config(str(_llama_config(tmp_path / "tied", tied=True) / "config.json")), "causal_lm")
    scorer = model_size(read_config(str(tmp_path / "untied")), "sequence_classifier")
    assert (untied.params, tied.params, scorer.params) == (body + v * h, body, body + h)
    assert untied.dtype == "bfloat16" and untied.weight_bytes == 2
    assert untied.largest_layer == v * h  # the embedding (or the untied head) is the largest module
    assert model_size(read_config(str(tmp_path / "tied")), "causal_lm", dtype="float32").weight_bytes == 4


def test_parameter_count_matches_a_tiny_model_saved_with_its_weights(tmp_path):
    from calrl.tiny.models import (
        build_tiny_causal_lm,
        build_tiny_reward_model,
        build_word_tokenizer,
        save_pretrained,
    )

    tok = build_word_tokenizer(["a b c d e"])
    lm, rm = build_tiny_causal_lm(tok), build_tiny_reward_model(tok)
    save_pretrained(lm, tok, tmp_path / "lm")
    save_pretrained(rm, tok, tmp_path / "rm")
    assert model_size(read_config(str(tmp_path / "lm")), "causal_lm").params == sum(p.numel() for p in lm.parameters())
    assert model_size(read_config(str(tmp_path / "rm")), "sequence_classifier").params == sum(
        p.numel() for p in rm.parameters())


# ------------------------------------------------------------------------------------------ launch strategy
def test_shipped_accelerate_configs_are_read_as_their_strategy():
    acc = REPO / "configs" / "accelerate"
    offload = read_accelerate_config(acc / "deepspeed_zero2_offload.yaml")
    assert (offload.kind, offload.zero_stage, offload.offload_optimizer, offload.processes,
            offload.mixed_precision) == ("deepspeed", 2, True, 8, "bf16")
    assert read_accelerate_config(acc / "deepspeed_zero3.yaml").zero_stage == 3
    assert read_accelerate_config(acc / "fsdp.yaml").fsdp_sharding == "FULL_SHARD"
    assert read_accelerate_config(acc / "multi_gpu.yaml").kind == "ddp"
    env = strategy_from_environment({"ACCELERATE_MIXED_PRECISION": "bf16", "WORLD_SIZE": "4",
                                     "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
                                     "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "cpu"})
    assert (env.kind, env.zero_stage, env.offload_optimizer, env.processes) == ("deepspeed", 3, True, 4)
    assert strategy_from_environment({}) is None


def test_every_paper_recipe_names_the_reference_s_launch():
    from calrl.runners.recipe import load_recipe

    for path in sorted((REPO / "configs" / "paper").glob("*.yaml")):
        recipe = load_recipe(path, check_hardware=False)
        expected = "deepspeed_zero2.yaml" if recipe.method == "rm" else "deepspeed_zero2_offload.yaml"
        assert recipe.launch.accelerate_config == f"configs/accelerate/{expected}", path.name


# ----------------------------------------------------------------------------------------------- the CLI
@pytest.fixture
def model_folders(tmp_path):
    """A tiny policy and reward model saved with weights, and a config-only folder of a bigger policy."""
    from calrl.tiny.models import (
        build_tiny_causal_lm,
        build_tiny_reward_model,
        build_word_tokenizer,
        save_pretrained,
    )

    tok = build_word_tokenizer(["what is one plus one ? two"])
    save_pretrained(build_tiny_causal_lm(tok), tok, tmp_path / "policy")
    save_pretrained(build_tiny_reward_model(tok), tok, tmp_path / "rm")
    _llama_config(tmp_path / "big", tied=False, vocab=32000, hidden=1024, inter=2816, layers=8, heads=8, kv=8)
    return tmp_path


def test_dry_run_prints_the_memory_of_every_model_under_the_recipe_s_launch(model_folders, capsys):
    t = model_folders
    argv = ["train-ppo", "--config", str(TINY_PPO), "--dry-run", f"model.policy={t / 'policy'}",
            f"model.reward_model={t / 'rm'}", "model.value_model=null", "model.dtype=bfloat16",
            "launch.accelerate_config=" + str(REPO / "configs" / "accelerate" / "deepspeed_zero2.yaml"),
            f"training.output_dir={t / 'out'}", "--num-processes", "4", "--gpu-memory", "80"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "DeepSpeed ZeRO-2, bf16 mixed precision; 4 processes" in out
    for role in ("policy", "value model", "reference", "reward model"):
        assert f"\n  {role} " in out
    assert ": ok (ppo," in out
    # the big policy from its config alone: --model-config gives it to a policy named by a hub id
    argv[5] = "model.policy=someone/not-downloadable"
    code = main([*argv, "--model-config", f"policy={t / 'big' / 'config.json'}"])
    captured = capsys.readouterr()
    assert code == 2  # the hub id is not in the cache here: a problem, but the estimate is printed first
    big = model_size(read_config(str(t / "big")), "causal_lm", dtype="bfloat16")
    policy_line = next(line for line in captured.out.splitlines() if line.startswith("  policy "))
    expected = (4 * big.params + 16 * big.params / 4) / GIB  # ZeRO-2 on 4 processes
    assert f"{expected:.1f} GiB" in policy_line
    assert "someone/not-downloadable" in captured.err and "not in the Hugging Face cache" in captured.err


def test_dry_run_warns_when_the_model_states_do_not_fit(model_folders, capsys):
    t = model_folders
    code = main(["train-rm", "--config", str(REPO / "configs" / "tests" / "tiny_rm.yaml"), "--dry-run",
                 f"model.reward_model={t / 'rm'}", f"training.output_dir={t / 'out'}", "--gpu-memory", "0.00001"])
    captured = capsys.readouterr()
    assert code == 0
    assert "warning: will not fit:" in captured.err and "of model states" in captured.err
    # a CPU recipe without --gpu-memory: its processes together, against this machine's memory
    code = main(["train-rm", "--config", str(REPO / "configs" / "tests" / "tiny_rm.yaml"), "--dry-run",
                 f"model.reward_model={t / 'rm'}", f"training.output_dir={t / 'out'}", "training.use_cpu=true"])
    out = capsys.readouterr().out
    assert code == 0 and "on the CPU:" in out and "device: this machine's memory" in out


def test_dry_run_lists_every_problem_at_once(model_folders, capsys, no_models):
    t = model_folders
    (t / "no_weights").mkdir()
    (t / "no_weights" / "config.json").write_text((t / "policy" / "config.json").read_text())
    (t / "a_file").write_text("not a folder\n")
    code = main(["train-ppo", "--config", str(TINY_PPO), "--dry-run", f"model.policy={t / 'no_weights'}",
                 f"model.reward_model={t / 'missing_rm'}", f"model.value_model={t / 'empty'}",
                 f"model.ref={t / 'a_file'}", f"data.train={t / 'missing.jsonl'}",
                 f"eval.heldout={t / 'missing_eval.jsonl'}", f"training.output_dir={t / 'a_file' / 'out'}"])
    (t / "empty").mkdir()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    problems = [line for line in err if ": error: " in line]
    expected = ["a_file, a file, not a folder", "model.policy' (policy): '" + str(t / "no_weights") + "' holds no weights",
                "model.value_model' (value model): '" + str(t / "empty") + "' does not exist",
                "model.ref' (reference): '" + str(t / "a_file") + "' is a file",
                "model.reward_model' (reward model): '" + str(t / "missing_rm") + "' does not exist",
                "missing.jsonl", "missing_eval.jsonl"]
    assert len(problems) == len(expected), err
    for problem, pattern in zip(problems, expected, strict=True):
        assert pattern in problem, (pattern, problem)


def test_a_real_run_refuses_a_missing_reward_model_before_loading_any(tmp_path, capsys, no_models):
    code = main(["train-ppo", "--config", str(TINY_PPO), f"model.reward_model={tmp_path / 'nope'}",
                 "training.report_to=none", f"training.output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "model.reward_model' (reward model)" in err[0] and "does not exist" in err[0]
