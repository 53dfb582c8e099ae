"""A short supervised fit of a tiny policy to calrl's answer format (the ``model.tiny.warmup_steps`` key).

A randomly initialised tiny model almost never states a confidence, so the PPO-C adjustment and the
calibration eval would have nothing to read. This fits it for a few steps on
``prompt + "<reference> . confidence: N" + EOS`` (N cycled through ``confidences``), loss on the response
tokens only, on the model's own device (the accelerator when there is one), with its progress shown
(:func:`calrl.progress.progress`: a bar in a terminal, lines in a log).
"""

from __future__ import annotations

from typing import Any

import torch

from calrl.progress import progress


def warm_up_tiny_policy(model: Any, tokenizer: Any, prompts: list[str], references: list[Any], *, steps: int,
                        learning_rate: float, confidences: list[int], seed: int = 0, batch_size: int = 16,
                        show_progress: bool = True) -> Any:
    """Fit ``model`` for ``steps`` AdamW steps on the formatted answers; returns the model (trained in place).
    ``show_progress``: show the steps (the main process of a launch)."""
    if steps <= 0 or not prompts:
        return model
    device = next(model.parameters()).device
    rows = []
    for i, (prompt, ref) in enumerate(zip(prompts, references)):
        answer = ref[0] if isinstance(ref, list) and ref else str(ref)
        response = f"{answer} . confidence: {confidences[i % len(confidences)]}"
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((p_ids + r_ids, [-100] * len(p_ids) + r_ids))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids, _ in rows], device=device)
    labels = torch.tensor([[-100] * (width - len(lab)) + lab for _, lab in rows], device=device)
    lengths = torch.tensor([len(i) for i, _ in rows], device=device)
    attention = (torch.arange(width, device=device)[None, :] >= (width - lengths)[:, None]).long()
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # left padding: positions as generate() computes them
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    batch = min(batch_size, len(rows))
    for _ in progress(range(steps), desc="warm-up of the tiny policy", unit="step", disable=not show_progress):
        idx = torch.randperm(len(rows), generator=generator)[:batch].to(device)
        loss = model(input_ids=input_ids[idx], attention_mask=attention[idx], position_ids=positions[idx],
                     labels=labels[idx]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model
