"""Tiny, deterministic PPO setup shared by the trl-1.12 parity recorder/benchmark and calrl's side.

Imports only torch, transformers, tokenizers and datasets (no trl, no calrl), so it can be
imported from either virtual environment (scripts/ppo_parity/.venv with trl 1.12.0, or the
project's main venv) and builds bit-identical models in both.

Everything is built locally (no hub): a WordLevel tokenizer over a fixed vocabulary, a 2-layer
Qwen2 policy with a seeded random init, a seeded random Qwen2 value model, and a hand-set
(train-free) Qwen2 reward model whose score rises with the fraction of "good" words in the
sequence (see `build_reward_model`).

Usage::

    import sys; sys.path.insert(0, "scripts/ppo_parity")
    import tiny_setup
    parts = tiny_setup.build_all()          # dict: tokenizer, policy, ref_policy, reward_model,
                                            #       value_model, train_dataset
    hp = tiny_setup.PPO_HPARAMS             # the PPO hyperparameters of the fixture
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from datasets import Dataset
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
)

PAD_TOKEN = "<pad>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = [PAD_TOKEN, EOS_TOKEN, UNK_TOKEN]  # ids 0, 1, 2

# The reward model rewards these words (ids 3..6).
GOOD_WORDS = ["good", "great", "nice", "yes"]
OTHER_WORDS = [
    "the", "a", "cat", "dog", "sat", "on", "mat", "and", "ran", "to",
    "park", "is", "was", "bad", "no", "it", "he", "she", "we", "they",
    "big", "small", "red", "blue", "sun", "moon", "tree", "house", "see", "go",
    "what", "why", "how", "tell", "me", "about", "day", "night", "one", "two",
]  # fmt: skip
VOCAB = SPECIAL_TOKENS + GOOD_WORDS + OTHER_WORDS  # 47 tokens

# 12 prompts of 2..6 words (lengths differ so left padding matters); none contains a good word.
PROMPTS = [
    "tell me",
    "the cat sat",
    "what is the sun",
    "a dog ran to the park",
    "how was it",
    "she and he",
    "tell me about the night",
    "we see a red tree",
    "why",
    "the big house is blue",
    "one small dog",
    "they go",
]

HIDDEN_SIZE = 32
INTERMEDIATE_SIZE = 64
NUM_LAYERS = 2
NUM_HEADS = 4
NUM_KV_HEADS = 2
MAX_POSITIONS = 64
ATTN_IMPLEMENTATION = "eager"



@dataclass(frozen=True)
class Dims:
    """The sizes of a setup's tokenizer and models (the policy, value and reward model share them)."""

    vocab_size: int = len(VOCAB)
    hidden_size: int = HIDDEN_SIZE
    intermediate_size: int = INTERMEDIATE_SIZE
    num_layers: int = NUM_LAYERS
    num_heads: int = NUM_HEADS
    num_kv_heads: int = NUM_KV_HEADS
    max_positions: int = MAX_POSITIONS


TINY = Dims()  # the parity fixture's setup
# A bigger setup for the benchmark (scripts/bench_ppo.py --setup bigger): 4 layers, hidden 128, a 4,096-token
# vocabulary (VOCAB then filler words w0, w1, ...), 32 response tokens; same prompts, seeds and construction.
BIGGER = Dims(vocab_size=4096, hidden_size=128, intermediate_size=256, num_layers=4)
SETUPS = {"tiny": TINY, "bigger": BIGGER}
#: PPO_HPARAMS entries a setup replaces (the rest are shared)
SETUP_HPARAMS = {"tiny": {}, "bigger": {"response_length": 32}}

POLICY_SEED = 1234
VALUE_SEED = 4321
REWARD_SEED = 777
# Reward-model constants: the attention layer writes SIGNAL_SCALE * m into residual dim 1
# (m = fraction of good tokens among the visible non-pad tokens), the score head reads dim 1
# of the final RMSNorm output times SCORE_SCALE.
SIGNAL_SCALE = 4.0
SCORE_SCALE = 1.0

# The PPO hyperparameters the fixture and the benchmark use (trl 1.12 PPOConfig field names).
PPO_HPARAMS = {
    "seed": 42,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "num_mini_batches": 1,
    "num_ppo_epochs": 1,
    "local_rollout_forward_batch_size": 64,
    "response_length": 8,
    "stop_token": "eos",
    "missing_eos_penalty": 1.0,
    "temperature": 0.7,
    "kl_coef": 0.05,
    "kl_estimator": "k1",
    "whiten_rewards": False,
    "gamma": 1.0,
    "lam": 0.95,
    "cliprange": 0.2,
    "cliprange_value": 0.2,
    "vf_coef": 0.1,
    "learning_rate": 3e-3,
    "lr_scheduler_type": "constant",
    "optim": "adamw_torch",
    "weight_decay": 0.0,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_epsilon": 1e-8,
    "max_grad_norm": 1.0,  # not applied by trl 1.12's PPO loop (it never clips)
    "fixture_total_episodes": 16,  # 4 updates of batch 4
    # second recorded variant (several PPO epochs and mini-batches, so ratio != 1 and clipping acts)
    "variant_num_ppo_epochs": 4,
    "variant_num_mini_batches": 2,
    "variant_total_episodes": 12,  # 3 updates of batch 4
    "long_run_total_episodes": 240,  # 60 updates of batch 4
}


def setup_hparams(setup: str = "tiny") -> dict:
    """PPO_HPARAMS with the setup's own entries (SETUP_HPARAMS) replaced."""
    return {**PPO_HPARAMS, **SETUP_HPARAMS[setup]}


def vocabulary(dims: Dims = TINY) -> list[str]:
    """VOCAB, then filler words w0, w1, ... up to dims.vocab_size tokens."""
    return VOCAB + [f"w{i}" for i in range(dims.vocab_size - len(VOCAB))]


def build_tokenizer(dims: Dims = TINY) -> PreTrainedTokenizerFast:
    """WordLevel tokenizer over vocabulary(dims) (whitespace split), pad=0, eos=1, unk=2, left padding."""
    vocab = {tok: i for i, tok in enumerate(vocabulary(dims))}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="left",
        model_max_length=dims.max_positions,
    )
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1 and tok.unk_token_id == 2
    return tok


def build_config(tokenizer: PreTrainedTokenizerFast, num_labels: int | None = None, dims: Dims = TINY) -> Qwen2Config:
    kwargs = {}
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    config = Qwen2Config(
        vocab_size=dims.vocab_size,
        hidden_size=dims.hidden_size,
        intermediate_size=dims.intermediate_size,
        num_hidden_layers=dims.num_layers,
        num_attention_heads=dims.num_heads,
        num_key_value_heads=dims.num_kv_heads,
        max_position_embeddings=dims.max_positions,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        attn_implementation=ATTN_IMPLEMENTATION,  # the config's public argument (both transformers versions)
        **kwargs,
    )
    return config


def _seeded_init(cls, config, seed: int):
    torch.manual_seed(seed)
    model = cls(config)
    model.eval()
    return model


def build_policy(tokenizer: PreTrainedTokenizerFast, seed: int = POLICY_SEED, dims: Dims = TINY) -> Qwen2ForCausalLM:
    """Qwen2ForCausalLM (TINY: 2 layers, hidden 32), random init under torch.manual_seed(seed)."""
    model = _seeded_init(Qwen2ForCausalLM, build_config(tokenizer, dims=dims), seed)
    gc = model.generation_config
    gc.pad_token_id = tokenizer.pad_token_id
    gc.eos_token_id = tokenizer.eos_token_id
    gc.bos_token_id = None
    return model


def build_value_model(
    tokenizer: PreTrainedTokenizerFast, seed: int = VALUE_SEED, dims: Dims = TINY
) -> Qwen2ForSequenceClassification:
    """Qwen2ForSequenceClassification (num_labels=1), random init under seed."""
    return _seeded_init(Qwen2ForSequenceClassification, build_config(tokenizer, num_labels=1, dims=dims), seed)


@torch.no_grad()
def build_reward_model(
    tokenizer: PreTrainedTokenizerFast, seed: int = REWARD_SEED, dims: Dims = TINY
) -> Qwen2ForSequenceClassification:
    """Hand-set Qwen2ForSequenceClassification whose score rises with the share of good words.

    Construction (all other weights zero, all RMSNorm weights one):
    * embeddings: every row has RMS exactly 1; dim 0 is 1 for GOOD_WORDS and 0 otherwise, dim 1
      is 0, the remaining dims are a seeded random direction scaled to fill the norm;
    * layer 0 attention: q/k projections zero, so attention is uniform over the visible
      (causal, non-pad) positions; v reads residual dim 0 (the good flag) into kv-head 0 dim 0,
      o_proj writes head 0 dim 0 times SIGNAL_SCALE into residual dim 1; both MLPs and layer 1's
      attention output are zero (identity residual);
    * score head reads dim 1 of the final norm's output times SCORE_SCALE.

    So at the last non-pad token, with m = (# good tokens) / (# non-pad tokens so far),
    score = SCORE_SCALE * s*m / sqrt(1 + (s*m)^2 / hidden), s = SIGNAL_SCALE: 0 for no good
    words, increasing in m (about 3.27 for m = 1 at hidden 32).
    """
    model = _seeded_init(Qwen2ForSequenceClassification, build_config(tokenizer, num_labels=1, dims=dims), seed)
    H = dims.hidden_size
    for p in model.parameters():
        p.zero_()
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):  # every RMSNorm weight
            p.fill_(1.0)
    g = torch.Generator().manual_seed(seed)
    good_ids = set(tokenizer.convert_tokens_to_ids(GOOD_WORDS))
    emb = model.model.embed_tokens.weight
    for tok_id in range(dims.vocab_size):
        flag = 1.0 if tok_id in good_ids else 0.0
        rest = torch.randn(H - 2, generator=g)
        rest = rest / rest.norm() * (H - flag**2) ** 0.5  # total squared norm = H (RMS = 1)
        emb[tok_id, 0] = flag
        emb[tok_id, 1] = 0.0
        emb[tok_id, 2:] = rest
    attn = model.model.layers[0].self_attn
    attn.v_proj.weight[0, 0] = 1.0  # kv-head 0, dim 0 <- residual dim 0
    attn.o_proj.weight[1, 0] = SIGNAL_SCALE  # residual dim 1 <- head 0 dim 0
    model.score.weight[0, 1] = SCORE_SCALE
    return model


def build_dataset(tokenizer: PreTrainedTokenizerFast) -> Dataset:
    """Dataset with one column `input_ids` (the tokenized PROMPTS, no special tokens)."""
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    for row in ids:
        assert tokenizer.unk_token_id not in row, row
    return Dataset.from_dict({"input_ids": ids})


def build_all(setup: str = "tiny") -> dict:
    """Returns {"tokenizer", "policy", "ref_policy", "reward_model", "value_model", "train_dataset"}.

    ref_policy is a deep copy of policy (same weights, eval mode, requires_grad False). ``setup``: a key of
    SETUPS ("tiny": the parity fixture's; "bigger": the benchmark's).
    """
    dims = SETUPS[setup]
    tokenizer = build_tokenizer(dims)
    policy = build_policy(tokenizer, dims=dims)
    ref_policy = copy.deepcopy(policy)
    for p in ref_policy.parameters():
        p.requires_grad_(False)
    reward_model = build_reward_model(tokenizer, dims=dims)
    for p in reward_model.parameters():
        p.requires_grad_(False)
    value_model = build_value_model(tokenizer, dims=dims)
    return {
        "tokenizer": tokenizer,
        "policy": policy,
        "ref_policy": ref_policy,
        "reward_model": reward_model,
        "value_model": value_model,
        "train_dataset": build_dataset(tokenizer),
    }


def expected_score(num_good: int, num_tokens: int, dims: Dims = TINY) -> float:
    """Closed-form reward-model score for a sequence with num_good good words among num_tokens
    non-pad tokens (used to sanity-check build_reward_model)."""
    sm = SIGNAL_SCALE * num_good / num_tokens
    return SCORE_SCALE * sm / (1.0 + sm * sm / dims.hidden_size) ** 0.5
