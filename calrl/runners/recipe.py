"""Training recipes: one YAML file per run, validated section by section before any model loads.

A recipe has these sections (each a dataclass below, checked by :func:`calrl.config.build`):

- ``method``: ``rm``, ``ppo``, ``grpo`` or ``rloo`` (optional; must match the command when given);
- ``model``: what to load (:class:`ModelSection`); ``tiny`` builds a tiny local model instead;
- ``lora``: ``null`` or a LoRA adapter for the trained model (:class:`LoraSection`);
- ``data``: the training dataset and its columns (:class:`DataSection`);
- ``eval``: the held-out set of the per-epoch calibration eval (:class:`EvalSection`);
- ``wandb``: project, run name, tags (:class:`WandbSection`);
- ``launch``: how the run is meant to be launched (:class:`LaunchSection`: the accelerate config), which
  ``--dry-run`` sizes the memory by;
- ``training``: the method's trainer config (``CalibratedRewardConfig``, ``CalibratedPPOConfig``,
  ``CalibratedGRPOConfig`` or ``CalibratedRLOOConfig``; any of their keys, TRL's included).

An unknown key, a wrong type or an invalid value is a :class:`~calrl.errors.ConfigError` naming the file,
the line and the key. Command-line overrides (``training.learning_rate=1e-6``) are applied before the check.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from calrl.confidence.parse import DEFAULT_SCALE, Scale
from calrl.config import apply_overrides, build, flag_overrides, load_yaml, strip_lines
from calrl.errors import ConfigError, InputError
from calrl.limits import MAX_SEED
from calrl.progress import notice
from calrl.rewards.terms import FLAT_KEYS, terms_from_flat_keys
from calrl.runners.eval_section import EvalSection
from calrl.runners.memory import launch_strategy
from calrl.trl_flags import aliases, peft_switch

METHODS = ("rm", "ppo", "grpo", "rloo")
# method -> "module:class" of its trainer config (imported lazily: TRL is slow to import)
TRAINING_CONFIGS = {
    "rm": "calrl.trainers.reward:CalibratedRewardConfig",
    "ppo": "calrl.trainers.ppo:CalibratedPPOConfig",
    "grpo": "calrl.trainers.grpo:CalibratedGRPOConfig",
    "rloo": "calrl.trainers.rloo:CalibratedRLOOConfig",
}
SECTIONS = ("method", "model", "lora", "data", "eval", "wandb", "launch", "training")
TINY = "tiny"


@dataclass
class TinyModelSection:
    """Size of the tiny local models (``model.policy: tiny`` etc.); see :mod:`calrl.tiny.models`.

    ``warmup_steps`` > 0 first fits a tiny *policy* for that many steps on the training prompts answered as
    ``<reference> . confidence: N`` (N drawn from ``warmup_confidences``), so that its rollouts state a
    confidence the PPO-C adjustment and the calibration eval can read (a random policy almost never does).
    """

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    seed: int = 0
    warmup_steps: int = 0
    warmup_learning_rate: float = 3.0e-3
    warmup_confidences: list[int] = field(default_factory=lambda: [3, 6, 9])

    def __post_init__(self) -> None:
        for name, low, high in (("hidden_size", 1, 1 << 16), ("num_layers", 1, 256), ("num_heads", 1, 1 << 10),
                                ("seed", 0, MAX_SEED), ("warmup_steps", 0, 10**9)):
            if not low <= getattr(self, name) <= high:
                raise ConfigError(f"must be an integer from {low} to {high}, got {getattr(self, name)}", field=name)
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"must divide hidden_size ({self.hidden_size}), got {self.num_heads}", field="num_heads")
        if not all(0 <= c <= 10 for c in self.warmup_confidences):
            raise ConfigError(f"must be confidences from 0 to 10, got {self.warmup_confidences}",
                              field="warmup_confidences")


@dataclass
class ModelSection:
    """Models to load: local paths or hub ids, or ``tiny`` (a tiny model built from the training texts).

    ``policy``: the model trained by PPO/GRPO/RLOO. ``reward_model``: the model trained by ``rm``, or the
    scorer of PPO. ``value_model``: PPO's critic (default: ``reward_model``, as in the reference).
    ``ref``: PPO's reference policy (default: ``policy``). ``tokenizer``: default the trained model's.

    Precision: ``dtype`` is the dtype of the weights that train (the policy, PPO's value model, the reward model of
    ``rm``); ``auto`` means float32, the master weights that mixed precision (``training.bf16``/``fp16``, accelerate's
    ``mixed_precision``; DeepSpeed's ``bf16``) computes from. ``bfloat16``/``float16`` trained weights stepped by a
    plain optimizer lose most updates at RLHF learning rates and are refused unless DeepSpeed (which keeps float32
    master copies) launches the run, or ``low_precision_weights: true`` opts in. ``frozen_dtype`` is the dtype of
    the weights that do not train (PPO's reference and reward model, the base model under a LoRA adapter);
    ``auto``: the checkpoint's own.
    """

    policy: str | None = None
    reward_model: str | None = None
    value_model: str | None = None
    ref: str | None = None
    tokenizer: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    frozen_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    low_precision_weights: bool = False
    trust_remote_code: bool = False
    attn_implementation: str | None = None
    tiny: TinyModelSection = field(default_factory=TinyModelSection)


@dataclass
class LoraSection:
    """A LoRA adapter (``peft.LoraConfig``) on the trained model: the policy, or the reward model for ``rm``."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    bias: Literal["none", "all", "lora_only"] = "none"
    modules_to_save: list[str] | None = None

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"must be a positive integer, got {self.r}", field="r")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"must be in [0, 1), got {self.dropout}", field="dropout")


@dataclass
class ColumnsSection:
    """Names of the dataset's columns for each role (renamed to the role name when loaded)."""

    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    reference: str = "reference"
    choices: str | None = None


@dataclass
class DataSection:
    """The training dataset.

    ``train``: a local file (JSONL/JSON/CSV/Parquet), a folder (``save_to_disk`` or data files), a hub id
    (``datasets.load_dataset``), or ``calrl:PATH`` for data shipped in the package (``calrl:data/tiny/qa.jsonl``).
    Relative paths are read from the working directory, else beside the recipe.
    ``eval_split`` / ``eval_fraction``: held-out rows (preference accuracy and the bias probe of ``rm``).
    ``confidence_prompt_fraction``: share of single-turn prompts that get the confidence-elicitation system
    prompt (0.25 in Leng et al.; the others are left unchanged).
    """

    train: str
    config_name: str | None = None
    split: str = "train"
    eval_split: str | None = None
    eval_fraction: float = 0.0
    columns: ColumnsSection = field(default_factory=ColumnsSection)
    confidence_prompt_fraction: float = 0.25
    confidence_scale: Scale = DEFAULT_SCALE
    system_prompt: str | None = None
    limit: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence_prompt_fraction <= 1.0:
            raise ConfigError(f"must be in [0, 1], got {self.confidence_prompt_fraction}",
                              field="confidence_prompt_fraction")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"must be in [0, 1), got {self.eval_fraction}", field="eval_fraction")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"must be a positive integer or null, got {self.limit}", field="limit")


@dataclass
class WandbSection:
    """Weights & Biases run settings; offline when no API key is found (``mode`` null)."""

    project: str = "calrl"
    run_name: str | None = None
    tags: list[str] = field(default_factory=list)
    mode: Literal["online", "offline", "disabled"] | None = None
    dir: str | None = None


@dataclass
class LaunchSection:
    """How the recipe is meant to run: ``accelerate_config`` names the accelerate config file it is launched with
    (``accelerate launch --config_file FILE``; a path from the working directory, else beside the recipe).
    ``calrl train-* --dry-run`` estimates the memory per process under it (``--accelerate-config`` overrides
    it; under ``accelerate launch`` the launch's own settings win)."""

    accelerate_config: str | None = None


@dataclass
class Recipe:
    """A validated recipe."""

    method: str
    model: ModelSection
    lora: LoraSection | None
    data: DataSection
    eval: EvalSection
    wandb: WandbSection
    training: Any
    launch: LaunchSection = field(default_factory=LaunchSection)
    path: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the YAML mapping, overrides applied
    lines: dict[str, Any] = field(default_factory=dict, repr=False)  # key -> line, per section

    @property
    def base_dir(self) -> Path:
        return Path(self.path).resolve().parent if self.path else Path.cwd()

    def line_of(self, section: str, *keys: str) -> int | None:
        """Line of ``section.key[.key]`` in the recipe file (None if it came from defaults or overrides)."""
        node: Any = self.lines.get(section)
        line = None
        for key in keys:
            if not isinstance(node, dict):
                return line
            line = (node.get("__lines__") or {}).get(key, line)
            node = node.get(key)
        return line

    def trained_model(self) -> str | None:
        return self.model.reward_model if self.method == "rm" else self.model.policy


def trl_flag_overrides(flags: list[tuple[str, str]] | tuple[tuple[str, str], ...], method: str) -> list[str]:
    """TRL-style ``--key value`` flags as ``section.key=value`` overrides (:data:`calrl.trl_flags.TRL_FLAGS`
    first, then the one section with that key); an unknown or ambiguous key is a ConfigError with the close
    names."""
    translated = []
    for key, value in flags:
        if key.replace("-", "_") == "use_peft":
            key, value = "lora", peft_switch(value)
        translated.append((key, value))
    sections = {"model": ModelSection, "lora": LoraSection, "data": DataSection, "eval": EvalSection,
                "wandb": WandbSection, "training": training_config_class(method)}
    return flag_overrides(translated, sections, aliases={**aliases(method), "lora": "lora"})


def training_config_class(method: str) -> type:
    module, _, name = TRAINING_CONFIGS[method].partition(":")
    return getattr(importlib.import_module(module), name)


def _line(data: dict[str, Any], key: str) -> int | None:
    return (data.get("__lines__") or {}).get(key)


_FIELD_PREFIX = re.compile(r"^field '([^']+)': ")


def _section(cls: type, data: Any, *, path: str | None, section: str, top: dict[str, Any]) -> Any:
    """``build`` one section; errors raised by the dataclass itself get the file and the line of the key."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"section '{section}' must be a mapping, got {type(data).__name__}", path=path,
                          line=_line(top, section))
    try:
        return build(cls, data or {}, path=path, section=section)
    except ConfigError as exc:
        if exc.path is not None or not exc.field:
            if exc.path is None:
                raise ConfigError(f"section '{section}': {exc}", path=path, line=_line(top, section)) from None
            raise
        message = _FIELD_PREFIX.sub("", str(exc))
        line = _line(data or {}, exc.field) or _line(data or {}, re.split(r"[.\[]", exc.field)[0]) or _line(top, section)
        raise ConfigError(f"key '{section}.{exc.field}': {message}", path=path, line=line) from None


HARDWARE_KEYS = ("bf16", "fp16", "tf32")


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, method: str | None = None,
                resume: str | None = None, check_hardware: bool = True) -> Recipe:
    """Read, override and validate a recipe. No model or dataset is loaded here.

    ``check_hardware=False`` validates a GPU recipe on a machine without one: the training config is built
    with ``bf16``/``fp16``/``tf32`` off (so TrainingArguments does not reject the machine) and those values
    are set back afterwards; every key and type is still checked.
    """
    path_str = str(path)
    data = load_yaml(path)
    apply_overrides(data, list(overrides))
    lines = copy.deepcopy(data)
    for key in data:
        if key != "__lines__" and key not in SECTIONS:
            raise ConfigError(f"unknown section '{key}' (sections: {', '.join(SECTIONS)})", path=path_str,
                              line=_line(data, key))
    declared = data.get("method")
    if declared is not None and declared not in METHODS:
        raise ConfigError(f"key 'method' must be one of {', '.join(METHODS)}, got {declared!r}", path=path_str,
                          line=_line(data, "method"))
    if method is not None and declared is not None and declared != method:
        raise ConfigError(f"this recipe is for 'train-{declared}', not 'train-{method}'", path=path_str,
                          line=_line(data, "method"))
    method = method or declared
    if method is None:
        raise ConfigError("missing key 'method' (rm, ppo, grpo or rloo)", path=path_str)

    model = _section(ModelSection, data.get("model"), path=path_str, section="model", top=data)
    lora = None if data.get("lora") is None else _section(LoraSection, data["lora"], path=path_str,
                                                           section="lora", top=data)
    if "data" not in data:
        raise ConfigError("missing section 'data'", path=path_str)
    data_section = _section(DataSection, data.get("data"), path=path_str, section="data", top=data)
    eval_section = _section(EvalSection, data.get("eval"), path=path_str, section="eval", top=data)
    wandb_section = _section(WandbSection, data.get("wandb"), path=path_str, section="wandb", top=data)
    launch_section = _section(LaunchSection, data.get("launch"), path=path_str, section="launch", top=data)

    training_data = dict(data.get("training") or {})
    if data.get("training") is not None and not isinstance(data["training"], dict):
        raise ConfigError("section 'training' must be a mapping", path=path_str, line=_line(data, "training"))
    stem = Path(path_str).stem
    training_data.setdefault("output_dir", f"runs/{stem}")
    training_data.setdefault("report_to", "wandb")
    training_data.setdefault("save_strategy", "epoch")
    wandb_section = _one_name(wandb_section, training_data, data, path_str)
    if resume is not None:
        training_data["resume_from_checkpoint"] = resume
    if method == "ppo":
        training_data = _translate_flat_reward_keys(training_data, data, path_str)
    deferred = {}
    if not check_hardware:
        for key in HARDWARE_KEYS:
            if isinstance(training_data.get(key), bool):
                deferred[key] = training_data[key]
                training_data[key] = False
    with warnings.catch_warnings():  # transformers' deprecation notes would break the one-line error output
        warnings.simplefilter("ignore", FutureWarning)
        training = _section(training_config_class(method), training_data, path=path_str, section="training",
                            top=data)
    for key, value in deferred.items():
        setattr(training, key, value)

    recipe = Recipe(method=method, model=model, lora=lora, data=data_section, eval=eval_section,
                    wandb=wandb_section, training=training, launch=launch_section, path=path_str, raw=strip_lines(data),
                    lines=lines)
    _check_models(recipe)
    _check_precision(recipe)
    _check_reward_stats_split(recipe)
    return recipe


def _translate_flat_reward_keys(training: dict[str, Any], top: dict[str, Any], path: str) -> dict[str, Any]:
    """A PPO recipe's earlier flat reward keys (``ppo_c_variant``, ``reward_clamp``, ``abstention_reward`` ...) as
    the ``training.rewards`` list they mean, with a one-line notice; a recipe with ``rewards`` is left as it is
    (the config then refuses flat keys beside it)."""
    given = [key for key in training if key in FLAT_KEYS]
    if not given or "rewards" in training:
        return training
    try:
        terms = terms_from_flat_keys(training, training.get("missing_confidence", "half"))
    except ConfigError as exc:
        message = _FIELD_PREFIX.sub("", str(exc))
        raise ConfigError(f"key 'training.{exc.field}': {message}", path=path,
                          line=_line(training, exc.field or "") or _line(top, "training")) from None
    out = {key: value for key, value in training.items() if key not in FLAT_KEYS}
    out["rewards"] = terms
    shown = ", ".join("{" + ", ".join(f"{k}: {v}" for k, v in t.items()) + "}" for t in terms)
    notice(f"{path}: the flat reward keys ({', '.join(given)}) are read as training.rewards: [{shown}]")
    return out


LOW_PRECISION = ("bfloat16", "float16")


def optimiser_keeps_float32_masters(recipe: Recipe) -> bool:
    """Whether DeepSpeed runs the optimiser (it keeps float32 master copies of bf16/fp16 weights): ``training.
    deepspeed``, ``accelerate launch`` with a DeepSpeed config, or the recipe's ``launch.accelerate_config``."""
    if getattr(recipe.training, "deepspeed", None):
        return True

    try:
        return launch_strategy(recipe).kind == "deepspeed"
    except (ConfigError, InputError):  # an unreadable launch config is the dry run's problem to report
        return False


def _check_precision(recipe: Recipe) -> None:
    m = recipe.model
    full = recipe.lora is None or recipe.method == "ppo"  # PPO's value model always trains in full
    if m.dtype not in LOW_PRECISION or not full or m.low_precision_weights or optimiser_keeps_float32_masters(recipe):
        return
    lr = getattr(recipe.training, "learning_rate", None)
    raise ConfigError(
        f"key 'model.dtype': {m.dtype} trained weights with a plain optimizer have no float32 master copy (at "
        f"learning rate {lr:g} most updates round away); use 'dtype: float32' with 'training.bf16: true' (mixed "
        f"precision), launch with DeepSpeed, or opt in with 'model.low_precision_weights: true'",
        path=recipe.path, line=recipe.line_of("model", "dtype"))


# (training key, wandb key): TRL's key wins; the wandb section's key is its default
SHARED_NAMES = (("run_name", "run_name"), ("project", "project"))


def _one_name(wandb_section: WandbSection, training_data: dict[str, Any], data: dict[str, Any],
              path: str) -> WandbSection:
    """Make ``training.run_name`` / ``training.project`` and the W&B ones one value each.

    The training key (TRL's ``--run_name``) wins; without it the ``wandb`` key is its default. Both written in
    the file with different values is an error naming both lines.
    """
    replaced = {}
    for train_key, wandb_key in SHARED_NAMES:
        given = training_data.get(train_key)
        own = getattr(wandb_section, wandb_key)
        if given is None:
            if own is not None:
                training_data[train_key] = own
            continue
        given = str(given)
        train_line = _line(data.get("training") or {}, train_key)
        wandb_line = _line(data.get("wandb") or {}, wandb_key)
        if own is not None and own != given and train_line is not None and wandb_line is not None:
            raise ConfigError(f"key 'training.{train_key}' ({given!r}, line {train_line}) and 'wandb.{wandb_key}' "
                              f"({own!r}) name the same thing differently: keep one", path=path, line=wandb_line)
        replaced[wandb_key] = given
    return dataclasses.replace(wandb_section, **replaced) if replaced else wandb_section


def _check_models(recipe: Recipe) -> None:
    needed = {"rm": ("reward_model",), "ppo": ("policy", "reward_model"), "grpo": ("policy",),
              "rloo": ("policy",)}[recipe.method]
    for name in needed:
        if not getattr(recipe.model, name):
            raise ConfigError(f"missing key 'model.{name}' (a path, a hub id or '{TINY}')", path=recipe.path,
                              line=_line(recipe.lines, "model"))


def _check_reward_stats_split(recipe: Recipe) -> None:
    d = recipe.data
    if getattr(recipe.training, "reward_stats_split", None) == "eval" and d.eval_split is None and not d.eval_fraction:
        raise ConfigError("key 'training.reward_stats_split': 'eval' needs an eval split, and this recipe has none "
                          "(set data.eval_split or data.eval_fraction, or use 'train')", path=recipe.path,
                          line=recipe.line_of("training", "reward_stats_split"))


