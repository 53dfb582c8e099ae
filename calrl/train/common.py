"""What every training runner shares: data loading and column checks, models, W&B, model card, resume."""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from calrl.errors import ConfigError, InputError, TrainingFault
from calrl.train.recipe import TINY, Recipe

logger = logging.getLogger(__name__)

PACKAGE_PREFIX = "calrl:"
ITEMS_PREFIX = "items:"  # a question set read by calrl.data.heldout.load_eval_items (e.g. items:gsm8k)
DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
CARD_FILE = "README.md"


# ----------------------------------------------------------------------------------------------- data
def resolve_source(spec: str, base_dir: Path | None = None) -> str:
    """A local path for ``calrl:PATH`` (package data), a path relative to the CWD or the recipe, else ``spec``."""
    if spec.startswith(PACKAGE_PREFIX):
        return str(Path(str(resources.files("calrl"))) / spec[len(PACKAGE_PREFIX):])
    if Path(spec).expanduser().exists():
        return str(Path(spec).expanduser())
    if base_dir is not None and (base_dir / spec).exists():
        return str(base_dir / spec)
    return spec


def _looks_local(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or Path(spec).suffix in DATA_SUFFIXES


def load_dataset_source(spec: str, *, split: str, config_name: str | None = None,
                        base_dir: Path | None = None, field_name: str = "data.train") -> Any:
    """A ``datasets.Dataset`` from a local file or folder, or from the hub (``datasets.load_dataset``)."""
    import datasets

    if spec.startswith(ITEMS_PREFIX):
        return items_dataset(spec[len(ITEMS_PREFIX):], split=split, base_dir=base_dir)
    source = resolve_source(spec, base_dir)
    path = Path(source)
    bars_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a local file loads in a blink; keep errors on one line
    try:
        if path.is_file():
            kind = DATA_SUFFIXES.get(path.suffix)
            if kind is None:
                raise InputError(f"unsupported data file type '{path.suffix}' (use {', '.join(DATA_SUFFIXES)})",
                                 path=source, field=field_name)
            return datasets.load_dataset(kind, data_files=str(path), split="train")
        if path.is_dir():
            if any((path / m).exists() for m in ("dataset_info.json", "dataset_dict.json", "state.json")):
                loaded = datasets.load_from_disk(str(path))
                return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
            return datasets.load_dataset(str(path), config_name, split=split)
        if _looks_local(spec):
            raise InputError("no such file or folder", path=spec, field=field_name)
        return datasets.load_dataset(spec, config_name, split=split)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; report one line
        raise InputError(f"cannot load dataset '{spec}' (split {split!r}): {_first_line(exc)}",
                         field=field_name) from None
    finally:
        if bars_on:
            datasets.enable_progress_bars()


def items_dataset(spec: str, *, split: str, base_dir: Path | None = None) -> Any:
    """Question/answer rows from a held-out-style set (``gsm8k``, ``NAME:PATH``, a local file) as a Dataset.

    Columns: ``prompt`` (the question, with lettered options for multiple choice, as the eval asks it),
    ``reference`` (list of gold answers), ``choices`` and ``id``.
    """
    import datasets

    from calrl.data.heldout import load_eval_items
    from calrl.eval.prompts import ElicitationPrompt

    if spec.startswith(PACKAGE_PREFIX) or (base_dir is not None and (base_dir / spec).exists()):
        spec = resolve_source(spec, base_dir)
    items = load_eval_items(spec, split=split)
    asker = ElicitationPrompt()
    return datasets.Dataset.from_dict({
        "id": [item.id for item in items],
        "prompt": [asker.user_message(item) for item in items],
        "reference": [list(item.reference) for item in items],
        "choices": [list(item.choices) if item.choices else [] for item in items],
    })


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@dataclass
class TrainingData:
    """The loaded training rows (columns renamed to their roles) and optional held-out rows."""

    train: Any
    eval: Any = None


def data_roles(recipe: Recipe) -> tuple[list[str], tuple[str, ...]]:
    """The dataset roles (columns) the recipe's method needs, and the ones it reads when present."""
    args = recipe.training
    if recipe.method == "rm":
        return ["chosen", "rejected"], ("prompt",)
    if recipe.method == "ppo":
        return ["prompt", *(["reference"] if args.correctness_mode != "off" else [])], ("reference",)
    optional = ("choices",) if recipe.data.columns.choices else ()
    return ["prompt", *(["reference"] if args.uses_reference else [])], ("reference", *optional)


def load_training_data(recipe: Recipe, required: list[str] | None = None,
                       optional: tuple[str, ...] | None = None) -> TrainingData:
    """Load ``data.train``, check that every required role's column exists, rename columns to role names.

    A missing column is a ConfigError naming it (file:line of ``data.columns.<role>`` or ``data.train``),
    raised before any model is loaded.
    """
    if required is None:
        required, default_optional = data_roles(recipe)
        optional = default_optional if optional is None else optional
    optional = optional or ()
    data = recipe.data
    train = load_dataset_source(data.train, split=data.split, config_name=data.config_name,
                                base_dir=recipe.base_dir)
    held_out = None
    if data.eval_split:
        held_out = load_dataset_source(data.train, split=data.eval_split, config_name=data.config_name,
                                       base_dir=recipe.base_dir, field_name="data.eval_split")
    train = _select_columns(train, recipe, required, optional, "data.train")
    if held_out is not None:
        held_out = _select_columns(held_out, recipe, required, optional, "data.eval_split")
    if data.limit is not None:
        train = train.select(range(min(data.limit, len(train))))
    if held_out is None and data.eval_fraction > 0:
        n_eval = max(1, round(len(train) * data.eval_fraction))
        if n_eval >= len(train):
            raise ConfigError(f"eval_fraction {data.eval_fraction} leaves no training rows of {len(train)}",
                              path=recipe.path, line=recipe.line_of("data", "eval_fraction"))
        split = train.train_test_split(test_size=n_eval, seed=data.seed, shuffle=True)
        train, held_out = split["train"], split["test"]
    if len(train) == 0:
        raise InputError("the training dataset is empty", path=recipe.path, field="data.train")
    return TrainingData(train=train, eval=held_out)


def _select_columns(ds: Any, recipe: Recipe, required: list[str], optional: tuple[str, ...], where: str) -> Any:
    columns = recipe.data.columns
    have = list(ds.column_names)
    mapping: dict[str, str] = {}
    for role in [*required, *optional]:
        name = getattr(columns, role)
        if name is None:
            continue
        if name in have:
            mapping[name] = role
        elif role in required:
            line = recipe.line_of("data", "columns", role) or recipe.line_of("data", "train")
            raise ConfigError(f"missing dataset column '{name}' (data.columns.{role}) in {where} "
                              f"'{recipe.data.train}'; the dataset has {have}", path=recipe.path, line=line)
    ds = ds.remove_columns([c for c in have if c not in mapping])
    renames = {old: new for old, new in mapping.items() if old != new}
    for old, new in renames.items():  # two steps, in case a role name is another role's source column
        ds = ds.rename_column(old, f"__calrl_{new}")
    for new in renames.values():
        ds = ds.rename_column(f"__calrl_{new}", new)
    return ds


def confidence_instruction(recipe: Recipe) -> str:
    """The confidence-elicitation system prompt added to a share of training prompts (same as the eval's)."""
    if recipe.data.system_prompt:
        return recipe.data.system_prompt
    from calrl.eval.prompts import ElicitationPrompt

    return ElicitationPrompt(scale=recipe.data.confidence_scale).instruction()


def is_single_turn(prompt: Any) -> bool:
    """A string, or a conversation of one user message (no system, no assistant turn)."""
    if isinstance(prompt, str):
        return True
    return (isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], dict)
            and prompt[0].get("role") == "user")


def as_messages(prompt: Any) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt):
        return [dict(m) for m in prompt]
    raise InputError(f"a prompt must be a string or a list of messages, got {type(prompt).__name__}",
                     field="prompt")


def with_confidence_prompts(prompts: list[Any], fraction: float, instruction: str, seed: int) -> tuple[list[Any], int]:
    """Conversations with the system prompt added to ``round(fraction * n_single)`` single-turn prompts.

    The chosen prompts are drawn with ``random.Random(seed)``; multi-turn prompts are never changed.
    Returns the new prompts (all as message lists) and how many got the system prompt.
    """
    single = [i for i, p in enumerate(prompts) if is_single_turn(p)]
    k = round(fraction * len(single))
    chosen = set(random.Random(seed).sample(single, k)) if k else set()
    out = []
    for i, prompt in enumerate(prompts):
        messages = as_messages(prompt)
        if i in chosen:
            messages = [{"role": "system", "content": instruction}, *messages]
        out.append(messages)
    return out, len(chosen)


def prompt_texts(ds: Any, roles: tuple[str, ...]) -> list[str]:
    """Every text in the role columns (messages flattened), for building a tiny tokenizer's vocabulary."""
    texts: list[str] = []

    def add(value: Any) -> None:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            for v in value:
                add(v)
        elif isinstance(value, dict):
            add(value.get("content"))

    for role in roles:
        if role in ds.column_names:
            for value in ds[role]:
                add(value)
    return texts


def load_heldout_items(recipe: Recipe) -> list[Any] | None:
    """The held-out EvalItems of the calibration eval (None when ``eval.heldout`` is null)."""
    spec = recipe.eval.heldout
    if not spec:
        return None
    from calrl.data.heldout import load_eval_items

    source = spec
    if spec.startswith(PACKAGE_PREFIX) or Path(spec).exists() or (recipe.base_dir / spec).exists():
        source = resolve_source(spec, recipe.base_dir)
    items = load_eval_items(source, split=recipe.eval.split, limit=recipe.eval.limit)
    if not items:
        raise ConfigError(f"the held-out set '{spec}' has no items", path=recipe.path,
                          line=recipe.line_of("eval", "heldout"))
    return items


def calibration_eval_config(recipe: Recipe, items: list[Any]) -> Any:
    from calrl.callbacks.calibration_eval import CalibrationEvalConfig
    from calrl.eval.prompts import ElicitationPrompt

    ev = recipe.eval
    return CalibrationEvalConfig(
        eval_items=items, prompt=ElicitationPrompt(scale=ev.scale, reasons_first=ev.reasons_first),
        every_n_steps=ev.every_n_steps, batch_size=ev.batch_size, max_new_tokens=ev.max_new_tokens,
        n_bins=ev.n_bins, slice_keys=ev.slice_keys, use_hedges=ev.use_hedges, grader=ev.grader,
        missing_policy=ev.missing_policy, min_slice_size=ev.min_slice_size, n_boot=ev.n_boot,
        seed=int(getattr(recipe.training, "seed", 0)))


def eval_item_texts(items: list[Any] | None, recipe: Recipe) -> list[str]:
    """Words the tiny tokenizer needs for the eval: the elicitation prompt, the questions and answers."""
    if not items:
        return []
    from calrl.eval.prompts import ElicitationPrompt

    prompt = ElicitationPrompt(scale=recipe.eval.scale, reasons_first=recipe.eval.reasons_first)
    texts = [prompt.instruction()]
    for item in items:
        texts.append(prompt.user_message(item))
        texts.extend(item.reference)
    return texts


# --------------------------------------------------------------------------------------------- models
def render_prompt(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    """The generation prompt of a conversation (chat template, else the contents one per line)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n".join(str(m.get("content", "")) for m in messages) + "\n"


def initial_policy(factory: ModelFactory, recipe: Recipe, source: str, conversations: list[Any],
                   references: list[Any] | None) -> Any:
    """The policy to start from: loaded, or a tiny one (fitted to the answer format when ``warmup_steps``)."""
    model = factory.causal_lm(source)
    tiny = recipe.model.tiny
    if source != TINY or tiny.warmup_steps <= 0:
        return model
    if references is None:
        logger.warning("model.tiny.warmup_steps needs a reference column; the tiny policy is not warmed up")
        return model
    tokenizer = factory.tokenizer(TINY)
    return warm_up_tiny_policy(model, tokenizer, [render_prompt(tokenizer, m) for m in conversations], references,
                               steps=tiny.warmup_steps, learning_rate=tiny.warmup_learning_rate,
                               confidences=tiny.warmup_confidences, seed=tiny.seed)


class ModelFactory:
    """Loads the recipe's models and tokenizers; every ``tiny`` model shares one tiny tokenizer."""

    def __init__(self, recipe: Recipe, vocabulary: list[str]) -> None:
        self.recipe = recipe
        self.vocabulary = vocabulary
        self._tiny_tokenizer: Any = None
        self._tokenizers: dict[str, Any] = {}

    def _kwargs(self) -> dict[str, Any]:
        m = self.recipe.model
        kwargs: dict[str, Any] = {"trust_remote_code": m.trust_remote_code}
        if m.dtype != "auto":
            import torch

            kwargs["dtype"] = getattr(torch, m.dtype)
        else:
            kwargs["dtype"] = "auto"
        if m.attn_implementation:
            kwargs["attn_implementation"] = m.attn_implementation
        return kwargs

    def tokenizer(self, source: str) -> Any:
        """The tokenizer of ``source`` (``tiny``: the shared tiny word tokenizer); pads on the left."""
        if source == TINY:
            if self._tiny_tokenizer is None:
                from calrl.models.tiny import build_word_tokenizer

                self._tiny_tokenizer = build_word_tokenizer(self.vocabulary)
            return self._tiny_tokenizer
        source = self.recipe.model.tokenizer or source
        if source not in self._tokenizers:
            from transformers import AutoTokenizer

            tok = _load(AutoTokenizer.from_pretrained, source, "tokenizer",
                        trust_remote_code=self.recipe.model.trust_remote_code)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            tok.padding_side = "left"
            self._tokenizers[source] = tok
        return self._tokenizers[source]

    def causal_lm(self, source: str, *, seed_offset: int = 0) -> Any:
        if source == TINY:
            from calrl.models.tiny import build_tiny_causal_lm

            t = self.recipe.model.tiny
            return build_tiny_causal_lm(self.tokenizer(TINY), seed=t.seed + seed_offset, hidden_size=t.hidden_size,
                                        num_layers=t.num_layers, num_heads=t.num_heads)
        from transformers import AutoModelForCausalLM

        model = _load(AutoModelForCausalLM.from_pretrained, source, "model", **self._kwargs())
        tok = self.tokenizer(source)
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tok.pad_token_id
        return model

    def sequence_classifier(self, source: str, *, seed_offset: int = 0) -> Any:
        """A one-output sequence classifier (reward or value model)."""
        if source == TINY:
            from calrl.models.tiny import build_tiny_reward_model

            t = self.recipe.model.tiny
            return build_tiny_reward_model(self.tokenizer(TINY), seed=t.seed + seed_offset, hidden_size=t.hidden_size,
                                           num_layers=t.num_layers, num_heads=t.num_heads)
        from transformers import AutoModelForSequenceClassification

        model = _load(AutoModelForSequenceClassification.from_pretrained, source, "model", num_labels=1,
                      **self._kwargs())
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self.tokenizer(source).pad_token_id
        return model


def warm_up_tiny_policy(model: Any, tokenizer: Any, prompts: list[str], references: list[Any], *, steps: int,
                        learning_rate: float, confidences: list[int], seed: int = 0) -> Any:
    """Fit a tiny policy for ``steps`` steps on ``prompt + "<reference> . confidence: N" + EOS`` (N cycled).

    Only for the tiny test recipes: it makes the rollouts of a random tiny model state answers and
    confidences in the format the reward pipeline parses. Loss on the response tokens only.
    """
    import torch

    if steps <= 0 or not prompts:
        return model
    rows = []
    for i, (prompt, ref) in enumerate(zip(prompts, references)):
        answer = ref[0] if isinstance(ref, list) and ref else str(ref)
        response = f"{answer} . confidence: {confidences[i % len(confidences)]}"
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((p_ids + r_ids, [-100] * len(p_ids) + r_ids))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids, _ in rows])
    labels = torch.tensor([[-100] * (width - len(lab)) + lab for _, lab in rows])
    attention = (torch.arange(width)[None, :] >= (width - torch.tensor([len(i) for i, _ in rows]))[:, None]).long()
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # left padding: positions as generate() computes them
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    batch = min(16, len(rows))
    for _ in range(steps):
        idx = torch.randperm(len(rows), generator=generator)[:batch]
        loss = model(input_ids=input_ids[idx], attention_mask=attention[idx], position_ids=positions[idx],
                     labels=labels[idx]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model


def _load(loader: Any, source: str, what: str, **kwargs: Any) -> Any:
    try:
        return loader(source, **kwargs)
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, HF hub errors: one line
        raise InputError(f"cannot load {what} '{source}': {_first_line(exc)}", field="model") from None


def peft_config(recipe: Recipe, task_type: str) -> Any:
    """``peft.LoraConfig`` from the ``lora`` section (None without one)."""
    lora = recipe.lora
    if lora is None:
        return None
    from peft import LoraConfig

    modules_to_save = lora.modules_to_save
    if task_type == "SEQ_CLS" and modules_to_save is None:
        modules_to_save = ["score"]  # the reward head must train with the adapter (TRL's advice)
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, bias=lora.bias, modules_to_save=modules_to_save,
                      task_type=task_type)


# ---------------------------------------------------------------------------------------------- W&B
def start_wandb(recipe: Recipe) -> Any:
    """Start the recipe's W&B run when ``report_to`` includes wandb (offline without an API key)."""
    from calrl.callbacks.wandb_utils import prepare_reporting

    w = recipe.wandb
    config = {"method": recipe.method, "recipe": recipe.raw, "recipe_path": recipe.path}
    return prepare_reporting(recipe.training.report_to, w.project, w.run_name, config, w.mode, dir=w.dir,
                             tags=[*w.tags, f"method:{recipe.method}"])


def finish_wandb(run: Any, *, failed: bool) -> None:
    if run is None:
        return
    run.finish(exit_code=1 if failed else 0)


# ------------------------------------------------------------------------------------ checkpoints
def resolve_resume(recipe: Recipe) -> str | None:
    """The checkpoint to resume from: a path, ``latest`` (newest ``checkpoint-*`` in output_dir) or None."""
    value = getattr(recipe.training, "resume_from_checkpoint", None)
    if value in (None, "", False):
        return None
    line = recipe.line_of("training", "resume_from_checkpoint")
    if str(value) == "latest" or value is True:
        from transformers.trainer_utils import get_last_checkpoint

        out = Path(recipe.training.output_dir)
        found = get_last_checkpoint(str(out)) if out.is_dir() else None
        if found is None:
            raise ConfigError(f"resume 'latest': no checkpoint-* folder in {out}", path=recipe.path, line=line)
        return found
    if not Path(str(value)).is_dir():
        raise ConfigError(f"resume: checkpoint folder '{value}' not found", path=recipe.path, line=line)
    return str(value)


def checkpoint_step(checkpoint: str) -> int:
    state = Path(checkpoint) / "trainer_state.json"
    if not state.is_file():
        raise InputError("not a checkpoint folder (no trainer_state.json)", path=checkpoint)
    return int(json.loads(state.read_text())["global_step"])


# -------------------------------------------------------------------------------------- model card
FINAL_METRIC_KEYS = ("ece", "brier", "auroc", "accuracy", "refusal_rate", "mean_confidence", "smece", "n")


def final_calibration_metrics(callback: Any) -> dict[str, Any]:
    """The scalars of the last calibration eval (``{}`` without one)."""
    if callback is None or not callback.history:
        return {}
    last = callback.history[-1]
    out: dict[str, Any] = {"label": last.label, "global_step": last.step}
    for key in FINAL_METRIC_KEYS:
        value = last.logged.get(f"eval/{key}")
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            out[key] = value
    return out


def model_card(recipe: Recipe, *, base_model: str, metrics: dict[str, Any], extra: dict[str, Any] | None = None,
               global_step: int | None = None) -> str:
    """A README.md for the output folder: method, base model, recipe, final calibration metrics."""
    names = {"rm": "reward model (PPO-M calibrated loss)" if getattr(recipe.training, "calibration_lambda", 0)
             else "reward model", "grpo": "GRPO", "rloo": "RLOO"}
    if recipe.method == "ppo":
        variant = getattr(recipe.training, "ppo_c_variant", "none")
        names["ppo"] = "PPO" if variant == "none" else f"PPO-C ({variant})"
    lines = [
        "---", "library_name: transformers", "tags: [calrl, trl, " + recipe.method + "]",
        f"base_model: {base_model}", "---", "",
        f"# {Path(recipe.training.output_dir).name}", "",
        f"- method: {names.get(recipe.method, recipe.method)} (calrl `train-{recipe.method}`)",
        f"- base model: `{base_model}`",
        f"- recipe: `{recipe.path}`",
    ]
    if global_step is not None:
        lines.append(f"- optimiser steps: {global_step}")
    if metrics:
        lines += ["", f"## Final calibration metrics ({metrics.get('label', 'last eval')})", "",
                  "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                  for k, v in metrics.items() if k not in ("label", "global_step")]
    for title, values in (extra or {}).items():
        lines += ["", f"## {title}", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in values.items()]
    lines += ["", "## Recipe", "", "```yaml", yaml.safe_dump(recipe.raw, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def write_model_card(output_dir: str | Path, text: str) -> Path:
    from calrl.io import write_text

    path = Path(output_dir) / CARD_FILE
    write_text(path, text)
    return path


# ------------------------------------------------------------------------------------------ result
@dataclass
class RunResult:
    """What a finished run produced."""

    method: str
    output_dir: str
    global_step: int
    metrics: dict[str, Any] = field(default_factory=dict)
    checkpoints: list[str] = field(default_factory=list)
    wandb_dir: str | None = None

    def summary(self) -> str:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in self.metrics.items() if isinstance(v, float))
        return (f"train-{self.method}: {self.global_step} steps, model saved to {self.output_dir}"
                + (f"; final {shown}" if shown else ""))


def list_checkpoints(output_dir: str | Path) -> list[str]:
    out = Path(output_dir)
    found = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return [str(p) for p in sorted(found, key=lambda p: int(p.name.split("-")[-1]))]


def check_finite_loss(logs: dict[str, Any], step: int) -> None:
    """Raise TrainingFault when a logged loss or reward is NaN or infinite."""
    for key, value in logs.items():
        if ("loss" in key or "reward" in key) and isinstance(value, float) and not math.isfinite(value):
            raise TrainingFault(f"step {step}: non-finite {key} ({value})")


def run_recipe(recipe: Recipe) -> RunResult:
    """Run the recipe's method (imports only that runner).

    A CPU run of a tiny model uses one intra-op thread (unless ``OMP_NUM_THREADS`` says otherwise): at this
    size extra threads only add synchronisation, and on a busy 2-core machine they made the tiny PPO recipe
    3x slower.
    """
    import importlib
    import os

    if (recipe.trained_model() == TINY and getattr(recipe.training, "use_cpu", False)
            and "OMP_NUM_THREADS" not in os.environ):
        import torch

        torch.set_num_threads(1)

    module = importlib.import_module(f"calrl.train.{recipe.method}")
    return module.run(recipe)
