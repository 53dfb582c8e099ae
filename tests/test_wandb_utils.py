import math

import wandb

from calrl.callbacks.wandb_utils import find_offline_runs, read_offline_history


def test_offline_history_reads_back_nonfinite_values_as_floats(tmp_path):
    run = wandb.init(project="calrl-test", dir=str(tmp_path), mode="offline")
    run.log({"eval/ece": float("nan"), "eval/n": 3, "eval/x": float("inf")})
    run.log({"eval/ece": 0.25, "eval/n": 4, "eval/x": -float("inf")})
    run.finish()
    rows = read_offline_history(find_offline_runs(tmp_path / "wandb")[0])
    assert len(rows) == 2
    assert math.isnan(rows[0]["eval/ece"]) and rows[0]["eval/x"] == math.inf and rows[0]["eval/n"] == 3
    assert rows[1]["eval/ece"] == 0.25 and rows[1]["eval/x"] == -math.inf
