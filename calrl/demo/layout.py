"""Where the study's files live, and which gates it runs: shared by the study (which writes them) and the
summary (which reads them back), so neither imports the other."""

from __future__ import annotations

from pathlib import Path

# The runs trained once per study and shared by every seed's RL runs: the SFT policy (with the reward models'
# seeded starting point, ``rm_init``) and the reward-model chain. The seeds of the study are the RL seeds: each
# seed trains every RL policy from the same SFT policy against the same reward models, as the paper trains its
# PPO variants from one SFT checkpoint and one reward model. Trained per seed, these stages were 1,100 of the
# full study's 2,200 process-seconds (over the 15-minute budget: docs/history/demo_findings.md, eighth version).
SHARED_RUNS = frozenset({"sft", "rm_init", "rm_base", "rm_plain", "rm_calibrated"})
SHARED = "shared"


class Layout:
    """Where every file of the study lives under ``out``.

    Per-seed paths take the seed; for a shared run (:data:`SHARED_RUNS`) the seed is ignored and the path is
    the one shared folder (``out/shared/<name>``), so per-seed code reads the SFT policy or a reward model the
    same way as an RL policy."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.data = out / "data"
        self.eval_file = self.data / "eval.jsonl"
        self.prompts_file = self.data / "rl_prompts.jsonl"
        self.preferences = self.data / "preferences"
        self.factchecks = self.data / "factchecks"
        self.world_config = self.data / "world_config.json"
        self.shared = out / SHARED
        self.recipes = out / "recipes"
        self.evals = out / "evals"
        self.gates = out / "gates"
        self.plots = out / "plots"

    def seed_dir(self, seed: int) -> Path:
        return self.out / f"seed{seed}"

    def model_dir(self, seed: int, name: str) -> Path:
        """A training run's output folder (its checkpoint, W&B run and per-epoch calibration evals)."""
        return self.out / scope(seed, name) / name

    def filtered(self) -> Path:
        """What ``calrl data filter-preferences`` kept of the comparisons (scored by the shared reward models),
        its report beside it."""
        return self.shared / "filter" / "kept.jsonl"

    def calibration_pairs(self) -> Path:
        """The calibrated reward model's data folder: the kept comparisons (``train``) and the held-out pairs."""
        return self.shared / "calibration_pairs"

    def eval_dir(self, seed: int, policy: str) -> Path:
        return self.evals / scope(seed, policy) / policy

    def gate_dir(self, seed: int, candidate: str, baseline: str) -> Path:
        return self.gates / f"seed{seed}" / f"{candidate}-vs-{baseline}"

    def recipe(self, seed: int, name: str) -> Path:
        return self.recipes / scope(seed, name) / f"{name}.yaml"


def scope(seed: int, name: str) -> str:
    """Where run ``name`` of ``seed`` belongs: ``shared`` for a shared run (:data:`SHARED_RUNS`), else ``seed<k>``."""
    return SHARED if name in SHARED_RUNS else f"seed{seed}"


def task_name(seed: int, name: str) -> str:
    """The study runner's name of a stage: ``shared/<name>`` for a shared run, ``seed<k>/<name>`` otherwise."""
    return f"{scope(seed, name)}/{name}"


def eval_task_name(seed: int, policy: str) -> str:
    """The name of the ``calrl eval`` stage of ``policy`` (one for the shared SFT policy)."""
    return f"{scope(seed, policy)}/eval/{policy}"


def gate_pairs(policies: tuple[str, ...] | list[str] | None = None) -> list[tuple[str, str]]:
    """(candidate, baseline): vanilla PPO (with and without the correctness reward) against SFT, PPO-M and
    PPO-C against vanilla PPO, GRPO + Brier against PPO + correctness, and PPO-C + abstention against SFT: a
    release gate against a policy that never abstains (PPO + correctness) blocks an abstaining one by design
    (``refusal_explosion``), while SFT abstains too. Only the pairs whose two policies are in ``policies``
    (default: all)."""
    pairs = [("ppo", "sft"), ("ppo_v", "sft"), ("ppo_m", "ppo"), ("ppo_c", "ppo"), ("grpo_brier", "ppo_v"),
             ("ppo_c_abstain", "sft")]
    if policies is not None:
        pairs = [(c, b) for c, b in pairs if c in policies and b in policies]
    return pairs
