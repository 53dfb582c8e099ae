"""Checks and estimates of ``calrl train-* --dry-run`` that need no weights: model paths and memory.

- :func:`model_sources`: every model the recipe's method loads, with its recipe key and role;
- :func:`check_model_source`: a local model path must be a folder holding a config and weights (an adapter
  folder: ``adapter_config.json`` and adapter weights; an index's shards must all be there); with
  ``hub=True`` (the dry run) a hub id must be in the local Hugging Face cache or on the hub;
- :func:`memory_plan` / :func:`report`: the memory per process of every model under the launch strategy
  (:mod:`calrl.runners.memory`), against the device's memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import file_exists, try_to_load_from_cache

from calrl.data.hub import hub_unavailable
from calrl.errors import ConfigError
from calrl.runners.memory import (
    MemoryPlan,
    ModelRow,
    Strategy,
    count,
    frozen_states,
    gib,
    model_size,
    read_config,
    trained_states,
)
from calrl.runners.recipe import TINY, Recipe

VALUE_HEAD = "head"  # model.value_model: a value head on the policy (calrl.runners.ppo.VALUE_HEAD)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
TIGHT = 0.85  # model states above this share of the device's memory leave little for activations


@dataclass(frozen=True)
class ModelUse:
    """One model the run loads: its role, the recipe key naming it, its source and how it is used."""

    role: str
    key: str
    source: str
    kind: str  # causal_lm or sequence_classifier
    trained: bool
    lora: bool = False  # the recipe's LoRA adapter trains on it (its base stays frozen)
    sharded_under_zero3: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        """What ``--model-config NAME=PATH`` may call it."""
        return (self.role.replace(" ", "_"), self.key, self.source)


def model_sources(recipe: Recipe) -> list[ModelUse]:
    """The models of the recipe's method (the value model and reference resolved to their defaults)."""
    m, lora = recipe.model, recipe.lora is not None
    if recipe.method == "rm":
        return [ModelUse("reward model", "reward_model", m.reward_model, "sequence_classifier", True, lora)]
    uses = [ModelUse("policy", "policy", m.policy, "causal_lm", True, lora)]
    if recipe.method == "ppo":
        value = m.value_model or m.reward_model
        if value != VALUE_HEAD:
            uses.append(ModelUse("value model", "value_model" if m.value_model else "reward_model", value,
                                 "sequence_classifier", True))
        # under ZeRO-3 calrl's PPO shards both as TRL's prepare_deepspeed does (calrl/trainers/ppo_deepspeed.py)
        if not lora:
            uses.append(ModelUse("reference", "ref" if m.ref else "policy", m.ref or m.policy, "causal_lm", False,
                                 sharded_under_zero3=True))
        uses.append(ModelUse("reward model", "reward_model", m.reward_model, "sequence_classifier", False,
                             sharded_under_zero3=True))
    elif float(getattr(recipe.training, "beta", 0.0) or 0.0) != 0.0 and not lora:
        uses.append(ModelUse("reference", "policy", m.policy, "causal_lm", False, sharded_under_zero3=True))
    return uses


# ------------------------------------------------------------------------------------------ model paths
def local_path(source: str, base_dir: Path | None = None) -> Path | None:
    """The local folder a model source names (None for a hub id): an existing path, or one that cannot be a
    hub id (``./x``, ``/x``, ``~/x``, or more than one ``/``)."""
    for candidate in (Path(source).expanduser(), *([base_dir / source] if base_dir else [])):
        if candidate.exists():
            return candidate
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        return Path(source).expanduser()
    return None


def check_model_source(recipe: Recipe, use: ModelUse, *, hub: bool) -> None:
    """Refuse a model source that cannot load (ConfigError naming the recipe key and line)."""
    if use.source == TINY:
        return
    problem = _local_problem(local_path(use.source, recipe.base_dir)) if local_path(
        use.source, recipe.base_dir) is not None else (_hub_problem(use.source) if hub else None)
    if problem:
        raise ConfigError(f"key 'model.{use.key}' ({use.role}): '{use.source}' {problem}", path=recipe.path,
                          line=recipe.line_of("model", use.key))


def _local_problem(path: Path) -> str | None:
    if not path.exists():
        return "does not exist"
    if not path.is_dir():
        return "is a file, not a model folder"
    if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        return None if any((path / n).is_file() for n in ADAPTER_WEIGHTS) else (
            f"holds an adapter config but no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")
    if not (path / "config.json").is_file():
        return "holds no config.json"
    present = [n for n in WEIGHT_FILES if (path / n).is_file()]
    if not present:
        return f"holds no weights ({', '.join(WEIGHT_FILES)})"
    for index in (n for n in present if n.endswith(".index.json")):
        try:
            shards = sorted(set(json.loads((path / index).read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return f"has an unreadable {index}"
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            return f"misses weight shards named in {index}: {', '.join(missing[:3])}"
    return None


def _hub_problem(repo_id: str) -> str | None:
    """Why a hub id cannot be used here (not cached while the hub is off, or not on the hub), else None."""
    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except Exception as exc:  # noqa: BLE001 - an invalid repo id
        return f"is neither a local folder nor a hub id ({str(exc).splitlines()[0][:100]})"
    if isinstance(cached, str):
        return None
    why = hub_unavailable()
    if why is not None:
        return f"is not a local folder and not in the Hugging Face cache, and {why}"
    try:
        found = file_exists(repo_id, "config.json")
    except Exception as exc:  # noqa: BLE001 - gated, network: one line
        return f"cannot be checked on the hub: {str(exc).splitlines()[0][:120]}"
    return None if found else "is not a local folder, and the hub has no config.json for it"


# ---------------------------------------------------------------------------------------------- memory
def memory_plan(recipe: Recipe, strategy: Strategy, configs: dict[str, str] | None = None) -> MemoryPlan:
    """The memory of every model of the run under ``strategy``; ``configs`` maps a role, a recipe key or a
    model source (or ``*``: any model whose own config cannot be read) to a local config file or folder."""
    configs = configs or {}
    plan = MemoryPlan(strategy=strategy)
    sizes: dict[tuple[str, str], Any] = {}
    for use in model_sources(recipe):
        row = ModelRow(role=use.role, source=use.source, trained=use.trained)
        plan.rows.append(row)
        if use.source == TINY:
            row.note = "tiny: built in memory from the data, not sized"
            continue
        key = (use.source, use.kind)
        if key not in sizes:
            sizes[key] = _size(recipe, use, configs)
        if isinstance(sizes[key], str):
            row.note = sizes[key]
            continue
        row.size = sizes[key]
        if use.trained:
            row.states = trained_states(row.size, strategy)
        else:
            row.states = frozen_states(row.size, strategy, sharded_under_zero3=use.sharded_under_zero3)
    return plan


def _size(recipe: Recipe, use: ModelUse, configs: dict[str, str]) -> Any:
    """The model's :class:`ModelSize`, or why it cannot be sized (a short phrase)."""
    given = next((configs[k] for k in use.names if k in configs), None)
    why = ""
    for source in ([given] if given else [use.source, configs.get("*")]):
        if not source:
            continue
        local = local_path(source, recipe.base_dir)
        if local is not None and not local.exists():
            why = why or f"'{source}' does not exist"
            continue
        try:
            config = read_config(str(local) if local is not None else source,
                                 trust_remote_code=recipe.model.trust_remote_code)
        except Exception as exc:  # noqa: BLE001 - hub, file and format errors: reported, not fatal
            text = str(exc).strip()
            reason = "not in the Hugging Face cache and the hub is not reachable" if local is None and (
                "connect" in text or "offline" in text.lower() or "cache" in text) else (
                text.splitlines()[0][:100] if text else type(exc).__name__)
            why = why or f"no config for '{source}' ({reason})"
            continue
        lora = recipe.lora if use.lora else None
        return model_size(config, use.kind, dtype=recipe.model.dtype, lora=lora,
                          trust_remote_code=recipe.model.trust_remote_code)
    return f"not sized: {why}; give --model-config {use.names[0]}=PATH (a config.json)"


def report(plan: MemoryPlan, *, device_bytes: float | None, device_name: str) -> tuple[list[str], list[str]]:
    """Lines of the memory table, and the warnings (does not fit / tight / not sized); nothing when every model
    is a tiny test model."""
    if all(r.source == TINY for r in plan.rows):
        return [], []
    lines = [(f"memory per process (model states: parameters, gradients, AdamW states; activations, generation "
              f"cache and logits come on top) under {plan.strategy.label()}:")]
    header = ("model", "source", "params", "dtype", "trains", "weights", "grads", "optimizer", "total")
    table = [header]
    for r in plan.rows:
        if r.states is None or r.size is None:
            note = "tiny, not sized" if r.source == TINY else "not sized"
            table.append((r.role, r.source, "-", "-", "yes" if r.trained else "no", "-", "-", "-", note))
            continue
        s = r.states
        params = count(r.size.params) + (f" (+{count(r.size.trainable)} LoRA)" if r.size.trainable else "")
        def part(value: float, *, s: Any = s, trained: bool = r.trained) -> str:
            return "-" if not trained else "host" if value == 0 and s.host else gib(value)

        table.append((r.role, r.source, params, r.size.dtype, "yes" if r.trained else "no", gib(s.params),
                      part(s.grads), part(s.optimizer), gib(s.device)))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines += ["  " + "  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in table]
    total = plan.device_total
    sized = "" if plan.complete else " (the models sized)"
    lines.append(f"  per process{sized}: {gib(total)}"
                 + (f"; host memory per machine for offloaded states: {gib(plan.host_total)}" if plan.host_total else ""))
    warnings = [f"{r.role}: {r.note}" for r in plan.rows if r.states is None and r.source != TINY]
    if plan.strategy.use_cpu:  # the processes share this machine's memory
        total *= plan.strategy.processes
        lines.append(f"  on the CPU: {gib(total)} for {plan.strategy.processes} process(es)")
    if device_bytes is None:
        lines.append(f"  device: {device_name} (--gpu-memory GIB compares with a GPU of that size)")
        return lines, warnings
    share = total / device_bytes
    lines.append(f"  device: {device_name}, {gib(device_bytes)}: model states take {share:.0%}")
    if share > 1:
        warnings.append(f"will not fit: {gib(total)} of model states, {gib(device_bytes)} on the "
                        f"device ({device_name}); use more processes, ZeRO-3 or optimiser offload "
                        "(configs/accelerate/), or LoRA")
    elif share > TIGHT:
        warnings.append(f"tight: model states take {share:.0%} of {gib(device_bytes)}, little is left for "
                        "activations and generation")
    return lines, warnings


def parse_model_configs(values: list[str] | None) -> dict[str, str]:
    """``--model-config [NAME=]PATH`` values: NAME a role (``policy``, ``reward_model``, ``value_model``,
    ``reference``), a recipe key or a model source; without NAME, any model whose own config cannot be read."""
    out: dict[str, str] = {}
    for value in values or []:
        name, eq, path = value.partition("=")
        if not eq:
            name, path = "*", value
        if not Path(path).expanduser().exists():
            raise ConfigError(f"--model-config {value}: '{path}' does not exist")
        out[name.strip()] = str(Path(path).expanduser())
    return out
