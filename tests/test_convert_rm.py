"""``calrl convert-rm --from openrlhf``: an OpenRLHF reward model becomes a Hugging Face sequence classifier that
scores as the original; and a reward or value model whose head would be random is refused wherever one loads.

The OpenRLHF checkpoint is built here in OpenRLHF's layout (a tiny Llama: ``model.*`` weights, a ``value_head``
linear, ``mean`` / ``std`` in ``config.json``), and scored here by OpenRLHF's rule (positions counted from the
first attended token, the head's output at the last attended token, ``(r - mean) / std`` when normalising).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from calrl.cli.main import main
from calrl.errors import InputError

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = 0.75, 2.5
WORDS = "what is the capital of france ? paris . confidence : i think it is lyon"


def _openrlhf_checkpoint(folder: Path, *, shards: int = 1, critic: bool = False) -> tuple[Path, object, object]:
    """A tiny Llama reward (or critic) model saved as OpenRLHF saves one. Returns (folder, base, head)."""
    from safetensors.torch import save_file
    from transformers import LlamaModel

    from calrl.tiny.models import build_word_tokenizer, tiny_config

    tok = build_word_tokenizer([WORDS])
    config = tiny_config(tok, hidden_size=32, num_layers=2, num_heads=4)
    torch.manual_seed(7)
    base = LlamaModel(config).eval()
    head = torch.nn.Linear(config.hidden_size, 1, bias=False)
    state = {f"model.{k}": v.detach().clone().contiguous() for k, v in base.state_dict().items()}
    state["value_head.weight"] = head.weight.detach().clone()
    folder.mkdir(parents=True)
    keys = sorted(state)
    if shards == 1:
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i in range(shards):
            name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {k: state[k] for k in keys[i::shards]}
            save_file(part, str(folder / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(part, name))
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    raw = config.to_dict()
    raw.update(architectures=["CriticModel" if critic else "RewardModel"], mean=MEAN, std=STD, normalize_reward=True)
    (folder / "config.json").write_text(json.dumps(raw))
    tok.save_pretrained(folder)
    return folder, base, head


def _openrlhf_reward(base, head, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """OpenRLHF's reward: the head at the last attended token, positions counted over the attended tokens."""
    position_ids = mask.long().cumsum(-1) - 1
    position_ids.masked_fill_(mask == 0, 1)
    hidden = base(input_ids=ids, attention_mask=mask, position_ids=position_ids).last_hidden_state
    values = head(hidden).squeeze(-1)
    last = mask.size(1) - 1 - mask.long().fliplr().argmax(dim=1, keepdim=True)
    return values.gather(dim=1, index=last).squeeze(1)


def _rows(tok) -> tuple[torch.Tensor, int]:
    """Query + response rows as PPO scores them: queries left-padded, responses right-padded."""
    queries = ["what is the capital of france ?", "capital of france ?", "what is it ?"]
    responses = ["paris . confidence : 9", "i think it is lyon", "paris"]
    q = [tok(t, add_special_tokens=False)["input_ids"] for t in queries]
    r = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in responses]
    width_q, width_r, pad = max(map(len, q)), max(map(len, r)), tok.pad_token_id
    rows = [[pad] * (width_q - len(a)) + a + b + [pad] * (width_r - len(b)) for a, b in zip(q, r, strict=True)]
    return torch.tensor(rows), width_q


@pytest.mark.parametrize("shards", [1, 3])
def test_converted_model_scores_as_the_openrlhf_model(tmp_path, capsys, shards):
    from calrl.reward_modeling.loading import load_sequence_classifier
    from calrl.reward_modeling.sequence_scores import sequence_scores
    from calrl.reward_modeling.stats import stored_reward_stats
    from calrl.tiny.models import build_word_tokenizer

    src, base, head = _openrlhf_checkpoint(tmp_path / "openrlhf", shards=shards)
    dst = tmp_path / "hf"
    assert main(["convert-rm", "--from", "openrlhf", str(src), "--out", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "LlamaForSequenceClassification" in out and "mean 0.75, std 2.5" in out
    assert json.loads((dst / "reward_stats.json").read_text()) == {"mean": MEAN, "std": STD, "count": None}
    config = json.loads((dst / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and "mean" not in config
    assert (dst / "tokenizer.json").is_file() and not list(dst.glob(".*staging*"))

    model = load_sequence_classifier(str(dst)).eval()  # refuses a random head: every weight was loaded
    tok = build_word_tokenizer([WORDS])
    rows, context = _rows(tok)
    mask = (rows != tok.pad_token_id).long()
    with torch.no_grad():
        expected = _openrlhf_reward(base, head, rows, mask)
        _, scores = sequence_scores(model, rows, tok.pad_token_id, context)
        # the model's own forward on one unpadded row: transformers' pooling reads the last token too
        first = rows[0][mask[0].bool()].unsqueeze(0)
        own = model(input_ids=first).logits.squeeze()
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(own, expected[0], rtol=1e-5, atol=1e-6)
    stats = stored_reward_stats(model)
    torch.testing.assert_close((scores - stats["mean"]) / stats["std"], (expected - MEAN) / STD, rtol=1e-5, atol=1e-6)
    assert expected.std() > 0  # the rows score differently: the comparison can fail


def test_convert_refuses_what_is_not_an_openrlhf_checkpoint_in_one_line(tmp_path, capsys):
    src, _, _ = _openrlhf_checkpoint(tmp_path / "openrlhf")
    converted = tmp_path / "hf"
    assert main(["convert-rm", "--from", "openrlhf", str(src), "--out", str(converted)]) == 0
    capsys.readouterr()
    cases = [(["--from", "openrlhf", str(converted), "--out", str(tmp_path / "again")], "nothing to convert"),
             (["--from", "openrlhf", str(src), "--out", str(tmp_path / "x"), "--value-head-prefix", "v_head"],
              "unexpected weight 'value_head.weight'"),
             (["--from", "openrlhf", str(tmp_path / "missing"), "--out", str(tmp_path / "y")], "not a model folder"),
             (["--from", "openrlhf", str(src), "--out", str(converted)], "--overwrite"),
             (["--from", "openrlhf", str(src), "--out", str(src)], "the checkpoint being converted")]
    for args, pattern in cases:
        code = main(["convert-rm", *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and pattern in err[0], (args, err)
    assert not (tmp_path / "again").exists() and not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------- a random head is refused
def test_an_openrlhf_checkpoint_loaded_as_a_reward_model_is_refused_with_the_missing_weight(tmp_path):
    from calrl.reward_modeling.loading import load_sequence_classifier

    src, _, _ = _openrlhf_checkpoint(tmp_path / "openrlhf")
    with pytest.raises(InputError) as info:
        load_sequence_classifier(str(src))
    message = str(info.value)
    assert "score.weight" in message and "value_head.weight" in message and "calrl convert-rm" in message
    assert "\n" not in message


@pytest.fixture
def causal_lm(tmp_path) -> Path:
    from calrl.tiny.models import build_tiny_causal_lm, build_word_tokenizer, save_pretrained

    tok = build_word_tokenizer([WORDS, (REPO / "calrl" / "data" / "tiny" / "pairs.jsonl").read_text()])
    return save_pretrained(build_tiny_causal_lm(tok), tok, tmp_path / "lm")


def test_ppo_refuses_a_reward_model_with_a_random_head(tmp_path, capsys):
    src, _, _ = _openrlhf_checkpoint(tmp_path / "openrlhf")
    capsys.readouterr()
    code = main(["train-ppo", "--config", str(REPO / "configs" / "tests" / "tiny_ppo.yaml"), "model.tiny.warmup_steps=0",
                 f"model.reward_model={src}", "model.value_model=head", "training.report_to=none",
                 f"training.output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "\n".join(err)
    assert "reward model" in err[-1] and "score.weight" in err[-1] and "convert-rm" in err[-1]


def test_train_rm_starts_a_head_from_a_base_model_but_not_when_fine_tuning_a_trained_rm(tmp_path, capsys, causal_lm):
    from calrl.reward_modeling.loading import load_sequence_classifier

    model = load_sequence_classifier(str(causal_lm), allow_new_head=True)  # train-rm from a base model
    assert model.score.weight.shape == (1, model.config.hidden_size)
    with pytest.raises(InputError, match=r"score\.weight .*not a reward model"):
        load_sequence_classifier(str(causal_lm))
    code = main(["train-rm", "--config", str(REPO / "configs" / "tests" / "tiny_rm_calibrated.yaml"),
                 f"model.reward_model={causal_lm}", "training.calibration_loss=calibration_only",
                 "training.report_to=none", f"training.output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "score.weight" in err[-1], err


def test_filter_preferences_refuses_a_reward_model_with_a_random_head(tmp_path, capsys, causal_lm):
    pairs = REPO / "calrl" / "data" / "tiny" / "pairs.jsonl"
    capsys.readouterr()  # the fixture's saving progress
    code = main(["data", "filter-preferences", "--input", str(pairs), "--out", str(tmp_path / "kept.jsonl"),
                 "--reward-model", str(causal_lm)])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "error" in line]
    assert code == 2 and len(err) == 1 and "score.weight" in err[0]
    assert not (tmp_path / "kept.jsonl").exists()
