"""Training data of the runners: datasets and their columns, prompts, the held-out items of the calibration eval."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from calrl.callbacks.calibration_eval import CalibrationEvalConfig
from calrl.data.heldout import load_eval_items
from calrl.data.package import PACKAGE_PREFIX, package_path
from calrl.errors import ConfigError, InputError
from calrl.generation.prompt_template import load_prompt_template
from calrl.generation.prompts import ElicitationPrompt
from calrl.runners.recipe import Recipe

logger = logging.getLogger(__name__)

ITEMS_PREFIX = "items:"  # a question set read by calrl.data.heldout.load_eval_items (e.g. items:gsm8k)
DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}

def resolve_source(spec: str, base_dir: Path | None = None) -> str:
    """A local path for ``calrl:PATH`` (package data), a path relative to the CWD or the recipe, else ``spec``."""
    if spec.startswith(PACKAGE_PREFIX):
        return package_path(spec)
    if Path(spec).expanduser().exists():
        return str(Path(spec).expanduser())
    if base_dir is not None and (base_dir / spec).exists():
        return str(base_dir / spec)
    return spec


def portable_spec(spec: str | None, base_dir: Path) -> str | None:
    """``spec`` spelt so that it reads the same from any working directory: ``calrl:PATH``, set names and hub
    ids unchanged, a local path (or the PATH of ``NAME:PATH``) found from the CWD or the recipe made absolute."""
    if not spec or spec.startswith(PACKAGE_PREFIX):
        return spec
    for candidate in (Path(spec).expanduser(), base_dir / spec):
        if candidate.exists():
            return str(candidate.resolve())
    name, sep, rest = spec.partition(":")
    if sep and rest and Path(rest).expanduser().exists():
        return f"{name}:{Path(rest).expanduser().resolve()}"
    return spec


def _looks_local(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or Path(spec).suffix in DATA_SUFFIXES


def load_dataset_source(spec: str, *, split: str, config_name: str | None = None,
                        base_dir: Path | None = None, field_name: str = "data.train") -> Any:
    """A ``datasets.Dataset`` from a local file or folder, or from the hub (``datasets.load_dataset``)."""
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
        raise InputError(f"cannot load dataset '{spec}' (split {split!r}): {first_line(exc)}",
                         field=field_name) from None
    finally:
        if bars_on:
            datasets.enable_progress_bars()


def items_dataset(spec: str, *, split: str, base_dir: Path | None = None) -> Any:
    """Question/answer rows from a held-out-style set (``gsm8k``, ``NAME:PATH``, a local file) as a Dataset.

    Columns: ``prompt`` (the question, with lettered options for multiple choice, as the eval asks it),
    ``reference`` (list of gold answers), ``choices`` and ``id``.
    """
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


def first_line(exc: BaseException) -> str:
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
        return ["prompt", *(["reference"] if args.needs_references else [])], ("reference",)
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

    source = spec
    if spec.startswith(PACKAGE_PREFIX) or Path(spec).exists() or (recipe.base_dir / spec).exists():
        source = resolve_source(spec, recipe.base_dir)
    items = load_eval_items(source, split=recipe.eval.split, limit=recipe.eval.limit)
    if not items:
        raise ConfigError(f"the held-out set '{spec}' has no items", path=recipe.path,
                          line=recipe.line_of("eval", "heldout"))
    return items


def eval_prompt(recipe: Recipe) -> Any:
    """The ElicitationPrompt of the calibration eval (its ``prompt_template`` file read and checked)."""
    ev = recipe.eval
    template = None
    if ev.prompt_template:
        path = Path(ev.prompt_template).expanduser()
        if not path.exists() and (recipe.base_dir / ev.prompt_template).exists():
            path = recipe.base_dir / ev.prompt_template
        if not path.is_file():
            raise ConfigError(f"key 'eval.prompt_template': '{ev.prompt_template}' is not a file", path=recipe.path,
                              line=recipe.line_of("eval", "prompt_template"))
        template = load_prompt_template(path)
    return ElicitationPrompt(scale=ev.scale, reasons_first=ev.reasons_first, style=ev.prompt_style,
                             template=template, option_format=ev.option_format)


def calibration_eval_config(recipe: Recipe, items: list[Any]) -> Any:
    """The calibration callback's config: the recipe's eval settings as they are (checked when the recipe was
    loaded), with the held-out ``items``, the prompt (its template file read and checked), the generation
    settings and the run's seed. A problem found now (the items' slice values) names the recipe's ``eval`` key
    and line."""
    # lazy: the callback imports torch and transformers, which validating a recipe does not need

    ev = recipe.eval
    try:
        return CalibrationEvalConfig(
            **ev.eval_settings(), eval_items=items, prompt=eval_prompt(recipe), generation=ev.generation(),
            eval_on_start=ev.at_start, seed=int(getattr(recipe.training, "seed", 0)),
            show_progress=not getattr(recipe.training, "disable_tqdm", False))  # as the trainer's own bar
    except ConfigError as exc:
        if exc.path is not None or exc.field is None:
            raise
        key = "heldout" if exc.field == "eval_items" else exc.field
        raise ConfigError(f"key 'eval.{key}': {exc.reason}", path=recipe.path,
                          line=recipe.line_of("eval", key)) from None


def eval_item_texts(items: list[Any] | None, recipe: Recipe) -> list[str]:
    """Words the tiny tokenizer needs for the eval: the elicitation prompt, the questions and answers."""
    if not items:
        return []
    prompt = eval_prompt(recipe)
    texts = [prompt.instruction(), "Confidence:"]
    for item in items:
        texts.extend((prompt.instruction(item), prompt.user_message(item)))
        texts.extend(item.reference)
    return texts


