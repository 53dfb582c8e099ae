"""The calibration eval's work after generation runs on a background thread (calrl.callbacks.background,
calrl.callbacks.eval_output): in eval order, with the step of the eval, its errors raised on the training
thread, finished before the run ends, and with the same rows as when it ran on the training thread."""

from __future__ import annotations

import copy
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import TrainerControl, TrainerState

from calrl.callbacks import eval_output
from calrl.callbacks.background import OrderedWorker
from calrl.callbacks.calibration_eval import CalibrationEvalCallback, scalar_metrics
from calrl.callbacks.wandb_utils import (
    find_offline_runs,
    init_wandb_run,
    read_offline_run,
    read_offline_table,
)
from calrl.errors import InputError
from calrl.eval.resolving import resolve_records
from calrl.eval.runner import compute_results
from calrl.generation.generate import PromptCache, generate_predictions

sys.path.insert(0, str(Path(__file__).parent))
from callback_helpers import EXPECTED, ITEMS, PROMPT, build_scripted_policy, eval_config


@pytest.fixture(scope="module")
def scripted():
    return build_scripted_policy()


def _config(**kw):
    return eval_config(**kw)


# ------------------------------------------------------------------------------------------- OrderedWorker
def test_worker_runs_jobs_in_order_off_the_calling_thread():
    worker = OrderedWorker("test-worker")
    seen = []
    futures = [worker.submit(lambda k=k: seen.append((k, threading.current_thread().name)) or k) for k in range(5)]
    assert [worker.result(f) for f in futures] == list(range(5))
    worker.wait()
    assert [k for k, _ in seen] == list(range(5)) and {name for _, name in seen} == {"test-worker"}
    assert not any(t.name == "test-worker" for t in threading.enumerate())  # wait() stops the thread


def test_worker_raises_each_error_once_on_the_owners_thread():
    worker = OrderedWorker("test-worker")
    release = threading.Event()

    def fail(message):
        release.wait(10)
        raise ValueError(message)

    worker.submit(fail, "first")
    later = worker.submit(lambda: "fine")
    worker.submit(fail, "second")
    worker.raise_errors()  # nothing finished yet: nothing to raise
    release.set()
    assert worker.result(later) == "fine"  # ... and the jobs before it are done
    with pytest.raises(ValueError, match="first"):
        worker.raise_errors()
    with pytest.raises(ValueError, match="second"):
        worker.wait()
    worker.wait()  # every error raised once: nothing left
    worker.raise_errors()


# ------------------------------------------------------------------------------------------- the callback
def _hold_scoring(monkeypatch):
    """Make the background scoring wait for the returned event (so the test sees the work pending)."""
    release = threading.Event()
    score = eval_output.EvalOutputs.score

    def held(self, records, job):
        assert release.wait(60), "the test never released the scoring"
        return score(self, records, job)

    monkeypatch.setattr(eval_output.EvalOutputs, "score", held)
    return release


def test_a_failing_background_eval_stops_training_at_the_next_event(tmp_path, scripted, monkeypatch):
    def refuse(*args, **kwargs):
        raise InputError("id 'i3' has no confidence and the missing-confidence policy is 'error'")

    monkeypatch.setattr(eval_output, "compute_results", refuse)
    callback = CalibrationEvalCallback(_config(log_image=False))
    args, control = SimpleNamespace(output_dir=str(tmp_path)), TrainerControl()
    state = TrainerState(global_step=2, epoch=1.0)
    kwargs = {"model": copy.deepcopy(scripted[0]), "processing_class": scripted[1]}
    assert callback.evaluate("epoch-1", args, state, wait=False, **kwargs) is None  # generated, handed over
    with pytest.raises(InputError, match="missing-confidence policy"):
        for step in range(3, 1000):  # the training thread goes on until the error reaches it
            state.global_step = step
            callback.on_log(args, state, control, **kwargs)
            threading.Event().wait(0.01)
    callback.finish()  # raised once: the end of training does not raise it again
    assert callback.history == []


def test_pending_evals_are_finished_by_finish_with_the_step_they_ran_at(tmp_path, scripted, monkeypatch):
    import wandb

    release = _hold_scoring(monkeypatch)
    init_wandb_run("calrl-tests", "background", {"test": True}, dir=tmp_path)
    callback = CalibrationEvalCallback(_config(), wait_at_train_end=False)
    args, control = SimpleNamespace(output_dir=str(tmp_path / "out")), TrainerControl()
    state = TrainerState(global_step=2, epoch=1.0)
    kwargs = {"model": copy.deepcopy(scripted[0]), "processing_class": scripted[1]}
    callback.evaluate("epoch-1", args, state, wait=False, **kwargs)
    (tmp_path / "out" / "checkpoint-2").mkdir(parents=True)
    callback.on_save(args, state, control, **kwargs)  # the eval's files are not written yet
    state.global_step, state.epoch = 3, 1.5  # training goes on
    callback.on_log(args, state, control, **kwargs)
    assert callback.history == [] and not (tmp_path / "out" / "calibration_eval").exists()
    callback._flush()  # what on_train_end does with wait_at_train_end=False: nothing waits
    release.set()
    callback.finish()
    wandb.finish()

    assert [(r.label, r.step, r.epoch) for r in callback.history] == [("epoch-1", 2, 1.0)]
    folder = tmp_path / "out" / "calibration_eval" / "epoch-1"
    assert {p.name for p in folder.iterdir()} == {"predictions.jsonl", "metrics.json", "reliability.png"}
    copied = tmp_path / "out" / "checkpoint-2" / "calibration_eval" / "epoch-1"
    assert {p.name for p in copied.iterdir()} == {"predictions.jsonl", "metrics.json", "reliability.png"}
    rows = [row for row in read_offline_run(find_offline_runs(tmp_path)[0]).history if "eval/ece" in row]
    assert [(row["train/global_step"], row["eval/epoch"]) for row in rows] == [(2, 1.0)]  # not the state's 3
    assert rows[0]["eval/reliability_diagram._type"] == "image-file"
    assert not any(t.name == "calrl-calibration-eval" for t in threading.enumerate())


def test_the_wandb_row_holds_what_the_eval_scored_on_the_training_thread_would(tmp_path, scripted):
    """The row logged from the background thread: the scalars of the records scored here, the reliability table
    of its metrics, at its step."""
    import wandb

    init_wandb_run("calrl-tests", "row", {"test": True}, dir=tmp_path)
    config = _config()
    callback = CalibrationEvalCallback(config)
    state = TrainerState(global_step=5, epoch=2.0)
    result = callback.evaluate("epoch-2", SimpleNamespace(output_dir=str(tmp_path / "out")), state,
                               model=copy.deepcopy(scripted[0]), processing_class=scripted[1])
    callback.finish()
    wandb.finish()

    here = compute_results(resolve_records(result.records), n_bins=config.n_bins, missing_policy=config.missing_policy,
                           min_slice_size=config.min_slice_size, n_boot=config.n_boot, seed=config.seed)
    assert result.metrics == here.to_json()
    expected = {**scalar_metrics(here, slice_keys=config.slice_keys), "eval/epoch": 2.0}
    assert result.logged == expected
    offline = read_offline_run(find_offline_runs(tmp_path)[0])
    (row,) = [row for row in offline.history if "eval/ece" in row]
    assert row["train/global_step"] == 5
    assert {key: row[key] for key in expected} == pytest.approx(expected, nan_ok=True)
    assert row["eval/ece"] == pytest.approx(EXPECTED["ece"])
    table = read_offline_table(offline, row, "eval/reliability_table")
    assert [[r[c] for c in eval_output.RELIABILITY_COLUMNS] for r in table] == [
        [b[c] for c in eval_output.RELIABILITY_COLUMNS] for b in result.metrics["reliability"]]
    assert offline.summary["calibration/final_ece"] == pytest.approx(EXPECTED["ece"])


# ------------------------------------------------------------------------------------------- PromptCache
def test_prompt_cache_encodes_once_and_generates_the_same(scripted):
    model, tokenizer = scripted
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.padding_side = "right"  # generation pads on the left, and puts the side back
    cache = PromptCache()
    plain = generate_predictions(model, tokenizer, ITEMS, prompt=PROMPT, batch_size=3, max_new_tokens=12,
                                 show_progress=False)
    first = generate_predictions(model, tokenizer, ITEMS, prompt=PROMPT, batch_size=3, max_new_tokens=12,
                                 show_progress=False, cache=cache)
    encoded = cache.get(tokenizer, ITEMS, PROMPT, 3)
    second = generate_predictions(model, tokenizer, ITEMS, prompt=PROMPT, batch_size=3, max_new_tokens=12,
                                  show_progress=False, cache=cache)
    assert [r.to_json() for r in first] == [r.to_json() for r in second] == [r.to_json() for r in plain]
    assert cache.get(tokenizer, ITEMS, PROMPT, 3) is encoded  # kept between calls
    assert [len(rows) for rows, _ in encoded.batches] == [3, 3, 2]
    assert cache.get(tokenizer, ITEMS[:4], PROMPT, 3) is not encoded  # other items: encoded again
    assert cache.get(tokenizer, ITEMS, PROMPT, 4) is not cache.get(tokenizer, ITEMS, PROMPT, 3)
    assert tokenizer.padding_side == "right"  # left as it was


def test_the_final_metrics_wait_for_the_last_eval_still_scoring(tmp_path, scripted, monkeypatch):
    """The model card's final metrics are read at save time, while the last eval may still be scoring in the
    background (CI found a card without them): they wait for its scores, not for its diagram or W&B row."""
    from calrl.runners.reporting import final_calibration_metrics

    release = _hold_scoring(monkeypatch)
    callback = CalibrationEvalCallback(_config(log_image=False), wait_at_train_end=False)
    args = SimpleNamespace(output_dir=str(tmp_path / "out"))
    state = TrainerState(global_step=2, epoch=1.0)
    kwargs = {"model": copy.deepcopy(scripted[0]), "processing_class": scripted[1]}
    callback.evaluate("epoch-1", args, state, wait=False, **kwargs)
    assert callback.history == []  # still scoring
    threading.Timer(0.3, release.set).start()  # the scoring finishes while the final metrics wait
    metrics = final_calibration_metrics(callback)
    assert metrics["label"] == "epoch-1" and metrics["global_step"] == 2 and "ece" in metrics
    callback.finish()


def test_the_final_metrics_raise_a_failed_last_eval_instead_of_waiting(tmp_path, scripted, monkeypatch):
    from calrl.runners.reporting import final_calibration_metrics

    def refuse(*args, **kwargs):
        raise InputError("id 'i3' has no confidence and the missing-confidence policy is 'error'")

    monkeypatch.setattr(eval_output, "compute_results", refuse)
    callback = CalibrationEvalCallback(_config(log_image=False), wait_at_train_end=False)
    args = SimpleNamespace(output_dir=str(tmp_path / "out"))
    kwargs = {"model": copy.deepcopy(scripted[0]), "processing_class": scripted[1]}
    callback.evaluate("epoch-1", args, TrainerState(global_step=2, epoch=1.0), wait=False, **kwargs)
    with pytest.raises(InputError, match="missing-confidence policy"):
        final_calibration_metrics(callback)
    callback.finish()
