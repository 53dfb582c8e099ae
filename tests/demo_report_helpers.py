"""A study folder as ``calrl demo`` leaves it, without training anything: every file the summary reads
(``calrl eval``'s metrics.json and resolved.jsonl per policy and seed, the training runs' per-epoch calibration evals, the reward
models' probe reports, ``calrl compare``'s gate.json files, the abstention recipe), written by calrl's own
writers from hand-made answers, then read back by :func:`calrl.demo.summary.build_summary`. The report tests
render from it."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from calrl.callbacks.eval_files import write_eval_folder
from calrl.data.records import RESOLVED_ROWS, PredictionRecord
from calrl.demo.layout import Layout, gate_pairs
from calrl.demo.recipes import POLICIES, REWARD_MODELS, RM_BASE
from calrl.demo.study import full_config, quick_config
from calrl.demo.summary import build_summary
from calrl.eval.resolving import resolve_records
from calrl.eval.runner import compute_metrics
from calrl.jsonio import write_json

# stated confidence (0-10) on the well-known and the never-seen people, per policy; None: "I don't know"
STATED = {"sft": (8, 2), "ppo": (9, 9), "ppo_m": (7, 3), "ppo_c": (6, 4), "ppo_v": (9, 8),
          "ppo_c_abstain": (8, None), "grpo_brier": (8, 1)}


def _answers(policy: str, seed: int, n: int = 40) -> list[PredictionRecord]:
    """n answers per slice: right on the well-known people (but one in eight), wrong on the never-seen."""
    records = []
    for group, stated in zip(("fact-often", "fact-never"), STATED[policy]):
        for i in range(n):
            right = group == "fact-often" and (i + seed) % 8 != 0
            conf = None if stated is None else max(0, min(10, stated + (i % 3) - 1))
            text = "I don't know." if conf is None else f"{'Paris' if right else 'Lyon'}. Confidence: {conf}"
            records.append(PredictionRecord(id=f"{group}-{i}", response=text, reference=["Paris"],
                                            slice={"group": group}))
    return records


def _metrics(policy: str, seed: int) -> tuple[dict[str, Any], list[PredictionRecord]]:
    metrics, records, _ = _graded(policy, seed)
    return metrics, records


def _graded(policy: str, seed: int) -> tuple[dict[str, Any], list[PredictionRecord], list[Any]]:
    """(metrics, answers, resolved records) of a policy's hand-made answers, as ``calrl eval`` computes them."""
    records = _answers(policy, seed)
    resolved = resolve_records(records)
    return compute_metrics(resolved, n_boot=0), records, resolved


def _probe_report(rm: str) -> dict[str, Any]:
    calibrated = rm == "rm_calibrated"
    side = {"n": 50, "tie_rate": 0.0}
    return {"n_pairs": 50, "preference_accuracy": 0.96, "mean_reward_chosen": 1.0, "mean_reward_rejected": -1.0,
            "confidence_bias": {
                "chosen": {**side, "prefers_high_rate": 0.98, "mean_reward_difference_high_minus_low": 3.0},
                "rejected": {**side, "prefers_high_rate": 0.05 if calibrated else 1.0,
                             "mean_reward_difference_high_minus_low": -2.0 if calibrated else 4.0}}}


def fake_study(out: Path, seeds: list[int], *, quick: bool) -> tuple[dict[str, Any], Layout]:
    """(summary, layout) of a study with ``seeds`` (quick: the main comparison; else every policy, abstention included)."""
    config = (quick_config(out, seeds=seeds) if quick else full_config(out, seeds=seeds, policies=POLICIES))
    layout = Layout(out)
    for seed in seeds:
        for policy in config.policies:
            metrics, _, resolved = _graded(policy, seed)
            write_json(layout.eval_dir(seed, policy) / "metrics.json", metrics)
            RESOLVED_ROWS.write(layout.eval_dir(seed, policy) / "resolved.jsonl", ((r,) for r in resolved))
            if policy != "sft":  # the RL runs' per-epoch calibration evals
                for epoch, early in ((1, "sft"), (2, policy)):
                    m, r = _metrics(early, seed)
                    write_eval_folder(layout.model_dir(seed, policy) / "calibration_eval" / f"epoch-{epoch}",
                                      label=f"epoch-{epoch}", global_step=4 * epoch, epoch=float(epoch),
                                      metrics=m, records=r)
        for rm in (RM_BASE, *REWARD_MODELS):
            write_json(layout.model_dir(seed, rm) / "reward_model_report.json", _probe_report(rm))
        for candidate, baseline in gate_pairs(config.policies):
            blocked = candidate in ("ppo", "ppo_v")
            write_json(layout.gate_dir(seed, candidate, baseline) / "gate.json", {
                "verdict": "blocked" if blocked else "pass",
                "deltas": {"ece": {"delta": 0.1, "low": 0.05, "high": 0.15, "level": 0.95}},
                "reasons": [{"code": "ece_increase"}] if blocked else [], "warnings": []})
        if "ppo_c_abstain" in config.policies:
            layout.recipe(seed, "ppo_c_abstain").parent.mkdir(parents=True, exist_ok=True)
            layout.recipe(seed, "ppo_c_abstain").write_text("training:\n  rewards:\n  - {name: abstention, value: 0.3}\n")
    machine = {"processor": platform.machine(), "cpu_count": 2, "gpu": None, "platform": platform.platform(),
               "python": platform.python_version(), "torch": "test"}
    command = "calrl demo --quick" if quick else "calrl demo"
    summary = build_summary(config, layout, {}, counts={"eval_items": 80, "rl_prompts": 100}, machine=machine,
                            command=command)
    return summary, layout
