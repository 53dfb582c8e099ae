"""The end-to-end calibration study behind ``calrl demo`` / ``make demo``.

Stages, each a process run through calrl's public entry points. Stages 1-3 run once per study (seeded with its
first seed: ``calrl.demo.layout.SHARED_RUNS``), stages 4-5 once per seed, every seed's RL starting from the same
SFT policy and reward models:

1. world: the world's files: held-out items (``data/eval.jsonl``), RL prompts, preference pairs;
2. ``sft``: the policy trained from scratch (``python -m calrl.demo.sft``);
3. reward models: ``rm_base``: ``calrl train-rm`` on the raters' fact checks, answers alone (correct vs wrong,
   no bias), from the SFT policy with a seeded score head and a tokenizer that drops the elicitation
   instruction; ``rm_plain``, the ordinary RM: ``calrl train-rm`` on all the raters' comparisons (fact checks
   with stated confidences and the biased pairs), from ``rm_base``; ``filter``: ``calrl data
   filter-preferences`` keeps the stronger half of the comparisons by ``rm_base`` and ``rm_plain``;
   ``rm_calibrated`` (PPO-M): ``rm_plain`` fine-tuned on that half with the calibration terms;
4. policies: ``calrl train-ppo`` (PPO, PPO-M, PPO-C on the reward model alone; PPO with the rule-based
   correctness reward added; PPO-C + abstention) and ``calrl train-grpo`` (GRPO + Brier), same prompts, epochs
   and seed;
5. ``calrl eval`` of every policy on the held-out items (``data/eval.jsonl``): the SFT policy from its checkpoint,
   each RL policy from the held-out answers its training callback generated after the last epoch (the same
   answers, see ``_eval_task``), and ``calrl compare`` of the gated pairs (``gate_pairs``);
6. (in process) ``summary.json`` and ``report.md`` / ``report.html``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from calrl.callbacks.eval_files import EVAL_SUBDIR
from calrl.data.readers import read_rows
from calrl.demo.layout import SHARED, SHARED_RUNS, Layout, eval_task_name, gate_pairs, task_name
from calrl.demo.preferences import PreferenceConfig, build_factcheck_rows, build_preference_rows
from calrl.demo.processes import PRELOAD, SFT_THREADS, study_env, threads_env
from calrl.demo.recipes import (
    FULL_POLICIES,
    MAIN_POLICIES,
    METHOD_NAMES,
    RL_POLICIES,
    RM_BASE,
    EvalSettings,
    PPOSettings,
    RecipeSettings,
    RewardModelSettings,
    grpo_recipe,
    ppo_recipe,
    reward_model_of,
    reward_model_recipe,
    write_recipe,
)
from calrl.demo.report import readme_table, write_report
from calrl.demo.runner import StudyRunner, Task, Zygote
from calrl.demo.sft import SFTModelConfig, SFTTargetConfig, prompt_messages
from calrl.demo.summary import build_summary
from calrl.demo.world import WorldConfig, build_world
from calrl.jsonio import write_json, write_jsonl

CLI = [sys.executable, "-m", "calrl.cli.main"]
# A stage runs again when its marker is missing or its fingerprint changed (an interrupted study, a changed
# setting): it then replaces what an earlier run of it left in its folder. calrl train-*, eval and compare
# refuse to replace earlier results unless told, so every stage command says so.
RERUN = ("--overwrite",)
STAGE_ORDER = ("world", "sft", "reward models", "policies", "eval", "gate", "report")


@dataclass
class StudyConfig:
    """Everything the study does; :func:`full_config` and :func:`quick_config` are the two presets."""

    out: Path
    seeds: list[int]
    quick: bool = False
    jobs: int = 2
    world: WorldConfig = field(default_factory=WorldConfig)
    sft: SFTModelConfig = field(default_factory=SFTModelConfig)
    recipes: RecipeSettings = field(default_factory=RecipeSettings)
    n_test_pairs: int = 200  # held-out correct-vs-wrong pairs of the reward models' probe
    # threads of rm_base and rm_plain, a fixed count like the SFT stage's (SFT_THREADS): the quick study runs them
    # alone (only the SFT policy's short eval beside them), so they take both cores; in the full study GRPO + Brier,
    # which needs only the SFT policy, runs beside them
    rm_chain_threads: int = 1
    policies: tuple[str, ...] = FULL_POLICIES  # SFT and the RL policies this study trains and evaluates

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def full_config(out: Path, seeds: list[int] | None = None, jobs: int | None = None,
                policies: tuple[str, ...] | None = None) -> StudyConfig:
    return StudyConfig(out=out, seeds=seeds or [0, 1, 2, 3, 4], jobs=jobs or default_jobs(),
                       policies=policies or FULL_POLICIES)


def quick_config(out: Path, seeds: list[int] | None = None, jobs: int | None = None,
                 policies: tuple[str, ...] | None = None) -> StudyConfig:
    """One seed, the main comparison only (SFT, PPO, PPO-M, PPO-C on the reward model alone), fewer steps:
    the same stages and files in under 3 minutes on 2 cores (149 s alone on the AMD EPYC host; what the test
    suite runs). Long enough to show vanilla PPO growing more confident than SFT on the never-seen people; one
    seed is not a result."""
    return StudyConfig(
        out=out, seeds=seeds or [0], quick=True, jobs=jobs or default_jobs(), policies=policies or MAIN_POLICIES,
        # the full SFT and PPO schedules (step bound included): a shorter SFT left the policy refusing most
        # questions (nothing to compare); with fewer PPO epochs PPO's climb stopped early in some RL seeds. The
        # reward models: rm_base 2 epochs of the 4000 fact checks (the full study's 4), rm_plain 4 of its 4000
        # comparisons and rm_calibrated 2 of the 2000 the filter keeps, as in the full study. With rm_base 1 and
        # rm_plain 2 epochs (sixteenth version and before) the ordinary reward model learnt the raters' confidence
        # bias least in world 2 and PPO-C's well-known people's confidence fell (0.84-0.97 under MKL_CBWR=AUTO,
        # ECE 0.13-0.15), and without the step bound PPO-M and PPO-C lost their confidence statements in one RL
        # seed of seven (KL 13-14 nats); both cost time that share_prompt_prefix's cheaper PPO steps now pay for
        # (docs/history/demo_findings.md, sixteenth and seventeenth versions)
        recipes=RecipeSettings(rm=RewardModelSettings(base_epochs=2.0, base_pairs=4000, epochs=4.0,
                                                      preference_pairs=4000),
                               ppo=PPOSettings(),
                               eval=EvalSettings(bootstrap=50, gate_bootstrap=50)),
        n_test_pairs=100, rm_chain_threads=2,
    )


def default_jobs() -> int:
    return max(1, min(2, os.cpu_count() or 1))


# -------------------------------------------------------------------------------------------- world files
def write_world_files(config: StudyConfig, layout: Layout) -> dict[str, int]:
    """The world's held-out items, RL prompts, the raters' fact checks and the biased preference pairs.

    Held-out pairs (``test``, for the reward models' probe) are correct-vs-wrong pairs with the full prompt,
    drawn apart from the training pairs (other draws on the same checkable people)."""
    world = build_world(config.world)
    write_json(layout.world_config, asdict(config.world))
    write_jsonl(layout.eval_file, (item.to_json() for item in world.eval_items))
    write_jsonl(layout.prompts_file, ({"prompt": prompt_messages(item), "reference": item.reference,
                                        "group": item.slice["group"]} for item in world.rl_items))
    seed = config.world.seed
    rm = config.recipes.rm
    train = build_preference_rows(world, PreferenceConfig(n_pairs=rm.preference_pairs, seed=seed))
    test = build_factcheck_rows(world, config.n_test_pairs, seed=seed * 1000 + 3)
    checks = build_factcheck_rows(world, rm.base_pairs, seed=seed * 1000 + 1, with_confidence=False)
    for folder, rows in ((layout.preferences, train), (layout.factchecks, checks)):
        write_jsonl(folder / "train.jsonl", rows)
        write_jsonl(folder / "test.jsonl", test)
    counts = {"eval_items": len(world.eval_items), "rl_prompts": len(world.rl_items), "preference_train": len(train),
              "preference_test": len(test), "factcheck_train": len(checks), "sft_items": len(world.sft_items)}
    write_json(layout.data / "counts.json", counts)
    return counts


# --------------------------------------------------------------------------------------------- the tasks
def build_tasks(config: StudyConfig, layout: Layout) -> list[Task]:
    """Every stage process of the study: the shared SFT policy and reward models (seeded with the study's first
    seed), then every seed's RL policies, evals and gates (``scheduled`` orders them for launch)."""
    base_seed = config.seeds[0]
    tasks = [_sft_task(config, layout, base_seed), *_reward_model_tasks(config, layout, base_seed),
             _eval_task(config, layout, base_seed, "sft")]
    for seed in config.seeds:
        tasks += _policy_tasks(config, layout, seed)
        tasks += [_eval_task(config, layout, seed, p) for p in config.policies if p not in SHARED_RUNS]
        tasks += _gate_tasks(config, layout, seed)
    return tasks


def _sft_task(config: StudyConfig, layout: Layout, seed: int) -> Task:
    """The SFT run (which also saves the reward models' seeded starting point, ``rm_init``)."""
    sft_dir = layout.model_dir(seed, "sft")
    init_dir = layout.model_dir(seed, "rm_init")
    sft_model = SFTModelConfig(**{**asdict(config.sft), "seed": seed})
    model_file = sft_dir.parent / "sft_config.json"

    def prep_sft(model_file: Path = model_file, sft_model: SFTModelConfig = sft_model) -> str:
        write_json(model_file, asdict(sft_model))
        return (json.dumps([asdict(sft_model), asdict(SFTTargetConfig())], sort_keys=True)
                + layout.world_config.read_text())

    return Task(
        name=task_name(seed, "sft"), stage="sft", prepare=prep_sft, env=threads_env(SFT_THREADS),
        outputs=[*_model_files(sft_dir), *_model_files(init_dir)],
        command=lambda: [
            sys.executable, "-m", "calrl.demo.sft", "--world", str(layout.world_config),
            "--model", str(model_file), "--out", str(sft_dir), "--reward-init", str(init_dir),
            "--wandb-dir", str(sft_dir), "--run-name", f"seed{seed}-sft"])


def _reward_model_tasks(config: StudyConfig, layout: Layout, seed: int) -> list[Task]:
    """rm_base -> rm_plain -> filter -> rm_calibrated (shared by every seed, seeded with ``seed``)."""
    r = config.recipes
    init_dir = layout.model_dir(seed, "rm_init")
    tasks: list[Task] = []
    calibration_pairs = layout.calibration_pairs()
    kept = layout.filtered()
    tasks.append(Task(
        name=f"{SHARED}/filter", stage="reward models", deps=[task_name(seed, "rm_plain")],
        prepare=lambda: _file_digest(layout.preferences / "train.jsonl"), outputs=[kept],
        command=lambda: [
            *CLI, "data", "filter-preferences", *RERUN, "--input", str(layout.preferences / "train.jsonl"),
            "--reward-model", str(layout.model_dir(seed, RM_BASE)),
            "--reward-model", str(layout.model_dir(seed, "rm_plain")),
            "--keep-fraction", str(r.rm.keep_fraction), "--system-prompt", "--batch-size", "64", "--out", str(kept)]))
    chain = {RM_BASE: (task_name(seed, "sft"), init_dir, layout.factchecks),
             "rm_plain": (task_name(seed, RM_BASE), layout.model_dir(seed, RM_BASE), layout.preferences),
             "rm_calibrated": (f"{SHARED}/filter", layout.model_dir(seed, "rm_plain"), calibration_pairs)}
    for rm, (previous, start, data_dir) in chain.items():
        recipe_path = layout.recipe(seed, rm)
        rm_dir = layout.model_dir(seed, rm)

        def prep_rm(rm=rm, recipe_path=recipe_path, rm_dir=rm_dir, data_dir=data_dir, start=start) -> str:
            if rm == "rm_calibrated":
                write_calibration_pairs(kept, layout.preferences / "test.jsonl", data_dir)
            recipe = reward_model_recipe(rm, init_dir=start, preferences_dir=data_dir, out_dir=rm_dir,
                                         seed=seed, settings=r.rm)
            write_recipe(recipe, recipe_path)
            return recipe_path.read_text() + _file_digest(data_dir / "train.jsonl") + _file_digest(
                data_dir / "test.jsonl")

        threads = config.rm_chain_threads if rm in (RM_BASE, "rm_plain") else 1
        tasks.append(Task(name=task_name(seed, rm), stage="reward models", deps=[previous], prepare=prep_rm,
                          env=threads_env(threads),
                          outputs=[rm_dir / "reward_model_report.json", *_model_files(rm_dir)],
                          command=lambda recipe_path=recipe_path: [*CLI, "train-rm", "--config",
                                                                   str(recipe_path), *RERUN]))

    return tasks


def _policy_tasks(config: StudyConfig, layout: Layout, seed: int) -> list[Task]:
    """The RL policies of one seed: train-ppo against their reward model, train-grpo with the Brier reward."""
    r = config.recipes
    sft_dir = layout.model_dir(seed, "sft")
    tasks: list[Task] = []
    for policy in (p for p in RL_POLICIES if p in config.policies):
        recipe_path = layout.recipe(seed, policy)
        out_dir = layout.model_dir(seed, policy)
        rm_name = reward_model_of(policy)
        deps = [task_name(seed, "sft" if policy == "grpo_brier" else rm_name)]

        def prep_policy(policy=policy, recipe_path=recipe_path, out_dir=out_dir, rm_name=rm_name) -> str:
            if policy == "grpo_brier":
                recipe = grpo_recipe(sft_dir=sft_dir, prompts_file=layout.prompts_file, eval_file=layout.eval_file,
                                     out_dir=out_dir, seed=seed, settings=r.grpo, eval_settings=r.eval,
                                     response_length=r.ppo.response_length)
            else:
                recipe = ppo_recipe(policy, sft_dir=sft_dir, rm_dir=layout.model_dir(seed, rm_name),
                                    prompts_file=layout.prompts_file, eval_file=layout.eval_file,
                                    out_dir=out_dir, seed=seed, settings=r.ppo, eval_settings=r.eval)
            write_recipe(recipe, recipe_path)
            return recipe_path.read_text() + _file_digest(layout.prompts_file) + _file_digest(layout.eval_file)

        command = "train-grpo" if policy == "grpo_brier" else "train-ppo"
        tasks.append(Task(name=task_name(seed, policy), stage="policies", deps=deps, prepare=prep_policy,
                          outputs=_model_files(out_dir),
                          command=lambda command=command, recipe_path=recipe_path: [*CLI, command, "--config",
                                                                                    str(recipe_path), *RERUN]))

    return tasks


def _eval_task(config: StudyConfig, layout: Layout, seed: int, policy: str) -> Task:
    """calrl eval of one policy on the held-out items.

    The SFT policy is evaluated from its checkpoint (``--model``). An RL run's training callback already generated
    the held-out answers of its final policy at the end of its last epoch, with the same prompt, batch size and
    greedy decoding as ``calrl eval --model``: those answers are scored (``--predictions``) instead of generated
    again from the saved policy. They are the same answers byte for byte (``tests/test_demo.py`` checks it on
    the quick study), and scoring them skips loading the model: 3-4 s instead of 7-8 s per eval, a minute
    of the full study's wall clock."""
    r = config.recipes
    eval_dir = layout.eval_dir(seed, policy)
    title = METHOD_NAMES[policy] + ("" if policy in SHARED_RUNS else f" (seed {seed})")
    if policy in SHARED_RUNS:
        source = ["--model", str(layout.model_dir(seed, policy)), "--dataset", str(layout.eval_file),
                  "--batch-size", str(r.eval.batch_size), "--max-new-tokens", str(r.eval.max_new_tokens)]
    else:
        source = ["--predictions", str(final_eval_predictions(config, layout, seed, policy))]
    return Task(
        name=eval_task_name(seed, policy), stage="eval", deps=[task_name(seed, policy)],
        prepare=lambda: _file_digest(layout.eval_file), outputs=[eval_dir / "metrics.json"],
        command=lambda: [*CLI, "eval", *RERUN, *source, "--out", str(eval_dir), "--prompt-scale", "0-10",
                         "--bootstrap", str(r.eval.bootstrap), "--seed", str(seed), "--title", title])


def final_eval_predictions(config: StudyConfig, layout: Layout, seed: int, policy: str) -> Path:
    """The held-out answers an RL run's training callback generated at the end of its last epoch (its final
    policy): ``<run>/calibration_eval/epoch-<last>/predictions.jsonl``."""
    epochs = config.recipes.grpo.epochs if policy == "grpo_brier" else config.recipes.ppo.epochs
    return layout.model_dir(seed, policy) / EVAL_SUBDIR / f"epoch-{math.ceil(epochs)}" / "predictions.jsonl"


def _gate_tasks(config: StudyConfig, layout: Layout, seed: int) -> list[Task]:
    """calrl compare of the gated pairs of one seed."""
    r = config.recipes
    tasks: list[Task] = []
    for candidate, baseline in gate_pairs(config.policies):
        gate_dir = layout.gate_dir(seed, candidate, baseline)
        tasks.append(Task(
            name=f"seed{seed}/gate/{candidate}-vs-{baseline}", stage="gate",
            deps=[eval_task_name(seed, candidate), eval_task_name(seed, baseline)], outputs=[gate_dir / "gate.json"],
            ok_codes=(0, 1),  # 1 = the gate blocks: a verdict, not a failure
            command=lambda gate_dir=gate_dir, candidate=candidate, baseline=baseline: [
                *CLI, "compare", *RERUN, "--baseline", str(layout.eval_dir(seed, baseline)),
                "--candidate", str(layout.eval_dir(seed, candidate)), "--out", str(gate_dir),
                "--bootstrap", str(r.eval.gate_bootstrap), "--seed", str(seed)]))
    return tasks


def write_calibration_pairs(kept: Path, test: Path, folder: Path) -> None:
    """The calibrated reward model's data folder: the kept comparisons with the columns of the held-out pairs
    (the filter's score columns dropped, so both splits load with one schema) and the held-out pairs."""
    columns = ("prompt", "chosen", "rejected", "kind", "group")
    write_jsonl(folder / "train.jsonl", ({c: row[c] for c in columns} for row in read_rows(kept)))
    shutil.copyfile(test, folder / "test.jsonl")


def scheduled(tasks: list[Task]) -> list[Task]:
    """The tasks in launch order: earlier stages first (the shared SFT, then the reward models, the policies,
    the evals, the gates), seed by seed within a stage. The runner starts the first ready task of the list, so
    the long chains (SFT -> reward models -> PPO) start early and the short evals and gates fill the end
    (measured on 2 cores: both busy 99% of the wall clock, against 95% in seed order)."""
    return sorted(tasks, key=lambda t: STAGE_ORDER.index(t.stage))


def _model_files(folder: Path) -> list[Path]:
    """What a stage's saved model must still hold for its marker to be trusted (a deleted model reruns it)."""
    return [folder / "config.json", folder / "model.safetensors"]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else ""


def code_version() -> dict[str, Any]:
    """The git commit of the calrl checkout that ran the study, and whether its tracked files had changes."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no", "--", "calrl")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _cpu_model() -> str | None:
    """The CPU's model name (Linux: /proc/cpuinfo), which decides MKL's code path when MKL_CBWR is unset."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)


def machine_description() -> dict[str, Any]:
    """Where the numbers came from: the same seed gives other bits on another CPU or MKL code path
    (``MKL_CBWR``), so both go with every results block. ``MKL_CBWR`` unset is said as such, not as ``AUTO``: on
    the AMD EPYC the demo was built on, AUTO gives AVX2's bits and the unset default a path of its own."""
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "cpu_model": _cpu_model(), "mkl_cbwr": os.environ.get("MKL_CBWR") or "unset",
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


# ----------------------------------------------------------------------------------------------- the study
def run_study(config: StudyConfig, *, show_progress: bool = True, command: str = "calrl demo",
              zygote: Zygote | None = None) -> Path:
    """Run (or resume) the study in ``config.out`` and write ``summary.json``, ``report.md`` and ``report.html``;
    returns the path of ``report.html``. ``zygote``: the stages' zygote, already started
    (``calrl.demo.processes.start_zygote``); without one the runner starts its own when the first stage needs it.
    Starting over (``calrl demo --fresh``) is emptying ``config.out`` before."""
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    layout = Layout(out)
    started = time.time()
    load_start = _load_average()
    random.seed(0)

    t0 = time.time()
    counts = write_world_files(config, layout)
    world_seconds = time.time() - t0
    runner = StudyRunner(out, jobs=config.jobs, env=study_env(config.out), show_progress=show_progress,
                         preload=PRELOAD, zygote=zygote)
    results = runner.run(scheduled(build_tasks(config, layout)))

    t0 = time.time()
    summary = build_summary(config, layout, results, counts=counts, machine=machine_description(),
                            command=command)
    summary["timings"]["world_seconds"] = round(world_seconds, 2)
    summary["code"] = code_version()
    summary["load_average"] = {"start": load_start, "end": _load_average()}
    summary["timings"]["wall_seconds"] = round(time.time() - started, 1)
    write_json(out / "summary.json", summary)
    report = write_report(summary, layout)
    summary["timings"]["report_seconds"] = round(time.time() - t0, 2)
    summary["timings"]["wall_seconds"] = round(time.time() - started, 1)
    write_json(out / "summary.json", summary)
    if show_progress:
        print(readme_table(summary))
    return report


def _load_average() -> list[float] | None:
    """The machine's 1-, 5- and 15-minute load averages (how busy the cores were), where the OS tells."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None
