"""An evaluation prompt as data: a YAML file of the instruction, the question turn and the option lines.

``calrl eval --prompt-template FILE`` (recipes: ``eval.prompt_template``) asks every question with the file's
words instead of calrl's built-in prompts, so an evaluation protocol (the paper's among them: docs/fidelity.md
says which lines of its code to copy in) is reproduced without calrl shipping its text::

    system: |-                      # the instruction (the system turn); placeholders {answer_type} and {demo}
      ...
    user: "Question: {question}"    # the question turn; {question} is the question and its options block
    options_intro: "..."            # the line before a multiple-choice question's options
    option: "({letter}) {text}"     # one line per option
    answer_type:                    # what {answer_type} becomes, for a multiple-choice or an open question
      multiple_choice: "..."
      open: "..."
    demo:                           # what {demo} becomes (the example answer)
      multiple_choice: "..."
      open: "..."

Only ``system`` is required. ``{question}`` is the question, then, for a multiple-choice item, a newline, the
intro line and one ``option`` line per choice, each ending with a newline. A literal brace is written twice.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calrl.errors import ConfigError

KINDS = ("multiple_choice", "open")
PLACEHOLDERS = {
    "system": {"answer_type", "demo"},
    "user": {"question", "answer_type", "demo"},
    "options_intro": set(),
    "option": {"letter", "text"},
}


@dataclass(frozen=True)
class PromptTemplate:
    """The words of an evaluation prompt (see the module docstring); :func:`load_prompt_template` reads one."""

    system: str
    user: str = "Question: {question}"
    options_intro: str = "Options:"
    option: str = "{letter}. {text}"
    answer_type: dict[str, str] = field(default_factory=lambda: {"multiple_choice": "letter of the correct option",
                                                                 "open": "short answer"})
    demo: dict[str, str] = field(default_factory=lambda: {"multiple_choice": "B", "open": "42"})
    path: str | None = None

    def question_block(self, question: str, choices: list[str] | None, letters: str) -> str:
        if not choices:
            return question
        lines = "".join(self.option.format(letter=letters[i], text=c) + "\n" for i, c in enumerate(choices))
        intro = f"{self.options_intro}\n" if self.options_intro else ""
        return f"{question}\n{intro}{lines}"

    def fill(self, key: str, kind: str, **values: str) -> str:
        text = getattr(self, key)
        return text.format(answer_type=self.answer_type[kind], demo=self.demo[kind], **values)


def load_prompt_template(path: str | Path) -> PromptTemplate:
    """Read and check a template file: unknown keys and placeholders are one-line errors naming the line."""
    # lazy: calrl.config takes 5 ms to import, and this module is on calrl eval --help's path
    from calrl.config import load_yaml

    data = load_yaml(path)
    lines = data.pop("__lines__", {}) or {}
    where = str(path)
    allowed = {*PLACEHOLDERS, "answer_type", "demo"}
    for key in data:
        if key not in allowed:
            raise ConfigError(f"unknown key '{key}' (keys: {', '.join(sorted(allowed))})", path=where,
                              line=lines.get(key))
    if not isinstance(data.get("system"), str) or not data["system"].strip():
        raise ConfigError("missing key 'system' (the instruction text)", path=where)
    values: dict[str, Any] = {}
    for key, names in PLACEHOLDERS.items():
        if key not in data:
            continue
        if not isinstance(data[key], str):
            raise ConfigError(f"key '{key}' must be a string", path=where, line=lines.get(key))
        _check_placeholders(data[key], names, key, where, lines.get(key))
        values[key] = data[key]
    for key in ("answer_type", "demo"):
        if key not in data:
            continue
        given = data[key]
        if isinstance(given, dict):
            given = {k: v for k, v in given.items() if k != "__lines__"}
        if not isinstance(given, dict) or set(given) != set(KINDS) or not all(
                isinstance(v, (str, int, float)) for v in given.values()):
            raise ConfigError(f"key '{key}' must map {' and '.join(KINDS)} to a text", path=where,
                              line=lines.get(key))
        values[key] = {k: str(v) for k, v in given.items()}
    return PromptTemplate(**values, path=where)


def _check_placeholders(text: str, names: set[str], key: str, where: str, line: int | None) -> None:
    try:
        found = {field_name for _, field_name, _, _ in string.Formatter().parse(text) if field_name is not None}
    except ValueError as exc:
        raise ConfigError(f"key '{key}': {exc} (write a literal brace twice: {{{{ }}}})", path=where,
                          line=line) from None
    unknown = sorted(found - names)
    if unknown:
        allowed = ", ".join(f"{{{n}}}" for n in sorted(names)) or "none"
        raise ConfigError(f"key '{key}': unknown placeholder {{{unknown[0]}}} (allowed: {allowed}; a literal brace "
                          "is written twice)", path=where, line=line)
