"""Tokenization of preference pairs and their calibrated texts for the reward model, without TRL.

Every response is tokenized the way trl 1.16's ``RewardTrainer`` tokenizes ``chosen``/``rejected``:
plain text gets the EOS token appended (unless it already ends with it), then the prompt (explicit-prompt
datasets) is prepended and the text goes through the tokenizer; a conversation (prompt messages + response
messages) goes through ``tokenizer.apply_chat_template(..., tokenize=True)`` with the example's ``tools``
and ``chat_template_kwargs``. A dataset prepared by :func:`tokenize_preference_pairs` carries
``chosen_ids``/``rejected_ids`` (which TRL takes as already processed) and the four calibrated id columns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from datasets import Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase

from calrl.errors import ConfigError, InputError
from calrl.reward_modeling.calibrated_data import (
    CALIBRATED_TEXT_COLUMNS,
    CalibratedPairsConfig,
    build_calibrated_pairs,
    check_preference_columns,
)

PREFERENCE_ID_COLUMNS = ("chosen_ids", "rejected_ids")
CALIBRATED_ID_COLUMNS = tuple(f"{name}_ids" for name in CALIBRATED_TEXT_COLUMNS)
MARGIN_COLUMN = "margin"
CALIBRATED_PROMPT_COLUMN = "calibrated_prompt"
LONG_PAIRS = ("drop", "truncate")


def tokenize_response(processing_class: PreTrainedTokenizerBase, example: dict[str, Any], column: str) -> list[int]:
    """Token ids of ``prompt + example[column]``, tokenized as trl 1.16's RewardTrainer tokenizes chosen/rejected."""
    return tokenize_responses(processing_class, [example], column)[0]


def _response_text(processing_class: PreTrainedTokenizerBase, example: dict[str, Any], column: str) -> Any:
    """``prompt + example[column]`` (a string, EOS appended as TRL does, or a list of messages)."""
    response = example[column]
    if isinstance(response, str):
        eos = processing_class.eos_token
        if eos is not None and not response.endswith(eos):
            response = response + eos
    text = example["prompt"] + response if example.get("prompt") is not None else response
    if not isinstance(text, (list, str)):
        raise InputError(f"expected a string or a list of messages, got {type(text).__name__}", field=column)
    return text


def tokenize_responses(processing_class: PreTrainedTokenizerBase, examples: Sequence[dict[str, Any]],
                       column: str) -> list[list[int]]:
    """:func:`tokenize_response` of every example, the same ids in one batched call per kind of row: the texts go
    through the tokenizer together, and the conversations through one batched ``apply_chat_template`` per set of
    ``tools`` / ``chat_template_kwargs`` (rendering and tokenization as for one conversation, without padding).
    """
    texts = [_response_text(processing_class, ex, column) for ex in examples]
    out: list[list[int] | None] = [None] * len(texts)
    plain = [i for i, t in enumerate(texts) if isinstance(t, str)]
    if plain:
        for i, ids in zip(plain, processing_class(text=[texts[i] for i in plain])["input_ids"]):
            out[i] = list(ids)
    groups: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for i, text in enumerate(texts):
        if isinstance(text, list):
            tools = examples[i].get("tools")
            tools = json.loads(tools) if isinstance(tools, str) else tools
            kwargs = {"tools": tools, **(examples[i].get("chat_template_kwargs") or {})}
            key = json.dumps(kwargs, sort_keys=True, default=str)
            groups.setdefault(key, (kwargs, []))[1].append(i)
    for kwargs, rows in groups.values():
        encoded = processing_class.apply_chat_template([texts[i] for i in rows], tokenize=True, return_dict=True,
                                                       **kwargs)
        for i, ids in zip(rows, encoded["input_ids"]):
            out[i] = list(ids)
    return out  # type: ignore[return-value]


def pad_right(sequences: Sequence[torch.Tensor], padding_value: int, *,
              pad_to_multiple_of: int | None = None) -> torch.Tensor:
    """Stack 1-D tensors into one ``(n, length)`` tensor, right-padded with ``padding_value``.

    ``length`` is the longest sequence, rounded up to a multiple of ``pad_to_multiple_of`` when given.
    """
    if not sequences:
        raise ValueError("pad_right needs at least one sequence")
    length = max(int(t.shape[0]) for t in sequences)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    out = torch.full((len(sequences), length), padding_value, dtype=sequences[0].dtype)
    for row, t in enumerate(sequences):
        out[row, :t.shape[0]] = t
    return out


def dataset_column_names(dataset: Dataset | IterableDataset) -> list[str]:
    """Column names of a dataset; for an ``IterableDataset`` of unknown features, the first example's keys."""
    if dataset.column_names is not None:
        return list(dataset.column_names)
    return list(next(iter(dataset)).keys())


def tokenize_preference_pairs(dataset: Dataset | IterableDataset, processing_class: PreTrainedTokenizerBase, *,
                              pairs_config: CalibratedPairsConfig | None = None, max_length: int | None = None,
                              long_pairs: str = "drop", num_proc: int | None = None,
                              name: str = "train") -> Dataset | IterableDataset:
    """``chosen_ids``, ``rejected_ids``, ``margin`` (when present) and the calibrated id columns of a pair set.

    ``pairs_config``: build the four calibrated texts with it when the dataset has neither the texts nor
    their ids (None: only a dataset that has them gets calibrated ids). Columns already tokenized are kept;
    every other column is dropped. With ``max_length``, a sequence longer than that in any kept column is
    handled by ``long_pairs``: ``"drop"`` drops the row, ``"truncate"`` keeps each such sequence's last
    ``max_length`` ids (cut on the left, so its end and EOS stay: the reference's tokenizer truncates on the left).
    """
    if long_pairs not in LONG_PAIRS:
        raise ConfigError(f"must be one of {', '.join(LONG_PAIRS)}, got {long_pairs!r}", field="long_pairs")
    columns = dataset_column_names(dataset)
    has_pairs = all(c in columns for c in PREFERENCE_ID_COLUMNS)
    has_ids = all(c in columns for c in CALIBRATED_ID_COLUMNS)
    has_texts = all(c in columns for c in CALIBRATED_TEXT_COLUMNS)
    if not has_ids and not has_texts and pairs_config is not None:
        if has_pairs and "chosen" not in columns:
            missing = next(c for c in CALIBRATED_ID_COLUMNS if c not in columns)
            raise ConfigError(f"{name} dataset is tokenized but has no column '{missing}'", field=missing)
        if not isinstance(dataset, Dataset):
            raise ConfigError(f"{name} dataset is streamed ({type(dataset).__name__}) and has no column "
                              f"'{CALIBRATED_TEXT_COLUMNS[0]}': build the calibrated texts beforehand "
                              "(build_calibrated_pairs on a datasets.Dataset)", field=CALIBRATED_TEXT_COLUMNS[0])
        dataset = build_calibrated_pairs(dataset, pairs_config)
        has_texts = True
    if not has_pairs:
        check_preference_columns(columns)
    to_tokenize = ([] if has_pairs else ["chosen", "rejected"]) + ([] if has_ids or not has_texts
                                                                  else list(CALIBRATED_TEXT_COLUMNS))
    map_kwargs: dict[str, Any] = {}
    if isinstance(dataset, Dataset):  # IterableDataset.map takes neither num_proc nor desc
        map_kwargs = {"num_proc": num_proc, "desc": f"Tokenizing {name} preference texts"}
    if to_tokenize:
        def tokenize(batch: dict[str, list[Any]]) -> dict[str, list[list[int]]]:
            examples = [dict(zip(batch, row)) for row in zip(*batch.values())]
            # the calibrated texts read their own prompt (with the elicitation system prompt) when there is one
            calibrated = [{**ex, "prompt": ex[CALIBRATED_PROMPT_COLUMN]} if ex.get(CALIBRATED_PROMPT_COLUMN) is not None
                          else ex for ex in examples]
            return {f"{c}_ids": tokenize_responses(processing_class, calibrated if c in CALIBRATED_TEXT_COLUMNS
                                                   else examples, c) for c in to_tokenize}

        dataset = dataset.map(tokenize, batched=True, **map_kwargs)
    keep = [*PREFERENCE_ID_COLUMNS, *([MARGIN_COLUMN] if MARGIN_COLUMN in columns else []),
            *(CALIBRATED_ID_COLUMNS if has_ids or has_texts else ())]
    dataset = dataset.select_columns(keep)
    if max_length is not None:
        id_columns = [c for c in keep if c != MARGIN_COLUMN]
        if long_pairs == "truncate":
            if isinstance(dataset, Dataset):
                map_kwargs["desc"] = f"Truncating {name} sequences >{max_length} tokens on the left"
            return dataset.map(lambda ex: {c: truncate_left(ex[c], max_length) for c in id_columns}, **map_kwargs)
        if isinstance(dataset, Dataset):
            map_kwargs["desc"] = f"Filtering {name} pairs >{max_length} tokens"
        dataset = dataset.filter(lambda ex: all(len(ex[c]) <= max_length for c in id_columns), **map_kwargs)
    return dataset


def truncate_left(ids: Sequence[int], max_length: int) -> list[int]:
    """The last ``max_length`` ids of ``ids`` (all of them when it is not longer).

    >>> truncate_left([1, 2, 3, 4, 5], 3)
    [3, 4, 5]
    """
    return list(ids[-max_length:]) if len(ids) > max_length else list(ids)
