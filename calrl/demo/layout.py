"""Where the study's files live, and which gates it runs: shared by the study (which writes them) and the
summary (which reads them back), so neither imports the other."""

from __future__ import annotations

from pathlib import Path


class Layout:
    """Where every file of the study lives under ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.data = out / "data"
        self.eval_file = self.data / "eval.jsonl"
        self.prompts_file = self.data / "rl_prompts.jsonl"
        self.preferences = self.data / "preferences"
        self.factchecks = self.data / "factchecks"
        self.world_config = self.data / "world_config.json"
        self.recipes = out / "recipes"
        self.evals = out / "evals"
        self.gates = out / "gates"
        self.plots = out / "plots"

    def seed_dir(self, seed: int) -> Path:
        return self.out / f"seed{seed}"

    def model_dir(self, seed: int, name: str) -> Path:
        """A training run's output folder (its checkpoint, W&B run and per-epoch calibration evals)."""
        return self.seed_dir(seed) / name

    def filtered(self, seed: int) -> Path:
        """What ``calrl data filter-preferences`` kept of the comparisons (per seed: it scores them with that
        seed's reward models), its report beside it."""
        return self.seed_dir(seed) / "filter" / "kept.jsonl"

    def calibration_pairs(self, seed: int) -> Path:
        """The calibrated reward model's data folder: the kept comparisons (``train``) and the held-out pairs."""
        return self.seed_dir(seed) / "calibration_pairs"

    def eval_dir(self, seed: int, policy: str) -> Path:
        return self.evals / f"seed{seed}" / policy

    def gate_dir(self, seed: int, candidate: str, baseline: str) -> Path:
        return self.gates / f"seed{seed}" / f"{candidate}-vs-{baseline}"

    def recipe(self, seed: int, name: str) -> Path:
        return self.recipes / f"seed{seed}" / f"{name}.yaml"


def gate_pairs(policies: tuple[str, ...] | list[str] | None = None) -> list[tuple[str, str]]:
    """(candidate, baseline): vanilla PPO (with and without the correctness reward) against SFT, PPO-M and
    PPO-C against vanilla PPO, and the other verifiable-reward policies against PPO + correctness; only the
    pairs whose two policies are in ``policies`` (default: all)."""
    pairs = [("ppo", "sft"), ("ppo_v", "sft"), ("ppo_m", "ppo"), ("ppo_c", "ppo")]
    pairs += [(p, "ppo_v") for p in ("ppo_c_abstain", "grpo_brier")]
    if policies is not None:
        pairs = [(c, b) for c, b in pairs if c in policies and b in policies]
    return pairs
