"""Read a one-output sequence model (reward or value model) at every position of left-padded rows.

One home for the rule by which a reward model scores a rollout: pad positions are masked out of
attention (and their ids replaced by 0), positions count from the first real token, and the score of
a row is the head's output at its last non-pad token. The value model of PPO uses the per-position
outputs of the same forward.
"""

from __future__ import annotations

import torch


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


def padded_inputs(query_responses: torch.Tensor, pad_token_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` (pads replaced by 0), ``attention_mask`` and ``position_ids`` of left-padded rows."""
    mask = query_responses != pad_token_id
    return {"input_ids": query_responses.masked_fill(~mask, 0), "attention_mask": mask.long(),
            "position_ids": mask.long().cumsum(1) - mask.long()}


def head_outputs(model: torch.nn.Module, query_responses: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """The score head's output at every position (``B x T x num_labels``) of a sequence-classification model."""
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(**padded_inputs(query_responses, pad_token_id), return_dict=True,
                      output_hidden_states=True, use_cache=False).hidden_states[-1]
    return model.score(hidden)


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
