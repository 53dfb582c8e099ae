"""The pieces of a PPO rollout: the trained policy-and-value module, prompt batches, generation, tensors,
and :class:`Rollout`, one rollout batch with everything the losses need.

Nothing here imports TRL. The arithmetic (KL penalty, GAE, losses) lives in :mod:`calrl.trainers.ppo_core`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig

from calrl.data.chat import Prompt, render_prompt
from calrl.errors import ConfigError, InputError
from calrl.reward_modeling.sequence_scores import (
    head_outputs,
    response_forward,
    response_head_outputs,
    rows_forward,
    same_vocabulary,
)
from calrl.trainers.ppo_core import token_logprobs


class PolicyAndValue(torch.nn.Module):
    """The two trained networks of PPO as one module (one optimiser, one ``accelerator.prepare``).

    ``value_model`` is a one-output sequence classifier read at every position; with ``value_model=None``
    a linear value head on the policy's last hidden state is trained instead (a shared backbone).
    ``value_stats`` (``{"mean", "std"}``): the separate value model's outputs are read as
    ``(output - mean) / std``, as the reference's critic is under ``--normalize_reward`` (its values then live on
    the normalised reward's scale from the first update; read raw, a value model loaded from the RM starts off by
    the RM's scale).
    ``forward`` returns ``(policy logits, values)`` for left-padded rows (``B x T x V``, ``B x T``). Every use goes
    through ``forward`` (``what``: ``"both"``, ``"policy"`` (logits only), ``"values"`` or ``"reference"``), so a
    wrapper that gathers sharded parameters around its forward (FSDP) or casts to mixed precision does so for the
    rollout's forwards too.
    ``"reference"``: the logits of the policy with its LoRA adapter off (or ``ref_adapter`` active), the
    reference of a LoRA run.
    """

    def __init__(self, policy: torch.nn.Module, value_model: torch.nn.Module | None,
                 value_stats: dict[str, float] | None = None, *, ref_adapter: str | None = None,
                 model_adapter: str | None = None, share_prefix: bool = False) -> None:
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        self.ref_adapter, self.model_adapter = ref_adapter, model_adapter or "default"
        self.share_prefix = share_prefix
        self.value_shift, self.value_scale = (0.0, 1.0) if value_stats is None else (
            float(value_stats["mean"]), float(value_stats["std"]))
        self.value_head = None
        if value_model is None:
            hidden = policy.config.get_text_config().hidden_size
            self.value_head = torch.nn.Linear(hidden, 1)
            torch.nn.init.normal_(self.value_head.weight, std=1.0 / (hidden + 1) ** 0.5)
            torch.nn.init.zeros_(self.value_head.bias)
        self.config = policy.config  # what transformers.Trainer reads from a model

    def forward(self, query_responses: torch.Tensor, pad_token_id: int, what: str = "both",
                context_length: int | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """With ``context_length`` (the prompt width), the outputs at the positions that read the response
        (columns ``context_length - 1`` to ``T - 2``: logits ``B x R x V``, values ``B x R``), the rows' shared
        prefix read once under ``share_prefix``; without it, at every position."""
        if what == "reference":
            return self._reference_logits(query_responses, pad_token_id, context_length), None
        if what == "values" and self.value_head is None:
            return None, self._value_model_outputs(query_responses, pad_token_id, context_length)
        hidden = what != "policy" and self.value_head is not None
        out, cut = self._policy_forward(query_responses, pad_token_id, context_length, output_hidden_states=hidden)
        logits = None if what == "values" else cut(out.logits)
        if what == "policy":
            return logits, None
        if self.value_head is not None:
            states = cut(out.hidden_states[-1])
            values = self.value_head(states.to(self.value_head.weight.dtype)).squeeze(-1)
        else:
            values = self._value_model_outputs(query_responses, pad_token_id, context_length)
        return logits, values

    def _policy_forward(self, query_responses: torch.Tensor, pad_token_id: int, context_length: int | None,
                        **kwargs: Any) -> tuple[Any, Any]:
        """The policy's output and the function that cuts a ``B x T' x ...`` output of it to what ``forward``
        returns."""
        if context_length is None:
            return rows_forward(self.policy, query_responses, pad_token_id, **kwargs)[0], lambda t: t
        return response_forward(self.policy, query_responses, pad_token_id, context_length,
                                share_prefix=self.share_prefix, **kwargs)

    # gradient checkpointing is the policy's (what TRL's unwrap_model_for_generation switches off and back on)
    @property
    def is_gradient_checkpointing(self) -> bool:
        flag = getattr(self.policy, "is_activation_checkpointing", None)  # transformers >= 5.x name
        return bool(getattr(self.policy, "is_gradient_checkpointing", False) if flag is None else flag)

    def gradient_checkpointing_disable(self) -> None:
        self.policy.gradient_checkpointing_disable()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        self.policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs)

    def values(self, query_responses: torch.Tensor, pad_token_id: int) -> torch.Tensor:
        """Values at every position (no policy logits when the value model is separate)."""
        return self.forward(query_responses, pad_token_id, "values")[1]

    def _value_model_outputs(self, query_responses: torch.Tensor, pad_token_id: int,
                             context_length: int | None) -> torch.Tensor:
        if context_length is None:
            raw = head_outputs(self.value_model, query_responses, pad_token_id)
        else:
            raw = response_head_outputs(self.value_model, query_responses, pad_token_id, context_length,
                                        share_prefix=self.share_prefix)
        return (raw.squeeze(-1) - self.value_shift) / self.value_scale

    def _reference_logits(self, query_responses: torch.Tensor, pad_token_id: int,
                          context_length: int | None) -> torch.Tensor:
        if self.ref_adapter:
            self.policy.set_adapter(self.ref_adapter)
            try:
                out, cut = self._policy_forward(query_responses, pad_token_id, context_length)
            finally:
                self.policy.set_adapter(self.model_adapter)
        else:
            with self.policy.disable_adapter():
                out, cut = self._policy_forward(query_responses, pad_token_id, context_length)
        return cut(out.logits)


def disable_dropout(model: torch.nn.Module | None) -> None:
    """Every dropout off, in train mode too: ``nn.Dropout`` modules, and the rates that attention layers copy from
    their config at construction and apply functionally (``attention_dropout``...). The configs, saved with the
    model, keep their values."""
    if model is None:
        return
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in vars(module).items():
            if "dropout" in name and isinstance(value, float) and not isinstance(value, bool):
                setattr(module, name, 0.0)


def check_value_vocabulary(value_model: Any, value_tokenizer: Any, policy_tokenizer: Any) -> None:
    """A separate value model reads the policy's token ids: refuse one whose vocabulary differs, in one line."""
    if value_model is None:
        return
    if value_tokenizer is not None and not same_vocabulary(value_tokenizer, policy_tokenizer):
        raise ConfigError(
            f"the value model's tokenizer has another vocabulary than the policy's ({len(value_tokenizer)} vs "
            f"{len(policy_tokenizer)} tokens), but it reads the policy's token ids: use a value model of the "
            "policy's family (model.value_model) or a value head on the policy (model.value_model: head)",
            field="value_model")
    rows = value_model.get_input_embeddings().num_embeddings
    if rows < len(policy_tokenizer):
        raise ConfigError(f"the value model embeds {rows} token ids but the policy's tokenizer has "
                          f"{len(policy_tokenizer)}: it cannot read the policy's tokens (model.value_model)",
                          field="value_model")


# ------------------------------------------------------------------------------------------ prompts
@dataclass
class PromptRows:
    """The training prompts as token ids (no padding) with their reference answers (or None).

    ``prompts``: each prompt as given (text or conversation), for models that read it in their own tokens (a reward
    model with another tokenizer); ``None`` for a tokenized dataset, and in place of a prompt cut to
    ``max_prompt_length``.
    """

    input_ids: list[list[int]]
    references: list[list[str] | None] | None
    prompts: list[Prompt | None] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


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
    given = None
    if "input_ids" in columns:
        ids = [list(map(int, row)) for row in dataset["input_ids"]]
    elif prompt_column in columns:
        given = list(dataset[prompt_column])
        texts = [render_prompt(tokenizer, p, require_template=True, line=i + 1, field=prompt_column)
                 for i, p in enumerate(given)]
        ids = [list(row) for row in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    else:
        raise InputError(f"the training dataset needs an 'input_ids' or '{prompt_column}' column "
                         f"(it has {', '.join(columns) or 'none'})", field="prompt_column")
    for i, row in enumerate(ids):
        if not row:
            raise InputError("empty prompt", line=i + 1, field=prompt_column)
    if max_prompt_length is not None:
        if given is not None:  # a cut prompt is read from its tokens (decoded) by a model with other tokens
            given = [p if len(row) <= max_prompt_length else None for p, row in zip(given, ids)]
        ids = [row[-max_prompt_length:] for row in ids]
    refs = None
    if reference_column and reference_column in columns:
        refs = _references(dataset[reference_column])
    elif need_references:
        raise InputError(f"the reward terms need the reference column '{reference_column}' "
                         f"(the dataset has {', '.join(columns)})", field="reference_column")
    return PromptRows(ids, refs, given)


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


def rollout_generation_config(*, max_new_tokens: int, pad_token_id: int, stop_token_id: int | None,
                              temperature: float | None) -> GenerationConfig:
    """The generation settings of PPO's rollouts (``temperature``) or greedy evaluation (``None``), from the recipe.

    Sampling is plain: the logits divided by the temperature (no top-k, no top-p), and :func:`recipe_generation`
    keeps a checkpoint's own settings (``repetition_penalty``, ``suppress_tokens``...) out while generating, so the
    log-probabilities of a rollout are those of the distribution the training forward computes.
    """
    sampling = ({"do_sample": True, "temperature": temperature + 1e-7, "top_k": 0, "top_p": 1.0,
                 "return_dict_in_generate": True, "output_scores": True}  # the sampled tokens' scores
                if temperature is not None else {"do_sample": False})
    return GenerationConfig(max_new_tokens=max_new_tokens, pad_token_id=pad_token_id, eos_token_id=stop_token_id,
                            num_beams=1, num_return_sequences=1, use_cache=True, **sampling)


@contextmanager
def recipe_generation(model: Any, config: GenerationConfig) -> Iterator[Any]:
    """Generate with ``config`` alone: the model's own ``generation_config`` (a checkpoint's
    ``repetition_penalty``, ``suppress_tokens``...) is swapped for it while generating, so none of its values
    fills a setting ``config`` leaves unset; restored afterwards. Yields the model whose ``generate`` to call."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = target.generation_config
    target.generation_config = config
    try:
        yield model
    finally:
        target.generation_config = saved


@torch.no_grad()
def sample_responses(policy: Any, queries: torch.Tensor, *, chunk: int, pad_token_id: int,
                     generation_config: GenerationConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample responses for left-padded ``queries`` in chunks; returns ``(responses, logprobs)``.

    Responses are right-padded with ``pad_token_id`` to the longest chunk; ``logprobs`` are those of the
    sampled tokens under the sampling distribution (the processed scores of ``generate``: the logits
    divided by the temperature, nothing else; :func:`rollout_generation_config`).
    """
    context = queries.shape[1]
    responses, logprobs = [], []
    with recipe_generation(policy, generation_config) as model:
        for start in range(0, queries.shape[0], chunk):
            q = queries[start:start + chunk]
            mask = q != pad_token_id
            out = model.generate(input_ids=q.masked_fill(~mask, 0), attention_mask=mask.long(),
                                 generation_config=generation_config)
            tokens = out.sequences[:, context:]
            scores = torch.stack(out.scores, 1)
            responses.append(tokens)
            logprobs.append(token_logprobs(scores.float(), tokens))
    return _pad_right(responses, pad_token_id), _pad_right(logprobs, 0.0)


def temperature_scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The logits divided by the sampling temperature (as the sampling distribution of ``generate`` has them)."""
    return logits / (temperature + 1e-7)


@dataclass
class Rollout:
    """One rollout batch of this process, with everything the losses need (all on the device)."""

    query_responses: torch.Tensor
    responses: torch.Tensor  # as sampled
    context_length: int
    logprobs: torch.Tensor  # masked with INVALID_LOGPROB at padding
    ref_logprobs: torch.Tensor
    values: torch.Tensor  # masked with 0 beyond padding_p1
    scores: torch.Tensor  # after the missing-EOS penalty
    kl: torch.Tensor
    non_score_reward: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor  # whitened, 0 at padding
    returns: torch.Tensor
    padding: torch.Tensor
    padding_p1: torch.Tensor
