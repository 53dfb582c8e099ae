"""The preference-data filter of the paper's calibrated-RM data (methods.md section 9).

The reference keeps the single-turn pairs (its rule: ``chosen`` and ``rejected`` are conversations of
exactly two messages, user and assistant), scores ``chosen`` and ``rejected`` with two reward models,
averages each response's scores over the models, takes ``preference strength = mean chosen score -
mean rejected score`` (the same as the mean of the per-model differences), sorts by it and keeps the
first ``int(0.5 * n)`` rows (floor). Its reward models were read with their stored normalisation
(``config.normalized_reward = True``), so their scores are on comparable scales before averaging.

calrl's version (:func:`filter_preferences`):

* single turn (:func:`is_single_turn_pair`): with a ``prompt`` column, the prompt is a string or exactly
  one user message, and each response a string or exactly one assistant message; without one (implicit
  prompt), each of ``chosen`` / ``rejected`` is a string or exactly ``[user, assistant]``;
* scores: any number of scorers (:class:`RewardModelScorer` wraps a reward model, normalised with the
  statistics ``calrl train-rm`` stores when the model has them); strength = mean over scorers of
  (chosen - rejected);
* keeps the ``floor(keep_fraction * n_single_turn)`` strongest rows (ties: the earlier row first), in
  their original order, with ``preference_strength``, ``chosen_score`` and ``rejected_score`` added
  (the reference's column names).

Everything else (the calibrated texts) is :func:`calrl.reward_modeling.build_calibrated_pairs`, applied by
``calrl train-rm`` on the filtered file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import AutoTokenizer

from calrl.data.readers import is_saved_dataset, load_saved, read_rows
from calrl.errors import InputError
from calrl.io import check_input, staged_dir, staged_files
from calrl.jsonio import write_json, write_jsonl
from calrl.reward_modeling.calibrated_data import check_preference_columns, is_message_list
from calrl.reward_modeling.loading import load_sequence_classifier
from calrl.reward_modeling.probe import score_texts
from calrl.reward_modeling.sequence_scores import tokenizers_agree
from calrl.reward_modeling.stats import stored_reward_stats
from calrl.reward_modeling.tokenization import tokenize_responses

#: scorer(rows, column) -> one score per row
Scorer = Callable[[Sequence[dict[str, Any]], str], torch.Tensor]
STRENGTH_COLUMNS = ("preference_strength", "chosen_score", "rejected_score")


@dataclass
class FilterReport:
    """Counts of one filtering run (written beside the output as ``<name>.filter_report.json``)."""

    n_rows: int
    n_single_turn: int
    n_multi_turn: int
    n_kept: int
    keep_fraction: float
    min_kept_strength: float
    mean_strength_single_turn: float
    mean_strength_kept: float
    reward_models: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _one_message(value: Any, role: str) -> bool:
    return is_message_list(value) and len(value) == 1 and value[0].get("role") == role


def is_single_turn_pair(row: dict[str, Any], *, index: int | None = None, system_prompt: bool = False) -> bool:
    """Whether a preference row is single turn (module docstring); a value of another type is an error.

    ``system_prompt``: a system message before the one user message keeps a pair single turn (a system prompt is
    no turn); off, the reference's rule (exactly ``[user, assistant]``; its data has no system messages).
    """
    if system_prompt:
        row = {k: _without_system(v) if k in ("prompt", "chosen", "rejected") else v for k, v in row.items()}
    prompt = row.get("prompt")
    for column in ("chosen", "rejected"):
        value = row.get(column)
        if not (isinstance(value, str) or is_message_list(value)):
            raise InputError(f"row {index}: expected a string or a list of messages, got {type(value).__name__}",
                             field=column)
    if prompt is not None:
        if not (isinstance(prompt, str) or _one_message(prompt, "user")):
            return False
        return all(isinstance(row[c], str) or _one_message(row[c], "assistant") for c in ("chosen", "rejected"))
    return all(isinstance(row[c], str)
               or (len(row[c]) == 2 and [m.get("role") for m in row[c]] == ["user", "assistant"])
               for c in ("chosen", "rejected"))


def _without_system(value: Any) -> Any:
    if is_message_list(value) and value and value[0].get("role") == "system":
        return value[1:]
    return value


def check_keep_fraction(keep_fraction: float) -> float:
    value = float(keep_fraction)
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise InputError(f"must be in (0, 1], got {keep_fraction}", field="keep_fraction")
    return value


def preference_strengths(rows: Sequence[dict[str, Any]], scorers: Sequence[Scorer]
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(strength, chosen, rejected)``: each response's score averaged over ``scorers``, and their difference."""
    if not scorers:
        raise InputError("at least one reward model is needed", field="reward_model")
    chosen = torch.stack([torch.as_tensor(s(rows, "chosen"), dtype=torch.float64).reshape(-1) for s in scorers])
    rejected = torch.stack([torch.as_tensor(s(rows, "rejected"), dtype=torch.float64).reshape(-1) for s in scorers])
    if chosen.shape[1] != len(rows) or rejected.shape[1] != len(rows):
        raise InputError(f"a scorer returned {chosen.shape[1]} scores for {len(rows)} rows")
    bad = ~(torch.isfinite(chosen).all(0) & torch.isfinite(rejected).all(0))
    if bad.any():
        raise InputError(f"row {int(bad.nonzero()[0])}: a reward model gave a non-finite score")
    chosen, rejected = chosen.mean(0), rejected.mean(0)
    return chosen - rejected, chosen, rejected


def n_to_keep(n_single_turn: int, keep_fraction: float, *, path: str | None = None) -> int:
    """``floor(keep_fraction * n_single_turn)``; 0 is an error (no rows left)."""
    n_keep = int(check_keep_fraction(keep_fraction) * n_single_turn)
    if n_keep == 0:
        raise InputError(f"no rows left: keep fraction {keep_fraction} of {n_single_turn} single-turn rows keeps "
                         f"none", path=path)
    return n_keep


def strongest(strengths: torch.Tensor, keep_fraction: float) -> list[int]:
    """Indices of the ``floor(keep_fraction * n)`` largest strengths (earlier row first on ties), ascending."""
    n_keep = int(check_keep_fraction(keep_fraction) * len(strengths))
    order = sorted(range(len(strengths)), key=lambda i: (-float(strengths[i]), i))
    return sorted(order[:n_keep])


def single_turn_rows(rows: Sequence[dict[str, Any]], *, path: str | None = None,
                     system_prompt: bool = False) -> list[dict[str, Any]]:
    """The single-turn rows, after checking the columns and values; none left is an error."""
    if not rows:
        raise InputError("no rows", path=path)
    check_preference_columns(sorted(set().union(*(r.keys() for r in rows))), path=path)
    for i, row in enumerate(rows):
        for column in ("chosen", "rejected"):
            if row.get(column) is None:
                raise InputError(f"row {i}: missing value", path=path, field=column)
    try:
        single = [r for i, r in enumerate(rows) if is_single_turn_pair(r, index=i, system_prompt=system_prompt)]
    except InputError as exc:  # names the row and the column: add the file
        raise InputError(exc.reason, path=path, field=exc.field) from None
    if not single:
        raise InputError(f"no rows left: none of the {len(rows)} rows is a single-turn pair", path=path)
    return single


def filter_preferences(rows: Sequence[dict[str, Any]], scorers: Sequence[Scorer], *, keep_fraction: float = 0.5,
                       path: str | None = None, reward_models: list[dict[str, Any]] | None = None,
                       system_prompt: bool = False) -> tuple[list[dict[str, Any]], FilterReport]:
    """The single-turn rows with the strongest preference (module docstring) and a report of counts."""
    keep_fraction = check_keep_fraction(keep_fraction)
    single = single_turn_rows(rows, path=path, system_prompt=system_prompt)
    n_to_keep(len(single), keep_fraction, path=path)
    strength, chosen, rejected = preference_strengths(single, scorers)
    keep = strongest(strength, keep_fraction)
    kept = [{**single[i], "preference_strength": float(strength[i]), "chosen_score": float(chosen[i]),
             "rejected_score": float(rejected[i])} for i in keep]
    kept_strength = strength[keep]
    report = FilterReport(
        n_rows=len(rows), n_single_turn=len(single), n_multi_turn=len(rows) - len(single), n_kept=len(kept),
        keep_fraction=keep_fraction, min_kept_strength=float(kept_strength.min()),
        mean_strength_single_turn=float(strength.mean()), mean_strength_kept=float(kept_strength.mean()),
        reward_models=list(reward_models or []))
    return kept, report


# ------------------------------------------------------------------------------------ reward models
class TokenCache:
    """Token ids of ``prompt + row[column]`` per row set, column and tokenizer, shared by the scorers of one filter
    run: reward models whose tokenizers agree (:func:`tokenizers_agree`, and the same special tokens, which chat
    templates read) tokenize each response once (the demo's two reward models share one tokenizer)."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, Sequence[dict[str, Any]], str, list[list[int]]]] = []

    def ids(self, tokenizer: Any, rows: Sequence[dict[str, Any]], column: str) -> list[list[int]]:
        for tok, seen, col, ids in self.entries:
            if seen is rows and col == column and tokenizers_agree(tok, tokenizer) \
                    and tok.special_tokens_map == tokenizer.special_tokens_map:
                return ids
        ids = tokenize_responses(tokenizer, list(rows), column)
        self.entries.append((tokenizer, rows, column, ids))
        return ids


class RewardModelScorer:
    """Scores of a sequence-classification reward model, tokenized as ``calrl train-rm`` reads pairs.

    With ``normalize`` and statistics stored by ``calrl train-rm`` (``calrl_reward_mean`` / ``_std`` in
    the config), scores are ``(r - mean) / std`` as in the reference; a model without them is used raw
    (``info["normalized"]`` says which).
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "", normalize: bool = True,
                 batch_size: int = 16, token_cache: TokenCache | None = None) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.token_cache = token_cache
        stats = stored_reward_stats(model) if normalize else None
        self.mean, self.std = (stats["mean"], stats["std"]) if stats else (0.0, 1.0)
        self.info = {"path": name, "normalized": stats is not None, "mean": self.mean, "std": self.std}

    @classmethod
    def from_pretrained(cls, path: str, *, normalize: bool = True, batch_size: int = 16,
                        token_cache: TokenCache | None = None) -> RewardModelScorer:
        if Path(path).exists() or path.startswith((".", "/", "~")):
            check_input(Path(path).expanduser(), option="--reward-model", allow_dir=True)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except Exception as exc:  # noqa: BLE001 - hub and loading errors come in many kinds
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise InputError(f"cannot load the reward model's tokenizer: {message}", path=path) from None
        model = load_sequence_classifier(path, num_labels=None)  # a random score head would filter by noise
        if int(getattr(model.config, "num_labels", 1)) != 1:
            raise InputError(f"a reward model has one output, this one has {model.config.num_labels}", path=path)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
                else tokenizer.eos_token_id
        model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        return cls(model, tokenizer, name=path, normalize=normalize, batch_size=batch_size, token_cache=token_cache)

    def __call__(self, rows: Sequence[dict[str, Any]], column: str) -> torch.Tensor:
        ids = self.token_cache.ids(self.tokenizer, rows, column) if self.token_cache is not None else None
        raw = score_texts(self.model, self.tokenizer, rows, column, batch_size=self.batch_size, show_progress=True,
                          token_ids=ids)
        return (raw.double() - self.mean) / self.std


# ------------------------------------------------------------------------------------ files
def read_preference_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL / JSON / CSV / Parquet file or a saved ``datasets`` folder (its ``train`` split)."""
    p = check_input(path, option="--input", allow_dir=True)
    if p.is_dir():
        if not is_saved_dataset(p):
            raise InputError("is a folder but not a saved datasets folder", path=str(p))
        return load_saved(p, None, preferred="train")
    return read_rows(p)


def report_path(out: str | Path) -> Path:
    """``<out without suffix>.filter_report.json`` beside the output."""
    out = Path(out)
    return out.with_name(f"{out.stem if out.suffix == '.jsonl' else out.name}.filter_report.json")


def write_filtered(rows: list[dict[str, Any]], report: FilterReport, out: str | Path) -> tuple[Path, Path]:
    """The rows as JSONL (``out`` ends in ``.jsonl``) or a saved ``datasets`` folder, and the report beside it.

    Both appear together: the JSONL and the report are staged and renamed in place; a folder is built in
    a staging folder and renamed before the report is written.
    """
    out = Path(out)
    rpath = report_path(out)
    if out.suffix == ".jsonl":
        with staged_files([out, rpath]) as (tmp_rows, tmp_report):
            write_jsonl(tmp_rows, rows)
            write_json(tmp_report, report.to_dict())
        return out, rpath

    with staged_dir(out) as tmp:
        datasets.Dataset.from_list(rows).save_to_disk(str(tmp))
    write_json(rpath, report.to_dict())
    return out, rpath
