"""Reward-model runner: the ordinary (``calibration_lambda: 0``) or the calibrated (PPO-M) reward model.

Trains :class:`calrl.reward_modeling.CalibratedRewardTrainer` on preference pairs, runs the confidence-bias
probe on held-out pairs at every epoch (``RewardModelProbeCallback``), and writes the reward-model report
(``reward_model_report.json`` / ``.md``) and a model card beside the saved model. The per-epoch
``CalibrationEvalCallback`` of the policy recipes is not attached: a reward model does not generate, and
its calibration check is the probe.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from calrl.train.common import (
    ModelFactory,
    RunResult,
    confidence_instruction,
    finish_wandb,
    list_checkpoints,
    load_training_data,
    model_card,
    peft_config,
    prompt_texts,
    resolve_resume,
    start_wandb,
    with_confidence_prompts,
    write_model_card,
)
from calrl.train.recipe import TINY, Recipe

logger = logging.getLogger(__name__)
PROBE_DIR = "rm_probe"


def as_assistant(response: Any) -> list[dict[str, Any]]:
    """A response as a conversation: a string becomes one assistant message."""
    if isinstance(response, str):
        return [{"role": "assistant", "content": response}]
    return response


def preference_dataset(rows: Any, recipe: Recipe, conversational: bool) -> Any:
    """Pairs with the confidence system prompt on a share of prompts; conversational when the tokenizer chats."""
    from datasets import Dataset

    columns: dict[str, Any] = {}
    if conversational:
        if "prompt" in rows.column_names:
            columns["prompt"], _ = with_confidence_prompts(
                list(rows["prompt"]), recipe.data.confidence_prompt_fraction, confidence_instruction(recipe),
                recipe.data.seed)
        columns["chosen"] = [as_assistant(r) for r in rows["chosen"]]
        columns["rejected"] = [as_assistant(r) for r in rows["rejected"]]
    else:
        for name in rows.column_names:
            columns[name] = list(rows[name])
    return Dataset.from_dict(columns)


def run(recipe: Recipe) -> RunResult:
    """Train the reward-model recipe; save the model, the RM report and the model card."""
    from calrl.reward_modeling import (
        CalibratedRewardTrainer,
        RewardModelProbeCallback,
        log_reward_model_report,
        reward_model_report,
        write_reward_model_report,
    )
    from calrl.reward_modeling.probe import report_scalars
    from calrl.train.callbacks import NonFiniteLossCallback

    args = recipe.training
    data = load_training_data(recipe)
    checkpoint = resolve_resume(recipe)
    # ---- everything above is checked before any model loads
    m = recipe.model
    vocabulary = [*prompt_texts(data.train, ("prompt", "chosen", "rejected")), confidence_instruction(recipe)]
    factory = ModelFactory(recipe, vocabulary)
    tokenizer = factory.tokenizer(m.reward_model)
    conversational = bool(getattr(tokenizer, "chat_template", None))
    train_pairs = preference_dataset(data.train, recipe, conversational)
    eval_pairs = preference_dataset(data.eval, recipe, conversational) if data.eval is not None else None
    probe_pairs = eval_pairs if eval_pairs is not None else train_pairs
    if eval_pairs is None:
        logger.warning("no held-out pairs (data.eval_split / data.eval_fraction): the probe reads training pairs")
    model = factory.sequence_classifier(m.reward_model)

    probe = RewardModelProbeCallback(probe_pairs, config=args.pairs_config(), batch_size=recipe.eval.probe_batch_size,
                                     out_dir=Path(args.output_dir) / PROBE_DIR)
    run_handle = start_wandb(recipe)
    failed = True
    try:
        trainer = CalibratedRewardTrainer(
            model=model, args=args, train_dataset=train_pairs, eval_dataset=eval_pairs,
            processing_class=tokenizer, callbacks=[probe, NonFiniteLossCallback()],
            peft_config=peft_config(recipe, "SEQ_CLS"))
        trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model(args.output_dir)
        report = reward_model_report(trainer.model, tokenizer, probe_pairs, batch_size=recipe.eval.probe_batch_size,
                                     config=args.pairs_config())
        report.update(global_step=trainer.state.global_step, held_out=eval_pairs is not None)
        scalars = report_scalars(report, prefix="")
        if trainer.accelerator.is_main_process:
            write_reward_model_report(report, args.output_dir)
            if run_handle is not None:
                log_reward_model_report(report, run_handle,
                                        step_metrics={"train/global_step": trainer.state.global_step})
            base = m.reward_model if m.reward_model != TINY else "tiny (calrl.models.tiny)"
            write_model_card(args.output_dir, model_card(
                recipe, base_model=base, metrics={}, global_step=trainer.state.global_step,
                extra={"Reward-model report (held-out pairs)" if eval_pairs is not None
                       else "Reward-model report (training pairs)": scalars}))
        failed = False
        return RunResult(method="rm", output_dir=args.output_dir, global_step=trainer.state.global_step,
                         metrics=scalars, checkpoints=list_checkpoints(args.output_dir),
                         wandb_dir=getattr(run_handle, "dir", None))
    finally:
        finish_wandb(run_handle, failed=failed)
