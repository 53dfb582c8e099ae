"""Models of the runners: loading (hub id, local folder or ``tiny``), tokenizers, LoRA config, the starting policy."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from calrl.data.chat import render_prompt
from calrl.errors import InputError
from calrl.generation.adapters import BASE_MODEL_DIR
from calrl.jsonio import write_json
from calrl.progress import is_main_process
from calrl.reward_modeling.loading import load_sequence_classifier
from calrl.runners.data import first_line
from calrl.runners.recipe import TINY, Recipe
from calrl.tiny.models import build_tiny_causal_lm, build_tiny_reward_model, build_word_tokenizer
from calrl.tiny.warmup import warm_up_tiny_policy

logger = logging.getLogger(__name__)


def initial_policy(factory: ModelFactory, recipe: Recipe, source: str, conversations: list[Any],
                   references: list[Any] | None, *, device: Any = None) -> Any:
    """The policy to start from: loaded, or a tiny one (fitted to the answer format when ``warmup_steps``).

    ``device``: where the warm-up runs (the accelerator's device; the model is left there).
    """
    model = factory.causal_lm(source, trained=recipe.lora is None)  # under LoRA the base stays frozen
    tiny = recipe.model.tiny
    if source != TINY or tiny.warmup_steps <= 0:
        return model
    if references is None:
        logger.warning("model.tiny.warmup_steps needs a reference column; the tiny policy is not warmed up")
        return model

    if device is not None:
        model.to(device)
    tokenizer = factory.tokenizer(TINY)
    return warm_up_tiny_policy(model, tokenizer, [render_prompt(tokenizer, m) for m in conversations], references,
                               steps=tiny.warmup_steps, learning_rate=tiny.warmup_learning_rate,
                               confidences=tiny.warmup_confidences, seed=tiny.seed,
                               show_progress=is_main_process())


class ModelFactory:
    """Loads the recipe's models and tokenizers; every ``tiny`` model shares one tiny tokenizer."""

    def __init__(self, recipe: Recipe, vocabulary: list[str]) -> None:
        self.recipe = recipe
        self.vocabulary = vocabulary
        self._tiny_tokenizer: Any = None
        self._tokenizers: dict[str, Any] = {}

    def _dtype(self, trained: bool) -> Any:
        """The load dtype: ``model.dtype`` for weights that train (``auto``: float32 master weights), else
        ``model.frozen_dtype`` (``auto``: the checkpoint's own)."""
        name = self.recipe.model.dtype if trained else self.recipe.model.frozen_dtype
        if name == "auto":
            return torch.float32 if trained else "auto"
        return getattr(torch, name)

    def _kwargs(self, trained: bool) -> dict[str, Any]:
        m = self.recipe.model
        kwargs: dict[str, Any] = {"trust_remote_code": m.trust_remote_code, "dtype": self._dtype(trained)}
        if m.attn_implementation:
            kwargs["attn_implementation"] = m.attn_implementation
        return kwargs

    def _tiny(self, model: Any, trained: bool) -> Any:
        dtype = self._dtype(trained)
        return model if isinstance(dtype, str) else model.to(dtype)

    def tokenizer(self, source: str) -> Any:
        """The tokenizer of ``source`` (``tiny``: the shared tiny word tokenizer); pads on the left."""
        if source == TINY:
            if self._tiny_tokenizer is None:
                self._tiny_tokenizer = build_word_tokenizer(self.vocabulary)
            return self._tiny_tokenizer
        source = self.recipe.model.tokenizer or source
        if source not in self._tokenizers:
            tok = _load(AutoTokenizer.from_pretrained, source, "tokenizer",
                        trust_remote_code=self.recipe.model.trust_remote_code)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            tok.padding_side = "left"
            self._tokenizers[source] = tok
        return self._tokenizers[source]

    def causal_lm(self, source: str, *, seed_offset: int = 0, trained: bool = True) -> Any:
        """A causal LM; ``trained``: its weights train (``model.dtype``), else ``model.frozen_dtype``."""
        if source == TINY:
            t = self.recipe.model.tiny
            return self._tiny(build_tiny_causal_lm(self.tokenizer(TINY), seed=t.seed + seed_offset,
                                                   hidden_size=t.hidden_size, num_layers=t.num_layers,
                                                   num_heads=t.num_heads), trained)

        model = _load(AutoModelForCausalLM.from_pretrained, source, "model", **self._kwargs(trained))
        tok = self.tokenizer(source)
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tok.pad_token_id
        return model

    def sequence_classifier(self, source: str, *, seed_offset: int = 0, trained: bool = True) -> Any:
        """A one-output sequence classifier (reward or value model); ``trained`` as for :meth:`causal_lm`. One whose
        score head would be initialised at random is refused (:mod:`calrl.reward_modeling.loading`), except the
        reward model ``train-rm`` starts from a base model (its head is what it trains; not under
        ``calibration_loss: calibration_only``, which fine-tunes a trained reward model)."""
        if source == TINY:
            t = self.recipe.model.tiny
            return self._tiny(build_tiny_reward_model(self.tokenizer(TINY), seed=t.seed + seed_offset,
                                                      hidden_size=t.hidden_size, num_layers=t.num_layers,
                                                      num_heads=t.num_heads), trained)

        m, args = self.recipe.model, self.recipe.training
        trains_rm = self.recipe.method == "rm"
        new_head = trains_rm and getattr(args, "calibration_loss", "combined") != "calibration_only"
        role = "value model" if source != m.reward_model else "reward model"
        model = load_sequence_classifier(source, role=role, allow_new_head=new_head, **self._kwargs(trained))
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self.tokenizer(source).pad_token_id
        return model


def _load(loader: Any, source: str, what: str, **kwargs: Any) -> Any:
    try:
        return loader(source, **kwargs)
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, HF hub errors: one line
        raise InputError(f"cannot load {what} '{source}': {first_line(exc)}", field="model") from None


def peft_config(recipe: Recipe, task_type: str) -> Any:
    """``peft.LoraConfig`` from the ``lora`` section (None without one)."""
    lora = recipe.lora
    if lora is None:
        return None

    modules_to_save = lora.modules_to_save
    if task_type == "SEQ_CLS" and modules_to_save is None:
        modules_to_save = ["score"]  # the reward head must train with the adapter (TRL's advice)
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, bias=lora.bias, modules_to_save=modules_to_save,
                      task_type=task_type)


def finish_adapter_folder(trainer: Any, output_dir: str, source: str, tokenizer: Any = None, *,
                          final_dir: str | None = None) -> None:
    """Make a LoRA run's output folder loadable on its own: the adapter names its base model.

    A hub id or a local path is written as ``base_model_name_or_path``; a ``tiny`` base (built in memory) is
    saved beside the adapter in ``base_model/`` and named by its absolute path in ``final_dir`` (the folder
    ``output_dir`` is renamed to; default ``output_dir``), so ``AutoPeftModelForCausalLM.from_pretrained(run)``
    works from any working directory; ``calrl eval --model RUN`` reads ``RUN/base_model`` wherever the run
    was moved. Called on the main process after the adapter is saved; it unloads the adapter.
    """
    model = trainer.accelerator.unwrap_model(trainer.model)
    model = getattr(model, "policy", model)
    config_file = Path(output_dir) / "adapter_config.json"
    if not config_file.is_file() or not hasattr(model, "unload"):
        return
    config = json.loads(config_file.read_text())
    if source == TINY:
        base = model.unload()
        base.save_pretrained(str(Path(output_dir) / BASE_MODEL_DIR))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(Path(output_dir) / BASE_MODEL_DIR))
        config["base_model_name_or_path"] = str(Path(final_dir or output_dir).resolve() / BASE_MODEL_DIR)
    elif not config.get("base_model_name_or_path"):
        config["base_model_name_or_path"] = source
    write_json(config_file, config)
