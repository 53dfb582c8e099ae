"""Test-wide settings: offline, deterministic, small thread pools (CI has 2 cores)."""

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_wandb_dir(tmp_path, monkeypatch):
    """Keep W&B files of each test in its own temporary folder, never in the repo."""
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield
    import sys

    if "wandb" in sys.modules:  # wandb keeps its settings (WANDB_DIR among them) for the process
        sys.modules["wandb"].teardown()


@pytest.fixture
def no_models(monkeypatch):
    """Fail the test if any model or tokenizer is built (bad input must be refused before that)."""
    from calrl.runners import models as common

    def refuse(*_, **__):
        raise AssertionError("a model was loaded before the recipe and data were validated")

    for name in ("tokenizer", "causal_lm", "sequence_classifier"):
        monkeypatch.setattr(common.ModelFactory, name, refuse)
