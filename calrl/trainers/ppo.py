"""Calibration-aware PPO on TRL's experimental PPOTrainer: PPO, PPO-M and PPO-C.

- Vanilla PPO: ``ppo_c_variant="none"`` (the reward model scores the response as generated).
- PPO-M: vanilla PPO with a reward model trained on calibrated preference pairs (only the RM differs).
- PPO-C: ``ppo_c_variant="threshold"`` or ``"difference"``: the RM scores the response without its
  confidence statement and the score is adjusted by the stated confidence (``calrl.rewards.ppo_c``).

Each rollout's score comes from a :class:`~calrl.rewards.pipeline.RewardPipeline` (reward model,
optional correctness reward, PPO-C, abstention reward); TRL then applies ``missing_eos_penalty``, the
KL penalty and GAE unchanged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl.experimental.ppo import PPOConfig, PPOTrainer
from trl.experimental.ppo import ppo_trainer as trl_ppo_module
from trl.experimental.utils import first_true_indices

from calrl.errors import ConfigError, InputError
from calrl.io import write_json
from calrl.rewards.pipeline import RewardPipeline, RewardPipelineConfig

REWARD_STATE_FILE = "calrl_reward_pipeline.json"


@dataclass
class CalibratedPPOConfig(PPOConfig):
    """``PPOConfig`` plus the reward-pipeline settings (see :class:`RewardPipelineConfig`)."""

    ppo_c_variant: str = field(default="none", metadata={"help": "'none' (PPO / PPO-M), 'threshold' or "
                                                                 "'difference' (PPO-C)."})
    ppo_c_weight: float = field(default=0.5, metadata={"help": "PPO-C weight w."})
    ppo_c_alpha: float = field(default=0.1, metadata={"help": "Moving-average rate alpha."})
    ppo_c_init_average: float | None = field(
        default=None, metadata={"help": "Initial moving average (e.g. the RM's mean reward); None: first batch."})
    ppo_c_update_before_adjust: bool = field(
        default=True, metadata={"help": "Update the moving average before adjusting the batch (reference order)."})
    reward_clamp: float = field(default=10.0, metadata={"help": "Clamp the RM score to [-c, c] for PPO-C."})
    strip_confidence: bool | None = field(
        default=None, metadata={"help": "Score the response without its confidence statement; None: iff PPO-C."})
    use_hedges: bool = field(default=False, metadata={"help": "Read confidence from hedge words too."})
    missing_confidence: str = field(
        default="half", metadata={"help": "'half' (c=0.5, no adjustment), 'penalty' or 'skip' (as in the GRPO rewards)."})
    missing_confidence_penalty: float = field(default=1.0, metadata={"help": "Subtracted under 'penalty'."})
    abstention_reward: str = field(
        default="rm", metadata={"help": "Reward of an abstention: a number (a float or a numeric string), "
                                        "or 'rm' to keep its score."})
    correctness_mode: str = field(default="off", metadata={"help": "'off', 'add' or 'replace'."})
    correct_reward: float = field(default=1.0, metadata={"help": "Reward of a correct answer."})
    wrong_reward: float = field(default=0.0, metadata={"help": "Reward of a wrong answer."})
    grader: str = field(default="auto", metadata={"help": "Grader name (calrl.grading)."})
    reference_column: str | None = field(
        default=None, metadata={"help": "Dataset column with the reference answer(s) of each prompt."})

    def __post_init__(self) -> None:
        if isinstance(self.abstention_reward, str) and self.abstention_reward != "rm":
            try:
                self.abstention_reward = float(self.abstention_reward)
            except ValueError:
                raise ConfigError(f"must be a number or 'rm', got {self.abstention_reward!r}",
                                  field="abstention_reward") from None
        super().__post_init__()
        self.pipeline_config()  # validate early, before any model is used

    def pipeline_config(self) -> RewardPipelineConfig:
        return RewardPipelineConfig(
            ppo_c_variant=self.ppo_c_variant, ppo_c_weight=self.ppo_c_weight, ppo_c_alpha=self.ppo_c_alpha,
            ppo_c_init_average=self.ppo_c_init_average, ppo_c_update_before_adjust=self.ppo_c_update_before_adjust,
            reward_clamp=self.reward_clamp, strip_confidence=self.strip_confidence, use_hedges=self.use_hedges,
            missing_confidence=self.missing_confidence, missing_confidence_penalty=self.missing_confidence_penalty,
            abstention_reward=self.abstention_reward, correctness_mode=self.correctness_mode,
            correct_reward=self.correct_reward, wrong_reward=self.wrong_reward, grader=self.grader)


class PromptReferences:
    """Reference answers keyed by a prompt's token ids (padding removed), built from dataset rows."""

    def __init__(self) -> None:
        self._by_ids: dict[tuple[int, ...], list[str]] = {}

    @classmethod
    def from_datasets(cls, datasets: list[Any], column: str) -> PromptReferences:
        lookup = cls()
        for ds in datasets:
            if ds is None:
                continue
            if column not in ds.column_names:
                raise InputError(f"dataset has no column {column!r} (columns: {', '.join(ds.column_names)})",
                                 field="reference_column")
            for row, (ids, refs) in enumerate(zip(ds["input_ids"], ds[column])):
                lookup.add(ids, refs, row=row)
        return lookup

    def add(self, input_ids: list[int], refs: str | list[str] | None, *, row: int | None = None) -> None:
        refs = [] if refs is None else [refs] if isinstance(refs, str) else [str(r) for r in refs]
        key = tuple(int(i) for i in input_ids)
        old = self._by_ids.setdefault(key, refs)
        if old != refs:
            raise InputError(f"the same prompt appears with different references ({old!r} vs {refs!r})",
                             line=row, field="reference_column")

    def __len__(self) -> int:
        return len(self._by_ids)

    def lookup(self, queries: torch.Tensor, pad_token_id: int) -> list[list[str] | None]:
        """References of each left-padded query row (``None`` where the prompt is unknown)."""
        out: list[list[str] | None] = []
        for row in queries.tolist():
            out.append(self._by_ids.get(tuple(i for i in row if i != pad_token_id)))
        return out


class CalibratedPPOTrainer(PPOTrainer):
    """TRL's PPOTrainer whose rollout rewards come from a :class:`RewardPipeline`.

    Extra keyword arguments: ``reward_tokenizer`` (the RM's own tokenizer; ``None`` = the policy's, which
    enables reusing TRL's tokens) and ``reward_pipeline`` (a ready pipeline, replacing the one built from
    ``args``). With ``args.reference_column`` set, that column of the train/eval datasets gives each
    prompt's reference answers (the column is removed before TRL's collator sees the rows).
    """

    def __init__(self, args: CalibratedPPOConfig, processing_class: Any, model: Any, ref_model: Any,
                 reward_model: Any, train_dataset: Any, value_model: Any, *, reward_tokenizer: Any = None,
                 reward_pipeline: RewardPipeline | None = None, eval_dataset: Any = None, **kwargs: Any) -> None:
        if value_model is not None and value_model is reward_model:
            # the value model is trained while the reward model must stay fixed, and the reward seam below
            # tells them apart by identity: load the value model as its own instance (e.g. from the RM path)
            raise ConfigError("value_model and reward_model must be separate instances", field="value_model")
        self.references: PromptReferences | None = None
        column = getattr(args, "reference_column", None)
        if column:
            self.references = PromptReferences.from_datasets([train_dataset, eval_dataset], column)
            train_dataset = train_dataset.remove_columns(column)
            if eval_dataset is not None and column in eval_dataset.column_names:
                eval_dataset = eval_dataset.remove_columns(column)
        super().__init__(args=args, processing_class=processing_class, model=model, ref_model=ref_model,
                         reward_model=reward_model, train_dataset=train_dataset, value_model=value_model,
                         eval_dataset=eval_dataset, **kwargs)
        # TRL's PPOTrainer skips Trainer.__init__, which sets this attribute; transformers' Trainer._save reads
        # it on every non-saving rank, so multi-process checkpoints would fail without it.
        if not hasattr(self, "is_distributed_loading_by_transformers"):
            self.is_distributed_loading_by_transformers = False
        if reward_pipeline is None:
            config = args.pipeline_config() if hasattr(args, "pipeline_config") else RewardPipelineConfig()
            reward_pipeline = RewardPipeline(config, self.reward_model, reward_tokenizer=reward_tokenizer,
                                             policy_tokenizer=processing_class, accelerator=self.accelerator)
        self.reward_pipeline = reward_pipeline

    # -- the seam ---------------------------------------------------------------------------------
    # TRL's PPOTrainer.train() is one monolithic loop that scores rollouts by calling the module-level
    # `get_reward(reward_model, query_responses, pad_token_id, context_length)` (and the same function
    # for the value model). There is no method to override for the reward alone, and copying the loop
    # would fork ~300 lines of TRL. So, for the duration of train() (and generate_completions()), the
    # module's `get_reward` name is swapped for a dispatcher: calls with the reward model go to the
    # reward pipeline, every other call (the value model) goes to the original unchanged. TRL's own
    # missing_eos_penalty, KL penalty, whitening and GAE then run on the pipeline's scores as usual.
    @contextmanager
    def _rewards_from_pipeline(self, *, update: bool) -> Iterator[None]:
        original = trl_ppo_module.get_reward

        def routed_get_reward(model, query_responses, pad_token_id, context_length):
            if model is not self.reward_model:
                return original(model, query_responses, pad_token_id, context_length)
            references = (None if self.references is None
                          else self.references.lookup(query_responses[:, :context_length], pad_token_id))
            scores, _ = self.reward_pipeline.score_rollouts(
                query_responses, context_length, pad_token_id, references,
                step=self.state.global_step + (1 if update else 0), update=update)
            seq_lengths = first_true_indices(query_responses[:, context_length:] == pad_token_id) - 1
            return None, scores, seq_lengths + context_length  # TRL's callers use only the scores

        trl_ppo_module.get_reward = routed_get_reward
        try:
            yield
        finally:
            trl_ppo_module.get_reward = original

    def train(self, resume_from_checkpoint: str | None = None) -> None:
        """Run TRL's PPO loop with rewards from the pipeline.

        ``resume_from_checkpoint`` restores the reward pipeline's state (the PPO-C moving average) saved in
        that checkpoint folder; TRL's PPO loop itself does not reload model or optimizer state.
        """
        if resume_from_checkpoint:
            self.load_reward_state(resume_from_checkpoint)
        self.reward_pipeline.pop_stats()  # start the first log window clean
        with self._rewards_from_pipeline(update=True):
            return super().train()

    def generate_completions(self, sampling: bool = False) -> None:
        # Sample tables score with the pipeline too, without moving the average or counting stats.
        with self._rewards_from_pipeline(update=False):
            return super().generate_completions(sampling=sampling)

    # -- logging and checkpoints -------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Merge the pipeline's stats (averaged over rollouts since the last log) into TRL's metrics."""
        stats = self.reward_pipeline.pop_stats() if hasattr(self, "reward_pipeline") else {}
        super().log({**logs, **stats}, start_time)

    @contextmanager
    def _unwrapped_for_saving(self) -> Iterator[None]:
        """Under DDP ``self.model`` is the DistributedDataParallel wrapper, but TRL's ``save_model`` looks for
        ``.policy`` and its model card for ``.config`` on it; expose the bare policy-and-value wrapper while
        saving (DeepSpeed keeps TRL's own handling)."""
        wrapped = self.model
        if not self.is_deepspeed_enabled:
            self.model = self.accelerator.unwrap_model(wrapped)
        try:
            yield
        finally:
            self.model = wrapped

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        with self._unwrapped_for_saving():
            super().save_model(output_dir, _internal_call)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        with self._unwrapped_for_saving():
            super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            write_json(folder / REWARD_STATE_FILE, self.reward_pipeline.state_dict())

    def load_reward_state(self, checkpoint_dir: str | os.PathLike[str]) -> None:
        """Restore the pipeline state (PPO-C moving average, counters) saved in a checkpoint folder."""
        path = Path(checkpoint_dir) / REWARD_STATE_FILE
        if not path.is_file():
            raise InputError("no reward-pipeline state in this checkpoint", path=str(path))
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg})", path=str(path), line=exc.lineno) from None
        self.reward_pipeline.load_state_dict(state)
