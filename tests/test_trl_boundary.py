"""calrl's one boundary with TRL: only calrl.trainers imports it, lazily, with a tested-version check."""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from datasets import Dataset

import calrl
from calrl.errors import ConfigError
from calrl.tiny.models import build_tiny_causal_lm, build_word_tokenizer
from calrl.trainers import TESTED_TRL_VERSIONS, check_trl_version, trl_version_warning

PACKAGE = Path(calrl.__file__).parent
TRL_MODULES = {"grpo.py", "rloo.py", "reward.py", "sft.py", "ppo_deepspeed.py"}  # TRL's DeepSpeed helpers


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_only_the_trainers_package_imports_trl():
    importers = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if any(m == "trl" or m.startswith("trl.") for m in _imported_modules(p))}
    assert importers == {f"trainers/{name}" for name in TRL_MODULES}


def test_ppo_and_reward_modeling_import_without_trl():
    code = ("import sys, calrl.trainers, calrl.trainers.ppo, calrl.reward_modeling; "
            "print(sorted(m for m in sys.modules if m == 'trl' or m.startswith('trl.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_trainer_names_load_on_first_use():
    from calrl import trainers
    from calrl.trainers.reward import CalibratedRewardTrainer

    assert trainers.CalibratedRewardTrainer is CalibratedRewardTrainer
    assert {"CalibratedRewardConfig", "CalibratedPPOTrainer", "CalibratedGRPOTrainer"} <= set(dir(trainers))
    with pytest.raises(AttributeError, match="NoSuchTrainer"):
        trainers.NoSuchTrainer  # noqa: B018


@pytest.mark.parametrize("version", ["1.16.0", "1.16.4", "1.16.1rc1"])
def test_tested_versions_give_no_warning(version):
    assert trl_version_warning(version) is None
    assert trl_version_warning(None) is None  # not installed: importing a TRL trainer fails on its own


@pytest.mark.parametrize("version", ["1.15.2", "1.17.0", "2.0.0", "not-a-version"])
def test_other_versions_are_named_in_the_warning(version):
    message = trl_version_warning(version)
    assert message is not None and f"trl {version} is installed" in message and TESTED_TRL_VERSIONS in message


def test_installed_trl_is_a_tested_version_and_the_check_warns_once():
    import trl

    assert trl_version_warning(trl.__version__) is None
    check_trl_version.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert check_trl_version() is None
        check_trl_version()
    assert not [w for w in caught if "calrl's TRL-facing trainers" in str(w.message)]


def test_fit_sft_trains_the_completion_of_prompt_completion_rows(tmp_path):
    from calrl.trainers.sft import SFTConfig, fit_sft

    rows = [{"prompt": [{"role": "user", "content": f"what is {a} plus {a} ?"}],
             "completion": [{"role": "assistant", "content": f"{2 * a}"}]} for a in range(1, 5)]
    tokenizer = build_word_tokenizer([r["prompt"][0]["content"] + " " + r["completion"][0]["content"] for r in rows])
    model = build_tiny_causal_lm(tokenizer, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3,
                     logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False,
                     completion_only_loss=True, disable_tqdm=True, activation_checkpointing=False)
    trainer = fit_sft(model, tokenizer, Dataset.from_list(rows), args)
    assert trainer.state.global_step == 2
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    with pytest.raises(ConfigError, match="SFTConfig"):
        fit_sft(model, tokenizer, Dataset.from_list(rows), object())
