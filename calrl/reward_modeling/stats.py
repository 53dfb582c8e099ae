"""The reward model's stored mean and standard deviation (for ``normalize_reward`` and the PPO-C average).

The reference's reward model carries a mean and a std of its scores; its PPO-C scripts normalise the
RM output with them (``--normalize_reward``) and start the PPO-C moving average from the mean. calrl
computes them at the end of ``calrl train-rm`` (std unbiased) over the responses of the split that
``reward_stats_split`` names: ``train`` (default: every chosen and rejected training response,
:func:`training_reward_statistics`) or ``eval`` (the reference's: every sequence its evaluation scores,
chosen and rejected plus the four calibrated texts of a calibrated RM, :func:`dataset_reward_statistics`
on the trainer's tokenized eval set). They are stored in the RM folder: in ``config.json`` (keys
``calrl_reward_mean``, ``calrl_reward_std``, ``calrl_reward_count``, read back by
:func:`stored_reward_stats` from a loaded model's config), in ``reward_stats.json`` and in the model card.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from calrl.reward_modeling.probe import score_texts
from calrl.reward_modeling.sequence_scores import forward_scores

REWARD_STATS_FILE = "reward_stats.json"
CONFIG_KEYS = {"mean": "calrl_reward_mean", "std": "calrl_reward_std", "count": "calrl_reward_count"}
STATS_SPLITS = ("train", "eval")


def reward_statistics(scores: torch.Tensor) -> dict[str, float]:
    """Mean, unbiased std (1.0 when undefined or zero, so that normalising never divides by 0) and count."""
    s = scores.double().flatten()
    n = int(s.numel())
    mean = float(s.mean()) if n else 0.0
    std = float(s.std()) if n > 1 else 1.0
    if not math.isfinite(std) or std <= 0.0:
        std = 1.0
    return {"mean": mean, "std": std, "count": n}


def training_reward_statistics(model: Any, tokenizer: Any, pairs: Any, *, batch_size: int = 16,
                               show_progress: bool = False, tokenized: Any = None,
                               max_length: int | None = None) -> dict[str, float]:
    """:func:`reward_statistics` of the RM's scores on every chosen and rejected response of ``pairs``.

    ``tokenized``: the trainer's tokenized copy of ``pairs`` (``chosen_ids``/``rejected_ids``), read instead of
    tokenizing every response again when it holds every pair untouched (:func:`same_rows`): the same ids, scored
    in the same batches, give the same statistics to the bit."""
    reuse = tokenized is not None and same_rows(pairs, tokenized, max_length)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            scores = [score_texts(model, tokenizer, pairs, column, batch_size=batch_size, show_progress=show_progress,
                                  token_ids=tokenized[f"{column}_ids"] if reuse else None)
                      for column in ("chosen", "rejected")]
    finally:
        model.train(was_training)
    return reward_statistics(torch.cat(scores))


def same_rows(pairs: Any, tokenized: Any, max_length: int | None = None) -> bool:
    """Whether ``tokenized`` (a tokenized pair set) holds one row per pair of ``pairs``, in order and none cut: as
    many rows, ``chosen_ids``/``rejected_ids`` present, and (with ``max_length``) every sequence shorter than it
    (a pair longer than ``max_length`` was dropped or truncated by the tokenization)."""
    columns = getattr(tokenized, "column_names", None) or []
    if not all(c in columns for c in ("chosen_ids", "rejected_ids")):
        return False
    try:
        if len(tokenized) != len(pairs):
            return False
    except TypeError:  # a streamed set has no length
        return False
    if max_length is None:
        return True
    return all(len(ids) < max_length for c in ("chosen_ids", "rejected_ids") for ids in tokenized[c])


def dataset_reward_statistics(model: Any, dataset: Any, columns: Sequence[str], pad_token_id: int | None, *,
                              batch_size: int = 16, show_progress: bool = False) -> dict[str, float]:
    """:func:`reward_statistics` of the RM's scores on every row of each token-id column of ``dataset``.

    ``dataset``: rows with lists of token ids (the reward trainer's tokenized pairs: ``chosen_ids``,
    ``rejected_ids`` and the calibrated id columns), each scored alone as the trainer reads it.
    """
    rows = [list(ids) for column in columns for ids in dataset[column]]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            scores = [forward_scores(model, rows[start:start + batch_size], pad_token_id).cpu()
                      for start in tqdm(range(0, len(rows), batch_size), desc="Scoring for the reward statistics",
                                        disable=not show_progress)]
    finally:
        model.train(was_training)
    return reward_statistics(torch.cat(scores) if scores else torch.empty(0))


def write_reward_statistics(stats: dict[str, float], out_dir: str | Path) -> Path:
    """Write ``reward_stats.json`` and add the statistics to ``config.json`` when the folder has one."""
    out = Path(out_dir)
    path = out / REWARD_STATS_FILE
    path.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    config = out / "config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        data.update({CONFIG_KEYS[k]: stats[k] for k in CONFIG_KEYS})
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def stored_reward_stats(model: Any) -> dict[str, float] | None:
    """``{"mean", "std"}`` stored in a loaded reward model's config, or None when it has none."""
    config = getattr(model, "config", None)
    mean = getattr(config, CONFIG_KEYS["mean"], None)
    std = getattr(config, CONFIG_KEYS["std"], None)
    if mean is None or std is None:
        return None
    return {"mean": float(mean), "std": float(std)}
