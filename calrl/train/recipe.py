"""Training recipes: one YAML file per run, validated section by section before any model loads.

A recipe has these sections (each a dataclass below, checked by :func:`calrl.config.build`):

- ``method``: ``rm``, ``ppo``, ``grpo`` or ``rloo`` (optional; must match the command when given);
- ``model``: what to load (:class:`ModelSection`); ``tiny`` builds a tiny local model instead;
- ``lora``: ``null`` or a LoRA adapter for the trained model (:class:`LoraSection`);
- ``data``: the training dataset and its columns (:class:`DataSection`);
- ``eval``: the held-out set of the per-epoch calibration eval (:class:`EvalSection`);
- ``wandb``: project, run name, tags (:class:`WandbSection`);
- ``training``: the method's trainer config (``CalibratedRewardConfig``, ``CalibratedPPOConfig``,
  ``CalibratedGRPOConfig`` or ``CalibratedRLOOConfig``; any of their keys, TRL's included).

An unknown key, a wrong type or an invalid value is a :class:`~calrl.errors.ConfigError` naming the file,
the line and the key. Command-line overrides (``training.learning_rate=1e-6``) are applied before the check.
"""

from __future__ import annotations

import copy
import importlib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from calrl.config import apply_overrides, build, load_yaml
from calrl.errors import ConfigError

METHODS = ("rm", "ppo", "grpo", "rloo")
# method -> "module:class" of its trainer config (imported lazily: TRL is slow to import)
TRAINING_CONFIGS = {
    "rm": "calrl.trainers.reward:CalibratedRewardConfig",
    "ppo": "calrl.trainers.ppo:CalibratedPPOConfig",
    "grpo": "calrl.trainers.grpo:CalibratedGRPOConfig",
    "rloo": "calrl.trainers.rloo:CalibratedRLOOConfig",
}
SECTIONS = ("method", "model", "lora", "data", "eval", "wandb", "training")
TINY = "tiny"


@dataclass
class TinyModelSection:
    """Size of the tiny local models (``model.policy: tiny`` etc.); see :mod:`calrl.testing.tiny`.

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
        from calrl.eval.limits import MAX_SEED

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
    """

    policy: str | None = None
    reward_model: str | None = None
    value_model: str | None = None
    ref: str | None = None
    tokenizer: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
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
    confidence_scale: Literal["0-10", "percent", "unit"] = "0-10"
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
class EvalSection:
    """The per-epoch calibration eval (``CalibrationEvalCallback``) of PPO, GRPO and RLOO.

    ``heldout``: a spec for :func:`calrl.data.heldout.load_eval_items` (``gsm8k``, ``NAME:PATH``, a local
    file, or ``calrl:PATH``); null turns the eval off. ``every_n_steps`` adds step evals.
    ``prompt_style``: ``calrl``, or the paper's ``standard`` / ``cot`` prompts; ``confidence_parser``:
    ``calrl`` or ``reference`` (the paper's evaluation rules); ``confidence_retries``: regenerate an answer
    without a confidence up to N times, the last try forcing ``Confidence:`` (0: off; the paper used 10).
    """

    heldout: str | None = None
    split: str | None = None
    limit: int | None = None
    every_n_steps: int | None = None
    scale: Literal["0-10", "percent", "unit"] = "0-10"
    reasons_first: bool = False
    prompt_style: Literal["calrl", "standard", "cot"] = "calrl"
    confidence_parser: Literal["calrl", "reference"] = "calrl"
    confidence_retries: int = 0
    batch_size: int = 16
    max_new_tokens: int = 64
    n_bins: int = 15
    use_hedges: bool = True
    grader: str = "auto"
    missing_policy: Literal["exclude", "half", "error"] = "exclude"
    min_slice_size: int = 30
    slice_keys: list[str] | None = None
    n_boot: int = 0
    probe_batch_size: int = 16  # rm: batch size of the confidence-bias probe


@dataclass
class WandbSection:
    """Weights & Biases run settings; offline when no API key is found (``mode`` null)."""

    project: str = "calrl"
    run_name: str | None = None
    tags: list[str] = field(default_factory=list)
    mode: Literal["online", "offline", "disabled"] | None = None
    dir: str | None = None


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
        line = _line(data or {}, exc.field) or _line(top, section)
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

    training_data = dict(data.get("training") or {})
    if data.get("training") is not None and not isinstance(data["training"], dict):
        raise ConfigError("section 'training' must be a mapping", path=path_str, line=_line(data, "training"))
    stem = Path(path_str).stem
    training_data.setdefault("output_dir", f"runs/{stem}")
    training_data.setdefault("report_to", "wandb")
    training_data.setdefault("save_strategy", "epoch")
    if wandb_section.run_name:
        training_data.setdefault("run_name", wandb_section.run_name)
    if resume is not None:
        training_data["resume_from_checkpoint"] = resume
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
                    wandb=wandb_section, training=training, path=path_str, raw=_plain(data), lines=lines)
    _check_models(recipe)
    return recipe


def _check_models(recipe: Recipe) -> None:
    needed = {"rm": ("reward_model",), "ppo": ("policy", "reward_model"), "grpo": ("policy",),
              "rloo": ("policy",)}[recipe.method]
    for name in needed:
        if not getattr(recipe.model, name):
            raise ConfigError(f"missing key 'model.{name}' (a path, a hub id or '{TINY}')", path=recipe.path,
                              line=_line(recipe.lines, "model"))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items() if k != "__lines__"}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj
