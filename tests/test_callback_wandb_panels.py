"""The W&B panels of the calibration callback: the reliability curve chart over evals, per-slice scalars, the
most confidently wrong answers and the run summary, read back from an offline run's ``.wandb`` log and files.

The callback is driven by hand (PPO-style events, as in ``test_callback.py``) with the scripted tiny policy
of ``callback_helpers``, so every logged number is known from ``SCRIPT``; no trainer is involved.
"""

import copy
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import TrainerControl, TrainerState

from calrl.callbacks.calibration_eval import CalibrationEvalCallback
from calrl.callbacks.wandb_panels import (
    CONFIDENTLY_WRONG_KEY,
    PERFECT_CALIBRATION,
    RELIABILITY_CURVE_KEY,
    confidently_wrong_rows,
    reliability_curve_rows,
    summary_panel,
)
from calrl.callbacks.wandb_utils import (
    find_offline_runs,
    init_wandb_run,
    read_offline_run,
    read_offline_table,
)
from calrl.data.records import PredictionRecord, ResolvedRecord
from calrl.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from callback_helpers import EXPECTED, ITEMS, SCRIPT, build_scripted_policy, eval_config

CURVE_TABLE = f"{RELIABILITY_CURVE_KEY}_table"  # where wandb.plot.line stores its table


@pytest.fixture(scope="module")
def scripted():
    return build_scripted_policy()


def _config(**kw):
    return eval_config(**kw)


# ------------------------------------------------------------------------------------------- pure parts
def test_curve_rows_are_the_non_empty_bins_with_the_epoch_of_the_label():
    bins = [{"lower": 0.0, "upper": 0.5, "count": 0, "mean_confidence": None, "accuracy": None},
            {"lower": 0.5, "upper": 1.0, "count": 4, "mean_confidence": 0.8, "accuracy": 0.75}]
    # a partial last epoch (trainer epoch 1.5) is the curve of epoch 2
    assert reliability_curve_rows("epoch-2", 1.5, 7, bins) == [["epoch-2", 2.0, 7, 0.5, 1.0, 0.75, 0.8, 0.75, 4]]
    assert reliability_curve_rows("step-3", 0.75, 3, bins)[0][:3] == ["step-3", 0.75, 3]


def _resolved(id, *, correct, confidence, abstained=False):
    return ResolvedRecord(id=id, abstained=abstained, correct=correct, confidence=confidence,
                          confidence_source="explicit" if confidence is not None else "missing", hedged=False,
                          slice={"domain": "math"}, answer=None if abstained else f"ans-{id}",
                          response=f"r-{id}", reference=["x", "y"])


def test_confidently_wrong_rows_rank_by_confidence_and_skip_abstentions_and_missing():
    spec = [("a", False, 0.6), ("b", True, 0.99), ("c", False, 0.9), ("d", False, None), ("e", False, 0.9),
            ("f", False, 0.3)]
    resolved = [_resolved(i, correct=c, confidence=p) for i, c, p in spec]
    resolved.append(_resolved("g", correct=False, confidence=None, abstained=True))
    records = [PredictionRecord(id=r.id, question=f"q-{r.id}", response=r.response, reference=r.reference)
               for r in resolved]
    rows = confidently_wrong_rows("epoch-1", 1.0, 4, records, resolved, 3)
    assert [(row[3], row[4], row[9]) for row in rows] == [(1, "c", 0.9), (2, "e", 0.9), (3, "a", 0.6)]
    assert rows[0][5:9] == ["q-c", "r-c", "ans-c", "x | y"] and rows[0][10] == "domain=math"
    assert confidently_wrong_rows("epoch-1", 1.0, 4, records, resolved, 0) == []


def _eval(label, epoch, step, ece, accuracy, refusal):
    return SimpleNamespace(label=label, epoch=epoch, step=step,
                           metrics={"ece": ece, "accuracy": accuracy, "refusal_rate": refusal})


def test_summary_panel_final_best_and_ties():
    history = [_eval("epoch-1", 1.0, 10, 0.30, 0.50, 0.20), _eval("epoch-2", 2.0, 20, 0.10, 0.60, 0.10),
               _eval("step-25", 2.5, 25, None, 0.70, 0.00), _eval("epoch-3", 2.9, 29, 0.10, 0.55, 0.05)]
    s = summary_panel(history)
    assert s == {
        "calibration/final_ece": 0.10, "calibration/final_accuracy": 0.55, "calibration/final_refusal_rate": 0.05,
        "calibration/final_label": "epoch-3", "calibration/final_epoch": 3.0, "calibration/final_global_step": 29,
        "calibration/n_evals": 4,
        # lowest ECE, the earliest of a tie; accuracy and refusal rate of that eval
        "calibration/best_ece": 0.10, "calibration/best_ece_epoch": 2.0, "calibration/best_ece_global_step": 20,
        "calibration/best_ece_label": "epoch-2", "calibration/best_ece_accuracy": 0.60,
        "calibration/best_ece_refusal_rate": 0.10,
        "calibration/best_accuracy": 0.70, "calibration/best_accuracy_epoch": 2.5,
    }
    no_ece = summary_panel([_eval("epoch-1", 1.0, 1, None, 0.4, 0.0)])
    assert "calibration/best_ece" not in no_ece and math.isnan(no_ece["calibration/final_ece"])
    assert no_ece["calibration/best_accuracy"] == 0.4
    assert summary_panel([]) == {}


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_n_confidently_wrong_is_validated(value):
    assert _config().n_confidently_wrong == 10
    with pytest.raises(ConfigError, match="n_confidently_wrong"):
        _config(n_confidently_wrong=value)


# ------------------------------------------------------------------------------------ offline W&B run
def _train_by_hand(tmp_path, scripted, config):
    """PPO-style events over 3 steps of 2 episodes on 4 prompts: epoch 1 ends at step 2, a partial epoch 2
    at train end; with ``every_n_steps=2`` a step eval at step 2 shares the epoch-1 generation."""
    model, tokenizer = scripted
    callback = CalibrationEvalCallback(config)
    args = SimpleNamespace(output_dir=str(tmp_path / "out"))
    state, control = TrainerState(), TrainerControl()
    kwargs = {"model": copy.deepcopy(model), "processing_class": tokenizer}
    callback.on_train_begin(args, state, control, **kwargs)
    for step, episode in enumerate((2, 4, 6), start=1):
        state.global_step, state.epoch = step, episode / 4
        callback.on_step_end(args, state, control, **kwargs)
    callback.on_train_end(args, state, control, **kwargs)
    return callback


def test_offline_run_reads_back_chart_table_slice_scalars_and_summary(tmp_path, scripted):
    import wandb

    run = init_wandb_run("calrl-tests", "panels", {"test": True}, dir=tmp_path)
    assert run is not None and run.settings.mode == "offline"
    callback = _train_by_hand(tmp_path, scripted, _config(every_n_steps=2, n_confidently_wrong=1))
    wandb.finish()
    assert [(r.label, r.step) for r in callback.history] == [("epoch-1", 2), ("step-2", 2), ("epoch-2", 3)]

    runs = find_offline_runs(tmp_path)
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    offline = read_offline_run(runs[0])

    # scalars: once per generation, per-slice ECE, Brier and refusal rate, the PNG diagram beside them
    eval_rows = [row for row in offline.history if "eval/ece" in row]
    assert [row["train/global_step"] for row in eval_rows] == [2, 3]
    for row in eval_rows:
        assert row["eval/ece"] == pytest.approx(EXPECTED["ece"])
        for name in ("ece", "brier", "refusal_rate"):
            for value, expected in EXPECTED[f"slice_{name}"].items():
                assert row[f"eval/slice/parity={value}/{name}"] == pytest.approx(expected), (name, value)
        assert row["eval/reliability_diagram._type"] == "image-file"
        assert (offline.folder / "files" / row["eval/reliability_diagram.path"]).is_file()

    # the reliability curve: one table that grows with every eval, charted as a line per label
    chart_rows = [row for row in offline.history if f"{CURVE_TABLE}._type" in row]
    assert [row["train/global_step"] for row in chart_rows] == [2, 2, 3]
    first = read_offline_table(offline, chart_rows[0], CURVE_TABLE)
    last = read_offline_table(offline, chart_rows[-1], CURVE_TABLE)
    assert {r["label"] for r in first} == {PERFECT_CALIBRATION, "epoch-1"}
    assert {r["label"] for r in last} == {PERFECT_CALIBRATION, "epoch-1", "step-2", "epoch-2"}
    assert all(r["series"] == (r["label"] if r["label"] == PERFECT_CALIBRATION else f"panels: {r['label']}")
               for r in last)  # the run's name keeps two runs' curves apart in one panel
    answered = [SCRIPT[k] for k in SCRIPT if SCRIPT[k][1] is not None]
    n_correct = sum(ITEMS[k].reference[0] == SCRIPT[k][0] for k in SCRIPT if SCRIPT[k][1] is not None)
    for result, epoch in zip(callback.history, (1.0, 1.0, 2.0)):  # epoch-2 is the partial epoch (1.5)
        rows = [r for r in last if r["label"] == result.label]
        bins = [b for b in result.metrics["reliability"] if b["count"]]
        assert [(r["mean_confidence"], r["accuracy"], r["count"]) for r in rows] == \
            [(b["mean_confidence"], b["accuracy"], b["count"]) for b in bins]
        assert {(r["epoch"], r["global_step"]) for r in rows} == {(epoch, result.step)}
        assert sum(r["count"] for r in rows) == len(answered)
        assert sum(r["count"] * r["accuracy"] for r in rows) == pytest.approx(n_correct)
        assert sum(r["count"] * r["mean_confidence"] for r in rows) == pytest.approx(
            sum(c for _, c in answered) / 10)
        assert all(r["bin_lower"] <= r["mean_confidence"] <= r["bin_upper"] for r in rows)
    diagonal = [r for r in last if r["label"] == PERFECT_CALIBRATION]
    assert [(r["mean_confidence"], r["accuracy"]) for r in diagonal] == [(0.0, 0.0), (1.0, 1.0)]
    panel = offline.config[f"_wandb.visualize.{RELIABILITY_CURVE_KEY}"]["panel_config"]
    assert panel["fieldSettings"] == {"x": "mean_confidence", "y": "accuracy", "stroke": "series"}

    # the most confidently wrong answers of each eval (1 each here), with the item's text
    wrong_rows = [row for row in offline.history if f"{CONFIDENTLY_WRONG_KEY}._type" in row]
    wrong = read_offline_table(offline, wrong_rows[-1], CONFIDENTLY_WRONG_KEY)
    top_id, top_answer, top_conf = EXPECTED["confidently_wrong"][0]
    assert [(r["label"], r["rank"], r["id"], r["answer"]) for r in wrong] == \
        [(label, 1, top_id, top_answer) for label in ("epoch-1", "step-2", "epoch-2")]
    item = next(it for it in ITEMS if it.id == top_id)
    assert wrong[0]["question"] == item.question and wrong[0]["reference"] == item.reference[0]
    assert wrong[0]["confidence"] == pytest.approx(top_conf) and wrong[0]["epoch"] == 1.0

    # the run summary: final and best ECE, accuracy, refusal rate, and the epoch of the best ECE
    s = offline.summary
    assert s["calibration/final_ece"] == pytest.approx(EXPECTED["ece"])
    assert s["calibration/final_accuracy"] == pytest.approx(EXPECTED["accuracy"])
    assert s["calibration/final_refusal_rate"] == pytest.approx(EXPECTED["refusal_rate"])
    assert s["calibration/final_label"] == "epoch-2" and s["calibration/final_epoch"] == 2
    assert s["calibration/best_ece"] == pytest.approx(EXPECTED["ece"])
    assert s["calibration/best_ece_label"] == "epoch-1" and s["calibration/best_ece_epoch"] == 1  # a tie: earliest
    assert s["calibration/best_ece_accuracy"] == pytest.approx(EXPECTED["accuracy"])
    assert s["calibration/n_evals"] == 3
    for key, value in summary_panel(callback.history).items():
        assert s[key] == (pytest.approx(value) if isinstance(value, float) else value), key


def test_two_configurations_of_the_wrong_table(tmp_path, scripted):
    """Default N lists every wrong answer here (2 < 10), most confident first; N = 0 logs no table."""
    import wandb

    init_wandb_run("calrl-tests", "wrong-default", dir=tmp_path / "a")
    callback = _train_by_hand(tmp_path / "a", scripted, _config())
    wandb.finish()
    offline = read_offline_run(find_offline_runs(tmp_path / "a")[0])
    rows = [row for row in offline.history if f"{CONFIDENTLY_WRONG_KEY}._type" in row]
    wrong = read_offline_table(offline, rows[-1], CONFIDENTLY_WRONG_KEY)
    expected = [(label, i, a, c) for label in ("epoch-1", "epoch-2") for i, a, c in EXPECTED["confidently_wrong"]]
    assert [(r["label"], r["id"], r["answer"], r["confidence"]) for r in wrong] == \
        [(label, i, a, pytest.approx(c)) for label, i, a, c in expected]
    assert len(callback.history) == 2

    init_wandb_run("calrl-tests", "wrong-off", dir=tmp_path / "b")
    _train_by_hand(tmp_path / "b", scripted, _config(n_confidently_wrong=0, log_image=False))
    wandb.finish()
    history = read_offline_run(find_offline_runs(tmp_path / "b")[0]).history
    assert not any(f"{CONFIDENTLY_WRONG_KEY}._type" in row for row in history)
    assert sum(f"{CURVE_TABLE}._type" in row for row in history) == 2
    assert all(math.isfinite(row["eval/ece"]) for row in history if "eval/ece" in row)
