"""The environment of the study's stage processes, and the zygote they are forked from (light: no torch).

``calrl demo`` starts the zygote (:class:`calrl.demo.runner.Zygote`) before it imports the study's own modules,
so that the two imports (8-10 s each on this 2-core machine) run side by side instead of one after the other.
"""

from __future__ import annotations

from pathlib import Path

from calrl.demo.runner import Zygote

# The SFT stage runs alone (every other stage needs its policy), so it takes two threads whatever ``--jobs`` is:
# 49 s instead of 61 s on this 2-core machine. A fixed count, not one per idle core, so the numbers do not depend
# on --jobs or on the machine's core count. With MKL_CBWR unset or AUTO the weights are the same to the bit as with
# one thread; with COMPATIBLE they differ from one thread's but two threads give the same bits run after run
# (docs/history/demo_findings.md, eighth version).
SFT_THREADS = 2


# What the stage processes import, loaded once by the study's zygote (calrl/demo/zygote.py) that forks them: each
# stage started as a new interpreter spent 8-10 s importing these on this 2-core machine before doing any work
PRELOAD = ("calrl.cli.main", "calrl.cli.train_cmd", "calrl.cli.eval_cmd", "calrl.cli.compare_cmd",
           "calrl.cli.data_cmd", "calrl.demo.sft", "calrl.runners.runner", "calrl.runners.ppo", "calrl.runners.rm",
           "calrl.runners.grpo", "calrl.runners.reporting", "calrl.eval.run", "calrl.gate.run", "calrl.gate.report",
           "calrl.reward_modeling.filtering")


def threads_env(n: int) -> dict[str, str]:
    """The environment of a stage process that computes with ``n`` threads."""
    return {"OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}


def study_env(out: Path) -> dict[str, str]:
    """Offline, quiet, and one thread per process whatever ``jobs`` is (the SFT stage's own: ``SFT_THREADS``):
    a float sum split over threads may add in another order (the numbers would then depend on ``--jobs`` and on
    the machine's core count), and
    PYTHONHASHSEED fixes the order of any set iteration a stage might do."""
    env = {
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TRL_EXPERIMENTAL_SILENCE": "1",
        "MPLBACKEND": "Agg", "HF_DATASETS_CACHE": str(out / ".cache" / "datasets"),
        "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1",
    }
    env.update({**threads_env(1), "PYTHONHASHSEED": "0"})
    return env


def start_zygote(out: Path) -> Zygote:
    """The zygote of a study writing to ``out`` (its log: ``out/logs/zygote.log``), importing :data:`PRELOAD`:
    the one :class:`calrl.demo.runner.StudyRunner` would start, started before the study's modules are imported."""
    return Zygote(PRELOAD, study_env(out), out / "logs")
