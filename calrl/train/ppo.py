"""PPO runner: vanilla PPO, PPO-M, PPO-C (threshold / difference) and PPO-C with abstention, from one recipe.

Which variant runs is only a matter of recipe values: ``training.ppo_c_variant`` (none / threshold /
difference), ``model.reward_model`` (an ordinary or a calibrated reward model: PPO-M), and
``training.abstention_reward``. The trainer is :class:`calrl.trainers.ppo.CalibratedPPOTrainer`.
"""

from __future__ import annotations

import copy
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
    render_prompt,
    resolve_resume,
    start_wandb,
    with_confidence_prompts,
    write_model_card,
)
from calrl.train.recipe import TINY, Recipe

logger = logging.getLogger(__name__)


def tokenized_prompts(tokenizer: Any, conversations: list[list[dict[str, Any]]]) -> list[list[int]]:
    return [list(tokenizer(render_prompt(tokenizer, m), add_special_tokens=False)["input_ids"])
            for m in conversations]


def _load_policy(start: Any, recipe: Recipe, checkpoint: str | None) -> tuple[Any, Any]:
    """The policy (from the checkpoint when resuming) and the PEFT config to give the trainer.

    ``start()`` builds the initial policy (the base of a LoRA checkpoint).
    """
    peft = peft_config(recipe, "CAUSAL_LM")
    if checkpoint is None:
        return start(), peft
    if (Path(checkpoint) / "adapter_config.json").is_file():
        from peft import PeftModel

        return PeftModel.from_pretrained(start(), checkpoint, is_trainable=True), None
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(checkpoint), peft


def run(recipe: Recipe) -> RunResult:
    """Train the PPO recipe and save the policy, its model card and per-epoch checkpoints."""
    from calrl.callbacks.calibration_eval import CalibrationEvalCallback
    from calrl.train.callbacks import (
        VALUE_MODEL_DIR,
        NonFiniteLossCallback,
        PPOEpochCheckpointCallback,
        PPOResumeCallback,
        ValueModelSaveCallback,
    )

    args = recipe.training
    uses_references = args.correctness_mode != "off"
    data = load_training_data(recipe)
    items = load_heldout_items(recipe)
    checkpoint = resolve_resume(recipe)
    # ---- everything above is checked before any model loads
    conversations, n_system = with_confidence_prompts(
        list(data.train["prompt"]), recipe.data.confidence_prompt_fraction, confidence_instruction(recipe),
        recipe.data.seed)
    logger.info("confidence prompt added to %d of %d prompts", n_system, len(conversations))
    vocabulary = [*prompt_texts(data.train, ("prompt", "reference")), confidence_instruction(recipe),
                  *eval_item_texts(items, recipe)]
    factory = ModelFactory(recipe, vocabulary)
    m = recipe.model
    tokenizer = factory.tokenizer(m.policy)
    columns: dict[str, Any] = {"input_ids": tokenized_prompts(tokenizer, conversations)}
    if uses_references:
        columns["reference"] = list(data.train["reference"])
        args.reference_column = "reference"
    else:
        args.reference_column = None
    from datasets import Dataset

    train_dataset = Dataset.from_dict(columns)

    references = list(data.train["reference"]) if "reference" in data.train.column_names else None

    def start() -> Any:
        return initial_policy(factory, recipe, m.policy, conversations, references)

    policy, peft = _load_policy(start, recipe, checkpoint)
    # with LoRA the reference policy is the policy with its adapter disabled (TRL's null_ref_context)
    if recipe.lora is not None:
        ref = None
    elif m.ref:
        ref = factory.causal_lm(m.ref)
    else:
        ref = copy.deepcopy(policy) if checkpoint is None else start()
    reward_model = factory.sequence_classifier(m.reward_model, seed_offset=2)
    value_source = m.value_model or m.reward_model
    if checkpoint and (Path(checkpoint) / VALUE_MODEL_DIR).is_dir():
        from transformers import AutoModelForSequenceClassification

        value_model = AutoModelForSequenceClassification.from_pretrained(Path(checkpoint) / VALUE_MODEL_DIR)
    else:
        value_model = factory.sequence_classifier(value_source, seed_offset=1)
    reward_tokenizer = factory.tokenizer(m.reward_model)
    if reward_tokenizer is tokenizer:
        reward_tokenizer = None

    callbacks: list[Any] = []
    if checkpoint:
        callbacks.append(PPOResumeCallback(checkpoint))  # first: the others read the restored state
    eval_callback = CalibrationEvalCallback(calibration_eval_config(recipe, items)) if items else None
    if eval_callback is not None:
        callbacks.append(eval_callback)
    if str(getattr(args.save_strategy, "value", args.save_strategy)) == "epoch":
        from transformers.trainer_utils import SaveStrategy

        args.save_strategy = SaveStrategy.NO  # the PPO loop never fires epoch events; save at boundaries:
        callbacks.append(PPOEpochCheckpointCallback())
    callbacks += [ValueModelSaveCallback(value_model), NonFiniteLossCallback()]

    from calrl.trainers.ppo import CalibratedPPOTrainer

    run_handle = start_wandb(recipe)
    failed = True
    try:
        trainer = CalibratedPPOTrainer(
            args=args, processing_class=tokenizer, model=policy, ref_model=ref, reward_model=reward_model,
            train_dataset=train_dataset, value_model=value_model, reward_tokenizer=reward_tokenizer,
            callbacks=callbacks, peft_config=peft)
        if eval_callback is not None:
            eval_callback.attach(trainer)
        trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model(args.output_dir)
        metrics = final_calibration_metrics(eval_callback)
        if trainer.accelerator.is_main_process:
            tokenizer.save_pretrained(args.output_dir)
            write_model_card(args.output_dir, model_card(
                recipe, base_model=m.policy if m.policy != TINY else "tiny (calrl.models.tiny)",
                metrics=metrics, global_step=trainer.state.global_step))
        failed = False
        return RunResult(method="ppo", output_dir=args.output_dir, global_step=trainer.state.global_step,
                         metrics=metrics, checkpoints=list_checkpoints(args.output_dir),
                         wandb_dir=getattr(run_handle, "dir", None))
    finally:
        finish_wandb(run_handle, failed=failed)
