"""Stage 1 of the study: the tokenizer, and supervised fine-tuning that teaches the answer format.

The targets are ``"<answer>. Confidence: N"`` with N on the 0-10 scale drawn around a prior per slice
(what a careful annotator who knows how the world was written would state), or ``"I don't know."`` on a
share of the items the policy cannot know. So the SFT policy starts roughly calibrated and knows that
abstaining is allowed. The prompt is exactly the one ``calrl eval`` asks (:class:`ElicitationPrompt`),
and training is TRL's ``SFTTrainer`` (through :mod:`calrl.trainers.sft`) on conversational prompt-completion
rows (loss on the completion), in two phases: the demonstrations without the system prompt first (a cheap
curriculum: see ``train_sft``), then with it.

The tokenizer's end-of-sequence token is the chat template's ``<|end|>``, so the policy stops where an
assistant turn ends: generation in ``calrl eval``, PPO's ``stop_token: eos`` and the reward model (which is
read at the last token of the chat-formatted response) all see the same last token.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from tokenizers import Regex, normalizers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from calrl.callbacks.wandb_utils import init_wandb_run
from calrl.confidence import format_confidence
from calrl.data.heldout import EvalItem
from calrl.demo.recipes import GRADIENT_CHECKPOINTING
from calrl.demo.world import World, WorldConfig, build_world
from calrl.generation.prompts import ElicitationPrompt
from calrl.tiny.models import build_tiny_causal_lm, build_word_tokenizer
from calrl.trainers.sft import SFTConfig, fit_sft

ABSTAIN_TEXT = "I don't know."
END_TOKEN = "<|end|>"
# P(correct) the SFT targets state, per slice group: a prior, not a measurement. fact-rarely people were
# shown once with the true city and once with a wrong one; fact-never answers are hallucinated (wrong).
CONFIDENCE_PRIOR = {"fact-often": 0.9, "fact-rarely": 0.5, "fact-never": 0.1}
# Share of SFT targets that abstain, per slice group.
ABSTAIN_SHARE = {"fact-often": 0.0, "fact-rarely": 0.1, "fact-never": 0.3}


@dataclass
class SFTTargetConfig:
    confidence_noise: float = 0.3  # stated confidence = prior + uniform(-noise, noise), clipped to [0, 1], rounded
    abstain: bool = True
    seed: int = 0


@dataclass
class SFTModelConfig:
    """Size and schedule of the policy trained from scratch (the defaults fit the demo's time budget)."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    short_epochs: float = 40.0  # phase 1: the same demonstrations without the system prompt (cheap)
    epochs: float = 10.0  # phase 2: with the full elicitation prompt, exactly as calrl eval asks
    # 5e-3 left the never-seen people's stated confidence unlearnt (8-10) in 1 of 5 seeds (3 of 5 with one
    # hallucination each instead of the world's two)
    learning_rate: float = 2e-3
    batch_size: int = 32
    seed: int = 0


def answer_text(answer: str, confidence: float) -> str:
    """The response format of the world: ``"<answer>. Confidence: N"``."""
    return f"{answer}. {format_confidence(confidence, '0-10')}"


def sft_target(item: EvalItem, rng: random.Random, config: SFTTargetConfig) -> str:
    group = item.slice["group"]
    if config.abstain and rng.random() < ABSTAIN_SHARE[group]:
        return ABSTAIN_TEXT
    prior = CONFIDENCE_PRIOR[group]
    stated = min(1.0, max(0.0, prior + rng.uniform(-config.confidence_noise, config.confidence_noise)))
    return answer_text(item.reference[0], stated)


def prompt_messages(item: EvalItem, prompt: ElicitationPrompt | None = None) -> list[dict[str, str]]:
    """The chat messages of a question: the same system instruction and user message ``calrl eval`` sends."""
    return (prompt or ElicitationPrompt(scale="0-10")).build_messages(item)


def build_sft_rows(items: list[EvalItem], config: SFTTargetConfig | None = None, *,
                   system: bool = True) -> list[dict[str, Any]]:
    """Prompt-completion rows in TRL's conversational format (``system=False``: the user message only)."""
    config = config or SFTTargetConfig()
    rng = random.Random(config.seed)
    return [{"prompt": prompt_messages(item)[(0 if system else 1):],
             "completion": [{"role": "assistant", "content": sft_target(item, rng, config)}]}
            for item in items]


def vocabulary_texts(world: World) -> list[str]:
    """Every text the study's tokenizer must cover: instruction, questions, answers, response words."""
    prompt = ElicitationPrompt(scale="0-10")
    texts = [prompt.instruction(), ABSTAIN_TEXT, answer_text("x", 0.5), *world.cities]
    for item in world.all_items():
        texts.append(prompt.user_message(item))
        texts.extend(item.reference)
    return texts


def build_demo_tokenizer(world: World) -> Any:
    """The word-level tokenizer of the world (``calrl.tiny.models``), ending sequences with ``<|end|>``."""
    tokenizer = build_word_tokenizer(vocabulary_texts(world))
    tokenizer.eos_token = END_TOKEN
    return tokenizer


def train_sft(world: World, out_dir: str | Path, *, model_config: SFTModelConfig | None = None,
              target_config: SFTTargetConfig | None = None, report_to: str = "wandb",
              run_name: str | None = None, show_progress: bool = True) -> Path:
    """Train the policy from scratch on the world's SFT split and save it (with its tokenizer) to ``out_dir``."""
    mc = model_config or SFTModelConfig()
    tc = target_config or SFTTargetConfig(seed=mc.seed)
    out_dir = Path(out_dir)
    tokenizer = build_demo_tokenizer(world)
    model = build_tiny_causal_lm(tokenizer, seed=mc.seed, hidden_size=mc.hidden_size, num_layers=mc.num_layers,
                                 num_heads=mc.num_heads)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id

    def sft_config(name: str, epochs: float, reporting: str) -> SFTConfig:
        return SFTConfig(
            output_dir=str(out_dir / name), num_train_epochs=epochs, learning_rate=mc.learning_rate,
            per_device_train_batch_size=mc.batch_size, lr_scheduler_type="cosine", warmup_steps=20,
            weight_decay=0.0, logging_steps=10, save_strategy="no", report_to=reporting, run_name=run_name,
            seed=mc.seed, data_seed=mc.seed, use_cpu=True, bf16=False, fp16=False, max_length=256,
            completion_only_loss=True, disable_tqdm=not show_progress, dataloader_num_workers=0,
            gradient_checkpointing=GRADIENT_CHECKPOINTING)

    # Phase 1, a curriculum: the demonstrations without the 100-token system prompt. A model trained from
    # scratch first has to learn to look back at the person's name; among 100 constant tokens that signal is
    # diluted and learning it took long and failed on some seeds, in a 12-token prompt it is quick and cheap.
    if mc.short_epochs > 0:
        short = Dataset.from_list(build_sft_rows(world.sft_items, tc, system=False))
        fit_sft(model, tokenizer, short, sft_config("short", mc.short_epochs, "none"))
    # Phase 2: the same targets behind the full elicitation prompt.
    dataset = Dataset.from_list(build_sft_rows(world.sft_items, tc))
    fit_sft(model, tokenizer, dataset, sft_config("trainer", mc.epochs, report_to))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _flexible(words: list[str]) -> str:
    # tokens separated by optional spaces; punctuation optional (the word tokenizer drops some marks as unknown)
    return r"\s*".join(re.escape(w) + ("?" if not w.isalnum() else "") for w in words)


def instruction_pattern() -> str:
    """A regex that matches calrl eval's elicitation instruction, lowercased, as typed or as decoded."""
    words = re.findall(r"\w+|[^\w\s]", ElicitationPrompt(scale="0-10").instruction().lower())
    return _flexible(words[:4]) + r"[\s\S]*?" + _flexible(words[-8:]) + r"\s*"


def reward_tokenizer(tokenizer: Any) -> Any:
    """The reward models' tokenizer: the policy's, whose normaliser deletes the elicitation instruction.

    The instruction is the same 100 tokens before every question. With it in front, a 2-layer reward model
    learnt which answers are right only slowly and unreliably (0.58-0.81 on held-out pairs after 3,500
    pairs, seed to seed); reading just the question and the answer it learns it from fewer pairs in a
    fraction of the time. The policy still reads the whole prompt; calrl's PPO re-tokenises what the
    reward model scores with the reward model's own tokenizer."""
    tokenizer.backend_tokenizer.normalizer = normalizers.Sequence([
        normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(instruction_pattern()), "")])
    return tokenizer


def save_reward_init(source: str | Path, out_dir: str | Path, *, seed: int) -> Path:
    """``source`` (a causal LM folder) as a one-output sequence classifier whose new score head is drawn from
    ``seed``, with the reward tokenizer (:func:`reward_tokenizer`), saved whole to ``out_dir``: the reward
    models start from it.

    ``calrl train-rm`` would otherwise draw the head when it loads the causal LM, from torch's default
    generator, whose seed differs in every process: two runs of the same recipe then trained different
    reward models (the demo's first source of run-to-run differences)."""
    torch.manual_seed(seed)
    tokenizer = reward_tokenizer(AutoTokenizer.from_pretrained(source))
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def main(argv: list[str] | None = None) -> int:
    """``python -m calrl.demo.sft``: the SFT stage as its own process (the study runs stages side by side)."""
    p = argparse.ArgumentParser(prog="python -m calrl.demo.sft", description=main.__doc__)
    p.add_argument("--world", required=True, help="JSON file of the WorldConfig")
    p.add_argument("--model", required=True, help="JSON file of the SFTModelConfig")
    p.add_argument("--out", required=True)
    p.add_argument("--wandb-dir", default=None)
    p.add_argument("--run-name", default=None)
    p.add_argument("--reward-init", default=None, metavar="DIR",
                   help="also save the trained policy as a sequence classifier with a seeded score head here")
    args = p.parse_args(argv)
    world = build_world(WorldConfig(**json.loads(Path(args.world).read_text())))
    model_config = SFTModelConfig(**json.loads(Path(args.model).read_text()))
    run = None
    if args.wandb_dir:
        run = init_wandb_run("calrl-demo", args.run_name, {"method": "sft", "model": vars(model_config)},
                             mode=os.environ.get("WANDB_MODE") or "offline", dir=args.wandb_dir,
                             tags=["demo", "sft"])
    try:
        train_sft(world, args.out, model_config=model_config, report_to="wandb" if run else "none",
                  run_name=args.run_name, show_progress=False)
    finally:
        if run is not None:
            run.finish()
    if args.reward_init:
        save_reward_init(args.out, args.reward_init, seed=model_config.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
