"""Read a one-output sequence model (reward or value model) at every position of left-padded rows.

One home for the rule by which a reward model scores a rollout: pad positions are masked out of
attention (and their ids replaced by 0), positions count from the first real token, and the score of
a row is the head's output at its last non-pad token. The value model of PPO uses the per-position
outputs of the same forward.

A reward model whose tokenizer differs from the policy's (:func:`tokenizers_agree`) reads the rollout as text in
its own tokens (:func:`reward_model_ids`), scored by its own forward as it was trained (:func:`forward_scores`):
the prompt rendered with its own chat template (system turn and roles kept), the response, and its own EOS where
the policy's response ended. With tokenizers that agree the text is exactly the rollout's own tokens.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from calrl.data.chat import Prompt, render_prompt


def first_true_indices(bools: torch.Tensor) -> torch.Tensor:
    """Index of the first ``True`` of each row (the row length when there is none).

    >>> first_true_indices(torch.tensor([[False, True, True], [False, False, False]])).tolist()
    [1, 3]
    """
    width = bools.shape[-1]
    positions = torch.arange(width, device=bools.device).expand_as(bools)
    return torch.where(bools, positions, torch.full_like(positions, width)).min(-1).values


def first_pad_index(tokens: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """Index of the first pad token of each row (the row length when there is none)."""
    return first_true_indices(tokens == pad_token_id)


def masked_inputs(input_ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """``input_ids`` (0 where ``mask`` is false), ``attention_mask`` and ``position_ids`` counted from each row's
    first real token (0 at left padding), so a left-padded row reads as it would alone."""
    mask = mask.long()
    return {"input_ids": input_ids.masked_fill(mask == 0, 0), "attention_mask": mask,
            "position_ids": mask.cumsum(1) - mask}


def padded_inputs(query_responses: torch.Tensor, pad_token_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` (pads replaced by 0), ``attention_mask`` and ``position_ids`` of left-padded rows."""
    return masked_inputs(query_responses, query_responses != pad_token_id)


class PrefixSplit(NamedTuple):
    """Left-padded rows cut after the tokens every row starts with (:func:`split_shared_prefix`).

    ``prefix``: the shared tokens (``1 x p``); ``suffix``: the model inputs of the rest of each row read after the
    prefix (``input_ids`` and ``position_ids`` ``B x S``, ``attention_mask`` ``B x (p + S)``: the prefix, then the
    row's own tokens, its left padding and the other rows' longer prefix region masked); ``offset``: column ``j``
    of the suffix outputs is column ``offset + j`` of the rows.
    """

    prefix: torch.Tensor
    suffix: dict[str, torch.Tensor]
    offset: int


def split_shared_prefix(query_responses: torch.Tensor, pad_token_id: int, context_length: int) -> PrefixSplit | None:
    """The longest run of tokens that every left-padded row starts with (a shared system message, say), stopping
    before each row's last prompt token (``context_length`` is the prompt width), so that every output from the
    last prompt token on is the suffix's. None when no token is shared or there is one row.

    Reading the rows as the prefix once (its keys and values repeated over the rows) and then the suffixes is the
    same computation as :func:`masked_inputs`'s forward of each whole row (the same positions, and each token
    attends to the same real tokens), up to float rounding, with the prefix's work done once.

    >>> rows = torch.tensor([[0, 5, 6, 7, 9, 3], [5, 6, 7, 8, 9, 4]])  # pad 0, prompts of 4 and 5 tokens
    >>> split = split_shared_prefix(rows, 0, 5)
    >>> split.prefix.tolist(), split.offset, split.suffix["input_ids"].tolist()
    ([[5, 6, 7]], 3, [[0, 9, 3], [8, 9, 4]])
    >>> split.suffix["attention_mask"].tolist(), split.suffix["position_ids"].tolist()
    ([[1, 1, 1, 0, 1, 1], [1, 1, 1, 1, 1, 1]], [[3, 3, 4], [3, 4, 5]])
    """
    rows, width = query_responses.shape
    mask = query_responses != pad_token_id
    first = first_true_indices(mask)
    longest = int((context_length - first).min()) - 1
    if rows < 2 or longest < 1:
        return None
    columns = first[:, None] + torch.arange(longest, device=first.device)
    heads = query_responses.gather(1, columns)
    shared = (heads == heads[:1]).all(0) & mask.gather(1, columns).all(0)
    length = longest if bool(shared.all()) else int((~shared).int().argmax())
    if length == 0:
        return None
    start = int(first.min()) + length
    own = mask[:, start:] & (torch.arange(start, width, device=first.device)[None] >= first[:, None] + length)
    keep = own.long()
    suffix = {"input_ids": query_responses[:, start:].masked_fill(~own, 0),
              "attention_mask": torch.cat([keep.new_ones(rows, length), keep], 1),
              "position_ids": length + keep.cumsum(1) - keep}
    return PrefixSplit(heads[:1, :length], suffix, start)


@functools.cache
def _forward_parameters(model_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_class.forward).parameters)


def _base_forward_parameters(model: torch.nn.Module) -> frozenset[str]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model's own model
    return _forward_parameters(type(base))


def rows_forward(model: torch.nn.Module, query_responses: torch.Tensor, pad_token_id: int,
                 context_length: int | None = None, **kwargs: Any) -> tuple[Any, int]:
    """``(model output, offset)``: ``model`` (a transformers model, or a PEFT model of one) over left-padded rows,
    as :func:`masked_inputs` reads them; its outputs cover columns ``offset`` to the end.

    With ``context_length`` (the prompt width) and a prefix that every row shares (:func:`split_shared_prefix`),
    the prefix is read once with the model's KV cache and the outputs start at the split (``offset > 0``);
    otherwise one forward of the whole rows (``offset == 0``). ``kwargs`` go to the rows' forward.
    """
    split = None if context_length is None else split_shared_prefix(query_responses, pad_token_id, context_length)
    if split is None:
        return model(**padded_inputs(query_responses, pad_token_id), return_dict=True, use_cache=False, **kwargs), 0
    params = _base_forward_parameters(model)
    key = "cache" if "cache" in params else "past_key_values"  # the cache's name in transformers >= 5.24 / before
    extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}  # the prefix's logits are not read
    positions = torch.arange(split.prefix.shape[1], device=split.prefix.device)[None]
    cache = model(input_ids=split.prefix, position_ids=positions, return_dict=True, use_cache=True, **extra)[key]
    cache.batch_repeat_interleave(query_responses.shape[0])
    out = model(**split.suffix, **{key: cache}, return_dict=True, use_cache=True, **kwargs)
    return out, split.offset


def response_forward(model: torch.nn.Module, query_responses: torch.Tensor, pad_token_id: int, context_length: int,
                     *, share_prefix: bool = False, **kwargs: Any) -> tuple[Any, Callable[[torch.Tensor], torch.Tensor]]:
    """``(model output, cut)``: :func:`rows_forward` (the shared prefix read once with ``share_prefix``) and the
    function that keeps, of a ``B x T' x ...`` output tensor, the positions that read the response (columns
    ``context_length - 1`` to ``T - 2`` of the rows)."""
    out, offset = rows_forward(model, query_responses, pad_token_id, context_length if share_prefix else None,
                               **kwargs)
    start = context_length - 1 - offset
    return out, lambda t: t[:, start:-1]


def _head(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    backbone = getattr(model, model.base_model_prefix)
    # the backbone's last hidden state, as the model's own classification forward reads it (the tensor
    # ``output_hidden_states`` would list last, without the output-capturing hooks that torch.compile breaks on)
    hidden = backbone(**inputs, return_dict=True, use_cache=False).last_hidden_state
    return model.score(hidden)


def head_outputs(model: torch.nn.Module, query_responses: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """The score head's output at every position (``B x T x num_labels``) of a sequence-classification model."""
    return _head(model, padded_inputs(query_responses, pad_token_id))


def response_head_outputs(model: torch.nn.Module, query_responses: torch.Tensor, pad_token_id: int,
                          context_length: int, *, share_prefix: bool = False) -> torch.Tensor:
    """The score head's output at the positions that read the response (columns ``context_length - 1`` to
    ``T - 2``: ``B x R x num_labels``); with ``share_prefix`` the rows' shared prefix is read once
    (:func:`rows_forward`)."""
    out, cut = response_forward(getattr(model, model.base_model_prefix), query_responses, pad_token_id,
                                context_length, share_prefix=share_prefix)
    return cut(model.score(out.last_hidden_state))


def forward_scores(model: torch.nn.Module, rows: Sequence[Sequence[int]], pad_token_id: int | None) -> torch.Tensor:
    """The model's own first output for each row of token ids, the rows right-padded (and masked) into one batch.

    This is how a reward model is trained and scored alone (``model(**tokenizer(text)).logits``): each row's score
    equals its score on its own, since right padding never reaches an earlier position.
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id if pad_token_id is not None else 0, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, :len(row)] = 1
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
    return logits.float().reshape(len(rows), -1)[:, 0]


def _backend_spec(tokenizer: Any) -> dict[str, Any] | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    spec = json.loads(backend.to_str())
    for transient in ("padding", "truncation"):  # set by calls with padding=/truncation=, not part of the vocabulary
        spec.pop(transient, None)
    return spec


def tokenizers_agree(a: Any, b: Any) -> bool:
    """Whether two tokenizers give the same ids for every text and render conversations alike.

    Compared: the fast tokenizer's whole pipeline (vocabulary, normaliser, pre-tokenizer, added tokens), the chat
    template and the BOS/EOS ids. Two objects loaded from copies of one folder agree; a slow tokenizer agrees only
    with itself.
    """
    if a is b:
        return True
    spec_a, spec_b = _backend_spec(a), _backend_spec(b)
    return (spec_a is not None and spec_a == spec_b
            and getattr(a, "chat_template", None) == getattr(b, "chat_template", None)
            and a.eos_token_id == b.eos_token_id and a.bos_token_id == b.bos_token_id)


def same_vocabulary(a: Any, b: Any) -> bool:
    """Whether two tokenizers map the same tokens to the same ids (a token id means the same in both)."""
    return a is b or a.get_vocab() == b.get_vocab()


def reward_model_ids(tokenizer: Any, prompt: Prompt, response: str, *, ended: bool,
                     stop_text: str | None = None, space_eos: bool = False) -> list[int]:
    """The token ids a reward model reads for one rollout, in its own tokens and format.

    The prompt through the reward model's own chat template with the generation prompt (a conversation keeps its
    system turn and roles; plain text as written), then the response, each tokenized on its own and joined as a
    policy's prompt and generated tokens are; then, when the response ended, the reward model's EOS (or the
    tokens of ``stop_text``, a stop token other than EOS), as a policy with this tokenizer would have written it;
    then, with ``space_eos``, the tokens of " " and the EOS (the reference's " " + EOS after a stripped text).
    No special tokens are added: a chat template writes its own.
    """
    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    ids = encode(render_prompt(tokenizer, prompt)) + encode(response)
    if ended:
        if stop_text is not None:
            ids += encode(stop_text)
        elif tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
    if space_eos and tokenizer.eos_token_id is not None:
        ids += encode(" ") + [tokenizer.eos_token_id]
    return ids


def sequence_scores(model: torch.nn.Module, query_responses: torch.Tensor, pad_token_id: int,
                    context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(per-position outputs, score at each row's last response token)`` for rows = query + response.

    The last token is the one before the first pad of the response part (the last query token when the
    response is empty).
    """
    outputs = head_outputs(model, query_responses, pad_token_id)
    last = first_pad_index(query_responses[:, context_length:], pad_token_id) - 1 + context_length
    rows = torch.arange(outputs.shape[0], device=outputs.device)
    return outputs, outputs[rows, last].squeeze(-1)
