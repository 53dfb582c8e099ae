"""PPO-C adjustment against hand-computed values (methods.md section 3)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from calrl.errors import ConfigError
from calrl.rewards.ppo_c import PPOCConfig

sys.path.insert(0, str(Path(__file__).parent))
from ppo_c_helpers import Chain

R = torch.tensor([2.0, -1.0, 12.0, 0.5])  # 12 is clamped to 10
C = torch.tensor([0.9, 0.9, 0.2, 0.5])
# clamped mean = (2 - 1 + 10 + 0.5) / 4 = 2.875; avg = 0.1 * 2.875 + 0.9 * 1.0 = 1.1875


def test_threshold_variant_hand_computed():
    adj = Chain(variant="threshold", weight=0.5, alpha=0.1, init_average=1.0)
    out, delta = adj(R, C)
    assert adj.average == pytest.approx(1.1875)
    # |r| * w * (c - .5) = .4, .2, -1.5, 0; sign + where r >= avg (2, 10), - where below (-1, .5)
    torch.testing.assert_close(delta, torch.tensor([0.4, -0.2, -1.5, 0.0]))
    torch.testing.assert_close(out, torch.tensor([2.4, -1.2, 8.5, 0.5]))


def test_difference_variant_hand_computed():
    adj = Chain(variant="difference", weight=0.5, alpha=0.1, init_average=1.0)
    out, delta = adj(R, C)
    # w * (r - 1.1875) * (c - .5)
    torch.testing.assert_close(delta, torch.tensor([0.1625, -0.4375, -1.321875, 0.0]))
    torch.testing.assert_close(out, torch.tensor([2.1625, -1.4375, 8.678125, 0.5]))


def test_low_confidence_on_bad_answer_is_rewarded():
    adj = Chain(variant="threshold", init_average=0.0)
    out, _ = adj(torch.tensor([-2.0, -2.0, 2.0, 2.0]), torch.tensor([0.1, 0.9, 0.1, 0.9]))
    # avg after update = 0.1 * 0 + 0.9 * 0 = 0: the bad answer gains when unsure, the good one when sure
    assert out[0] > out[1] and out[3] > out[2]


def test_update_order_reference_vs_after():
    rewards, conf = torch.tensor([1.1, 3.0]), torch.tensor([1.0, 1.0])  # mean 2.05
    before = Chain(variant="threshold", init_average=1.0)  # reference order: avg 1.105 first
    out, _ = before(rewards, conf)
    torch.testing.assert_close(out, torch.tensor([0.825, 3.75]))
    after = Chain(variant="threshold", init_average=1.0, update_before_adjust=False)
    out, _ = after(rewards, conf)  # compared with 1.0, then updated
    torch.testing.assert_close(out, torch.tensor([1.375, 3.75]))
    assert before.average == pytest.approx(1.105) and after.average == pytest.approx(1.105)


def test_moving_average_sequence_and_state_round_trip():
    adj = Chain(variant="difference", alpha=0.1, init_average=None)
    seen = []
    for batch in ([1.0, 3.0], [4.0, 4.0], [-2.0, 0.0]):  # means 2, 4, -1
        adj(torch.tensor(batch), torch.full((2,), 0.5))
        seen.append(adj.average)
    assert seen == pytest.approx([2.0, 2.2, 1.88])
    state = adj.state_dict()
    adj(torch.tensor([5.0]), torch.tensor([0.5]), update=False)
    assert adj.average == pytest.approx(1.88)  # update=False leaves it
    resumed = Chain(variant="difference", alpha=0.1)
    resumed.load_state_dict(state)
    a, _ = adj(torch.tensor([10.0]), torch.tensor([0.7]))
    b, _ = resumed(torch.tensor([10.0]), torch.tensor([0.7]))
    assert resumed.average == pytest.approx(adj.average) == pytest.approx(0.1 * 10 + 0.9 * 1.88)
    torch.testing.assert_close(a, b)


def test_clamp_and_neutral_confidence():
    adj = Chain(variant="threshold", clamp=3.0, init_average=0.0)
    out, delta = adj(torch.tensor([50.0, -50.0]), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(out, torch.tensor([3.0, -3.0]))
    assert torch.all(delta == 0)


def test_bad_settings_raise_config_error():
    with pytest.raises(ConfigError, match="ppo_c_variant"):
        PPOCConfig(variant="ratio")
    with pytest.raises(ConfigError, match="ppo_c_alpha"):
        PPOCConfig(alpha=0.0)


WORKER = r'''
import json, sys
from types import SimpleNamespace
import torch
from accelerate import Accelerator
from calrl.tiny.models import build_word_tokenizer
from calrl.rewards.pipeline import RewardPipeline, RewardPipelineConfig

acc = Accelerator(cpu=True)
rank = acc.process_index

tok = build_word_tokenizer(["good bad"])
class RM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
    def forward(self, input_ids, attention_mask, **kwargs):
        good = ((input_ids == tok.convert_tokens_to_ids("good")) & attention_mask.bool()).sum(1).float()
        return SimpleNamespace(logits=good[:, None] + self.anchor)
pipe = RewardPipeline(RewardPipelineConfig(ppo_c_variant="difference", ppo_c_init_average=0.0), RM(),
                      reward_tokenizer=tok, accelerator=acc)
responses = ["good. confidence: 8"] if rank == 0 else ["good good good", "bad", "good good. confidence: 2"]
pipe.score_texts(["q"] * len(responses), responses)
json.dump({"pipe_avg": pipe.adjuster.average, "stats": pipe.pop_stats()},
          open(f"{sys.argv[1]}/rank{rank}.json", "w"))
acc.wait_for_everyone()
torch.distributed.destroy_process_group()  # a gloo group left open can abort the process at exit
'''


@pytest.mark.slow
def test_two_process_average_and_stats_are_global(tmp_path):
    """torchrun on CPU (gloo): every rank keeps the same moving average and the same batch stats."""
    (tmp_path / "worker.py").write_text(WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                           "--master_port", str(port), str(tmp_path / "worker.py"), str(tmp_path)],
                          check=False, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    for r in ranks:
        assert r["pipe_avg"] == pytest.approx(0.1 * 6 / 4)  # RM scores 1, 3, 0, 2 over both ranks
        assert r["stats"] == ranks[0]["stats"]
    assert ranks[0]["stats"]["confidence/parsable_rate"] == pytest.approx(0.5)
