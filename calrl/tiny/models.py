"""Tiny models built locally (random init from a config) with a word-level tokenizer.

The hub is unreachable in tests and in the offline demo, so these give real ``transformers`` models,
saved and loaded in Hugging Face format, that every code path (generation, TRL trainers, PEFT) accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} <|end|> "
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
BASE_WORDS = (
    [str(d) for d in range(10)]
    + list(".,:;!?%/()'\"-+*=#")
    + ["confidence", "answer", "i", "don't", "know", "not", "sure", "think", "probably", "maybe", "certainly", "the", "a", "an", "is", "of"]
)
_WORD_RE = re.compile(r"\w+|[^\w\s]")


def words_of(texts: Iterable[str], *, lowercase: bool = True) -> list[str]:
    """The distinct word and punctuation tokens of ``texts``, in first-seen order."""
    seen: dict[str, None] = {}
    for text in texts:
        for tok in _WORD_RE.findall(text.lower() if lowercase else text):
            seen.setdefault(tok, None)
    return list(seen)


def build_word_tokenizer(texts: Iterable[str] = (), *, extra_words: Iterable[str] = (),
                         lowercase: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is every word of ``texts`` plus digits and punctuation.

    A WordPiece model over whole words: numbers are spelled digit by digit (``"42"`` is ``"4"``,
    ``"##2"``) so any number round-trips, and a word outside the vocabulary becomes ``<unk>``. It
    carries a chat template, and pads on the left for generation.
    """
    vocab_words = [PAD, UNK, BOS, EOS, *ROLE_TOKENS]
    for w in [*BASE_WORDS, *words_of(texts, lowercase=lowercase), *extra_words]:
        if w not in vocab_words and not (w.isdigit() and len(w) > 1):
            vocab_words.append(w)
    vocab_words += [f"##{d}" for d in range(10)]  # digits continue a number: "42" -> "4", "##2"
    vocab = {w: i for i, w in enumerate(dict.fromkeys(vocab_words))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK, continuing_subword_prefix="##"))
    norm = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(norm)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=False)]
    )
    tok.decoder = decoders.Sequence([
        decoders.WordPiece(prefix="##", cleanup=True),
        decoders.Replace(" :", ":"), decoders.Replace(" %", "%"),
    ])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS,
        additional_special_tokens=list(ROLE_TOKENS), padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(tokenizer: PreTrainedTokenizerFast, *, hidden_size: int = 64, num_layers: int = 2,
                num_heads: int = 4, intermediate_size: int | None = None, max_positions: int = 512,
                num_labels: int = 1) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        num_labels=num_labels,
    )


def build_tiny_causal_lm(tokenizer: PreTrainedTokenizerFast, *, seed: int = 0, **config_kwargs) -> LlamaForCausalLM:
    """A randomly initialised Llama causal LM sized for CPU tests."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(tokenizer, **config_kwargs))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def build_tiny_reward_model(tokenizer: PreTrainedTokenizerFast, *, seed: int = 0,
                            **config_kwargs) -> LlamaForSequenceClassification:
    """A randomly initialised Llama sequence classifier with one output: a reward model or value model."""
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(tiny_config(tokenizer, num_labels=1, **config_kwargs))


def save_pretrained(model, tokenizer, path: str | Path) -> Path:
    """Save model and tokenizer in Hugging Face format (loadable with ``from_pretrained``)."""
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_scripted_causal_lm(tokenizer: PreTrainedTokenizerFast, transitions: list[tuple[str, list[str]]], *,
                             seed: int = 0, logit: float = 5.0, **config_kwargs) -> LlamaForCausalLM:
    """A tiny LM whose next token depends only on the current one, following ``transitions``.

    Each ``(token, successors)`` pair makes ``token`` continue with one of ``successors`` (uniformly when
    sampling). Attention and MLP outputs are zeroed, so the embedding of the current token alone drives
    the untied output head. Useful where a test needs a policy with known, controllable outputs (e.g.
    ``<|assistant|> -> 4 -> confidence -> : -> {2, 5, 8} -> </s>``); it still trains like any model.
    ``config_kwargs`` size it like :func:`tiny_config` (e.g. ``num_layers=12, hidden_size=256``).
    """
    config = tiny_config(tokenizer, **config_kwargs)
    config.tie_word_embeddings = False
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    ids = tokenizer.convert_tokens_to_ids
    if len(transitions) > config.hidden_size:
        raise ValueError(f"at most {config.hidden_size} transitions fit a hidden size of {config.hidden_size}")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for k, (source, successors) in enumerate(transitions):
            model.model.embed_tokens.weight[ids(source), k] = 1.0
            for successor in successors:
                model.lm_head.weight[ids(successor), k] = logit
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(model.generation_config, key, getattr(tokenizer, key))
    return model
