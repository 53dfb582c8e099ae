"""PPO under FSDP on 2 CPU processes (gloo): rollouts, values, the LoRA reference, the epoch eval, checkpoints with
every process's optimizer state, exact resume, and DDP's numbers (tests/ppo_sharded_worker.py does the training).

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


def launch(tmp_path: Path, mode: str, name: str, *flags: str) -> dict:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO),
           "CALRL_WORKER_TIMEOUT": "280"}
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(WORKER), mode,
                           str(tmp_path / name), *flags], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=320, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
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
def test_fsdp_lora_reference_is_the_policy_with_its_adapter_off(tmp_path):
    result = launch(tmp_path, "fsdp", "lora", "--lora")
    first = train_metrics(result)[0]
    assert result["distributed_type"].endswith("FSDP")
    assert abs(first["objective/kl"]) < 1e-6  # the adapter starts at zero: policy == reference at step one
    assert len(train_metrics(result)) == 2 and result["eval"][0]["eval/n"] == 8
