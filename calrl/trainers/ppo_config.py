"""``CalibratedPPOConfig``: the settings of calrl's PPO trainer (PPO, PPO-M and PPO-C).

It is a ``transformers.TrainingArguments`` (output, logging, saving, optimiser, precision, seed ...) with
the PPO keys of TRL 1.12's ``PPOConfig`` (same names and meanings, so recipes written for it keep
working), and it is a :class:`~calrl.rewards.pipeline.RewardPipelineConfig`: the reward keys (``rewards``, the
reading keys, the earlier flat keys) are defined and checked there, once.

Batch sizes, as in TRL 1.12: one *rollout batch* per process is ``per_device_train_batch_size x
gradient_accumulation_steps`` prompts (``x`` processes for the global batch); it is split into
``num_mini_batches`` mini-batches, each cut into micro-batches of at most ``per_device_train_batch_size``
rows. calrl takes one optimiser step per mini-batch
(TRL 1.12 took one per ``gradient_accumulation_steps`` micro-batches, which merges the mini-batches
into one step when ``num_mini_batches > 1``); with ``num_mini_batches: 1`` the two are the same.

The derived sizes are properties computed from the validated keys; the config is never changed after
it is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments

from calrl.errors import ConfigError, did_you_mean
from calrl.rewards.pipeline import RewardPipelineConfig
from calrl.rewards.terms import RewardTerm, find_term
from calrl.trainers.ppo_compile import check_compile_keys
from calrl.trainers.ppo_core import LOSS_AGGREGATIONS, SCORE_PLACEMENTS
from calrl.trainers.validation import PPO_RULES, TRAINING_RULES, check_numbers

#: the named modes of the reference's dynamics and their values (the first is calrl's default, trl 1.12's)
MODE_CHOICES = {
    "loss_aggregation": LOSS_AGGREGATIONS,
    "advantage_whitening": ("local", "global"),
    "score_placement": SCORE_PLACEMENTS,
    "scheduler_cadence": ("per_update", "per_optimizer_step"),
    "ppo_c_average_cadence": ("per_step", "per_micro_batch"),
}


@dataclass
class CalibratedPPOConfig(RewardPipelineConfig, TrainingArguments):
    """``TrainingArguments`` + PPO (TRL 1.12 key names) + calrl's reward pipeline (its keys are
    :class:`RewardPipelineConfig`'s, defined there once: this config is one)."""

    # ---------------------------------------------------------------- PPO (TRL 1.12 names)
    learning_rate: float = field(default=3e-6, metadata={"help": "Learning rate of policy and value model."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N updates (rollout batches)."})
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenizing prompts."})
    num_mini_batches: int = field(default=1, metadata={"help": "Mini-batches per rollout batch (one optimiser "
                                                               "step each)."})
    total_episodes: int | None = field(
        default=None, metadata={"help": "Prompts to train on in all; None: num_train_epochs passes over the data."})
    local_rollout_forward_batch_size: int = field(
        default=64, metadata={"help": "Rows per generation / no-grad forward chunk in the rollout phase."})
    num_sample_generations: int = field(
        default=10, metadata={"help": "How many times to log a table of sample completions (0: never)."})
    response_length: int = field(default=53, metadata={"help": "Maximum number of generated tokens."})
    stop_token: Literal["eos"] | None = field(
        default=None, metadata={"help": "'eos': stop generating at EOS and truncate after it."})
    stop_token_id: int | None = field(default=None, metadata={"help": "Stop token id (instead of stop_token)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of the rollouts."})
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of a response without the stop token."})
    max_prompt_length: int | None = field(
        default=None, metadata={"help": "Keep only the last N prompt tokens (None: no limit)."})
    sft_model_path: str = field(default="EleutherAI/pythia-160m", metadata={"help": "Unused by calrl (TRL key)."})
    reward_model_path: str = field(default="EleutherAI/pythia-160m", metadata={"help": "Unused by calrl (TRL key)."})
    model_adapter_name: str | None = field(default=None, metadata={"help": "PEFT adapter trained (None: default)."})
    ref_adapter_name: str | None = field(
        default=None, metadata={"help": "PEFT adapter used as the reference (None: the adapter disabled)."})
    num_ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch."})
    whiten_rewards: bool = field(default=False, metadata={"help": "Whiten the per-token rewards."})
    kl_coef: float = field(default=0.05, metadata={"help": "KL penalty coefficient (initial value if adaptive)."})
    kl_estimator: Literal["k1", "k3"] = field(default="k1", metadata={"help": "Per-token KL estimator."})
    kl_target: float | None = field(
        default=None, metadata={"help": "Adaptive KL controller target (Ziegler et al.); None: fixed kl_coef."})
    kl_horizon: int = field(default=10000, metadata={"help": "Adaptive KL controller horizon (episodes)."})
    cliprange: float = field(default=0.2, metadata={"help": "Policy ratio clip range."})
    vf_coef: float = field(default=0.1, metadata={"help": "Value loss coefficient."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip range."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    ds3_gather_for_generation: bool = field(
        default=True, metadata={"help": "Gather ZeRO-3 / FSDP parameters to generate (False: slower, less memory)."})
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "DDP: look for unused parameters (every PPO parameter is used)."})
    prompt_column: str = field(default="prompt", metadata={"help": "Dataset column with the prompts "
                                                                   "(text or conversations)."})
    # ---------------------------------------------------------------- the reference's dynamics (docs/fidelity.md)
    critic_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the value model (or value head): its own parameter group "
                                        "(the reference's critic optimiser); None: learning_rate (trl 1.12)."})
    critic_max_grad_norm: float | None = field(
        default=None, metadata={"help": "Clip the value model's gradients to this norm and the policy's to "
                                        "max_grad_norm, apart (the reference); None: one norm over both (trl 1.12)."})
    loss_aggregation: str = field(
        default="token_mean", metadata={"help": "'token_mean' (trl 1.12) or 'sequence_mean' (per sequence, then the "
                                                "batch: the reference) for the policy and value losses."})
    advantage_whitening: str = field(
        default="local", metadata={"help": "'local' (each process its own rollout batch, trl 1.12) or 'global' "
                                           "(over every process's batch: the reference's replay buffer)."})
    score_placement: str = field(
        default="after_eos", metadata={"help": "'after_eos' (trl 1.12: one position after the last token) or "
                                               "'last_token' (the reference: on the last token)."})
    scheduler_cadence: str = field(
        default="per_update", metadata={"help": "Step the LR scheduler 'per_update' (each rollout batch, trl 1.12) "
                                                "or 'per_optimizer_step' (the reference)."})
    max_step_kl: float | None = field(
        default=None, metadata={"help": "Bound each optimiser step: after it, the approximate KL (mean over the "
                                        "mini-batch's response tokens of 0.5 x the squared change of their "
                                        "log-probabilities) between the policy before and after the step; a step "
                                        "above it is halved until it is not (at most step_backtracks times), then "
                                        "undone. None: no bound (trl 1.12, the reference)."})
    step_backtracks: int = field(
        default=4, metadata={"help": "Halvings of a step above max_step_kl before it is undone."})
    ppo_c_average_cadence: str = field(
        default="per_step", metadata={"help": "PPO-C moving average: 'per_step' (one update per rollout batch over "
                                              "every process) or 'per_micro_batch' (each process per "
                                              "local_rollout_forward_batch_size rows: the reference)."})

    share_prompt_prefix: bool = field(
        default=False, metadata={"help": "Read the tokens that every row of a forward batch starts with (a shared "
                                         "system message) once, through the model's KV cache, instead of once per "
                                         "row, in the training, reference and value forwards: the same computation "
                                         "up to float rounding, less work when prompts share a long prefix. One "
                                         "process or DDP; not with FSDP, DeepSpeed, gradient checkpointing or "
                                         "torch_compile."})

    # ---------------------------------------------------------------- data (the reward keys: RewardPipelineConfig)
    reference_column: str = field(
        default="reference", metadata={"help": "Dataset column with the reference answer(s) of each prompt "
                                               "(read when present; required by correctness_mode)."})

    def __post_init__(self) -> None:
        self._check_ppo_keys()
        TrainingArguments.__post_init__(self)
        RewardPipelineConfig.__post_init__(self)  # the reward keys, checked before any model is used
        if self.deepspeed:
            # transformers fills DeepSpeed's batch keys before the process group exists (world size 1) and for a
            # dataloader's batches; PPO's are its micro-batches over every process. Filled now, so that models
            # built under ZeRO-3's init (``from_pretrained`` after these arguments) see a consistent config.
            self.device  # noqa: B018 - sets up the distributed state (as the Trainer would), so world_size is true
            self.hf_deepspeed_config.config.update(self.deepspeed_batch_keys(self.world_size))

    def _check_ppo_keys(self) -> None:
        check_numbers(self, TRAINING_RULES, PPO_RULES)
        if self.kl_estimator not in ("k1", "k3"):
            raise ConfigError(f"must be 'k1' or 'k3', got {self.kl_estimator!r}", field="kl_estimator")
        for name, allowed in MODE_CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"must be one of {', '.join(allowed)}, got {value!r}"
                                  + did_you_mean(value, allowed), field=name)
        check_compile_keys(self.torch_compile_backend, self.torch_compile_mode)
        if self.stop_token not in (None, "eos"):
            raise ConfigError(f"must be 'eos' or null, got {self.stop_token!r}", field="stop_token")
        if self.stop_token is not None and self.stop_token_id is not None:
            raise ConfigError("set stop_token or stop_token_id, not both", field="stop_token_id")
        if self.local_batch_size % self.num_mini_batches:
            raise ConfigError(f"the rollout batch per process (per_device_train_batch_size x gradient_accumulation_steps"
                              f" = {self.local_batch_size}) must be a multiple of num_mini_batches "
                              f"({self.num_mini_batches})", field="num_mini_batches")
        if self.max_step_kl is not None and self.deepspeed:
            raise ConfigError("max_step_kl is not supported with DeepSpeed (its engine owns the parameters and the "
                              "step); leave it null", field="max_step_kl")
        if self.share_prompt_prefix:
            clash = [name for name, on in (("fsdp", bool(self.fsdp)), ("deepspeed", bool(self.deepspeed)),
                                           ("gradient_checkpointing", self.gradient_checkpointing),
                                           ("torch_compile", self.torch_compile)) if on]
            if clash:
                raise ConfigError(f"share_prompt_prefix does not work with {clash[0]} (gradient checkpointing drops "
                                  "the KV cache the prefix is read through; FSDP and DeepSpeed shard the modules it "
                                  "calls twice; torch_compile would recompile for each prefix length); set one of "
                                  "them off", field="share_prompt_prefix")
        if self.whiten_rewards and self.local_mini_batch_size < 8:
            raise ConfigError(f"whitening rewards needs mini-batches of at least 8 rows per process, got "
                              f"{self.local_mini_batch_size}", field="whiten_rewards")

    def deepspeed_batch_keys(self, world: int) -> dict[str, int]:
        """DeepSpeed's batch keys for PPO: one optimiser step per mini-batch of micro-batches on ``world`` processes."""
        micro = min(self.per_device_train_batch_size, self.local_mini_batch_size)
        return {"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": self.micro_batches_per_mini_batch,
                "train_batch_size": micro * self.micro_batches_per_mini_batch * world}

    # ---------------------------------------------------------------- derived sizes
    @property
    def local_batch_size(self) -> int:
        """Prompts per process per rollout batch."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    @property
    def local_mini_batch_size(self) -> int:
        return self.local_batch_size // self.num_mini_batches

    @property
    def micro_batches_per_mini_batch(self) -> int:
        """Micro-batches of (at most) ``per_device_train_batch_size`` rows in one mini-batch."""
        return math.ceil(self.local_mini_batch_size / self.per_device_train_batch_size)

    @property
    def ppo_c_average_chunk(self) -> int | None:
        """Rows per PPO-C moving-average update on each process under ``ppo_c_average_cadence: per_micro_batch``
        (the reference's cadence); None: one update per rollout batch over every process."""
        return self.local_rollout_forward_batch_size if self.ppo_c_average_cadence == "per_micro_batch" else None

    def reward_terms(self) -> list[RewardTerm]:
        """The reward terms of this config, in order (built fresh: no reward model statistics)."""
        return self.terms()

    def reward_term(self, name: str) -> RewardTerm | None:
        """The first reward term called ``name`` (None when the config has none)."""
        return find_term(self.reward_terms(), name)
