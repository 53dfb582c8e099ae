"""Bad input to ``calrl train-*``: one table, each row run twice (``--dry-run`` and a real run).

Every case starts in a fresh folder holding a finished tiny GRPO run (trained once per module) and a regular
file, plus what the case adds. Both runs must exit 2 with one line on stderr naming the file, key or path (no
traceback), load no model, and leave every file and folder that existed byte-identical and add none: the dry
run reports exactly what the real run refuses. Then a few real runs: ``--resume latest`` past a damaged
checkpoint, ``--overwrite``, file-system faults while saving, and Ctrl-C at several moments (subprocesses).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from calrl.cli.main import main

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "configs" / "tests"
GRPO, RLOO, PPO, RM = (TESTS / f"{n}.yaml" for n in ("tiny_grpo_brier", "tiny_rloo_brier", "tiny_ppo", "tiny_rm"))
QUIET = ["training.report_to=none"]


@pytest.fixture(scope="module")
def finished_grpo(tmp_path_factory) -> Path:
    """A finished tiny GRPO run (model, card, checkpoint-4 and checkpoint-8)."""
    out = tmp_path_factory.mktemp("grpo") / "run"
    assert main(["train-grpo", "--config", str(GRPO), *QUIET, f"training.output_dir={out}"]) == 0
    return out


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if "wandb" in p.parts:
            continue
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


# ------------------------------------------------------------------------------------------- cases
def _checkpoint(tmp: Path, source: Path, edit: Callable[[Path], None] | None = None, name="ck") -> Path:
    dest = tmp / name
    shutil.copytree(source / "checkpoint-4", dest)
    if edit:
        edit(dest)
    return dest


def _truncate(name: str, size: int = 100) -> Callable[[Path], None]:
    return lambda d: os.truncate(d / name, size)


def _write(name: str, text: str) -> Callable[[Path], None]:
    return lambda d: (d / name).write_text(text)


def _drop(name: str) -> Callable[[Path], None]:
    return lambda d: (d / name).unlink()


@dataclass
class Case:
    id: str
    recipe: Path
    args: list[str]
    pattern: str  # a part of the one stderr line
    setup: Callable[[Path, Path], list[str]] | None = None  # (tmp, finished run) -> extra args
    extra: list[str] = field(default_factory=list)


def _resume(edit=None):
    def setup(tmp: Path, run: Path) -> list[str]:
        return ["--resume", str(_checkpoint(tmp, run, edit))]
    return setup


def _latest_with(edit):
    def setup(tmp: Path, run: Path) -> list[str]:
        out = tmp / "partial"
        out.mkdir()
        _checkpoint(out, run, edit, name="checkpoint-4")
        return ["--resume", "latest", f"training.output_dir={out}"]
    return setup


def _into_finished(tmp: Path, run: Path) -> list[str]:
    shutil.copytree(run, tmp / "earlier")
    return [f"training.output_dir={tmp / 'earlier'}"]


def _under_file(tmp: Path, run: Path) -> list[str]:
    return [f"training.output_dir={tmp / 'afile.txt' / 'out'}"]


def _is_file(tmp: Path, run: Path) -> list[str]:
    return [f"training.output_dir={tmp / 'afile.txt'}"]


def _recipe(edit: Callable[[str], str] | str | bytes, name: str = "recipe.yaml"):
    """A setup writing the GRPO recipe changed by ``edit`` (a function of its text, or the whole new text or
    bytes) beside the case, then naming it with a second ``--config`` (the last one counts)."""
    def setup(tmp: Path, run: Path) -> list[str]:
        path = tmp / name
        new = edit(GRPO.read_text()) if callable(edit) else edit
        path.write_bytes(new if isinstance(new, bytes) else new.encode("utf-8", "surrogatepass"))
        return ["--config", str(path)]
    return setup


def _replace(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)
    return edit


_LAUGHS = "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['x'] * 9)}]\n"
                  for p, n in zip(["", *"abcdefg"], "abcdefgh", strict=True))
BIG = 1180591620717411303424  # 2^70
RECIPE_CASES = [  # YAML recipes: syntax, anchors, duplicate keys, types, unknown keys, encodings, bounds
    Case("yaml-tab-indent", GRPO, [], "recipe.yaml:33: invalid YAML: found character '\\t' that cannot start any "
         "token (indent with spaces", setup=_recipe(_replace("  logging_steps: 1", "\tlogging_steps: 1"))),
    Case("yaml-duplicate-section", GRPO, [], "invalid YAML: duplicate key 'wandb' (also on line 20)",
         setup=_recipe(lambda t: t + "wandb:\n  project: again\n")),
    Case("yaml-duplicate-key", GRPO, [], "recipe.yaml:33: invalid YAML: duplicate key 'learning_rate' (also on line "
         "32)", setup=_recipe(_replace("  logging_steps: 1", "  learning_rate: 1.0"))),
    Case("yaml-billion-laughs", GRPO, [], "the recipe expands to more than 100,000 values",
         setup=_recipe(lambda t: t + "laughs:\n" + "".join("  " + line + "\n" for line in _LAUGHS.splitlines()))),
    Case("yaml-recursive-anchor", GRPO, [], "invalid YAML: found unconstructable recursive node",
         setup=_recipe(lambda t: t + "loop: &loop [*loop]\n")),
    Case("yaml-undefined-alias", GRPO, [], "recipe.yaml:22: invalid YAML: found undefined alias 'name'",
         setup=_recipe(_replace("run_name: tiny-grpo-brier", "run_name: *name"))),
    Case("yaml-nul-byte", GRPO, [], "recipe.yaml:22: invalid YAML: character U+0000 is not allowed",
         setup=_recipe(_replace("run_name: tiny-grpo-brier", "run_name: tiny\x00"))),
    Case("yaml-latin-1", GRPO, [], "recipe.yaml: not UTF-8 text",
         setup=_recipe(lambda t: t.replace("tiny-grpo-brier", "caf\xe9", 1).encode("latin-1"))),
    Case("yaml-utf-16", GRPO, [], "recipe.yaml: not UTF-8 text", setup=_recipe(lambda t: t.encode("utf-16"))),
    Case("yaml-nested-too-deep", GRPO, [], "recipe.yaml: invalid YAML: nested too deeply",
         setup=_recipe(lambda t: t + "deep: " + "[" * 20000 + "]" * 20000 + "\n")),
    Case("yaml-integer-of-5000-digits", GRPO, [], "recipe.yaml: invalid YAML: Exceeds the limit (4300 digits)",
         setup=_recipe(_replace("  seed: 0", "  seed: " + "9" * 5000))),
    Case("yaml-lone-surrogate", GRPO, [], "recipe.yaml:22: key 'wandb.run_name': a lone UTF-16 surrogate",
         setup=_recipe(_replace("run_name: tiny-grpo-brier", 'run_name: "\\ud800"'))),
    Case("yaml-python-tag", GRPO, [], "invalid YAML: could not determine a constructor for the tag",
         setup=_recipe(_replace("run_name: tiny-grpo-brier", "run_name: !!python/object:os.system x"))),
    Case("yaml-list-as-key", GRPO, [], "recipe.yaml:22: invalid YAML: a key must be a name, not list",
         setup=_recipe(_replace("  run_name: tiny-grpo-brier", "  [run_name]: x"))),
    Case("yaml-reserved-key", GRPO, [], "invalid YAML: a key must be a name, '__lines__' is reserved",
         setup=_recipe(lambda t: t + "__lines__: 1\n")),
    Case("yaml-unclosed-bracket", GRPO, [], "recipe.yaml:37: invalid YAML",
         setup=_recipe(_replace("reward_weights: [1.0, 0.1]", "reward_weights: [1.0, 0.1"))),
    Case("yaml-empty", GRPO, [], "recipe.yaml: config is empty", setup=_recipe("")),
    Case("yaml-comments-only", GRPO, [], "recipe.yaml: config is empty", setup=_recipe("# nothing here\n")),
    Case("yaml-a-list", GRPO, [], "recipe.yaml: config must be a mapping of sections", setup=_recipe("- grpo\n")),
    Case("section-typo", GRPO, [], "recipe.yaml:24: unknown section 'trainng' (sections: method, model",
         setup=_recipe(_replace("training:", "trainng:"))),
    Case("key-typo-did-you-mean", GRPO, [], "recipe.yaml:32: unknown key 'training.learnig_rate' (did you mean "
         "learning_rate?)", setup=_recipe(_replace("learning_rate:", "learnig_rate:"))),
    Case("nested-key-typo-did-you-mean", GRPO, [], "recipe.yaml:8: unknown key 'model.tiny.warmup_step' (did you "
         "mean warmup_steps", setup=_recipe(_replace("warmup_steps:", "warmup_step:"))),
    Case("section-a-list", GRPO, ["wandb=[calrl-tests]"], "section 'wandb' must be a mapping, got list"),
    Case("lr-text", GRPO, [], "recipe.yaml:32: key 'training.learning_rate' must be float, got str 'fast'",
         setup=_recipe(_replace("learning_rate: 1.0e-4", "learning_rate: fast"))),
    Case("tags-a-string", GRPO, ["wandb.tags=tiny"], "key 'wandb.tags' must be list, got str 'tiny'"),
    Case("use-cpu-maybe", GRPO, ["training.use_cpu=maybe"], "key 'training.use_cpu' must be bool, got str 'maybe'"),
    Case("seed-2^70", GRPO, [f"training.seed={BIG}"], "key 'training.seed' must be int, got an integer of 22 digits"),
    Case("batch-2^70", GRPO, [f"training.per_device_train_batch_size={BIG}"],
         "key 'training.per_device_train_batch_size' must be int, got an integer of 22 digits, more than 64 bits"),
    Case("tiny-seed-2^70", GRPO, [f"model.tiny.seed={BIG}"], "key 'model.tiny.seed' must be int, got an integer"),
    Case("data-seed-2^70", GRPO, [f"data.seed={BIG}"], "key 'data.seed' must be int, got an integer of 22 digits"),
    Case("override-of-5000-digits", GRPO, ["training.seed=" + "9" * 5000], "key 'training.seed' must be int"),
    Case("tiny-layers-0", GRPO, ["model.tiny.num_layers=0"], "key 'model.tiny.num_layers': must be an integer from 1"),
    Case("tiny-heads-not-dividing", GRPO, ["model.tiny.num_heads=3"],
         "key 'model.tiny.num_heads': must divide hidden_size (64), got 3"),
    Case("tiny-warmup-confidence-11", GRPO, ["model.tiny.warmup_confidences=[3, 11]"],
         "key 'model.tiny.warmup_confidences': must be confidences from 0 to 10"),
    Case("eval-batch-0", GRPO, ["eval.batch_size=0"], "key 'eval.batch_size': must be an integer from 1 to 65536"),
    Case("eval-bins-0", GRPO, ["eval.n_bins=0"], "key 'eval.n_bins': must be an integer from 1 to 1000, got 0"),
    Case("eval-bootstrap-10^6", GRPO, ["eval.n_boot=1000000"], "key 'eval.n_boot': must be an integer from 0 to 10000"),
    Case("eval-min-slice-size-negative", GRPO, ["eval.min_slice_size=-1"], "key 'eval.min_slice_size': must be"),
    Case("eval-retries-101", GRPO, ["eval.confidence_retries=101"], "key 'eval.confidence_retries': must be an integer"),
    Case("eval-1001-slice-values", GRPO, ["eval.limit=null"], "key 'eval.heldout': 1,001 distinct slice values",
         setup=lambda tmp, run: ["eval.heldout=" + _slices_file(tmp)]),
    Case("override-not-utf-8", GRPO, ["wandb.run_name=\udcff"], "is not valid text (bytes that are not UTF-8)"),
]


def _slices_file(tmp: Path) -> str:
    path = tmp / "heldout.jsonl"
    path.write_text("".join(json.dumps({"id": f"h{i}", "question": "q?", "reference": "a", "slice": f"s{i}"}) + "\n"
                            for i in range(1001)))
    return str(path)


CASES = [
    *RECIPE_CASES,
    # numbers: range and finiteness, per method
    Case("grpo-lr-negative", GRPO, ["training.learning_rate=-1e-4"], "key 'training.learning_rate': must be a non-negative"),
    Case("grpo-lr-nan", GRPO, ["training.learning_rate=nan"], "key 'training.learning_rate'"),
    Case("grpo-completion-0", GRPO, ["training.max_completion_length=0"], "key 'training.max_completion_length'"),
    Case("grpo-epochs-minus-1", GRPO, ["training.num_train_epochs=-1"], "key 'training.num_train_epochs'"),
    Case("grpo-beta-nan", GRPO, ["training.beta=nan"], "key 'training.beta'"),
    Case("grpo-temperature-0", GRPO, ["training.temperature=0"], "key 'training.temperature'"),
    Case("grpo-top-p", GRPO, ["training.top_p=1.5"], "key 'training.top_p': must be a finite number in (0, 1]"),
    Case("grpo-one-generation", GRPO, ["training.num_generations=1"], "key 'training.num_generations'"),
    Case("grpo-weight-nan", GRPO, ["training.reward_weights=[nan, 1.0]"], "key 'training.reward_weights'"),
    Case("grpo-abstention-inf", GRPO, ["training.abstention_reward=inf"], "key 'training.abstention_reward'"),
    Case("grpo-max-steps-0", GRPO, ["training.max_steps=0"], "key 'training.max_steps'"),
    Case("grpo-adam-beta1", GRPO, ["training.adam_beta1=1.0"], "key 'training.adam_beta1'"),
    Case("rloo-epochs-0", RLOO, ["training.num_train_epochs=0"], "key 'training.num_train_epochs': must be a positive"),
    Case("rloo-beta-nan", RLOO, ["training.beta=nan"], "key 'training.beta'"),
    Case("rloo-batch-0", RLOO, ["training.per_device_train_batch_size=0"], "key 'training.per_device_train_batch_size'"),
    Case("rm-lr-nan", RM, ["training.learning_rate=nan"], "key 'training.learning_rate'"),
    Case("rm-lambda-nan", RM, ["training.calibration_lambda=nan"], "key 'training.calibration_lambda'"),
    Case("rm-max-length-0", RM, ["training.max_length=0"], "key 'training.max_length'"),
    Case("rm-seed-negative", RM, ["training.seed=-1"], "key 'training.seed'"),
    Case("ppo-kl-nan", PPO, ["training.kl_coef=nan"], "key 'training.kl_coef'"),
    Case("ppo-lr-negative", PPO, ["training.learning_rate=-1"], "key 'training.learning_rate'"),
    # the output folder
    Case("output-is-file", GRPO, [], "afile.txt is a file, not a folder", setup=_is_file),
    Case("output-under-file", GRPO, [], "a file, not a folder", setup=_under_file),
    Case("output-holds-run", GRPO, [], "holds an earlier run (model.safetensors", setup=_into_finished),
    Case("output-holds-run-rm", RM, [], "--resume latest continues it, --overwrite replaces it", setup=_into_finished),
    # resuming
    Case("resume-missing", GRPO, ["--resume", "./nope"], "resume: checkpoint folder './nope' not found"),
    Case("resume-file", GRPO, ["--resume", "afile.txt"], "is a file, not a checkpoint folder"),
    Case("resume-latest-none", GRPO, ["--resume", "latest", "training.output_dir=fresh"],
         "resume 'latest': no complete checkpoint-* folder in fresh"),
    Case("resume-latest-incomplete", GRPO, [], "1 incomplete or damaged", setup=_latest_with(_drop("calrl_checkpoint.json"))),
    Case("resume-truncated-weights", GRPO, [], "model.safetensors: truncated",
         setup=_resume(_truncate("model.safetensors"))),
    Case("resume-truncated-optimizer", GRPO, [], "optimizer.pt: truncated or damaged",
         setup=_resume(_truncate("optimizer.pt", 200))),
    Case("resume-garbage-state", GRPO, [], "trainer_state.json: not valid JSON",
         setup=_resume(_write("trainer_state.json", "{\"global_step\": 4, garbage"))),
    Case("resume-empty-state", GRPO, [], "trainer_state.json: not valid JSON", setup=_resume(_write("trainer_state.json", ""))),
    Case("resume-no-marker", GRPO, [], "not a complete train-grpo checkpoint (no calrl_checkpoint.json",
         setup=_resume(_drop("calrl_checkpoint.json"))),
    Case("resume-empty-folder", GRPO, [], "not a complete train-grpo checkpoint",
         setup=lambda tmp, run: ["--resume", str((tmp / "empty").mkdir() or tmp / "empty")]),
    Case("resume-grpo-as-rloo", RLOO, [], "a checkpoint of train-grpo, not train-rloo", setup=_resume()),
    Case("resume-grpo-as-rm", RM, [], "a checkpoint of train-grpo, not train-rm", setup=_resume()),
    Case("resume-grpo-as-ppo", PPO, [], "a checkpoint of another method", setup=_resume()),
    Case("resume-ppo-as-grpo", GRPO, [], "a checkpoint of train-ppo, not train-grpo",
         setup=_resume(_write("calrl_ppo_state.json", "{}"))),
    Case("resume-and-overwrite", GRPO, ["--resume", "latest", "--overwrite"], "choose one"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_train_input(case, tmp_path, finished_grpo, capsys, no_models):
    (tmp_path / "afile.txt").write_text("a regular file\n")
    extra = case.setup(tmp_path, finished_grpo) if case.setup else []
    before = snapshot(tmp_path)
    method = {GRPO: "grpo", RLOO: "rloo", PPO: "ppo", RM: "rm"}[case.recipe]
    for dry in (["--dry-run"], []):
        argv = [f"train-{method}", "--config", str(case.recipe), *dry, *case.args, *extra, *QUIET]
        try:
            code = main(argv)
        except SystemExit as exc:  # a usage error of the argument parser
            code = exc.code
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert code == 2, (dry, captured.out, captured.err)
        assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
        assert len(lines[0]) < 300, lines[0]
        assert case.pattern in lines[0], lines[0]
        assert snapshot(tmp_path) == before, f"{dry}: files changed"


# ------------------------------------------------------------------------------------- real runs
def test_resume_latest_skips_a_damaged_checkpoint_and_says_which_it_took(finished_grpo, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_grpo, out)
    os.truncate(out / "checkpoint-8" / "model.safetensors", 1000)
    code = main(["train-grpo", "--config", str(GRPO), "--resume", "latest", *QUIET, f"training.output_dir={out}",
                 "training.num_train_epochs=3"])
    text = capsys.readouterr().out
    assert code == 0
    assert f"skipping {out / 'checkpoint-8' / 'model.safetensors'}: truncated" in text
    assert f"resuming from {out / 'checkpoint-4'} (step 4)" in text
    assert json.loads((out / "checkpoint-12" / "trainer_state.json").read_text())["global_step"] == 12
    # the damaged checkpoint-8 was saved again by the resumed run, completely
    assert json.loads((out / "checkpoint-8" / "calrl_checkpoint.json").read_text()) == {"method": "grpo",
                                                                                       "global_step": 8}
    assert not (out / ".calrl-final-staging").exists()


def test_overwrite_replaces_the_earlier_run_only_when_asked(tmp_path, capsys):
    out = tmp_path / "rm"
    base = ["train-rm", "--config", str(RM), *QUIET, f"training.output_dir={out}"]
    assert main(base) == 0
    first = snapshot(out)
    capsys.readouterr()
    assert main(base) == 2
    assert "holds an earlier run" in capsys.readouterr().err
    assert snapshot(out) == first
    assert main([*base[:3], "--overwrite", *base[3:], "training.seed=1"]) == 0
    assert "--overwrite: deleted the earlier run's" in capsys.readouterr().out
    assert (out / "README.md").is_file() and (out / "model.safetensors").is_file()
    assert snapshot(out)["model.safetensors"] != first["model.safetensors"]  # seed 1: another model
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]


@pytest.mark.parametrize("where", ["checkpoint", "final"])
def test_file_system_fault_while_saving_is_one_line_and_leaves_nothing_half_written(where, tmp_path, capsys,
                                                                                 monkeypatch):
    from calrl.runners import runner as runner_module

    out = tmp_path / "run"
    finished = []
    monkeypatch.setattr(runner_module, "finish_wandb", lambda run, failed: finished.append(failed))
    if where == "checkpoint":
        from transformers import Trainer

        real = Trainer._save_checkpoint

        def full_disk(self, model, trial):
            real(self, model, trial)
            if self.state.global_step == 6:  # the second checkpoint: written, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device", str(out / "checkpoint-6" / "optimizer.pt"))

        monkeypatch.setattr(Trainer, "_save_checkpoint", full_disk)
    else:
        def read_only(stage, dest):
            raise OSError(errno.EROFS, "Read-only file system", str(dest / "model.safetensors"))

        monkeypatch.setattr(runner_module, "publish_final", read_only)
    code = main(["train-rm", "--config", str(RM), *QUIET, f"training.output_dir={out}"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # progress bars of the run come before it
    assert code == 2 and "Traceback" not in err, err[-2000:]
    reason = "no space left on device" if where == "checkpoint" else "read-only file system"
    assert last.startswith("calrl train-rm: error: ") and reason in last and str(out) in last, last
    assert finished == [True]  # the W&B run is finished as failed
    assert not (out / "README.md").exists() and not (out / "model.safetensors").exists()
    assert not (out / ".calrl-final-staging").exists()
    left = sorted(p.name for p in out.glob("checkpoint-*"))
    assert left == ["checkpoint-3"] if where == "checkpoint" else ["checkpoint-3", "checkpoint-6"]


def test_torch_write_failure_is_a_file_system_error(tmp_path, capsys, monkeypatch):
    from transformers import Trainer

    def torch_disk_full(self, model, trial):  # what torch.save raises when the disk is full
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(Trainer, "_save_checkpoint", torch_disk_full)
    out = tmp_path / "run"
    assert main(["train-rm", "--config", str(RM), *QUIET, f"training.output_dir={out}"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith(f"calrl train-rm: error: {out}: torch.save could not write")
    assert not out.exists() or not list(out.glob("checkpoint-*"))


def test_a_failed_run_leaves_no_empty_output_folder(tmp_path, capsys, monkeypatch):
    from calrl.runners.rm import RewardModelRunner

    def broken(self, callbacks):
        raise OSError(errno.EACCES, "Permission denied", str(tmp_path / "models" / "x"))

    monkeypatch.setattr(RewardModelRunner, "build", broken)
    out = tmp_path / "new" / "run"
    assert main(["train-rm", "--config", str(RM), *QUIET, f"training.output_dir={out}"]) == 2
    assert "permission denied" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


# --------------------------------------------------------------------------------------- Ctrl-C
def _interrupt(tmp_path: Path, command: str, recipe: Path, when: Callable[[Path], bool]) -> tuple[int, str, Path]:
    out = tmp_path / "run"
    env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    # A shell without job control starts background commands with SIGINT ignored, and the ignore is inherited
    # down to this child, where Python then leaves it ignored (seen: CI launched with `&` exited 0 here). A
    # handler, unlike an ignore, does not survive exec: with one set here the child starts with the default
    # disposition, as a terminal's Ctrl-C finds it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "calrl", command, "--config", str(recipe), *QUIET,
                                 f"training.output_dir={out}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)
    start = time.monotonic()
    while proc.poll() is None and not when(out) and time.monotonic() - start < 120:
        time.sleep(0.002)
    assert proc.poll() is None, "the run ended before the moment to interrupt it"
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 15, "did not stop within seconds"
    return proc.returncode, err, out


def _saving(out: Path) -> bool:
    """A checkpoint save has started and not finished (PPO's staging folder, or Trainer's unmarked folder)."""
    if any(out.glob(".checkpoint-*.staging")):
        return True
    return any(p.is_dir() and not (p / "calrl_checkpoint.json").exists() for p in out.glob("checkpoint-*"))


def _training(out: Path) -> bool:
    return any(out.glob("checkpoint-*/calrl_*"))  # a first complete checkpoint: training goes on


def _final(out: Path) -> bool:
    return (out / ".calrl-final-staging").exists()


@pytest.mark.parametrize(("command", "recipe", "when"), [
    ("train-ppo", PPO, _saving), ("train-grpo", GRPO, _saving), ("train-grpo", GRPO, _training),
    ("train-rm", RM, _final)], ids=["ppo-during-save", "grpo-during-save", "grpo-during-training", "rm-final-save"])
def test_ctrl_c_stops_with_130_and_leaves_complete_checkpoints(command, recipe, when, tmp_path):
    from calrl.runners.checkpoints import checkpoint_problem

    code, err, out = _interrupt(tmp_path, command, recipe, when)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].endswith("interrupted")
    method = command.removeprefix("train-")
    for checkpoint in out.glob("checkpoint-*"):
        assert checkpoint_problem(checkpoint, method) is None, checkpoint
    assert not (out / "README.md").exists() or (out / "model.safetensors").exists()
    assert not out.exists() or not list(out.glob(".*staging*"))


def test_a_failed_final_save_still_completes_the_last_epoch_eval(tmp_path, capsys, monkeypatch):
    """The last epoch's eval is drawn while the model is saved; a save that fails must not lose its files and
    W&B row (they are what the run measured), nor hide the save's error."""
    from calrl.callbacks.calibration_eval import CalibrationEvalCallback
    from calrl.runners import runner as runner_module

    finished = []
    real_finish = CalibrationEvalCallback.finish
    monkeypatch.setattr(CalibrationEvalCallback, "finish", lambda self: finished.append(real_finish(self)))

    def read_only(stage, dest):
        raise OSError(errno.EROFS, "Read-only file system", str(dest / "model.safetensors"))

    monkeypatch.setattr(runner_module, "publish_final", read_only)
    out = tmp_path / "ppo"
    code = main(["train-ppo", "--config", str(PPO), *QUIET, f"training.output_dir={out}", "training.num_train_epochs=1"])
    err = capsys.readouterr().err
    assert code == 2 and "read-only file system" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert len(finished) == 1  # the eval was completed once, before the error ended the run
