"""Batched generation of answers (and optional extra samples) for evaluation items.

Runs on whatever device holds the model. Prompts are left-padded and batched by length; only the new
tokens are decoded, cut at the first end-of-sequence token. With an ``accelerate.Accelerator`` of
several processes, the items are split between processes and the records gathered back, so every item
is generated once and the returned list is in the order of ``items`` on every process.

Retry rule (the paper's evaluation, methods.md section 9): with ``confidence_retries = N > 0``, an item
whose response states no confidence (read by ``reader``, the eval's confidence-reading step) is generated
again, up to N more times, with the same decoding settings; the last try forces the cue: the prompt is
followed by the previous response and " Confidence: ", and the response kept is that response, the cue
and what the model writes after it. Each record's ``retries`` says how many extra generations it took
(0 when the first answer stated a confidence). Under greedy decoding the plain retries repeat the first
answer, so only the forced try can change it. ``retry_when`` says what "states no confidence" means:
``parsed`` (the reader reads none) or ``reference`` (the paper's test: no ``Confidence:`` followed by digits,
case-sensitive); ``forced_max_new_tokens`` limits the forced try's new tokens (default ``max_new_tokens``; the
paper's code used 16).

Sampling (``do_sample``) draws with ``temperature`` and ``top_k`` (0: off), top-p 1; ``seed`` seeds the draws
(every process alike) in a forked random state, so a training run's own random stream is left as it was.

A caller that generates for the same items again and again (the calibration eval of every epoch) passes a
:class:`PromptCache`: the prompts are rendered and tokenized once, not at every call (that was a third of the
training eval's generation time on the tiny recipe).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import gather_object

from calrl.confidence.reading import ConfidenceReader
from calrl.data.heldout import EvalItem
from calrl.data.records import PredictionRecord
from calrl.errors import InputError
from calrl.generation.prompts import DEFAULT_RETRY_WHEN, RETRY_RULES, ElicitationPrompt
from calrl.limits import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS
from calrl.progress import progress


def generate_predictions(model: Any, tokenizer: Any, items: Sequence[EvalItem], *, prompt: ElicitationPrompt,
                         batch_size: int = DEFAULT_BATCH_SIZE, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                         num_samples: int = 0, do_sample: bool = False, temperature: float = 1.0,
                         accelerator: Any = None,
                         show_progress: bool = True, confidence_retries: int = 0,
                         reader: ConfidenceReader | None = None, top_k: int = 0, seed: int | None = None,
                         retry_when: str = DEFAULT_RETRY_WHEN,
                         forced_max_new_tokens: int | None = None,
                         cache: PromptCache | None = None) -> list[PredictionRecord]:
    """Generate one response per item (greedy unless ``do_sample``) and ``num_samples`` sampled ones.

    ``confidence_retries``: the retry rule of the module docstring (``reader`` defaults to the calrl parser).
    ``cache``: keeps the tokenized prompts for the next call with the same items (see :class:`PromptCache`).

    Returns PredictionRecords (id, question, prompt, response, reference, choices, slice, samples) in the
    order of ``items``; ``prompt`` is the text the model saw, chat template applied.
    """
    if batch_size < 1 or max_new_tokens < 1 or num_samples < 0 or confidence_retries < 0:
        raise InputError("batch_size and max_new_tokens must be >= 1, num_samples and confidence_retries >= 0")
    if (do_sample or num_samples) and temperature <= 0:
        raise InputError(f"temperature must be > 0 for sampling, got {temperature}")
    if retry_when not in RETRY_RULES or top_k < 0 or (forced_max_new_tokens is not None and forced_max_new_tokens < 1):
        raise InputError(f"retry_when must be one of {', '.join(RETRY_RULES)}, top_k >= 0, forced_max_new_tokens >= 1")
    items = list(items)
    order = {item.id: i for i, item in enumerate(items)}
    if len(order) != len(items):
        raise InputError("evaluation items have duplicate ids")
    distributed = accelerator is not None and accelerator.num_processes > 1
    is_main = accelerator is None or accelerator.is_main_process
    settings = {"prompt": prompt, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
                    "num_samples": num_samples, "do_sample": do_sample, "temperature": temperature,
                    "show_progress": show_progress and is_main, "confidence_retries": confidence_retries,
                    "reader": reader or ConfidenceReader(), "top_k": top_k, "seed": seed, "retry_when": retry_when,
                    "forced_max_new_tokens": forced_max_new_tokens, "cache": cache}
    if not distributed:
        return _generate_local(model, tokenizer, items, **settings)

    with accelerator.split_between_processes(items) as shard:
        local = _generate_local(model, tokenizer, list(shard), **settings)
    gathered = gather_object(local)
    unique = {record.id: record for record in gathered}  # each item once, whatever the padding
    return sorted(unique.values(), key=lambda record: order[record.id])


def _generate_local(model: Any, tokenizer: Any, items: list[EvalItem], *, prompt: ElicitationPrompt,
                    batch_size: int, max_new_tokens: int, num_samples: int, do_sample: bool,
                    temperature: float, show_progress: bool, confidence_retries: int = 0,
                    reader: ConfidenceReader | None = None, top_k: int = 0, seed: int | None = None,
                    retry_when: str = DEFAULT_RETRY_WHEN,
                    forced_max_new_tokens: int | None = None, cache: PromptCache | None = None) -> list[PredictionRecord]:
    if not items:
        return []
    if seed is not None:  # seeded draws that leave the caller's random state (a training run's) as it was
        devices = [model.device.index or 0] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return _generate_local(model, tokenizer, items, prompt=prompt, batch_size=batch_size,
                                   max_new_tokens=max_new_tokens, num_samples=num_samples, do_sample=do_sample,
                                   temperature=temperature, show_progress=show_progress,
                                   confidence_retries=confidence_retries, reader=reader, top_k=top_k,
                                   retry_when=retry_when, forced_max_new_tokens=forced_max_new_tokens, cache=cache)
    encoded = (cache.get(tokenizer, items, prompt, batch_size) if cache is not None
               else _encode_prompts(tokenizer, items, prompt, batch_size))
    texts, add_special = encoded.texts, encoded.add_special
    stop_ids = _stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    responses: dict[int, str] = {}
    samples: dict[int, list[str]] = {}
    saved_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with progress(total=len(items), desc="generating", unit="item", disable=not show_progress) as bar:
            for batch, batch_enc in encoded.batches:
                # a copy: the cached tensors stay as they were, whatever generate does with its inputs
                enc = {key: value.to(model.device, copy=True) for key, value in batch_enc.items()}
                common = {"max_new_tokens": max_new_tokens, "pad_token_id": pad_id, "eos_token_id": stop_ids}
                sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": top_k}
                main = _generate(model, enc, **common, **(sampling if do_sample else {"do_sample": False}))
                for i, text in zip(batch, _decode_new(tokenizer, main, enc, stop_ids), strict=True):
                    responses[i] = text
                if num_samples:
                    drawn = _generate(model, enc, **common, **sampling, num_return_sequences=num_samples)
                    decoded = _decode_new(tokenizer, drawn, enc, stop_ids)
                    for k, i in enumerate(batch):
                        samples[i] = decoded[k * num_samples:(k + 1) * num_samples]
                bar.update(len(batch))
        retries = _retry_missing(model, tokenizer, texts, responses, confidence_retries,
                                 retry_rule(retry_when, reader or ConfidenceReader()),
                                 batch_size=batch_size, add_special=add_special,
                                 common={"max_new_tokens": max_new_tokens, "pad_token_id": pad_id,
                                         "eos_token_id": stop_ids},
                                 decoding={"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": top_k}
                                 if do_sample else {"do_sample": False},
                                 forced_max_new_tokens=forced_max_new_tokens or max_new_tokens)
    finally:
        tokenizer.padding_side = saved_side
        if was_training:
            model.train()
    return [
        PredictionRecord(
            id=item.id, question=item.question, response=responses[i], reference=list(item.reference),
            choices=list(item.choices) if item.choices else None, slice=dict(item.slice),
            samples=samples.get(i), prompt=texts[i], retries=retries.get(i) if confidence_retries else None,
        )
        for i, item in enumerate(items)
    ]


@dataclass
class EncodedPrompts:
    """The prompts of some items as the model reads them: ``texts`` (chat template applied) and, per batch, the
    items' indices (longest prompts first: less padding, out of memory early) and their left-padded
    ``input_ids`` and ``attention_mask`` (on the CPU)."""

    texts: list[str]
    add_special: bool
    batches: list[tuple[list[int], dict[str, torch.Tensor]]]


def _encode_prompts(tokenizer: Any, items: Sequence[EvalItem], prompt: ElicitationPrompt,
                    batch_size: int) -> EncodedPrompts:
    texts = [prompt.render(tokenizer, item) for item in items]
    add_special = not getattr(tokenizer, "chat_template", None)  # a chat template writes its own BOS
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=add_special)["input_ids"]]
    by_length = sorted(range(len(items)), key=lambda i: -lengths[i])
    saved_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batches = []
        for start in range(0, len(items), batch_size):
            batch = by_length[start:start + batch_size]
            enc = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True,
                            add_special_tokens=add_special)
            batches.append((batch, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}))
    finally:
        tokenizer.padding_side = saved_side
    return EncodedPrompts(texts=texts, add_special=add_special, batches=batches)


class PromptCache:
    """The encoded prompts (:class:`EncodedPrompts`) of the last call of :func:`generate_predictions`, given back
    to the next call with the same tokenizer, prompt and batch size over the same item objects (the evals
    of one training run); any other call encodes again and keeps that instead."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._encoded: EncodedPrompts | None = None

    def get(self, tokenizer: Any, items: Sequence[EvalItem], prompt: ElicitationPrompt,
            batch_size: int) -> EncodedPrompts:
        key = (tokenizer, len(tokenizer), prompt, tuple(items), batch_size)
        if self._encoded is None or not _same_key(self._key, key):
            self._encoded = _encode_prompts(tokenizer, items, prompt, batch_size)
            self._key = key
        return self._encoded


def _same_key(old: tuple[Any, ...] | None, new: tuple[Any, ...]) -> bool:
    """The same tokenizer, prompt and item objects (identity: not equal copies), vocabulary size and batch size."""
    if old is None:
        return False
    (tok, size, prompt, items, batch), (tok2, size2, prompt2, items2, batch2) = old, new
    return (tok is tok2 and size == size2 and prompt is prompt2 and batch == batch2 and len(items) == len(items2)
            and all(a is b for a, b in zip(items, items2, strict=True)))


FORCED_CUE = " Confidence: "
REFERENCE_RETRY = re.compile(r"Confidence:\s*\d+")  # the paper's query.py: a response without it is asked again


def retry_rule(name: str, reader: ConfidenceReader) -> Any:
    """``response -> True`` when it must be generated again: ``parsed`` (the reader finds no confidence) or
    ``reference`` (no ``Confidence:`` followed by digits, case-sensitive)."""
    if name == "reference":
        return lambda text: REFERENCE_RETRY.search(text) is None
    return lambda text: reader.read(text).value is None


def _retry_missing(model: Any, tokenizer: Any, texts: list[str], responses: dict[int, str], tries: int,
                   missing: Any, *, batch_size: int, add_special: bool, common: dict[str, Any],
                   decoding: dict[str, Any], forced_max_new_tokens: int) -> dict[int, int]:
    """Regenerate responses without a confidence (the last try forces the cue); extra generations per item."""
    count = dict.fromkeys(responses, 0)
    for attempt in range(1, tries + 1):
        todo = [i for i in sorted(responses) if missing(responses[i])]
        if not todo:
            break
        forced = attempt == tries
        prompts = [texts[i] + responses[i] + FORCED_CUE if forced else texts[i] for i in todo]
        for start in range(0, len(todo), batch_size):
            rows = todo[start:start + batch_size]
            enc = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=add_special).to(model.device)
            limits = {**common, "max_new_tokens": forced_max_new_tokens} if forced else common
            out = _decode_new(tokenizer, _generate(model, enc, **limits, **decoding), enc, common["eos_token_id"])
            for i, text in zip(rows, out, strict=True):
                responses[i] = responses[i] + FORCED_CUE + text if forced else text
                count[i] += 1
    return count


@torch.inference_mode()
def _generate(model: Any, enc: Any, **kwargs: Any) -> torch.Tensor:
    return model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs)


def _stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-sequence ids from the generation config and the tokenizer (first one pads when needed)."""
    ids: list[int] = []
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (config_eos, tokenizer.eos_token_id):
        for token in value if isinstance(value, (list, tuple)) else [value]:
            if token is not None and int(token) not in ids:
                ids.append(int(token))
    if not ids:
        raise InputError("the tokenizer has no end-of-sequence token and the model no eos_token_id")
    return ids


def _decode_new(tokenizer: Any, output: torch.Tensor, enc: Any, stop_ids: list[int]) -> list[str]:
    """Decode only the generated tokens of each row, cut at the first stop token."""
    new = output[:, enc["input_ids"].shape[1]:].tolist()
    stops = set(stop_ids)
    texts = []
    for row in new:
        cut = next((j for j, token in enumerate(row) if token in stops), len(row))
        texts.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return texts
