"""GRPO runner (and the shared runner of RLOO): scoring-rule rewards on the stated confidence."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from calrl.train.common import (
    ModelFactory,
    RunResult,
    calibration_eval_config,
    confidence_instruction,
    eval_item_texts,
    final_calibration_metrics,
    finish_wandb,
    initial_policy,
    list_checkpoints,
    load_heldout_items,
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
TINY_INIT_DIR = "tiny_init"


def run_policy_gradient(recipe: Recipe, trainer_cls: type) -> RunResult:
    """Train a GRPO-style recipe (``CalibratedGRPOTrainer`` or ``CalibratedRLOOTrainer``)."""
    from datasets import Dataset

    from calrl.train.callbacks import NonFiniteLossCallback, guard_reward_funcs

    args = recipe.training
    data = load_training_data(recipe)
    items = load_heldout_items(recipe)
    checkpoint = resolve_resume(recipe)
    # ---- everything above is checked before any model loads
    conversations, n_system = with_confidence_prompts(
        list(data.train["prompt"]), recipe.data.confidence_prompt_fraction, confidence_instruction(recipe),
        recipe.data.seed)
    logger.info("confidence prompt added to %d of %d prompts", n_system, len(conversations))
    columns: dict[str, Any] = {"prompt": conversations}
    for role in ("reference", "choices"):
        if role in data.train.column_names:
            columns[role] = list(data.train[role])
    args.reference_column = "reference"
    args.choices_column = "choices" if "choices" in columns else None
    train_dataset = Dataset.from_dict(columns)

    vocabulary = [*prompt_texts(data.train, ("prompt", "reference")), confidence_instruction(recipe),
                  *eval_item_texts(items, recipe)]
    factory = ModelFactory(recipe, vocabulary)
    tokenizer = factory.tokenizer(recipe.model.policy)
    policy = initial_policy(factory, recipe, recipe.model.policy, conversations, columns.get("reference"))
    if recipe.model.policy == TINY and getattr(args, "beta", 0.0):
        # TRL builds the KL reference model from the policy's config path: give the tiny model one
        from calrl.models.tiny import save_pretrained

        init_dir = Path(args.output_dir) / TINY_INIT_DIR
        save_pretrained(policy, tokenizer, init_dir)
        policy.config._name_or_path = str(init_dir)
    eval_config = calibration_eval_config(recipe, items) if items else None

    run_handle = start_wandb(recipe)
    failed = True
    try:
        trainer = trainer_cls(model=policy, args=args, train_dataset=train_dataset, processing_class=tokenizer,
                              callbacks=[NonFiniteLossCallback()], peft_config=peft_config(recipe, "CAUSAL_LM"),
                              calibration_eval=eval_config)
        guard_reward_funcs(trainer)
        trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model(args.output_dir)
        metrics = final_calibration_metrics(trainer.calibration_callback)
        if trainer.accelerator.is_main_process:
            tokenizer.save_pretrained(args.output_dir)
            base = recipe.model.policy if recipe.model.policy != TINY else "tiny (calrl.models.tiny)"
            write_model_card(args.output_dir, model_card(recipe, base_model=base, metrics=metrics,
                                                         global_step=trainer.state.global_step))
        failed = False
        return RunResult(method=recipe.method, output_dir=args.output_dir, global_step=trainer.state.global_step,
                         metrics=metrics, checkpoints=list_checkpoints(args.output_dir),
                         wandb_dir=getattr(run_handle, "dir", None))
    finally:
        finish_wandb(run_handle, failed=failed)


def run(recipe: Recipe) -> RunResult:
    from calrl.trainers.grpo import CalibratedGRPOTrainer

    return run_policy_gradient(recipe, CalibratedGRPOTrainer)
