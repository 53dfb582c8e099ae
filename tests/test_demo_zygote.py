"""The study's stages as forks of one process that imported their modules once (``calrl/demo/zygote.py``).

A forked stage must behave as the same ``python -m`` command started on its own: its exit code, its output in
its log, its environment and thread count, its own exit (nothing the zygote made is torn down by one stage's
exit), and a clear failure when the zygote itself cannot start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from calrl.demo.runner import StageFailed, StudyRunner, Task

STAGE = textwrap.dedent("""
    import json, os, sys, pathlib
    import torch
    import zygote_shared
    out = pathlib.Path(sys.argv[1])
    print("hello from", sys.argv[1:])
    # what the zygote made when it imported zygote_shared must still be there, whichever stage ended before
    assert pathlib.Path(zygote_shared.FOLDER.name).is_dir(), "the zygote's folder is gone"
    out.write_text(json.dumps({"threads": torch.get_num_threads(), "flag": os.environ.get("STAGE_FLAG"),
                               "pid": os.getpid()}))
    code = sys.argv[2]
    if code == "raise":
        raise ValueError("a stage error")
    sys.exit(int(code))
""")
SHARED = textwrap.dedent("""
    import tempfile
    print("zygote_shared imported")  # a module that prints while imported must not disturb the zygote's replies
    FOLDER = tempfile.TemporaryDirectory("zygote-shared")  # deleted by an exit handler, as wandb's media folder
""")


def _modules(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "zygote_stage.py").write_text(STAGE)
    (tmp_path / "mods" / "zygote_shared.py").write_text(SHARED)
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path / "mods"), os.environ.get("PYTHONPATH", "")])}


def _task(name: str, out: Path, code: str, *, deps: list[str] | None = None, env: dict[str, str] | None = None,
          ok: tuple[int, ...] = (0,)) -> Task:
    return Task(name=name, stage="policies", deps=deps or [], env=env or {}, ok_codes=ok, outputs=[out],
                command=lambda: [sys.executable, "-m", "zygote_stage", str(out), code])


def test_forked_stages_keep_their_exit_codes_logs_environment_and_threads(tmp_path):
    env = _modules(tmp_path)
    a, b, c = (tmp_path / f"{n}.json" for n in "abc")
    runner = StudyRunner(tmp_path / "run", jobs=2, env={**env, "OMP_NUM_THREADS": "1"}, show_progress=False,
                         preload=("torch", "zygote_shared"))
    results = runner.run([_task("a", a, "0", env={"OMP_NUM_THREADS": "2", "STAGE_FLAG": "x"}),
                          _task("b", b, "0"),
                          _task("c", c, "3", deps=["a", "b"], ok=(0, 3))])
    assert [results[n].returncode for n in "abc"] == [0, 0, 3]
    seen = {n: json.loads(p.read_text()) for n, p in zip("abc", (a, b, c))}
    assert seen["a"]["threads"] == 2 and seen["a"]["flag"] == "x"
    assert seen["b"]["threads"] == 1 and seen["b"]["flag"] is None  # one task's environment is not another's
    assert len({s["pid"] for s in seen.values()} | {os.getpid()}) == 4  # a process of its own each
    log = Path(results["c"].log).read_text()
    assert log.startswith("$ python -m zygote_stage") and "hello from" in log
    assert "zygote_shared imported" not in log  # the zygote's own output goes to its log
    assert "zygote_shared imported" in (tmp_path / "run" / "logs" / "zygote.log").read_text()


def test_a_stage_that_raises_fails_with_its_traceback_in_its_log(tmp_path):
    env = _modules(tmp_path)
    runner = StudyRunner(tmp_path / "run", jobs=1, env=env, show_progress=False, preload=("zygote_shared",))
    with pytest.raises(StageFailed) as failed:
        runner.run([_task("a", tmp_path / "a.json", "raise")])
    assert failed.value.result.returncode == 1
    log = Path(failed.value.result.log).read_text()
    assert "Traceback" in log and "ValueError: a stage error" in log


def test_a_zygote_that_cannot_start_fails_the_stage_with_the_reason(tmp_path):
    env = _modules(tmp_path)
    runner = StudyRunner(tmp_path / "run", jobs=1, env=env, show_progress=False, preload=("no_such_module_here",))
    with pytest.raises(StageFailed) as failed:
        runner.run([_task("a", tmp_path / "a.json", "0")])
    log = Path(failed.value.result.log).read_text()
    assert "the process this stage was forked from ended" in log and "no_such_module_here" in log


def test_the_zygote_ends_when_the_study_does(tmp_path):
    env = _modules(tmp_path)
    runner = StudyRunner(tmp_path / "run", jobs=1, env=env, show_progress=False, preload=("zygote_shared",))
    runner.run([_task("a", tmp_path / "a.json", "0")])
    assert runner.zygote is None  # closed and waited for
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False).stdout
    assert "calrl.demo.zygote zygote_shared" not in ps


@pytest.mark.slow
def test_a_forked_stage_writes_the_same_bytes_as_its_own_process(tmp_path):
    """The reward-model stage (``calrl train-rm``, two threads) as a new interpreter and as a fork of the zygote
    that preloaded the study's modules: the same weights and report, byte for byte."""
    from calrl.demo.preferences import build_factcheck_rows
    from calrl.demo.processes import PRELOAD, study_env, threads_env
    from calrl.demo.recipes import RewardModelSettings, reward_model_recipe, write_recipe
    from calrl.demo.sft import build_demo_tokenizer, save_reward_init
    from calrl.demo.world import WorldConfig, build_world
    from calrl.jsonio import write_jsonl
    from calrl.tiny.models import build_tiny_causal_lm

    world = build_world(WorldConfig(seed=0, people_per_frequency=6, n_rl_prompts=8, n_preference_prompts=16))
    tokenizer = build_demo_tokenizer(world)
    policy = build_tiny_causal_lm(tokenizer, seed=0, hidden_size=32, num_layers=1, num_heads=2)
    policy.save_pretrained(tmp_path / "sft")
    tokenizer.save_pretrained(tmp_path / "sft")
    save_reward_init(tmp_path / "sft", tmp_path / "rm_init", seed=0)
    data = tmp_path / "factchecks"
    write_jsonl(data / "train.jsonl", build_factcheck_rows(world, 48, seed=1))
    write_jsonl(data / "test.jsonl", build_factcheck_rows(world, 16, seed=2))
    env = study_env(tmp_path)
    reports = []
    for run, preload in (("own", ()), ("forked", PRELOAD)):
        out = tmp_path / run / "rm_base"
        recipe = reward_model_recipe("rm_base", init_dir=tmp_path / "rm_init", preferences_dir=data, out_dir=out,
                                     seed=0, settings=RewardModelSettings(base_epochs=1.0, batch_size=8))
        recipe["training"]["report_to"] = "none"
        recipe["wandb"]["mode"] = "disabled"
        write_recipe(recipe, tmp_path / run / "rm_base.yaml")
        task = Task(name="shared/rm_base", stage="reward models", env=threads_env(2),
                    command=lambda run=run: [sys.executable, "-m", "calrl.cli.main", "train-rm", "--config",
                                             str(tmp_path / run / "rm_base.yaml")])
        StudyRunner(tmp_path / run, jobs=1, env=env, show_progress=False, preload=preload).run([task])
        reports.append(json.loads((out / "reward_model_report.json").read_text()))
    own, forked = (tmp_path / run / "rm_base" / "model.safetensors" for run in ("own", "forked"))
    assert own.read_bytes() == forked.read_bytes()
    for key in ("preference_accuracy", "mean_reward_margin", "confidence_bias"):
        assert reports[0][key] == reports[1][key], key


def test_a_stage_sent_to_a_zygote_that_has_ended_fails_without_a_traceback(tmp_path):
    from calrl.demo.runner import Zygote

    zygote = Zygote(("no_such_module_here",), {}, tmp_path / "logs")
    zygote.proc.wait(timeout=60)  # it could not import its module
    log = tmp_path / "logs" / "a.log"
    stage = zygote.start("zygote_stage", [], dict(os.environ), log)  # no BrokenPipeError
    assert stage.poll() not in (None, 0)
    assert "the process this stage was forked from ended" in log.read_text()
    zygote.close()
