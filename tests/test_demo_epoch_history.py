"""The demo reads each run's per-epoch calibration evals from the files the training callback wrote
(``<output_dir>/calibration_eval/epoch-<k>/metrics.json``), not from the W&B log; tested on fixture folders
made here (the demo's end-to-end run is in ``test_demo.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from calrl.callbacks.eval_files import read_eval_history, write_eval_folder
from calrl.data.records import PredictionRecord
from calrl.demo.recipes import METHOD_NAMES, POLICIES, RL_POLICIES
from calrl.demo.report import epoch_table, plot_ece_per_epoch
from calrl.demo.summary import ece_history
from calrl.errors import InputError
from calrl.eval.resolving import resolve_records
from calrl.eval.runner import compute_metrics


def _metrics(scripted: list[tuple[str, float | None, bool]]) -> tuple[dict, list[PredictionRecord]]:
    """Real metrics of hand-made answers: (response, given confidence, correct)."""
    records = [PredictionRecord(id=f"q{i}", response=resp, confidence=conf, correct=ok, reference=["a"])
               for i, (resp, conf, ok) in enumerate(scripted)]
    return compute_metrics(resolve_records(records), n_bins=5, n_boot=0), records


def _fake_run(output_dir: Path, evals: list[tuple[str, int, float, list]]) -> dict[str, dict]:
    """An output folder as a training run leaves it: one folder per eval written by the callback's writer."""
    written = {}
    for label, step, epoch, answers in evals:
        metrics, records = _metrics(answers)
        write_eval_folder(output_dir / "calibration_eval" / label, label=label, global_step=step, epoch=epoch,
                          metrics=metrics, records=records)
        written[label] = metrics
    return written


OVERCONFIDENT = [("a", 0.9, True), ("b", 0.9, False), ("c", 0.8, False), ("a", 0.7, True)]
HONEST = [("a", 0.9, True), ("b", 0.2, False), ("c", 0.3, False), ("a", 0.8, True)]


def test_ece_history_reads_epoch_folders_in_order(tmp_path):
    run = tmp_path / "seed0" / "ppo"
    # written out of order, with a step eval and a partial last epoch (trainer epoch 1.5 -> epoch-2)
    written = _fake_run(run, [("epoch-2", 6, 1.5, HONEST), ("step-2", 2, 0.5, HONEST),
                              ("epoch-1", 4, 1.0, OVERCONFIDENT)])
    (run / "calibration_eval" / ".epoch-3.tmp1234").mkdir()  # a staging folder of a killed process
    (run / "calibration_eval" / "notes").mkdir()

    history = ece_history(run)
    assert [(h["epoch"], h["step"]) for h in history] == [(1, 4), (2, 6)]
    for h, label in zip(history, ("epoch-1", "epoch-2")):
        for key in ("ece", "accuracy", "mean_confidence"):
            assert h[key] == pytest.approx(written[label][key]), (label, key)
    assert history[0]["ece"] > history[1]["ece"]  # the fixture's overconfident epoch is the worse one
    assert history[0]["accuracy"] == pytest.approx(0.5) and history[0]["mean_confidence"] == pytest.approx(0.825)

    every = read_eval_history(run)
    assert [e.label for e in every] == ["step-2", "epoch-1", "epoch-2"]
    assert every[0].epoch == 0.5 and "training" not in every[0].metrics
    assert [e.label for e in read_eval_history(run, kind="step")] == ["step-2"]


def test_missing_and_broken_eval_files(tmp_path):
    assert ece_history(tmp_path / "never-trained") == []
    _fake_run(tmp_path, [("epoch-1", 1, 1.0, [("paris", None, True)])])  # no confidence at all: ECE is null
    assert ece_history(tmp_path) == [{"step": 1, "epoch": 1, "ece": None, "accuracy": 1.0,
                                      "mean_confidence": None}]
    broken = tmp_path / "calibration_eval" / "epoch-2"
    broken.mkdir()
    (broken / "metrics.json").write_text("{not json")
    with pytest.raises(InputError, match="epoch-2"):
        ece_history(tmp_path)
    with pytest.raises(ValueError, match="kind"):
        read_eval_history(tmp_path, kind="epochs")


def _summary(histories: dict[str, dict[str, list[dict]]]) -> dict:
    policies = {p: {"method": METHOD_NAMES[p], "ece_per_epoch": histories.get(p, {}),
                    "per_seed": {"0": {"ece": 0.2}, "1": {"ece": 0.3}}} for p in POLICIES}
    return {"policies": policies, "seeds": [0, 1]}


def test_epoch_table_averages_each_epoch_over_the_seeds_that_have_it(tmp_path):
    ppo = {"0": [{"epoch": 1, "ece": 0.1}, {"epoch": 2, "ece": 0.3}], "1": [{"epoch": 1, "ece": 0.2}]}
    grpo = {"0": [{"epoch": 2, "ece": None}], "1": [{"epoch": 2, "ece": 0.05}]}
    header, rows = epoch_table(_summary({"ppo": ppo, "grpo_brier": grpo}))
    assert header == ["policy", "epoch 1", "epoch 2"]
    by_method = {row[0]: row[1:] for row in rows}
    assert len(rows) == len(RL_POLICIES)
    assert by_method[METHOD_NAMES["ppo"]] == ["0.150", "0.300"]
    assert by_method[METHOD_NAMES["grpo_brier"]] == ["", "0.050"]
    assert by_method[METHOD_NAMES["ppo_m"]] == ["", ""]
    png = plot_ece_per_epoch(_summary({"ppo": ppo}), tmp_path / "plots" / "ece.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_study_and_summary_do_not_import_each_other():
    demo = Path(__file__).parents[1] / "calrl" / "demo"

    def imported(name: str) -> set[str]:
        tree = ast.parse((demo / f"{name}.py").read_text())
        return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}

    assert "calrl.demo.study" not in imported("summary")
    assert "calrl.demo.study" not in imported("report") and "calrl.demo.summary" not in imported("report")
    assert "calrl.demo.layout" in imported("summary") and "calrl.demo.summary" in imported("study")
    # what tests and callers import from the study still resolves there
    from calrl.demo import layout, study
    assert study.Layout is layout.Layout and study.gate_pairs is layout.gate_pairs
