"""The pieces of a PPO rollout: the trained policy-and-value module, prompt batches, generation, tensors.

Nothing here imports TRL. The arithmetic (KL penalty, GAE, losses) lives in :mod:`calrl.trainers.ppo_core`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from calrl.errors import InputError
from calrl.rewards.sequence_scores import head_outputs, padded_inputs
from calrl.trainers.ppo_core import token_logprobs


class PolicyAndValue(torch.nn.Module):
    """The two trained networks of PPO as one module (one optimiser, one ``accelerator.prepare``).

    ``value_model`` is a one-output sequence classifier read at every position; with ``value_model=None``
    a linear value head on the policy's last hidden state is trained instead (a shared backbone).
    ``value_stats`` (``{"mean", "std"}``): the separate value model's outputs are read as
    ``(output - mean) / std``, as the reference's critic is under ``--normalize_reward`` (its values then live on
    the normalised reward's scale from the first update; read raw, a value model loaded from the RM starts off by
    the RM's scale).
    ``forward`` returns ``(policy logits, values)`` for left-padded rows (``B x T x V``, ``B x T``).
    """

    def __init__(self, policy: torch.nn.Module, value_model: torch.nn.Module | None,
                 value_stats: dict[str, float] | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        self.value_shift, self.value_scale = (0.0, 1.0) if value_stats is None else (
            float(value_stats["mean"]), float(value_stats["std"]))
        self.value_head = None
        if value_model is None:
            hidden = policy.config.get_text_config().hidden_size
            self.value_head = torch.nn.Linear(hidden, 1)
            torch.nn.init.normal_(self.value_head.weight, std=1.0 / (hidden + 1) ** 0.5)
            torch.nn.init.zeros_(self.value_head.bias)
        self.config = policy.config  # what transformers.Trainer reads from a model

    def forward(self, query_responses: torch.Tensor, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = padded_inputs(query_responses, pad_token_id)
        out = self.policy(**inputs, return_dict=True, output_hidden_states=self.value_head is not None,
                          use_cache=False)
        if self.value_head is not None:
            hidden = out.hidden_states[-1]
            values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        else:
            values = self._value_model_outputs(query_responses, pad_token_id)
        return out.logits, values

    def values(self, query_responses: torch.Tensor, pad_token_id: int) -> torch.Tensor:
        """Values at every position (no policy logits when the value model is separate)."""
        if self.value_head is None:
            return self._value_model_outputs(query_responses, pad_token_id)
        return self.forward(query_responses, pad_token_id)[1]

    def _value_model_outputs(self, query_responses: torch.Tensor, pad_token_id: int) -> torch.Tensor:
        raw = head_outputs(self.value_model, query_responses, pad_token_id).squeeze(-1)
        return (raw - self.value_shift) / self.value_scale


# ------------------------------------------------------------------------------------------ prompts
@dataclass
class PromptRows:
    """The training prompts as token ids (no padding) with their reference answers (or None)."""

    input_ids: list[list[int]]
    references: list[list[str] | None] | None

    def __len__(self) -> int:
        return len(self.input_ids)


def _render(tokenizer: Any, prompt: Any, row: int, column: str) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt):
        if not getattr(tokenizer, "chat_template", None):
            raise InputError("conversational prompts need a tokenizer with a chat template", line=row + 1,
                             field=column)
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    raise InputError(f"a prompt must be a string or a list of messages, got {type(prompt).__name__}",
                     line=row + 1, field=column)


def _references(values: Sequence[Any]) -> list[list[str] | None]:
    out: list[list[str] | None] = []
    for value in values:
        if value is None:
            out.append(None)
        elif isinstance(value, str):
            out.append([value])
        else:
            out.append([str(v) for v in value])
    return out


def prompt_rows(dataset: Any, tokenizer: Any, *, prompt_column: str, reference_column: str | None,
                max_prompt_length: int | None = None, need_references: bool = False) -> PromptRows:
    """Tokenize a prompt dataset: ``input_ids`` as given, else ``prompt_column`` as text or conversations.

    Text prompts are used as written; conversations go through the chat template with the generation
    prompt (as TRL's GRPO and RLOO do). ``max_prompt_length`` keeps the last tokens of longer prompts.
    """
    columns = list(dataset.column_names)
    if "input_ids" in columns:
        ids = [list(map(int, row)) for row in dataset["input_ids"]]
    elif prompt_column in columns:
        texts = [_render(tokenizer, p, i, prompt_column) for i, p in enumerate(dataset[prompt_column])]
        ids = [list(row) for row in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    else:
        raise InputError(f"the training dataset needs an 'input_ids' or '{prompt_column}' column "
                         f"(it has {', '.join(columns) or 'none'})", field="prompt_column")
    for i, row in enumerate(ids):
        if not row:
            raise InputError("empty prompt", line=i + 1, field=prompt_column)
    if max_prompt_length is not None:
        ids = [row[-max_prompt_length:] for row in ids]
    refs = None
    if reference_column and reference_column in columns:
        refs = _references(dataset[reference_column])
    elif need_references:
        raise InputError(f"correctness_mode needs the reference column '{reference_column}' "
                         f"(the dataset has {', '.join(columns)})", field="reference_column")
    return PromptRows(ids, refs)


def left_pad(rows: Sequence[Sequence[int]], pad_token_id: int, device: Any = None) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
    return out.to(device) if device is not None else out


class EpochSampler:
    """Which prompts each rollout batch holds: a fresh seeded permutation per epoch, whole batches only.

    The position is a pure function of ``(seed, epoch, batch index)``, so a resumed run draws exactly the
    batches the uninterrupted run would have drawn. Each process takes its own slice of the global batch.
    """

    def __init__(self, n: int, global_batch: int, *, seed: int, rank: int = 0, world: int = 1) -> None:
        if n < global_batch:
            raise InputError(f"the training dataset has {n} prompts, fewer than one rollout batch "
                             f"({global_batch} = per_device_train_batch_size x gradient_accumulation_steps "
                             f"x processes)", field="train_dataset")
        self.n, self.global_batch, self.seed, self.rank, self.world = n, global_batch, seed, rank, world
        self.batches_per_epoch = n // global_batch
        self._epoch, self._order = -1, None

    def indices(self, epoch: int, batch: int) -> list[int]:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order, self._epoch = torch.randperm(self.n, generator=generator).tolist(), epoch
        local = self.global_batch // self.world
        start = batch * self.global_batch + self.rank * local
        return self._order[start:start + local]


# ---------------------------------------------------------------------------------------- generation
def _pad_right(tensors: list[torch.Tensor], value: float) -> torch.Tensor:
    width = max(t.shape[1] for t in tensors)
    out = []
    for t in tensors:
        if t.shape[1] < width:
            shape = (t.shape[0], width - t.shape[1], *t.shape[2:])
            t = torch.cat([t, torch.full(shape, value, dtype=t.dtype, device=t.device)], dim=1)
        out.append(t)
    return torch.cat(out, 0)


@torch.no_grad()
def sample_responses(policy: Any, queries: torch.Tensor, *, chunk: int, pad_token_id: int,
                     generation_kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample responses for left-padded ``queries`` in chunks; returns ``(responses, logprobs)``.

    Responses are right-padded with ``pad_token_id`` to the longest chunk; ``logprobs`` are those of the
    sampled tokens under the sampling distribution (the processed scores of ``generate``: the logits
    divided by the temperature).
    """
    context = queries.shape[1]
    responses, logprobs = [], []
    for start in range(0, queries.shape[0], chunk):
        q = queries[start:start + chunk]
        mask = q != pad_token_id
        out = policy.generate(input_ids=q.masked_fill(~mask, 0), attention_mask=mask.long(),
                              return_dict_in_generate=True, output_scores=True, **generation_kwargs)
        tokens = out.sequences[:, context:]
        scores = torch.stack(out.scores, 1)
        responses.append(tokens)
        logprobs.append(token_logprobs(scores.float(), tokens))
    return _pad_right(responses, pad_token_id), _pad_right(logprobs, 0.0)


def response_logits(logits: torch.Tensor, context_length: int, temperature: float) -> torch.Tensor:
    """The logits that predict the response tokens, divided by the sampling temperature."""
    return logits[:, context_length - 1:-1] / (temperature + 1e-7)
