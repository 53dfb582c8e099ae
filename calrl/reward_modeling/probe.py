"""Reward-model report: preference accuracy on held-out pairs and the confidence-bias probe.

The probe (methods.md section 2) scores each response twice, with a high and with a low stated
confidence, and counts how often the reward model prefers the high-confidence version, separately
for chosen and for rejected responses. An uncalibrated reward model prefers high confidence on
both; a calibrated one on chosen responses only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, TrainerCallback

from calrl.io import write_text
from calrl.jsonio import write_json
from calrl.progress import progress
from calrl.reward_modeling.calibrated_data import (
    CALIBRATED_TEXT_COLUMNS,
    CalibratedPairsConfig,
    build_calibrated_pairs,
    check_preference_columns,
)
from calrl.reward_modeling.sequence_scores import forward_scores
from calrl.reward_modeling.tokenization import tokenize_responses

REPORT_JSON = "reward_model_report.json"
REPORT_MD = "reward_model_report.md"


@torch.no_grad()
def score_texts(model, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, column: str, *,
                batch_size: int = 16, show_progress: bool = False,
                token_ids: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
    """Scalar rewards of ``prompt + dataset[column]`` per row, tokenized as the reward trainer does.

    ``token_ids``: those rows' ids when the caller already has them (the trainer's tokenized ``<column>_ids``);
    scored in the same batches, so the scores are the same to the bit."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = list(token_ids) if token_ids is not None else tokenize_responses(tokenizer, list(dataset), column)
    rewards = [forward_scores(model, ids[start:start + batch_size], pad_id).cpu()
               for start in progress(range(0, len(ids), batch_size), desc=f"scoring {column}", unit="batch",
                                     disable=not show_progress)]
    return torch.cat(rewards) if rewards else torch.empty(0)


def preference_stats(better: torch.Tensor, worse: torch.Tensor) -> dict[str, float | int]:
    """n, rate of better > worse, tie rate and mean difference of two reward vectors."""
    diff = better - worse
    return {
        "n": int(diff.numel()),
        "rate": float((diff > 0).float().mean()) if diff.numel() else float("nan"),
        "tie_rate": float((diff == 0).float().mean()) if diff.numel() else float("nan"),
        "mean_difference": float(diff.mean()) if diff.numel() else float("nan"),
    }


def probe_pairs_config(config: CalibratedPairsConfig | None) -> CalibratedPairsConfig:
    """The probe's pairs: ``config`` with ``pairing="ranges"`` (the high range against the low range), whatever
    pairing the reward model trained on, so that the reports of both pairings measure the same thing."""
    return replace(config or CalibratedPairsConfig(), pairing="ranges")


def reward_model_report(model, tokenizer: PreTrainedTokenizerBase, pairs_dataset: Dataset, *,
                        batch_size: int = 16, config: CalibratedPairsConfig | None = None,
                        show_progress: bool = False) -> dict[str, Any]:
    """Preference accuracy, mean margin and the confidence-bias probe of a reward model on held-out pairs.

    ``pairs_dataset`` has ``chosen``/``rejected`` (optionally ``prompt``), plain or conversational;
    if it lacks the calibrated columns they are built with ``config``.
    """
    check_preference_columns(pairs_dataset.column_names)
    if len(pairs_dataset) == 0:
        raise ValueError("the pairs dataset is empty")
    config = probe_pairs_config(config)
    if not all(c in pairs_dataset.column_names for c in CALIBRATED_TEXT_COLUMNS):
        pairs_dataset = build_calibrated_pairs(pairs_dataset, config)
    was_training = model.training
    model.eval()
    try:
        r = {c: score_texts(model, tokenizer, pairs_dataset, c, batch_size=batch_size, show_progress=show_progress)
             for c in ("chosen", "rejected", *CALIBRATED_TEXT_COLUMNS)}
    finally:
        model.train(was_training)
    pref = preference_stats(r["chosen"], r["rejected"])
    chosen_bias = preference_stats(r["chosen_high"], r["chosen_low"])
    rejected_bias = preference_stats(r["rejected_high"], r["rejected_low"])
    return {
        "n_pairs": pref["n"],
        "preference_accuracy": pref["rate"],
        "preference_tie_rate": pref["tie_rate"],
        "mean_reward_margin": pref["mean_difference"],
        "mean_reward_chosen": float(r["chosen"].mean()),
        "mean_reward_rejected": float(r["rejected"].mean()),
        "confidence_bias": {
            "chosen": {"n": chosen_bias["n"], "prefers_high_rate": chosen_bias["rate"],
                       "tie_rate": chosen_bias["tie_rate"],
                       "mean_reward_difference_high_minus_low": chosen_bias["mean_difference"]},
            "rejected": {"n": rejected_bias["n"], "prefers_high_rate": rejected_bias["rate"],
                         "tie_rate": rejected_bias["tie_rate"],
                         "mean_reward_difference_high_minus_low": rejected_bias["mean_difference"]},
        },
        # Share of the two calibration preferences the RM gets right: cwh > cwl and rwl > rwh.
        "calibrated_preference_rate": (chosen_bias["rate"] + float((r["rejected_low"] > r["rejected_high"])
                                                                   .float().mean())) / 2,
        "probe": {"scale": config.scale, "high_range": list(config.high_range),
                  "low_range": list(config.low_range), "seed": config.seed},
    }


def report_scalars(report: dict[str, Any], prefix: str = "rm_probe/") -> dict[str, float]:
    """The report's numbers as flat ``rm_probe/...`` scalars."""
    out = {
        f"{prefix}preference_accuracy": report["preference_accuracy"],
        f"{prefix}mean_reward_margin": report["mean_reward_margin"],
        f"{prefix}calibrated_preference_rate": report["calibrated_preference_rate"],
        f"{prefix}n_pairs": report["n_pairs"],
    }
    for side in ("chosen", "rejected"):
        bias = report["confidence_bias"][side]
        out[f"{prefix}{side}_prefers_high_rate"] = bias["prefers_high_rate"]
        out[f"{prefix}{side}_mean_reward_difference"] = bias["mean_reward_difference_high_minus_low"]
    return out


TABLE_COLUMNS = ["response", "n", "prefers_high_rate", "tie_rate", "mean_reward_difference_high_minus_low"]


def report_table_rows(report: dict[str, Any]) -> list[list[Any]]:
    return [[side, *(report["confidence_bias"][side][k] for k in TABLE_COLUMNS[1:])] for side in ("chosen", "rejected")]


def report_markdown(report: dict[str, Any]) -> str:
    probe = report["probe"]
    lines = [
        "# Reward-model report",
        "",
        f"- pairs: {report['n_pairs']}",
        f"- preference accuracy (r(chosen) > r(rejected)): {report['preference_accuracy']:.4f}",
        f"- mean reward margin (chosen - rejected): {report['mean_reward_margin']:.4f}",
        f"- calibrated preference rate (cwh > cwl and rwl > rwh, averaged): {report['calibrated_preference_rate']:.4f}",
        "",
        "## Confidence-bias probe",
        "",
        (f"Same response with a high ({probe['high_range']}) or a low ({probe['low_range']}) stated confidence "
         f"on the 0-10 range, written on the {probe['scale']!r} scale. A calibrated reward model prefers the "
         "high-confidence version of chosen responses and the low-confidence version of rejected ones."),
        "",
        "| response | n | prefers high | ties | mean r(high) - r(low) |",
        "|---|---:|---:|---:|---:|",
    ]
    for side, n, rate, ties, diff in report_table_rows(report):
        lines.append(f"| {side} | {n} | {rate:.4f} | {ties:.4f} | {diff:.4f} |")
    return "\n".join(lines) + "\n"


def write_reward_model_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``reward_model_report.json`` and ``.md`` atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    write_json(out_dir / REPORT_JSON, report)
    write_text(out_dir / REPORT_MD, report_markdown(report))
    return out_dir / REPORT_JSON, out_dir / REPORT_MD


def log_reward_model_report(report: dict[str, Any], run, *, step_metrics: dict[str, Any] | None = None) -> None:
    """Log the report to a W&B run: ``rm_probe/...`` scalars and a ``rm_probe/confidence_bias`` table."""
    import wandb  # 0.5 s: only a run that logs to W&B calls this (a wandb run is given)

    table = wandb.Table(columns=TABLE_COLUMNS, data=report_table_rows(report))
    run.log({**report_scalars(report), "rm_probe/confidence_bias": table, **(step_metrics or {})})


class RewardModelProbeCallback(TrainerCallback):
    """Runs the reward-model probe on a held-out pair set at every epoch end and evaluation.

    Each report is appended to ``history`` and to the trainer's ``log_history`` (so it is in
    ``trainer_state.json``), logged to the active W&B run when ``report_to`` includes wandb (with
    ``train/global_step``, the step metric of transformers' W&B integration), and, with ``out_dir``,
    written to ``out_dir/step-<global_step>/``. The probe runs once per global step (an evaluation
    right after an epoch end reuses it). Every process scores the set (sharded models need all ranks
    in the forward); only the main process logs and writes.
    """

    def __init__(self, pairs_dataset: Dataset, *, config: CalibratedPairsConfig | None = None, batch_size: int = 16,
                 on_epoch: bool = True, on_evaluate: bool = True, out_dir: str | Path | None = None) -> None:
        check_preference_columns(pairs_dataset.column_names)
        self.config = probe_pairs_config(config)
        if not all(c in pairs_dataset.column_names for c in CALIBRATED_TEXT_COLUMNS):
            pairs_dataset = build_calibrated_pairs(pairs_dataset, self.config)
        self.pairs = pairs_dataset
        self.batch_size = batch_size
        self.probe_on_epoch, self.probe_on_evaluate = on_epoch, on_evaluate
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.history: list[dict[str, Any]] = []
        self._last_step: int | None = None

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.probe_on_epoch:
            self._probe(args, state, **kwargs)

    def on_evaluate(self, args, state, control, **kwargs):
        if self.probe_on_evaluate:
            self._probe(args, state, **kwargs)

    def _probe(self, args, state, model=None, processing_class=None, **_: Any) -> None:
        if model is None or processing_class is None or self._last_step == state.global_step:
            return
        self._last_step = state.global_step
        report = reward_model_report(model, processing_class, self.pairs, batch_size=self.batch_size,
                                     config=self.config)
        report.update(global_step=state.global_step, epoch=state.epoch)
        self.history.append(report)
        if not state.is_world_process_zero:
            return
        state.log_history.append({**report_scalars(report), "epoch": state.epoch, "step": state.global_step})
        if self.out_dir is not None:
            write_reward_model_report(report, self.out_dir / f"step-{state.global_step}")
        report_to = args.report_to if isinstance(args.report_to, list) else [args.report_to]
        if "wandb" in report_to or "all" in report_to:
            import wandb  # 0.5 s: only when report_to names wandb (checked above)

            if wandb.run is not None:
                log_reward_model_report(report, wandb.run, step_metrics={"train/global_step": state.global_step})
