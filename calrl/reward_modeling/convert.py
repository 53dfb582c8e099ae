"""Convert an OpenRLHF reward or critic checkpoint into a Hugging Face sequence classifier (``calrl convert-rm``).

OpenRLHF (``openrlhf.models.get_llm_for_sequence_regression``) saves a reward or critic model as the base
transformer's weights under its ``base_model_prefix`` (``model.*`` for Llama, Qwen2, Mistral) plus a linear
``value_head`` (hidden -> 1, no bias), with the reward's ``mean`` and ``std`` (over its eval split) in
``config.json``. It scores a sequence with the head's output at the last attended token, and, with
``normalize_reward``, divides ``(score - mean)`` by ``std``. The published ``OpenLLMAI/Llama-3-8b-rm-mixture``
of the paper's Llama-3 recipes is such a checkpoint.

The architecture's ``*ForSequenceClassification`` holds the same base under the same prefix and a linear
``score`` head (hidden -> num_labels): the conversion renames ``value_head.weight`` to the head's name, keeps
every base weight byte for byte (shard by shard, as safetensors), sets ``num_labels`` to 1 and the
architecture, and stores ``mean`` / ``std`` as calrl's reward statistics (``calrl_reward_mean`` /
``calrl_reward_std`` in ``config.json`` and ``reward_stats.json``, :mod:`calrl.reward_modeling.stats`), which
``normalize_reward: true`` reads. The result loads with ``AutoModelForSequenceClassification`` with no weight
missing and scores as the OpenRLHF model does (``tests/test_convert_rm.py``). Tokenizer files are copied.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from huggingface_hub import snapshot_download
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForSequenceClassification

from calrl.errors import InputError
from calrl.reward_modeling.stats import write_reward_statistics

SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_NAMES = ("model.safetensors", SAFETENSORS_INDEX, "pytorch_model.bin", BIN_INDEX)
NOT_COPIED = {"config.json", "README.md", *WEIGHT_NAMES}
STAT_KEYS = ("mean", "std", "normalize_reward")


@dataclass
class Conversion:
    """What :func:`convert_openrlhf` did."""

    source: str
    architecture: str
    head: str
    tensors: int = 0
    files: list[str] = field(default_factory=list)
    stats: dict[str, Any] | None = None


def source_folder(source: str) -> Path:
    """A local folder of ``source`` (a hub id is downloaded into the Hugging Face cache)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise InputError("not a model folder", path=source)

    try:
        return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.model",
                                                              "*.txt", "*.py", "*.tiktoken"]))
    except Exception as exc:  # noqa: BLE001 - hub and network failures: one line
        raise InputError(f"cannot download '{source}': {(str(exc).strip().splitlines() or [''])[0][:160]}") from None


def weight_shards(folder: Path) -> list[Path]:
    """The weight files of ``folder``: an index's shards, or the single file (safetensors first)."""
    for index in (SAFETENSORS_INDEX, BIN_INDEX):
        if (folder / index).is_file():
            try:
                names = sorted(set(json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"].values()))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise InputError(f"unreadable {index}", path=str(folder)) from None
            missing = [n for n in names if not (folder / n).is_file()]
            if missing:
                raise InputError(f"weight shards named in {index} are missing: {', '.join(missing[:3])}",
                                 path=str(folder))
            return [folder / n for n in names]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
    raise InputError(f"no weights ({', '.join(WEIGHT_NAMES)})", path=str(folder))


def _read(shard: Path) -> dict[str, Any]:
    if shard.suffix == ".safetensors":
        return load_file(str(shard))

    return torch.load(shard, map_location="cpu", weights_only=True)


def target_layout(config: Any) -> tuple[Any, str, set[str], dict[str, tuple[int, ...]]]:
    """The sequence classifier of ``config`` (one label) on the meta device: class, base prefix, the base's
    parameter names, and the head's parameter names with their shapes."""
    config = copy.deepcopy(config)
    config.num_labels = 1
    try:
        with init_empty_weights():
            model = AutoModelForSequenceClassification.from_config(config)
    except ValueError as exc:
        raise InputError(f"transformers has no sequence classifier for model_type "
                         f"'{getattr(config, 'model_type', '?')}': {str(exc).splitlines()[0][:120]}") from None
    prefix = f"{model.base_model_prefix}."
    names = dict(model.state_dict().items())
    base = {k for k in names if k.startswith(prefix)}
    head = {k: tuple(v.shape) for k, v in names.items() if not k.startswith(prefix)}
    return type(model), prefix, base, head


def convert_openrlhf(source: str, out: Path, *, value_head_prefix: str = "value_head") -> Conversion:
    """Write the Hugging Face sequence classifier of the OpenRLHF checkpoint ``source`` into ``out`` (a new or
    staging folder; the caller renames it into place)."""
    folder = source_folder(source)
    raw = _read_config(folder)
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001 - unknown model_type etc.
        raise InputError(f"cannot read config.json: {(str(exc).strip().splitlines() or [''])[0][:160]}",
                         path=str(folder)) from None
    cls, prefix, base_keys, head_shapes = target_layout(config)
    head_weight = next(iter(head_shapes), "")
    if len(head_shapes) != 1 or not head_weight.endswith(".weight"):
        raise InputError(f"{cls.__name__}'s head ({', '.join(head_shapes)}) is not one linear layer without bias, "
                         "as OpenRLHF's value head is")
    report = Conversion(source=source, architecture=cls.__name__, head=head_weight)
    seen_head, seen = False, set()
    weight_map: dict[str, str] = {}
    shards = weight_shards(folder)
    for n, shard in enumerate(shards, 1):
        tensors = _read(shard)
        converted: dict[str, Any] = {}
        for key, tensor in tensors.items():
            if key == f"{value_head_prefix}.weight":
                if tuple(tensor.shape) != head_shapes[head_weight]:
                    raise InputError(f"{key} has shape {tuple(tensor.shape)}, {cls.__name__}.{head_weight} needs "
                                     f"{head_shapes[head_weight]}", path=str(shard))
                key, seen_head = head_weight, True
            elif key == head_weight:
                raise InputError(f"already holds '{key}': a sequence classifier, nothing to convert", path=str(shard))
            elif key not in base_keys:
                raise InputError(f"unexpected weight '{key}' (an OpenRLHF reward model holds '{prefix}*' and "
                                 f"'{value_head_prefix}.weight'; another head name: --value-head-prefix)",
                                 path=str(shard))
            converted[key] = tensor.contiguous()
            seen.add(key)
        name = "model.safetensors" if len(shards) == 1 else f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        save_file(converted, str(out / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(converted, name))
        report.tensors += len(converted)
        report.files.append(name)
    missing = sorted(base_keys - seen) + ([] if seen_head else [f"{value_head_prefix}.weight"])
    if missing:
        raise InputError(f"the checkpoint lacks weights {cls.__name__} needs: {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""), path=str(folder))
    if len(shards) > 1:
        total = sum((out / f).stat().st_size for f in report.files)
        (out / SAFETENSORS_INDEX).write_text(json.dumps({"metadata": {"total_size": total},
                                                          "weight_map": dict(sorted(weight_map.items()))},
                                                         indent=2) + "\n", encoding="utf-8")
    config.num_labels = 1
    config.architectures = [cls.__name__]
    for key in STAT_KEYS:
        if hasattr(config, key):
            delattr(config, key)
    config.save_pretrained(str(out))
    if "mean" in raw and "std" in raw:
        report.stats = {"mean": float(raw["mean"]), "std": float(raw["std"]), "count": None}
        write_reward_statistics(report.stats, out)
    _copy_other_files(folder, out)
    return report


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("no config.json", path=str(folder)) from None
    except ValueError as exc:
        raise InputError(f"config.json is not valid JSON: {exc}", path=str(folder)) from None
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise InputError("config.json names no model_type", path=str(folder))
    return raw


def _copy_other_files(folder: Path, out: Path) -> None:
    """Tokenizer files and anything else that is not weights, the config or the model card."""
    for item in sorted(folder.iterdir()):
        if item.is_file() and item.name not in NOT_COPIED and not item.name.endswith((".safetensors", ".bin")):
            shutil.copy2(item, out / item.name)
