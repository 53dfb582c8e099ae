"""The source lines ``configs/paper/*.yaml`` cite for each key are the lines that set it in the reference.

``REFERENCE_LINES`` is where each cited flag sits in the reference repository (SeanLeng1/Reward-Calibration at
commit 25ecc96, the commit the recipes were read at): the scripts' command lines and OpenRLHF's argparse
defaults in its fork. Every citation of the form ``FILE Lnn --flag`` (or ``Lnn-mm``) must name a line range
that holds the flag. With ``CALRL_REFERENCE_REPO`` set to a clone (or bare mirror) of the reference, the
citations are also checked against the files themselves, including the ones this table does not list.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAPER = sorted((REPO / "configs" / "paper").glob("*.yaml"))
CITATION = re.compile(r"([\w./-]+\.(?:sh|py)) L(\d+)(?:-(\d+))? --(\w+)")
# file name -> "flag:line ..." (read from the reference at 25ecc96)
REFERENCE_LINES = {
    "train-ppo-c-llama.sh": ("actor_l2:26 actor_learning_rate:24 adjustment_type:39 alpha:37 bf16:23 generate_max_len:21 "
                             "gradient_checkpointing:40 init_kl_coef:28 input_key:31 logging_steps:13 max_epochs:19 max_samples:33 "
                             "micro_rollout_batch_size:17 normalize_reward:34 pretrain:9 prompt_data:29 prompt_max_len:20 reward_pretrain:10 "
                             "rollout_batch_size:18 train_batch_size:16 w:38 zero_stage:22 adam_offload:35 critic_learning_rate:25"),
    "train-ppo-llama.sh": ("actor_l2:27 actor_learning_rate:25 bf16:24 generate_max_len:22 gradient_checkpointing:38 init_kl_coef:29 "
                           "input_key:32 logging_steps:14 max_epochs:20 max_samples:34 micro_rollout_batch_size:18 normalize_reward:35 "
                           "pretrain:10 prompt_data:30 prompt_max_len:21 reward_pretrain:11 rollout_batch_size:19 train_batch_size:17 "
                           "zero_stage:23 adam_offload:36 critic_learning_rate:26"),
    "train_cppo.py": ("adam_betas:355 adjustment_type:439 alpha:435 avg_type:441 eps_clip:337 gamma:340 "
                      "lambd:339 num_episodes:325 seed:358 temperature:345 value_clip:338 w:437 max_norm:333"),
    "train_crm.py": "adam_betas:229 calibrated_loss_coef:232 l2:228 max_norm:194 seed:196",
    "train_crm.sh": ("bf16:16 chosen_key:25 dataset:21 eval_split:29 gradient_checkpointing:30 learning_rate:20 "
                     "logging_steps:11 max_epochs:17 max_len:18 micro_train_batch_size:14 pretrain:15 rejected_key:26 "
                     "train_batch_size:13 train_split:28 zero_stage:19"),
    "train_ppo.py": ("adam_betas:350 eps_clip:332 gamma:335 lambd:334 num_episodes:320 seed:353 "
                     "temperature:340 value_clip:333 max_norm:328"),
    "train_rm.py": "adam_betas:221 eval_split:241",
    "query.py": "top_k:48",
    "query.sh": "seed:85 temperature:93",
    "train_rm.sh": ("bf16:16 chosen_key:25 dataset:21 gradient_checkpointing:29 l2:28 learning_rate:20 "
                    "logging_steps:11 max_epochs:17 max_len:18 micro_train_batch_size:14 rejected_key:26 train_batch_size:13 "
                    "zero_stage:19"),
}


def citations() -> list[tuple[str, int, str, int, int, str]]:
    """(recipe, line, file name, first line, last line, flag) of every ``FILE Lnn --flag`` citation."""
    found = []
    for path in PAPER:
        for number, text in enumerate(path.read_text().splitlines(), 1):
            comment = text.partition("#")[2]
            for m in CITATION.finditer(comment):
                first = int(m.group(2))
                found.append((path.name, number, m.group(1).rsplit("/", 1)[-1], first, int(m.group(3) or first),
                              m.group(4)))
    return found


def test_every_cited_flag_sits_on_the_cited_line():
    table = {name: {flag: int(line) for flag, _, line in (item.partition(":") for item in text.split())}
             for name, text in REFERENCE_LINES.items()}
    wrong = [f"{recipe}:{number}: {name} L{first} --{flag} (the reference has it on L{table[name][flag]})"
             for recipe, number, name, first, last, flag in citations()
             if not first <= table[name][flag] <= last]
    assert len(citations()) > 200
    assert not wrong, "\n".join(wrong)


def test_the_rm_eval_split_cites_openrlhf_first_three_percent_still_trained_on():
    for path in PAPER:
        if not path.name.endswith("_rm.yaml"):
            continue
        text = path.read_text()
        line = next(t for t in text.splitlines() if t.strip().startswith("eval_fraction:"))
        assert "utils/utils.py L107-111" in line and "preprocess_data.py" not in text
        assert "stay in training" in text


def _reference_files(git_dir: str) -> dict[str, str]:
    names = subprocess.run(["git", "-C", git_dir, "ls-tree", "-r", "--name-only", "HEAD"], check=True,
                           capture_output=True, text=True).stdout.split()
    return {n.rsplit("/", 1)[-1]: n for n in names if not n.startswith("reward-bench/")}


@pytest.mark.skipif(not os.environ.get("CALRL_REFERENCE_REPO"), reason="set CALRL_REFERENCE_REPO to a clone of the "
                    "reference (SeanLeng1/Reward-Calibration) to check the citations against its files")
def test_citations_against_the_reference_files():
    git_dir = os.environ["CALRL_REFERENCE_REPO"]
    files = _reference_files(git_dir)
    cache: dict[str, list[str]] = {}
    wrong = []
    for recipe, number, name, first, last, flag in citations():
        path = files[name]
        if path not in cache:
            cache[path] = subprocess.run(["git", "-C", git_dir, "show", f"HEAD:{path}"], check=True,
                                         capture_output=True, text=True).stdout.splitlines()
        lines = cache[path][first - 1:last]
        if not any(re.search(rf"--{flag}(?!\w)", line) for line in lines):
            wrong.append(f"{recipe}:{number}: {name} L{first}-{last} does not hold --{flag}")
    assert not wrong, "\n".join(wrong)
