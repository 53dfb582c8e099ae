"""Load a checkpoint (local folder or hub id, optional LoRA adapter) and generate predictions from it.

``calrl eval --model PATH_OR_HUB_ID [--adapter DIR] --dataset SPEC`` calls ``predict_from_checkpoint``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from calrl.data.heldout import load_eval_items
from calrl.data.records import PredictionRecord
from calrl.errors import InputError
from calrl.generation.adapters import split_adapter_folder
from calrl.generation.generate import generate_predictions
from calrl.generation.prompts import ElicitationPrompt
from calrl.limits import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS, check_item_slices

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def default_device() -> torch.device:
    """CUDA when present, else Apple MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 on a CUDA device that supports it, float16 on other CUDA, else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise InputError(f"unknown dtype '{dtype}' (choose auto, {', '.join(sorted(_DTYPES))})")
    return _DTYPES[dtype]


def load_model_for_eval(model: str, adapter: str | None = None, device: str | torch.device | None = None,
                        dtype: str | torch.dtype = "auto", *, merge_adapter: bool = True) -> tuple[Any, Any]:
    """A causal LM in eval mode on ``device`` and its tokenizer (pad token set, left padding).

    ``model`` is a local folder or a hub id; ``adapter`` a PEFT adapter folder, merged into the weights
    unless ``merge_adapter`` is False. The tokenizer comes from the adapter folder when it holds one.
    """
    target = torch.device(device) if device is not None else default_device()
    torch_dtype = resolve_dtype(dtype, target)
    if adapter is None:
        model, adapter = split_adapter_folder(model)
    _check_model_ref(model)
    adapter_dir = _check_adapter(adapter) if adapter else None
    tokenizer_src = str(adapter_dir) if adapter_dir and (adapter_dir / "tokenizer_config.json").exists() else model
    tokenizer = load_tokenizer(tokenizer_src)
    net = _load(AutoModelForCausalLM.from_pretrained, model, what="model", dtype=torch_dtype)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise InputError(f"the tokenizer of '{model}' has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if len(tokenizer) > net.get_input_embeddings().weight.shape[0]:
        net.resize_token_embeddings(len(tokenizer))
    if adapter_dir is not None:
        from peft import PeftModel  # 2 s to import: only an adapter needs it

        try:
            net = PeftModel.from_pretrained(net, str(adapter_dir))
        except Exception as exc:  # noqa: BLE001 - a mismatched adapter is a user input problem
            raise InputError(f"cannot apply the adapter to '{model}': {_first_line(exc)}",
                             path=str(adapter_dir)) from None
        if merge_adapter:
            net = net.merge_and_unload()
    if net.generation_config.pad_token_id is None:
        net.generation_config.pad_token_id = tokenizer.pad_token_id
    net.to(target)
    net.eval()
    return net, tokenizer


def predict_from_checkpoint(*, model: str, adapter: str | None = None, dataset: str, split: str | None = None,
                            limit: int | None = None, sample_seed: int | None = None,
                            prompt: ElicitationPrompt | str,
                            batch_size: int = DEFAULT_BATCH_SIZE,
                            max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, num_samples: int = 0,
                            temperature: float = 1.0, **retry: Any) -> list[PredictionRecord]:
    """Load the items of ``dataset`` and the checkpoint, then generate a record per item.

    ``limit`` keeps the first N items, or with ``sample_seed`` a stratified seeded sample of N.
    ``prompt`` is an ElicitationPrompt or a scale name (``"0-10"``, ``"percent"``, ``"unit"``). Under
    ``accelerate launch`` / ``torchrun`` with several processes, the items are split between them and
    every process gets all records back. ``retry``: more settings of :func:`generate_predictions`
    (``confidence_retries``, ``reader``, ``retry_when``, ``forced_max_new_tokens``, ``do_sample``, ``top_k``,
    ``seed``).
    """
    if isinstance(prompt, str):
        prompt = ElicitationPrompt(scale=prompt)
    items = load_eval_items(dataset, split=split, limit=limit, sample_seed=sample_seed)  # fails before loading
    try:  # more slice values than an evaluation reports: refused before generating, not after
        check_item_slices(items)
    except InputError as exc:
        raise InputError(f"dataset '{dataset}': {exc}") from None
    accelerator = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        accelerator = Accelerator()
    device = accelerator.device if accelerator is not None else None
    net, tokenizer = load_model_for_eval(model, adapter=adapter, device=device)
    return generate_predictions(net, tokenizer, items, prompt=prompt, batch_size=batch_size,
                                max_new_tokens=max_new_tokens, num_samples=num_samples,
                                temperature=temperature, accelerator=accelerator, **retry)


def _check_model_ref(model: str) -> None:
    path = Path(model)
    looks_local = model.startswith((".", "/", "~")) or path.exists() or model.count("/") > 1
    if looks_local and not path.is_dir():
        raise InputError("model folder not found", path=model)
    if path.is_dir() and not (path / "config.json").exists():
        raise InputError("not a model folder (no config.json)", path=model)


def _check_adapter(adapter: str) -> Path:
    path = Path(adapter)
    if not path.is_dir():
        raise InputError("adapter folder not found", path=adapter)
    if not (path / "adapter_config.json").exists():
        raise InputError("not a PEFT adapter folder (no adapter_config.json)", path=adapter)
    return path


def load_tokenizer(source: str) -> Any:
    """The tokenizer of a local folder or hub id; InputError (one line) when it cannot be loaded.

    AutoTokenizer, except for a local folder whose tokenizer declares the generic ``TokenizersBackend``:
    transformers 5 replaces the declared class by the architecture's own for some model types (qwen2
    among them) and rebuilds a different tokenizer from the vocabulary, so a word-level tokenizer saved
    beside a Qwen2 model (``calrl.tiny.models``) would not round-trip. Such a folder, with its
    ``tokenizer.json``, is loaded as declared.
    """
    loader = AutoTokenizer.from_pretrained
    config = Path(source) / "tokenizer_config.json"
    if config.is_file() and (Path(source) / "tokenizer.json").is_file():
        try:
            declared = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class")
        except (OSError, json.JSONDecodeError):
            declared = None
        if declared in ("TokenizersBackend", "PreTrainedTokenizerFast"):
            loader = PreTrainedTokenizerFast.from_pretrained
    return _load(loader, source, what="tokenizer")


def _load(loader: Any, source: str, *, what: str, **kwargs: Any) -> Any:
    try:
        return loader(source, **kwargs)
    except Exception as exc:  # noqa: BLE001 - hub/network/format failures become one line
        hint = "" if Path(source).is_dir() else " (not a local folder; the Hugging Face hub may be unreachable)"
        raise InputError(f"cannot load the {what} '{source}'{hint}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
