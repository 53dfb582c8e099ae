"""The callback's eval on 2 CPU processes (torchrun, gloo) equals the eval on 1 process on the same items."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import TrainerState

from calrl.callbacks.calibration_eval import CalibrationEvalCallback, CalibrationEvalConfig
from calrl.eval.loading import load_predictions
from calrl.tiny.models import save_pretrained

sys.path.insert(0, str(Path(__file__).parent))
from callback_helpers import EXPECTED, ITEMS, build_scripted_policy

WORKER = Path(__file__).parent / "distributed_eval_worker.py"


def _same(a, b):
    """Equal JSON values, NaN equal to NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@pytest.mark.slow
def test_two_process_eval_matches_one_process(tmp_path):
    model, tokenizer = build_scripted_policy()
    model_dir = save_pretrained(model, tokenizer, tmp_path / "policy")
    out = tmp_path / "dist"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(WORKER), str(model_dir), str(out)],
        check=False, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert all("MULTI_CPU" in r["distributed_type"] for r in ranks)

    for limit in ("8", "7"):
        single = CalibrationEvalCallback(CalibrationEvalConfig(
            eval_items=ITEMS, eval_limit=int(limit), batch_size=2, max_new_tokens=12))
        state = TrainerState(epoch=1.0, global_step=5, is_world_process_zero=True)
        one = single.evaluate("epoch-1", SimpleNamespace(output_dir=str(tmp_path / f"single-{limit}")), state,
                              model=model, processing_class=tokenizer)
        for rank in ranks:
            two = rank["evals"][limit]
            # every item exactly once, in the items' order, with the same responses as one process
            assert [r["id"] for r in two["records"]] == [it.id for it in ITEMS[: int(limit)]]
            assert two["records"] == [r.to_json() for r in one.records]
            assert _same(two["metrics"], one.metrics)
            assert _same(two["logged"], one.logged)
        # only rank 0 wrote the eval files, and they hold every item once
        folder = out / f"limit-{limit}" / "calibration_eval" / "epoch-1"
        saved = load_predictions(folder / "predictions.jsonl")
        assert [r.id for r in saved] == [it.id for it in ITEMS[: int(limit)]]
    full = ranks[0]["evals"]["8"]["metrics"]
    assert full["ece"] == pytest.approx(EXPECTED["ece"]) and full["n"] == 8
