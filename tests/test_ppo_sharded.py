"""PPO under FSDP and DeepSpeed ZeRO-3 on 2 CPU processes (gloo): rollouts, values, the LoRA reference (FSDP), the
epoch eval, checkpoints with every process's optimizer state, exact resume, and DDP's numbers
(tests/ppo_sharded_worker.py does the training; ZeRO-3 runs on DeepSpeed's CPU accelerator when it is installed).

accelerate builds its FSDP plugin only for GPU process groups, so the worker switches its CPU world to FSDP (FSDP2,
one unit per decoder layer, as configs/accelerate/fsdp.yaml wraps); everything the trainer does is a GPU run's.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("ppo_sharded_worker.py")
REPO = Path(__file__).resolve().parents[1]
# DDP all-reduces the gradients, FSDP reduce-scatters them: the same sums in another order. After two updates
# the weights agree to a few float32 ulps (2e-8 seen); 1e-6 leaves room for another CPU's kernels.
WEIGHT_TOLERANCE = 1e-6


# DeepSpeed ZeRO-3 reduce-scatters gradients in its own fp32 buckets and computes its own clipping norm: the same
# sums in another order again, but Adam divides each step by sqrt(v), so a parameter whose gradients are near zero
# turns a float32 rounding difference into a visible part of one step (1.1e-5 seen, on one MLP matrix; the logged
# metrics agree to 3e-7). 1e-4 is 3% of one step at this learning rate (3e-3); a wrong reduction (a sum instead of a
# mean, a lost shard) moves weights by whole steps.
ZERO3_WEIGHT_TOLERANCE = 1e-4
# DeepSpeed JIT-builds its CPU communication op at the first process-group start (2-4 minutes cold), then reuses it
EXTENSIONS = os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "calrl" / "torch_extensions"))


def launch(tmp_path: Path, mode: str, name: str, *flags: str) -> dict:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    slow = mode == "zero3"  # the first run builds DeepSpeed's op
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO),
           "CALRL_WORKER_TIMEOUT": "560" if slow else "280", "DS_ACCELERATOR": "cpu",
           "TORCH_EXTENSIONS_DIR": EXTENSIONS}
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(WORKER), mode,
                           str(tmp_path / name), *flags], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600 if slow else 320, check=False)
    if proc.returncode != 0:  # the whole stderr kept; a crash's Python stacks (faulthandler) shown first
        (tmp_path / f"{name}.stderr.txt").write_text(proc.stderr)
        crash = proc.stderr.find("Fatal Python error")
        raise AssertionError((proc.stderr[crash:crash + 6000] if crash >= 0 else "") + proc.stderr[-3000:])
    return json.loads((tmp_path / name / "result.json").read_text())


def train_metrics(result: dict) -> list[dict]:
    keys = ("objective/kl", "objective/scores", "loss/policy_avg", "loss/value_avg", "val/ratio")
    return [{k: log[k] for k in keys if k in log} for log in result["logs"] if "objective/kl" in log]


@pytest.mark.slow
def test_fsdp_trains_like_ddp_checkpoints_every_shard_and_resumes_exactly(tmp_path):
    ddp, fsdp = launch(tmp_path, "ddp", "ddp"), launch(tmp_path, "fsdp", "fsdp")
    assert ddp["distributed_type"].endswith("MULTI_CPU") and fsdp["distributed_type"].endswith("FSDP")
    assert ddp["world"] == fsdp["world"] == 2
    for a, b in zip(train_metrics(ddp), train_metrics(fsdp), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
    assert ddp["eval"] == fsdp["eval"] and fsdp["eval"][0]["eval/n"] == 8  # the epoch eval saw every item once
    w_ddp, w_fsdp = load_file(tmp_path / "ddp" / "final.safetensors"), load_file(tmp_path / "fsdp" / "final.safetensors")
    assert w_ddp.keys() == w_fsdp.keys()
    assert max(float((w_ddp[k] - w_fsdp[k]).abs().max()) for k in w_ddp) < WEIGHT_TOLERANCE

    # the checkpoint's optimizer state holds every parameter whole (both processes' shards)
    checkpoint = tmp_path / "fsdp" / "run" / "checkpoint-2"
    optim = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    saved = load_file(checkpoint / "model.safetensors")
    policy_states = {k[len("policy."):]: v for k, v in optim["state"].items() if k.startswith("policy.")}
    assert set(policy_states) == set(saved) - {"lm_head.weight"}  # the output head is tied to the embeddings
    for name, state in policy_states.items():
        assert state["exp_avg"].shape == saved[name].shape, name
    assert any(k.startswith("value_model.") for k in optim["state"])

    # stopped after the first update's checkpoint, then resumed: the same weights as straight through
    launch(tmp_path, "fsdp", "resumed", "--stop-after", "1")
    resumed = launch(tmp_path, "fsdp", "resumed", "--resume")
    w_resumed = load_file(tmp_path / "resumed" / "final.safetensors")
    assert all(torch.equal(w_resumed[k], w_fsdp[k]) for k in w_fsdp)
    assert train_metrics(resumed)[-1] == train_metrics(fsdp)[-1]


@pytest.mark.slow
def test_bounded_steps_under_fsdp_as_under_ddp(tmp_path):
    # unbounded, this run's steps measure 0.08-0.16 in the first update and about 0.01-0.013 in the second
    ddp, fsdp = (launch(tmp_path, mode, mode, "--max-step-kl", "0.03") for mode in ("ddp", "fsdp"))
    steps = [[log[k] for k in ("policy/step_kl_avg", "policy/step_kl_max", "policy/step_halvings_avg")]
             for log in ddp["logs"] if "policy/step_kl_max" in log]
    assert len(steps) == 2 and steps[0][1] > 0.03 and steps[0][2] > 0  # the first update's steps were halved
    assert all(0 < kept <= 0.03 for kept, _, _ in steps)  # and every step kept is within the bound
    for a, b in zip(ddp["logs"], fsdp["logs"], strict=True):
        for key in ("policy/step_kl_avg", "policy/step_kl_max", "policy/step_halvings_avg", "objective/kl"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key  # one decision on both processes
    w_ddp, w_fsdp = load_file(tmp_path / "ddp" / "final.safetensors"), load_file(tmp_path / "fsdp" / "final.safetensors")
    assert max(float((w_ddp[k] - w_fsdp[k]).abs().max()) for k in w_ddp) < WEIGHT_TOLERANCE


@pytest.mark.slow
def test_ddp_with_the_shared_prompt_prefix_trains_like_ddp_without_it(tmp_path):
    """share_prompt_prefix under DDP: the same updates up to float rounding (the prompts share their chat prefix)."""
    plain, shared = launch(tmp_path, "ddp", "plain"), launch(tmp_path, "ddp", "shared", "--share-prompt-prefix")
    assert shared["world"] == 2
    for a, b in zip(train_metrics(plain), train_metrics(shared), strict=True):
        assert a.keys() == b.keys() and a
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-5), key
    w_plain = load_file(tmp_path / "plain" / "final.safetensors")
    w_shared = load_file(tmp_path / "shared" / "final.safetensors")
    # rounding differences that Adam's division by sqrt(v) can enlarge, as under ZeRO-3; a lost prefix moves whole steps
    assert max(float((w_plain[k] - w_shared[k]).abs().max()) for k in w_plain) < ZERO3_WEIGHT_TOLERANCE


@pytest.mark.slow
def test_fsdp_lora_reference_is_the_policy_with_its_adapter_off(tmp_path):
    result = launch(tmp_path, "fsdp", "lora", "--lora")
    first = train_metrics(result)[0]
    assert result["distributed_type"].endswith("FSDP")
    assert abs(first["objective/kl"]) < 1e-6  # the adapter starts at zero: policy == reference at step one
    assert len(train_metrics(result)) == 2 and result["eval"][0]["eval/n"] == 8


@pytest.mark.slow
def test_zero3_trains_like_ddp_with_deepspeed_engines_and_resumes_exactly(tmp_path):
    pytest.importorskip("deepspeed", reason="DeepSpeed is optional: DS_BUILD_OPS=0 pip install -e '.[deepspeed]'")
    ddp, zero3 = launch(tmp_path, "ddp", "ddp"), launch(tmp_path, "zero3", "zero3")
    assert zero3["distributed_type"].endswith("DEEPSPEED") and zero3["world"] == 2
    # the policy-and-value model trains in a ZeRO-3 engine; the frozen reference and reward model are TRL's
    # prepare_deepspeed inference engines (sharded at stage 3), and the reward pipeline reads the RM's engine
    engines = zero3["engines"]
    for name in ("model", "ref_model", "reward_model"):
        assert engines[name] == {"engine": True, "stage": 3}, name
    assert engines["pipeline_reads_engine_module"]
    for a, b in zip(train_metrics(ddp), train_metrics(zero3), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
    assert ddp["eval"] == zero3["eval"] and zero3["eval"][0]["eval/n"] == 8  # the epoch eval saw every item once
    w_ddp, w_zero3 = (load_file(tmp_path / name / "final.safetensors") for name in ("ddp", "zero3"))
    assert w_ddp.keys() == w_zero3.keys()
    assert max(float((w_ddp[k] - w_zero3[k]).abs().max()) for k in w_ddp) < ZERO3_WEIGHT_TOLERANCE

    # the checkpoint: a full Hugging Face policy (gathered from the shards) and DeepSpeed's engine checkpoint with
    # every process's partition of the weights and optimizer state
    checkpoint = tmp_path / "zero3" / "run" / "checkpoint-2"
    saved = load_file(checkpoint / "model.safetensors")
    assert all(torch.equal(saved[k], w_zero3["policy." + k]) for k in saved)
    engine = sorted(p.name for p in (checkpoint / "deepspeed" / "engine").iterdir())
    assert [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)] == [n for n in engine if "optim" in n]
    assert not (checkpoint / "optimizer.pt").exists()

    # stopped after the first update's checkpoint, then resumed through the engine: the same weights
    launch(tmp_path, "zero3", "resumed", "--stop-after", "1")
    resumed = launch(tmp_path, "zero3", "resumed", "--resume")
    w_resumed = load_file(tmp_path / "resumed" / "final.safetensors")
    assert all(torch.equal(w_resumed[k], w_zero3[k]) for k in w_zero3)
    assert train_metrics(resumed)[-1] == train_metrics(zero3)[-1]


@pytest.mark.slow
def test_zero3_lora_reference_is_the_policy_with_its_adapter_off(tmp_path):
    pytest.importorskip("deepspeed", reason="DeepSpeed is optional: DS_BUILD_OPS=0 pip install -e '.[deepspeed]'")
    result = launch(tmp_path, "zero3", "lora", "--lora")
    first = train_metrics(result)[0]
    assert result["distributed_type"].endswith("DEEPSPEED")
    assert result["engines"]["ref_model"]["engine"] is False  # no separate reference: the adapter is switched off
    assert abs(first["objective/kl"]) < 1e-6  # the adapter starts at zero: policy == reference at step one
    assert len(train_metrics(result)) == 2 and result["eval"][0]["eval/n"] == 8
