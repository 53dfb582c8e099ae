"""The token rows a reward model reads for PPO rollouts, in the policy's tokens or in its own.

Two ways, one result (:mod:`calrl.reward_modeling.sequence_scores` says when each is taken): :func:`rebuild_rows` reuses the
rollout's own tokens, re-tokenising only the responses whose confidence statement PPO-C removed;
:func:`rows_in_own_tokens` writes each rollout in the reward model's tokens
(:func:`~calrl.reward_modeling.sequence_scores.reward_model_ids`). ``space_eos`` rows get " " and the end of sequence after
the text (``strip_append_eos``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from calrl.data.chat import Prompt
from calrl.reward_modeling.sequence_scores import reward_model_ids


def rows_in_own_tokens(tok: Any, rm_tok: Any, stop: int | None, queries: torch.Tensor, responses_ids: torch.Tensor,
                       pad_token_id: int, prompts: Sequence[Prompt | None] | None, stripped: list[str],
                       idx: list[int], space_eos: list[bool]) -> list[list[int]]:
    """The rows ``idx`` in the RM's own tokens (``rm_tok``): the prompt as given (or decoded from the query with its
    special tokens), the response text, and the RM's end of sequence where the policy's response (in ``tok``'s
    tokens) ended with its stop token (then " " and the RM's EOS where ``space_eos``)."""
    ended = (responses_ids == stop).any(1).tolist() if stop is not None else [False] * len(stripped)
    # a special stop token is dropped from the decoded text: the RM's own EOS (or the stop token's text) replaces
    # it; an ordinary stop token is still in the text
    special = stop is not None and stop in tok.all_special_ids
    stop_text = None if stop is None or stop == tok.eos_token_id else tok.decode([stop])
    rows = []
    for i in idx:
        prompt = prompts[i] if prompts is not None else None
        if prompt is None:
            prompt = tok.decode(queries[i][queries[i] != pad_token_id], skip_special_tokens=False)
        text = stripped[i].rstrip() if space_eos[i] and not ended[i] else stripped[i]
        rows.append(reward_model_ids(rm_tok, prompt, text, ended=ended[i] and special, stop_text=stop_text,
                                     space_eos=space_eos[i]))
    return rows


def rebuild_rows(tok: Any, eos: int | None, query_responses: torch.Tensor, context_length: int, pad_token_id: int,
                 rows: list[tuple[int, str | None]], space_eos: list[bool]) -> torch.Tensor:
    """Stack the RM input rows: the rollout's own tokens where nothing was stripped, else query + re-tokenised text.

    A re-tokenised response (in the policy's tokenizer ``tok``) keeps the stop token ``eos`` when the original had
    one, since the RM is read at the last non-pad token; then " " and the stop token where ``space_eos``.
    """
    changed = [(k, i, text) for k, (i, text) in enumerate(rows) if text is not None]
    if not changed:
        return query_responses[[i for i, _ in rows]]
    had_eos = (query_responses[[i for _, i, _ in changed], context_length:] == eos).any(1).tolist()
    appends = [space_eos[i] for _, i, _ in changed]
    texts = [text.rstrip() if a and not e else text for (_, _, text), a, e in zip(changed, appends, had_eos)]
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:  # one call per text: avoids the thread-pool start-up of a batch encode
        encoded = [backend.encode(text, add_special_tokens=False).ids for text in texts]
    else:
        encoded = tok(texts, add_special_tokens=False)["input_ids"]
    space = list(tok(" ", add_special_tokens=False)["input_ids"]) if any(appends) else []
    keep = eos in tok.all_special_ids  # an ordinary stop token is still in the decoded text
    new_ids = [list(ids) + ([eos] if e and keep else []) + (space + [eos] if a else [])
               for ids, e, a in zip(encoded, had_eos, appends)]
    width = max(query_responses.shape[1] - context_length, *map(len, new_ids))
    out = torch.full((len(rows), context_length + width), pad_token_id, dtype=query_responses.dtype,
                     device=query_responses.device)
    out[:, :query_responses.shape[1]] = query_responses[[i for i, _ in rows]]
    block = torch.full((len(changed), width), pad_token_id, dtype=out.dtype)  # built on CPU, copied once
    for row, ids in enumerate(new_ids):
        block[row, :len(ids)] = torch.tensor(ids, dtype=out.dtype)
    out[[k for k, _, _ in changed], context_length:] = block.to(out.device)
    return out
