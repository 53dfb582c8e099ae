"""calrl's PPO trainer for language models: PPO, PPO-M and PPO-C on ``transformers.Trainer`` and ``accelerate``.

- Vanilla PPO: ``ppo_c_variant="none"`` (the reward model scores the response as generated).
- PPO-M: vanilla PPO with a reward model trained on calibrated preference pairs (only the RM differs).
- PPO-C: ``ppo_c_variant="threshold"`` or ``"difference"``: the RM scores the response without its
  confidence statement and the score is adjusted by the stated confidence (``calrl.rewards.ppo_c``).

Each update: sample a rollout batch with ``generate`` (left-padded prompts, stop at the stop token, truncate
after it), score it with :meth:`CalibratedPPOTrainer.compute_rewards` (the reward pipeline: RM, optional
correctness reward, PPO-C, abstention), subtract the missing-EOS penalty, add the per-token KL penalty
against the frozen reference, compute GAE advantages, then ``num_ppo_epochs`` passes of clipped policy and
value losses over ``num_mini_batches`` mini-batches (one optimiser step each). The arithmetic is in
:mod:`calrl.trainers.ppo_core`, checked against numbers recorded from trl 1.12.0's ``PPOTrainer``.

The loop fires the ``transformers`` callback events (``on_train_begin``, ``on_epoch_begin``,
``on_step_begin``, ``on_step_end``, ``on_log``, ``on_evaluate``, ``on_save``, ``on_epoch_end``,
``on_train_end``) and honours ``logging_steps``, ``save_strategy``/``save_steps``, ``eval_strategy`` and
``save_total_limit``. Metrics carry TRL's names (``objective/kl``, ``objective/entropy``,
``policy/approxkl_avg``, ``loss/policy_avg``, ``loss/value_avg``, ``val/ratio`` ...) plus the reward
pipeline's (``reward/*``, ``confidence/*``, ``abstention/rate``, ``correctness/accuracy``).
``train(resume_from_checkpoint=...)`` resumes exactly (weights, optimiser, scheduler, RNG, data position,
KL coefficient, PPO-C moving average): see :mod:`calrl.trainers.ppo_checkpoint`. ``torch_compile`` compiles the
trained module, generation and the frozen forwards: see :mod:`calrl.trainers.ppo_compile`.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model
from transformers import Trainer, TrainerState
from transformers.trainer_utils import TrainOutput, set_seed

from calrl.errors import ConfigError, InputError
from calrl.generation.sharding import fsdp_sharded, reshard
from calrl.reward_modeling.sequence_scores import response_forward
from calrl.reward_modeling.stats import stored_reward_stats
from calrl.rewards.pipeline import RewardPipeline
from calrl.trainers import ppo_checkpoint as ckpt
from calrl.trainers.ppo_compile import CompiledForwards, compile_options
from calrl.trainers.ppo_config import CalibratedPPOConfig
from calrl.trainers.ppo_core import (
    INVALID_LOGPROB,
    KLController,
    entropy_from_logits,
    generalized_advantages,
    per_token_kl,
    ppo_loss,
    response_masks,
    token_logprobs,
    token_rewards,
    truncate_after_stop,
    whitened_advantages,
)
from calrl.trainers.ppo_deepspeed import bare, prepare_frozen, rollout_policy, uses_deepspeed
from calrl.trainers.ppo_eval import PPOEvalMixin
from calrl.trainers.ppo_io import PPOCheckpointingMixin, resolve_checkpoint
from calrl.trainers.ppo_metrics import STAT_NAMES, STEP_STAT_NAMES, PPOMetricsMixin, window_summary
from calrl.trainers.ppo_optim import PPOOptimMixin, global_moments
from calrl.trainers.ppo_rollout import (
    EpochSampler,
    PolicyAndValue,
    Rollout,
    check_value_vocabulary,
    disable_dropout,
    left_pad,
    prompt_rows,
    rollout_generation_config,
    sample_responses,
    temperature_scaled,
)

__all__ = ["CalibratedPPOConfig", "CalibratedPPOTrainer", "Rollout"]


def _tokenizer(processing_class: Any) -> Any:
    inner = getattr(processing_class, "tokenizer", None)
    return inner if inner is not None else processing_class


class CalibratedPPOTrainer(PPOCheckpointingMixin, PPOEvalMixin, PPOMetricsMixin, PPOOptimMixin, Trainer):
    """PPO for causal language models with calrl's calibration-aware reward pipeline.

    The loop, rollout and losses are here; checkpoints (:class:`~calrl.trainers.ppo_io.PPOCheckpointingMixin`),
    evaluation (:class:`~calrl.trainers.ppo_eval.PPOEvalMixin`), an update's metrics
    (:class:`~calrl.trainers.ppo_metrics.PPOMetricsMixin`) and the optimiser's critic groups and clipping
    (:class:`~calrl.trainers.ppo_optim.PPOOptimMixin`) come from the mixins.

    Args (TRL 1.12's ``PPOTrainer`` order): ``args``, ``processing_class`` (pads on the left), ``model`` (the
    policy), ``ref_model`` (``None``: a frozen copy of the policy, or the policy with its adapter disabled under
    LoRA), ``reward_model`` (a one-output sequence classifier), ``train_dataset`` (``prompt`` as text or
    conversations, or tokenized ``input_ids``; an optional reference column), ``value_model`` (a one-output
    sequence classifier, e.g. loaded from the RM's path; ``None``: a value head on the policy).
    Keyword-only: ``reward_tokenizer`` (the RM's own tokenizer: the RM then reads each rollout as the conversation
    in its own tokens, unless the two tokenizers agree), ``value_tokenizer`` (the value model's; it must have the
    policy's vocabulary, since the value model reads the policy's tokens), ``reward_pipeline`` (a ready pipeline
    instead of the one built from ``args``), ``peft_config``.
    """

    def __init__(self, args: CalibratedPPOConfig, processing_class: Any, model: Any, ref_model: Any = None,
                 reward_model: Any = None, train_dataset: Any = None, value_model: Any = None,
                 data_collator: Any = None, eval_dataset: Any = None, optimizers: tuple = (None, None),
                 callbacks: list[Any] | None = None, peft_config: Any = None, *, reward_tokenizer: Any = None,
                 reward_pipeline: RewardPipeline | None = None, value_tokenizer: Any = None) -> None:
        if train_dataset is None:
            raise ConfigError("CalibratedPPOTrainer needs a train_dataset of prompts", field="train_dataset")
        if reward_model is None and reward_pipeline is None:
            raise ConfigError("CalibratedPPOTrainer needs a reward_model (or a reward_pipeline)", field="reward_model")
        if ref_model is not None and ref_model is model:
            raise ConfigError("ref_model must be a separate copy of the policy (or None)", field="ref_model")
        if value_model is not None and value_model is reward_model:
            # the value model trains while the reward model stays fixed: load it as its own instance
            raise ConfigError("value_model and reward_model must be separate instances", field="value_model")
        tok = _tokenizer(processing_class)
        if tok.pad_token_id is None:
            raise ConfigError("the tokenizer has no pad token (set tokenizer.pad_token)", field="processing_class")
        self.pad_token_id = int(tok.pad_token_id)
        self.eos_token_id = tok.eos_token_id
        self.stop_token_id = tok.eos_token_id if args.stop_token == "eos" else args.stop_token_id
        check_value_vocabulary(value_model, value_tokenizer, tok)
        if peft_config is not None:
            model = get_peft_model(model, peft_config)
        self.is_peft_model = hasattr(model, "disable_adapter") and hasattr(model, "peft_config")
        if ref_model is None and not self.is_peft_model:
            ref_model = copy.deepcopy(model)
        for module in (model, ref_model, value_model, reward_model):
            disable_dropout(module)
        self.ref_model = ref_model
        self.reward_model = reward_model
        pipeline_config = args  # a CalibratedPPOConfig is the reward configuration
        self.prompts = prompt_rows(train_dataset, tok, prompt_column=args.prompt_column,
                                   reference_column=args.reference_column, max_prompt_length=args.max_prompt_length,
                                   need_references=pipeline_config.needs_references)
        self.eval_prompts = None if eval_dataset is None else prompt_rows(
            eval_dataset, tok, prompt_column=args.prompt_column, reference_column=args.reference_column,
            max_prompt_length=args.max_prompt_length)
        if args.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs)
        # under a normalised rm term the value model is read on the normalised reward's scale, with its own stored
        # statistics (a value model loaded from the RM carries the RM's), as the reference's critic is
        value_stats = (stored_reward_stats(value_model) if pipeline_config.normalizes_rm and value_model is not None
                       else None)
        wrapper = PolicyAndValue(model, value_model, value_stats, ref_adapter=args.ref_adapter_name,
                                 model_adapter=args.model_adapter_name, share_prefix=args.share_prompt_prefix)
        super().__init__(model=wrapper, args=args, data_collator=data_collator,
                         train_dataset=train_dataset, eval_dataset=eval_dataset, processing_class=processing_class,
                         callbacks=callbacks, optimizers=optimizers)
        if uses_deepspeed(self.accelerator):  # eval engines (sharded at ZeRO-3), as TRL's trainers make them
            self._fill_deepspeed_config()
            self.ref_model = prepare_frozen(self.ref_model, self.accelerator)
            self.reward_model = prepare_frozen(self.reward_model, self.accelerator)
        else:
            for frozen in (self.ref_model, self.reward_model):
                if frozen is not None:
                    frozen.to(self.accelerator.device).eval().requires_grad_(False)
        # torch_compile: generation and the frozen forwards (accelerate compiles the trained module): ppo_compile
        if args.share_prompt_prefix and self.accelerator.distributed_type in ("FSDP", "DEEPSPEED"):
            raise ConfigError(f"share_prompt_prefix does not work under {self.accelerator.distributed_type} (it "
                              "shards the modules the prefix and the rest call in turn); set it off",
                              field="share_prompt_prefix")
        self.compiled_forwards = CompiledForwards(compile_options(args), self.accelerator.distributed_type)
        for frozen in (self.ref_model, self.reward_model):
            self.compiled_forwards.compile_frozen(frozen)
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        self.sampler = EpochSampler(len(self.prompts), args.local_batch_size * world,
                                    seed=args.data_seed if args.data_seed is not None else args.seed,
                                    rank=rank, world=world)
        if reward_pipeline is None:
            reward_pipeline = RewardPipeline(pipeline_config, bare(self.reward_model),
                                             reward_tokenizer=reward_tokenizer,
                                             policy_tokenizer=tok, accelerator=self.accelerator,
                                             stop_token_id=self.stop_token_id, average_chunk=args.ppo_c_average_chunk)
        self.reward_pipeline = reward_pipeline
        self.kl_controller = KLController(args.kl_coef, target=args.kl_target, horizon=args.kl_horizon)
        # the recipe's settings alone (a checkpoint's generation_config never leaks in): ppo_rollout
        self.generation_config = rollout_generation_config(
            max_new_tokens=args.response_length, pad_token_id=self.pad_token_id, stop_token_id=self.stop_token_id,
            temperature=args.temperature)
        self.greedy_generation_config = rollout_generation_config(
            max_new_tokens=args.response_length, pad_token_id=self.pad_token_id, stop_token_id=self.stop_token_id,
            temperature=None)
        self.max_steps = self._total_updates()
        self.log_window: list[dict[str, float]] = []
        self._prepared = False
        self.last_saved_step = -1

    # ------------------------------------------------------------------------------------- sizes
    @property
    def global_batch_size(self) -> int:
        return self.args.local_batch_size * self.accelerator.num_processes

    def _total_updates(self) -> int:
        args = self.args
        if args.total_episodes is not None:
            return math.ceil(args.total_episodes / self.global_batch_size)
        if args.max_steps and args.max_steps > 0:
            return int(args.max_steps)
        return math.ceil(args.num_train_epochs * self.sampler.batches_per_epoch)

    # ------------------------------------------------------------------------------------ rewards
    def compute_rewards(self, query_responses: torch.Tensor, context_length: int,
                        references: list[list[str] | None] | None, *, update: bool = True,
                        prompts: list[Any] | None = None) -> torch.Tensor:
        """The score of each rollout (query + truncated response): the reward pipeline's final reward.

        ``update=False`` scores without moving the PPO-C average or counting statistics (evaluation).
        ``prompts``: each row's prompt as given (text or conversation), for a reward model with its own tokenizer.
        Override this method to plug in another reward.
        """
        scores, _ = self.reward_pipeline.score_rollouts(query_responses, context_length, self.pad_token_id,
                                                        references, prompts=prompts,
                                                        step=self.state.global_step + 1, update=update)
        return scores.to(query_responses.device)

    # ------------------------------------------------------------------------------------ rollout
    @torch.no_grad()
    def _reference_logprobs(self, query_responses: torch.Tensor, responses: torch.Tensor, context: int) -> torch.Tensor:
        if self.ref_model is not None:
            out, cut = response_forward(self.ref_model, query_responses, self.pad_token_id, context,
                                        share_prefix=self.args.share_prompt_prefix)
            logits = cut(out.logits)
        else:  # LoRA: the policy with its adapter off, through the trained module's own forward (FSDP gathers)
            logits = self.model(query_responses, self.pad_token_id, "reference", context)[0]
        return token_logprobs(temperature_scaled(logits, self.args.temperature), responses)

    @torch.no_grad()
    def rollout(self, queries: torch.Tensor, references: list[list[str] | None] | None,
                prompts: list[Any] | None = None) -> Rollout:
        """Generate, score and compute advantages for one batch of left-padded ``queries`` (``prompts``: as given)."""
        args, pad, context = self.args, self.pad_token_id, queries.shape[1]
        # every forward of the rollout in the training forward's precision (accelerate's mixed precision)
        with rollout_policy(self) as policy, self.compiled_forwards.generating(policy), self.accelerator.autocast():
            responses, logprobs = sample_responses(policy, queries, chunk=args.local_rollout_forward_batch_size,
                                                   pad_token_id=pad, generation_config=self.generation_config)
        query_responses = torch.cat([queries, responses], 1)
        ref_logprobs, values = [], []
        with self.accelerator.autocast():
            for start in range(0, queries.shape[0], args.local_rollout_forward_batch_size):
                rows = slice(start, start + args.local_rollout_forward_batch_size)
                ref_logprobs.append(self._reference_logprobs(query_responses[rows], responses[rows], context))
                values.append(self.model(query_responses[rows], pad, "values", context)[1].float())
        ref_logprobs, values = torch.cat(ref_logprobs), torch.cat(values)
        final = responses if self.stop_token_id is None else truncate_after_stop(responses, self.stop_token_id, pad)
        scores = self.compute_rewards(torch.cat([queries, final], 1), context, references, prompts=prompts).float()
        if args.missing_eos_penalty is not None:  # a response that never reached the stop token (truncation's)
            ended_with = self.stop_token_id if self.stop_token_id is not None else self.eos_token_id
            has_eos = (final == ended_with).any(-1)
            scores = torch.where(has_eos, scores, scores - args.missing_eos_penalty)
        masks = response_masks(final, pad)
        logprobs = logprobs.masked_fill(masks.padding, INVALID_LOGPROB)
        ref_logprobs = ref_logprobs.masked_fill(masks.padding, INVALID_LOGPROB)
        values = values.masked_fill(masks.padding_p1, 0.0)
        kl = per_token_kl(logprobs, ref_logprobs, args.kl_estimator)
        rewards, non_score = token_rewards(scores, kl, masks, self.kl_controller.value, whiten=args.whiten_rewards,
                                           placement=args.score_placement)
        advantages, returns = generalized_advantages(rewards, values, args.gamma, args.lam)
        return Rollout(query_responses=query_responses, responses=responses, context_length=context,
                       logprobs=logprobs, ref_logprobs=ref_logprobs, values=values, scores=scores, kl=kl,
                       non_score_reward=non_score, rewards=rewards,
                       advantages=whitened_advantages(advantages, masks.padding, global_moments(
                           self.accelerator, advantages, masks.padding, args.advantage_whitening)), returns=returns,
                       padding=masks.padding, padding_p1=masks.padding_p1)

    # ----------------------------------------------------------------------------------- optimise
    def create_optimizer(self, model: Any = None) -> Any:
        """``transformers.Trainer``'s optimiser, or with ``critic_learning_rate`` one whose value-model groups
        have their own rate (:meth:`~calrl.trainers.ppo_optim.PPOOptimMixin._critic_optimizer`)."""
        if self.args.critic_learning_rate is None or self.optimizer is not None:
            return super().create_optimizer(model)
        self.optimizer = self._critic_optimizer(model if model is not None else self.model)
        return self.optimizer

    def _minibatch_generator(self) -> torch.Generator:
        seed = self.args.seed * 1_000_003 + self.state.global_step * 7919 + self.accelerator.process_index
        return torch.Generator().manual_seed(seed)

    def optimize(self, rollout: Rollout) -> torch.Tensor:
        """``num_ppo_epochs`` passes over the rollout; returns the stats ``10 x epochs x mini x micro``
        (:data:`~calrl.trainers.ppo_metrics.STAT_NAMES` per micro-batch, then ``STEP_STAT_NAMES`` per optimiser
        step, repeated over its micro-batches)."""
        args, model, acc = self.args, self.model, self.accelerator
        n_micro, per_device = args.micro_batches_per_mini_batch, args.per_device_train_batch_size
        stats = torch.zeros(len(STAT_NAMES) + len(STEP_STAT_NAMES), args.num_ppo_epochs, args.num_mini_batches,
                            n_micro)
        # accelerate divides each loss by gradient_accumulation_steps; a mini-batch has n_micro micro-batches
        loss_scale = 1.0 if acc.distributed_type == "DEEPSPEED" else acc.gradient_accumulation_steps / n_micro
        generator = self._minibatch_generator()
        model.train()
        for epoch in range(args.num_ppo_epochs):
            order = torch.randperm(args.local_batch_size, generator=generator)
            for mini in range(args.num_mini_batches):
                rows = order[mini * args.local_mini_batch_size:(mini + 1) * args.local_mini_batch_size]
                trained = []  # (rows, log-probabilities before the step) for the step's bound
                for micro in range(n_micro):
                    idx = rows[micro * per_device:(micro + 1) * per_device].to(rollout.responses.device)
                    sync = nullcontext() if micro == n_micro - 1 else acc.no_sync(model)
                    with sync:
                        logits, values = model(rollout.query_responses[idx], self.pad_token_id, "both",
                                               rollout.context_length)
                        logits = temperature_scaled(logits, args.temperature)
                        new_logprobs = token_logprobs(logits, rollout.responses[idx]).float()
                        if args.max_step_kl is not None:
                            trained.append((idx, new_logprobs.detach()))
                        out = ppo_loss(
                            new_logprobs, rollout.logprobs[idx],
                            rollout.advantages[idx], values.float(),
                            rollout.values[idx], rollout.returns[idx], rollout.padding[idx], rollout.padding_p1[idx],
                            cliprange=args.cliprange, cliprange_value=args.cliprange_value, vf_coef=args.vf_coef,
                            aggregation=args.loss_aggregation)
                        acc.backward(out.loss * loss_scale)
                    with torch.no_grad():
                        entropy = entropy_from_logits(logits.float()).mean()
                    stats[:len(STAT_NAMES), epoch, mini, micro] = torch.stack([
                        out.approxkl, out.pg_clipfrac, out.pg_loss, out.vf_loss, out.vf_clipfrac, entropy,
                        out.ratio_mean]).float().cpu()
                self._clip_gradients()
                step = self._bounded_step(rollout, trained)
                stats[len(STAT_NAMES):, epoch, mini, :] = torch.tensor([[step.kl], [step.raw_kl], [float(step.halvings)]])
                self.optimizer.zero_grad()
                if args.scheduler_cadence == "per_optimizer_step":
                    self.lr_scheduler.step()
        return stats

    def training_step_ppo(self, epoch: int, batch: int, start_time: float) -> dict[str, float]:
        """One PPO update on rollout batch ``batch`` of data epoch ``epoch``; returns its metrics."""
        idx = self.sampler.indices(epoch, batch)
        queries = left_pad([self.prompts.input_ids[i] for i in idx], self.pad_token_id, self.accelerator.device)
        refs = None if self.prompts.references is None else [self.prompts.references[i] for i in idx]
        given = None if self.prompts.prompts is None else [self.prompts.prompts[i] for i in idx]
        rollout = self.rollout(queries, refs, given)
        stats = self.optimize(rollout)
        self.state.episode += self.global_batch_size
        metrics = self._update_metrics(rollout, stats, start_time)
        self.kl_controller.update(metrics["objective/kl"], self.global_batch_size)
        return metrics

    # --------------------------------------------------------------------------------------- loop
    def _fill_deepspeed_config(self) -> None:
        """DeepSpeed's batch keys for PPO's micro-batches: one optimiser step per mini-batch (its 'auto' values
        would come from a prepared dataloader, which the rollout loop does not use)."""
        plugin = getattr(self.accelerator, "deepspeed_plugin", None)
        if plugin is None:
            return
        args, cfg = self.args, plugin.deepspeed_config
        cfg.update(args.deepspeed_batch_keys(self.accelerator.num_processes))
        if cfg.get("gradient_clipping") == "auto":
            cfg["gradient_clipping"] = float(args.max_grad_norm or 0.0)

    def _prepare(self) -> None:
        if self._prepared:
            return
        self._fill_deepspeed_config()
        if self.optimizer is None or self.lr_scheduler is None:
            steps = self.max_steps * (self.args.num_ppo_epochs * self.args.num_mini_batches
                                      if self.args.scheduler_cadence == "per_optimizer_step" else 1)
            self.create_optimizer_and_scheduler(num_training_steps=steps)
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.model_wrapped = self.model
        if fsdp_sharded(self.model):
            # FSDP2 initialises its sharding state at the root module's first forward, which must come before
            # any inner module runs (generation runs the bare policy): one token through the root
            with torch.no_grad():
                self.model(torch.full((1, 1), self.eos_token_id, device=self.accelerator.device), self.pad_token_id)
            reshard(self.model)
        handler = self.callback_handler
        handler.model, handler.optimizer, handler.lr_scheduler = self.model, self.optimizer, self.lr_scheduler
        self._prepared = True

    def _init_state(self) -> None:
        bpe = self.sampler.batches_per_epoch
        self.state = TrainerState(is_local_process_zero=self.is_local_process_zero(),
                                  is_world_process_zero=self.is_world_process_zero(),
                                  stateful_callbacks=self.state.stateful_callbacks)
        self.state.episode = 0
        self.state.max_steps = self.max_steps
        self.state.num_train_epochs = math.ceil(self.max_steps / bpe)
        self.state.train_batch_size = self.global_batch_size
        self.state.compute_steps(self.args, self.max_steps)

    def train(self, resume_from_checkpoint: str | bool | None = None, trial: Any = None,
              ignore_keys_for_eval: list[str] | None = None, **kwargs: Any) -> Any:
        """Run PPO for ``max_steps`` updates (from ``total_episodes``, ``max_steps`` or ``num_train_epochs``).

        ``resume_from_checkpoint``: a checkpoint folder of this trainer (or ``True``: the newest complete one
        in ``output_dir``) to continue from exactly.
        """
        checkpoint = resolve_checkpoint(resume_from_checkpoint, self.args.output_dir)
        saved = ckpt.read_state(checkpoint) if checkpoint else None  # checked before any change
        self._init_state()
        if checkpoint:
            self._load_checkpoint(checkpoint, saved, weights_only=True)
        self._prepare()
        if checkpoint:
            self._load_checkpoint(checkpoint, saved, weights_only=False)
        else:
            set_seed(self.args.seed + self.accelerator.process_index * 100003)
        self.control = self.callback_handler.on_train_begin(self.args, self.state, self.control)
        if checkpoint:
            ckpt.set_rng_state(torch.load(Path(checkpoint) / ckpt.rng_file(self.accelerator.process_index,
                                                                             self.accelerator.num_processes),
                                          weights_only=False))
        start_time = time.time()
        start_episode = self.state.episode
        self._loop(start_time)
        self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)
        if self.control.should_save:
            self.save_checkpoint()
        runtime = time.time() - start_time
        summary = {"train_runtime": round(runtime, 4),
                   "train_samples_per_second": round((self.state.episode - start_episode) / max(runtime, 1e-9), 3)}
        self.log(summary)
        return TrainOutput(self.state.global_step, float("nan"), summary)

    def _loop(self, start_time: float) -> None:
        bpe = self.sampler.batches_per_epoch
        first_epoch, first_batch = divmod(self.state.global_step, bpe)
        for epoch in range(first_epoch, math.ceil(self.max_steps / bpe)):
            self.control = self.callback_handler.on_epoch_begin(self.args, self.state, self.control)
            for batch in range(first_batch if epoch == first_epoch else 0, bpe):
                if self.state.global_step >= self.max_steps:
                    break
                self.control = self.callback_handler.on_step_begin(self.args, self.state, self.control)
                metrics = self.training_step_ppo(epoch, batch, start_time)
                self.state.global_step += 1
                self.state.epoch = epoch + (batch + 1) / bpe
                self.log_window.append(metrics)
                if self.args.scheduler_cadence == "per_update":
                    self.lr_scheduler.step()
                self.control = self.callback_handler.on_step_end(self.args, self.state, self.control)
                self._log_save_evaluate()
                self._maybe_sample_table()
                if self.control.should_epoch_stop or self.control.should_training_stop:
                    break
            self.control = self.callback_handler.on_epoch_end(self.args, self.state, self.control)
            self._log_save_evaluate()
            if self.control.should_training_stop or self.state.global_step >= self.max_steps:
                break

    def _log_save_evaluate(self) -> None:
        if self.control.should_log and self.log_window:
            window, self.log_window = self.log_window, []
            self.log(window_summary(window))
        if self.control.should_evaluate:
            self.evaluate()
        if self.control.should_save:
            self.save_checkpoint()

    # -------------------------------------------------------------------------------- checkpoints
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the policy (full model, or its PEFT adapter) and the tokenizer in Hugging Face format."""
        self._save_policy(Path(output_dir or self.args.output_dir))

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoint-<global_step>`` (staged, renamed into place), fire ``on_save`` (callbacks add their
        files: the W&B run id, the eval's copy), then mark it complete: an interruption anywhere before leaves no
        checkpoint that resume would take for whole."""
        if self.last_saved_step == self.state.global_step:
            self.control.should_save = False
            return None
        folder = self._write_checkpoint()
        self.last_saved_step = self.state.global_step
        self.control = self.callback_handler.on_save(self.args, self.state, self.control)
        self._finish_checkpoint(folder)
        return folder

    # --------------------------------------------------------------------------------- evaluation
    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """Generate on the eval prompts and score them with the reward pipeline (the PPO-C average is not moved).

        Logs ``<prefix>_objective/scores`` and the pipeline's statistics, fires ``on_evaluate``.
        """
        prompts = self.eval_prompts if eval_dataset is None else prompt_rows(
            eval_dataset, _tokenizer(self.processing_class), prompt_column=self.args.prompt_column,
            reference_column=self.args.reference_column, max_prompt_length=self.args.max_prompt_length)
        if prompts is None:
            raise InputError("evaluate() needs an eval_dataset", field="eval_dataset")
        metrics = self._evaluate_prompts(prompts, metric_key_prefix)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics=metrics)
        return metrics

    def _maybe_sample_table(self) -> None:
        n = self.args.num_sample_generations
        if n <= 0 or self.eval_prompts is None:
            return
        every = max(1, self.max_steps // n)
        if (self.state.global_step - 1) % every == 0:
            self._log_sample_table()
