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


def test_offline_run_reads_summary_config_and_tables(tmp_path):
    import pytest

    from calrl.callbacks.wandb_utils import read_offline_run, read_offline_table
    from calrl.errors import InputError

    run = wandb.init(project="calrl-test", dir=str(tmp_path), mode="offline", config={"lr": 0.1})
    run.log({"t": wandb.Table(columns=["label", "x"], data=[["a", 1.0], ["b", float("nan")]]), "s": 1})
    run.summary.update({"best": 0.5, "gone": 1, "nan": float("nan")})
    run.summary.update({"best": 0.25})
    del run.summary["gone"]
    run.config.update({"extra": "yes"})
    run.finish()
    folder = find_offline_runs(tmp_path)[0]
    for where in (folder, next(folder.glob("run-*.wandb")), tmp_path / "wandb"):
        offline = read_offline_run(where)
        assert offline.folder == folder
        assert offline.summary["best"] == 0.25 and "gone" not in offline.summary
        assert offline.summary["nan"] is None and offline.summary["s"] == 1  # wandb writes a summary NaN as null
        assert offline.config["lr"] == 0.1 and offline.config["extra"] == "yes"
    rows = read_offline_table(offline, offline.history[0], "t")
    assert rows[0] == {"label": "a", "x": 1.0} and rows[1]["label"] == "b" and math.isnan(rows[1]["x"])
    with pytest.raises(InputError, match="no table"):
        read_offline_table(offline, offline.history[0], "s")
