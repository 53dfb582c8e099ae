"""``share_prompt_prefix``: the rows' shared prompt prefix read once through the KV cache gives the outputs and
gradients of the whole-row forward (Llama and Qwen2, a separate value model, a value head, a LoRA reference), and
a PPO run with it follows the run without it."""

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

from calrl.errors import ConfigError
from calrl.reward_modeling.sequence_scores import rows_forward, split_shared_prefix
from calrl.tiny.models import build_tiny_causal_lm, build_tiny_reward_model, build_word_tokenizer
from calrl.trainers.ppo import CalibratedPPOConfig
from calrl.trainers.ppo_rollout import PolicyAndValue, left_pad

SYSTEM = "answer the question and then say how sure you are on a scale from zero to ten"
QUESTIONS = ["where does ana live ?", "where was the old king born ?", "who is bo ?", "where does the tall man live ?"]


def tokenizer():
    return build_word_tokenizer([SYSTEM, *QUESTIONS], extra_words=["paris", "rome", "sure", "8"])


def batch(tok, *, system=SYSTEM, response_pad=True):
    """Left-padded prompts (the shared system text, then a question of its own length) and responses of 4 tokens,
    the first ones ending early (right-padded)."""
    prompts = [tok(f"{system} {q}")["input_ids"] for q in QUESTIONS]
    queries = left_pad(prompts, tok.pad_token_id)
    generator = torch.Generator().manual_seed(0)
    responses = torch.randint(5, len(tok), (len(prompts), 4), generator=generator)
    if response_pad:
        responses[0, 2:] = tok.pad_token_id
        responses[1, 3:] = tok.pad_token_id
    return torch.cat([queries, responses], 1), queries.shape[1]


def qwen2(tok, *, seed, head=False):
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id, num_labels=1)
    return Qwen2ForSequenceClassification(config) if head else Qwen2ForCausalLM(config)


def outputs_and_grads(wrapper, rows, pad, context, what="both"):
    wrapper.zero_grad()
    logits, values = wrapper(rows, pad, what, context)
    loss = sum(t.float().pow(2).mean() for t in (logits, values) if t is not None)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in wrapper.named_parameters() if p.grad is not None}
    return logits, values, grads


def assert_same(a, b):
    for x, y in zip(a[:2], b[:2]):
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)
    assert a[2].keys() == b[2].keys() and a[2]
    for name in a[2]:
        torch.testing.assert_close(a[2][name], b[2][name], rtol=1e-3, atol=1e-5, msg=name)


def test_split_finds_the_shared_tokens_and_keeps_the_last_prompt_token_in_the_suffix():
    tok = tokenizer()
    rows, context = batch(tok)
    split = split_shared_prefix(rows, tok.pad_token_id, context)
    shared = len(tok(SYSTEM)["input_ids"])
    # the system text and the question's first word, shared by three rows of four, stop at "where"/"who"
    assert split.prefix.shape == (1, shared)
    assert split.prefix[0].tolist() == tok(SYSTEM)["input_ids"]
    # identical prompts: everything but the last prompt token is shared
    same = rows[[0, 0, 0]]
    assert split_shared_prefix(same, tok.pad_token_id, context).prefix.shape[1] == context - 1 - int(
        (rows[0, :context] == tok.pad_token_id).sum())
    assert split_shared_prefix(rows[:1], tok.pad_token_id, context) is None  # one row
    other = batch(tok, system="say how sure you are")[0]
    mixed = left_pad([rows[0][rows[0] != tok.pad_token_id].tolist(), other[1][other[1] != tok.pad_token_id].tolist()],
                     tok.pad_token_id)
    assert split_shared_prefix(mixed, tok.pad_token_id, mixed.shape[1] - 2) is None  # no shared first token


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_shared_prefix_forward_gives_the_whole_row_outputs_and_gradients(arch):
    tok = tokenizer()
    rows, context = batch(tok)
    for value_model in ("separate", "head"):
        results = []
        for share in (False, True):
            if arch == "llama":
                policy = build_tiny_causal_lm(tok, seed=0, hidden_size=32)
                value = build_tiny_reward_model(tok, seed=1, hidden_size=32) if value_model == "separate" else None
            else:
                policy = qwen2(tok, seed=0)
                value = qwen2(tok, seed=1, head=True) if value_model == "separate" else None
            if value is None:
                torch.manual_seed(5)  # the value head's initialisation
            wrapper = PolicyAndValue(policy, value, share_prefix=share)
            results.append({what: outputs_and_grads(wrapper, rows, tok.pad_token_id, context, what)
                            for what in ("both", "policy", "values")})
        for what in results[0]:
            assert_same(results[0][what], results[1][what])
        logits = results[0]["both"][0]
        assert logits.shape == (rows.shape[0], rows.shape[1] - context, len(tok))


def test_lora_reference_and_separate_reference_read_the_prefix_once_alike():
    from peft import LoraConfig, get_peft_model

    tok = tokenizer()
    rows, context = batch(tok)
    base = build_tiny_causal_lm(tok, seed=3, hidden_size=32)
    policy = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                             task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_()  # an adapter that changes the outputs, so "adapter off" is visible
        plain = PolicyAndValue(policy, None)(rows, tok.pad_token_id, "reference", context)[0]
        shared = PolicyAndValue(policy, None, share_prefix=True)(rows, tok.pad_token_id, "reference", context)[0]
        trained = PolicyAndValue(policy, None, share_prefix=True)(rows, tok.pad_token_id, "policy", context)[0]
        torch.testing.assert_close(plain, shared, rtol=1e-4, atol=1e-5)
        assert (trained - shared).abs().max() > 1e-3
        # a separate reference model: rows_forward's cut, as the trainer reads it
        out, offset = rows_forward(base, rows, tok.pad_token_id, context)
        whole, zero = rows_forward(base, rows, tok.pad_token_id)
    assert offset > 0 and zero == 0
    torch.testing.assert_close(out.logits[:, context - 1 - offset:-1], whole.logits[:, context - 1:-1], rtol=1e-4,
                               atol=1e-5)
    with policy.disable_adapter(), torch.no_grad():
        whole = rows_forward(policy, rows, tok.pad_token_id)[0].logits
        cut = rows_forward(policy, rows, tok.pad_token_id, context)
    torch.testing.assert_close(cut[0].logits[:, context - 1 - cut[1]:-1], whole[:, context - 1:-1], rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("clash", [{"gradient_checkpointing": True}, {"torch_compile": True}])
def test_share_prompt_prefix_refuses_what_would_drop_or_recompile_the_cache(tmp_path, clash):
    with pytest.raises(ConfigError) as err:
        CalibratedPPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", share_prompt_prefix=True,
                            **clash)
    assert err.value.field == "share_prompt_prefix" and next(iter(clash)) in str(err.value)


def test_ppo_run_with_the_shared_prefix_follows_the_run_without_it(tmp_path):
    from test_ppo_trainer import make_trainer

    logs = []
    for share in (False, True):
        trainer = make_trainer(tmp_path, f"share{share}", share_prompt_prefix=share, num_train_epochs=1,
                               num_mini_batches=2, num_ppo_epochs=2, max_step_kl=0.5)
        trainer.train()
        logs.append([row for row in trainer.state.log_history if "objective/kl" in row])
    assert len(logs[0]) == len(logs[1]) == 2
    for a, b in zip(*logs):
        for key in ("objective/scores", "objective/kl", "loss/policy_avg", "loss/value_avg", "val/ratio",
                    "policy/entropy_avg"):
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-5), key
