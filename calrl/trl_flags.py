"""TRL's command-line flags and the recipe key each one sets (``calrl train-* --run_name x``).

TRL's scripts take ``transformers.TrainingArguments`` and TRL's ``ScriptArguments`` / ``ModelConfig`` as
``--key value`` flags. A flag that names a ``training`` key (``--learning_rate``, ``--num_train_epochs``,
``--bf16`` ...) sets it; the flags below set a recipe key of another name, or a key that several recipe
sections have, and each sets exactly one. Read by :func:`calrl.runners.recipe.trl_flag_overrides` and shown in
``calrl train-* --help``.
"""

from __future__ import annotations

from calrl.errors import ConfigError

TRAINED_MODEL = "model.<trained>"  # model.reward_model for train-rm, model.policy for the policy methods

TRL_FLAGS: dict[str, tuple[str, str]] = {
    "run_name": ("training.run_name", "the W&B run name too; wandb.run_name is its default"),
    "project": ("training.project", "the W&B project too; wandb.project is its default"),
    "seed": ("training.seed", "seeds the models, the trainer and the eval's bootstrap; data.seed shuffles data"),
    "trust_remote_code": ("model.trust_remote_code", "TRL's ModelConfig"),
    "model_name_or_path": (TRAINED_MODEL, "the trained model"),
    "dtype": ("model.dtype", "TRL's ModelConfig"),
    "torch_dtype": ("model.dtype", "the older name of --dtype"),
    "dataset_name": ("data.train", "TRL's ScriptArguments"),
    "dataset_config": ("data.config_name", ""),
    "dataset_train_split": ("data.split", ""),
    "dataset_test_split": ("data.eval_split", ""),
    "use_peft": ("lora", "the recipe's lora: section, or one with the defaults; --use_peft false removes it"),
    "lora_r": ("lora.r", ""),
    "lora_alpha": ("lora.alpha", ""),
    "lora_dropout": ("lora.dropout", ""),
    "lora_target_modules": ("lora.target_modules", "one name, or several after the flag"),
    "lora_modules_to_save": ("lora.modules_to_save", ""),
}
# TrainingArguments flags that the trainer configs hold under the same name, listed in --help with the above
COMMON_TRAINING_FLAGS = ("output_dir", "report_to", "per_device_train_batch_size", "gradient_accumulation_steps",
                         "learning_rate", "num_train_epochs", "max_steps", "logging_steps", "save_strategy",
                         "bf16", "fp16", "gradient_checkpointing", "warmup_steps", "lr_scheduler_type")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def trained_model_key(method: str | None) -> str:
    return "model.reward_model" if method == "rm" else "model.policy"


def aliases(method: str | None) -> dict[str, str]:
    """Flag -> the dotted recipe key it sets, for ``method`` (``rm``, ``ppo``, ``grpo``, ``rloo``)."""
    return {flag: trained_model_key(method) if key == TRAINED_MODEL else key for flag, (key, _) in TRL_FLAGS.items()}


def peft_switch(value: str) -> str:
    """``--use_peft [true|false]`` as the value of a ``lora`` override: ``{}`` (keep or add it) or ``null``."""
    text = str(value).strip().lower()
    if text in _TRUE:
        return "{}"
    if text in _FALSE:
        return "null"
    raise ConfigError(f"option --use_peft takes true or false, got {value!r}")


def flags_help(method: str | None = None) -> str:
    """The ``--help`` text listing each TRL flag and the recipe key it sets."""
    rows = [(f"--{flag}", key, note) for flag, key, note in
            ((f, aliases(method)[f], n) for f, (_, n) in TRL_FLAGS.items())]
    rows += [(f"--{flag}", f"training.{flag}", "") for flag in COMMON_TRAINING_FLAGS]
    width = max(len(r[0]) for r in rows)
    lines = ["TRL flags (typed as with TRL's scripts; each sets one recipe key):"]
    lines += [f"  {flag:<{width}}  {key}" + (f"  ({note})" if note else "") for flag, key, note in rows]
    lines += ["  any other --key value: the one recipe section with that key (--kl_coef 0.1 -> training.kl_coef);",
              "  a key that several sections have needs its section (--eval.limit 8, --data.seed 3)"]
    return "\n".join(lines)
