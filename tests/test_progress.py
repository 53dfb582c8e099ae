"""Progress on every long stage, and logs without tqdm's redraws (issue 20, point 7): in a log (stderr not a
terminal) a bar is a few whole lines; in a terminal it is tqdm's bar."""

from __future__ import annotations

import copy
import io
import sys
from pathlib import Path

import pytest
from datasets import Dataset

from calrl.progress import LineWriter, progress

sys.path.insert(0, str(Path(__file__).parent))
from callback_helpers import ITEMS, PROMPT, build_scripted_policy


def _lines(text: str) -> list[str]:
    assert "\r" not in text and "\x1b[" not in text, repr(text[:300])
    lines = text.splitlines()
    assert all(line.strip() for line in lines), lines  # no blank lines
    return lines


def test_tiny_policy_warm_up_shows_its_progress_in_a_log(capsys):
    from calrl.tiny.models import build_tiny_causal_lm, build_word_tokenizer
    from calrl.tiny.warmup import warm_up_tiny_policy

    tokenizer = build_word_tokenizer(["what is 2 + 3 ?", "5 . confidence"])
    model = build_tiny_causal_lm(tokenizer)
    warm_up_tiny_policy(model, tokenizer, ["what is 2 + 3 ?"] * 4, [["5"]] * 4, steps=30, learning_rate=1e-3,
                        confidences=[3, 6])
    lines = [line for line in _lines(capsys.readouterr().err) if "warm-up" in line]
    assert lines[0].startswith("warm-up of the tiny policy:   0%") and "30/30" in lines[-1]
    assert len(lines) <= 4  # a start line, at most one per LOG_INTERVAL, the end
    warm_up_tiny_policy(model, tokenizer, ["what is 2 + 3 ?"], [["5"]], steps=3, learning_rate=1e-3,
                        confidences=[3], show_progress=False)
    assert "warm-up" not in capsys.readouterr().err  # the other processes of a launch stay quiet


def test_a_bar_in_a_log_is_a_few_whole_lines():
    log = io.StringIO()
    with progress(total=1000, desc="stage", file=log) as bar:
        for _ in range(1000):
            bar.update(1)
    lines = _lines(log.getvalue())
    assert len(lines) == 2 and "0/1000" in lines[0] and "1000/1000" in lines[-1] and lines[-1].startswith("stage")


def test_line_writer_keeps_the_latest_state_between_lines():
    log = io.StringIO()
    writer = LineWriter(log, interval=3600)
    writer.write("\rstage: 1/3")  # the first state is written at once
    writer.write("\r          \r")  # a clear: nothing
    writer.write("\rstage: 2/3")  # within the interval: kept, not written
    writer.write("\x1b[A\rstage: 3/3")
    assert log.getvalue() == "stage: 1/3\n"
    writer.write("\n")  # tqdm ends a finished bar with a newline
    assert log.getvalue() == "stage: 1/3\nstage: 3/3\n"


def test_a_bar_in_a_terminal_is_tqdms():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    with progress(total=3, desc="stage", file=screen) as bar:
        bar.update(3)
    assert "\r" in screen.getvalue()


@pytest.fixture(scope="module")
def scripted():
    return build_scripted_policy()


def test_the_trainers_bar_is_lines_in_a_log(tmp_path, scripted, capsys):
    from calrl.callbacks.runs import LineProgressCallback, use_line_progress
    from calrl.trainers.grpo import CalibratedGRPOConfig, CalibratedGRPOTrainer

    model, tokenizer = scripted
    data = Dataset.from_list([{"prompt": PROMPT.build_messages(it), "reference": it.reference[0]} for it in ITEMS[:4]])
    args = CalibratedGRPOConfig(output_dir=str(tmp_path / "grpo"), use_cpu=True, num_generations=2,
                                max_completion_length=8, per_device_train_batch_size=2, num_train_epochs=1,
                                logging_steps=1, disable_tqdm=False, reward_funcs=["brier", "format"],
                                save_strategy="no", report_to="none", seed=0)
    trainer = CalibratedGRPOTrainer(model=copy.deepcopy(model), args=args, train_dataset=data,
                                    processing_class=tokenizer)
    capsys.readouterr()
    use_line_progress(trainer)
    assert any(isinstance(c, LineProgressCallback) for c in trainer.callback_handler.callbacks)
    trainer.train()
    captured = capsys.readouterr()
    bar = [line for line in _lines(captured.err) if line.startswith("training:")]
    assert len(bar) == 2 and "4/4" in bar[-1]
    logged = [line for line in _lines(captured.out) if line.startswith("{")]
    assert len(logged) >= 4  # the metrics still come one dict per line, as transformers writes them
