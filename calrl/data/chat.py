"""How a prompt (plain text or a conversation) becomes the text a model reads: one home for the rendering rule.

A conversation (a list of ``{"role", "content"}`` messages, system turns included) goes through the tokenizer's
own chat template with the generation prompt, as TRL's trainers render conversational prompts; plain text is
used as written. A tokenizer without a chat template reads a conversation as its contents, one per line (or is
refused, with ``require_template``).
"""

from __future__ import annotations

from typing import Any

from calrl.errors import InputError

Prompt = str | list[dict[str, Any]]


def is_conversation(prompt: Any) -> bool:
    """Whether ``prompt`` is a list of chat messages (dicts with a ``role``)."""
    return isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt)


def render_prompt(tokenizer: Any, prompt: Prompt, *, require_template: bool = False, line: int | None = None,
                  field: str | None = None) -> str:
    """The text of ``prompt`` up to where the assistant's answer starts.

    >>> render_prompt(None, "Q: 2+2?")
    'Q: 2+2?'
    """
    if isinstance(prompt, str):
        return prompt
    if not is_conversation(prompt):
        raise InputError(f"a prompt must be a string or a list of messages, got {type(prompt).__name__}",
                         line=line, field=field)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    if require_template:
        raise InputError("conversational prompts need a tokenizer with a chat template", line=line, field=field)
    return "\n".join(str(m.get("content", "")) for m in prompt) + "\n"
