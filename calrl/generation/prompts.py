"""Confidence-elicitation prompts: turn an EvalItem into chat messages or a rendered prompt string.

The system instruction follows the style of the PPO-M / PPO-C work (Leng et al., arXiv 2410.09724):
the model answers, then ends its response with ``Confidence: N`` on a stated scale. Abstaining with
"I don't know" is allowed explicitly, so abstention can be measured as its own outcome.

Variants:

* ``scale``: ``"0-10"`` (``Confidence: 8``), ``"percent"`` (``Confidence: 80%``) or ``"unit"``
  (``Confidence: 0.8``); the forms ``calrl.confidence.parse_confidence`` reads.
* ``reasons_first``: ask for one or two sentences of reasoning before the answer, which is then given
  on its own line as ``Answer: ...`` (a "reason, then answer, then confidence" prompt).
* ``style``: ``"calrl"`` (the instruction below), ``"standard"`` or ``"cot"``: the two evaluation prompts
  of the paper's code (methods.md section 9), in calrl's own words: ``standard`` asks for only the answer
  (an option letter or a number, with an example) and the confidence on a 0-10 scale, in a fixed
  two-line ``Answer:`` / ``Confidence:`` format; ``cot`` asks for ``Explanation:``, then ``Answer:``,
  then ``Confidence:``. Both always use the 0-10 scale.
* ``template``: a :class:`~calrl.generation.prompt_template.PromptTemplate` (``--prompt-template FILE``): the
  instruction, question turn and option lines from a file, e.g. the paper's own words (docs/fidelity.md);
  ``option_format`` (``"({letter}) {text}"``) sets the option lines with or without one.
* ``distractor``: the misleading-hint probe of Xiong et al. 2024 (arXiv 2306.13063): the user message
  mentions a plausible wrong answer ("I think the answer might be (C) ..., but I'm not sure."), which
  tests whether stated confidence holds up under a suggestion. The wrong answer is a wrong option for
  multiple-choice items, or the reference plus or minus a small integer for numeric answers; for other
  open-ended items no wrong answer is known and the message is left unchanged. The choice is seeded
  by the item id, so it is the same on every run.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from calrl.confidence.parse import DEFAULT_SCALE, SCALES
from calrl.data.heldout import LETTERS, EvalItem
from calrl.errors import InputError
from calrl.generation.prompt_template import PromptTemplate

#: The prompt styles (the type that configs annotate, its names) and the one used when none is named.
PromptStyle = Literal["calrl", "standard", "cot"]
PROMPT_STYLES: tuple[str, ...] = get_args(PromptStyle)
DEFAULT_PROMPT_STYLE: PromptStyle = "calrl"
#: What counts as an answer without a confidence when answers are asked again (the retry rule of
#: :mod:`calrl.generation.generate`): the reader reads none, or the paper's test. Here, not there, so that
#: the CLI's parser and the recipes read them without torch.
RetryWhen = Literal["parsed", "reference"]
RETRY_RULES: tuple[str, ...] = get_args(RetryWhen)
DEFAULT_RETRY_WHEN: RetryWhen = "parsed"
_CONFIDENCE_LINE = ("Confidence: <a whole number from 0 to 10: how sure you are that your answer is correct, "
                    "0 = surely wrong, 10 = surely right>")
_REFERENCE_STYLE = {
    "standard": ("Give only your final answer, nothing else: for a multiple-choice question the letter of the "
                 "option (for example 'Answer: B'), for a numeric question the number (for example "
                 "'Answer: 42'). Reply in exactly two lines:\nAnswer: <your answer>\n" + _CONFIDENCE_LINE
                 + "\nKeep to this format and write the words 'Answer:' and 'Confidence:'."),
    "cot": ("Think the question through step by step before answering. Reply in exactly this format:\n"
            "Explanation: <your step-by-step reasoning>\nAnswer: <the option letter for a multiple-choice "
            "question, the number for a numeric question>\n" + _CONFIDENCE_LINE
            + "\nKeep to this format and write the words 'Explanation:', 'Answer:' and 'Confidence:'."),
}
_SCALE_TEXT = {
    "0-10": ("'Confidence: N', where N is an integer from 0 to 10 (0 = surely wrong, 10 = surely right)",
             "Confidence: 8"),
    "percent": (("'Confidence: N%', where N is an integer from 0 to 100 (0% = surely wrong, "
                "100% = surely right)"), "Confidence: 80%"),
    "unit": ("'Confidence: P', where P is a number between 0 and 1 (0 = surely wrong, 1 = surely right)",
             "Confidence: 0.8"),
}


@dataclass
class ElicitationPrompt:
    """A confidence-elicitation prompt; ``system_prompt`` replaces the built-in instruction."""

    scale: str = DEFAULT_SCALE
    reasons_first: bool = False
    distractor: bool = False
    system_prompt: str | None = None
    style: str = DEFAULT_PROMPT_STYLE
    template: PromptTemplate | None = None
    option_format: str | None = None

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise InputError(f"unknown confidence scale '{self.scale}' (choose from {', '.join(SCALES)})")
        if self.style not in PROMPT_STYLES:
            raise InputError(f"unknown prompt style '{self.style}' (choose from {', '.join(PROMPT_STYLES)})")
        if self.option_format is not None:
            check_option_format(self.option_format)

    def instruction(self, item: EvalItem | None = None) -> str:
        """The system message: how to answer, how to abstain, how to state confidence (a template's words are
        filled for ``item``'s kind: multiple choice or open)."""
        if self.system_prompt is not None:
            return self.system_prompt
        if self.template is not None:
            return self.template.fill("system", _kind(item))
        if self.style in _REFERENCE_STYLE:
            return _REFERENCE_STYLE[self.style]
        form, example = _SCALE_TEXT[self.scale]
        if self.reasons_first:
            how = ("First explain your reasoning briefly, in one or two sentences. Then give your final answer "
                   "on its own line as 'Answer: <answer>' (for a multiple-choice question, the option letter).")
        else:
            how = ("Give your answer directly and concisely, without explanation (for a multiple-choice "
                   "question, the option letter).")
        return (
            "Answer the question. " + how + " If you do not know the answer, say \"I don't know\" instead "
            "of guessing. Then rate how likely your answer is to be correct: end your response with "
            f"{form}, for example '{example}'."
        )

    def user_message(self, item: EvalItem) -> str:
        """The question, its options as letters, and the distractor hint when enabled."""
        if self.template is not None:
            template = self.template if self.option_format is None else replace(self.template,
                                                                                option=self.option_format)
            block = template.question_block(item.question, list(item.choices or []), LETTERS)
            parts = [template.fill("user", _kind(item), question=block)]
        else:
            parts = [f"Question: {item.question}"]
        if item.choices and self.template is None:
            form = self.option_format or "{letter}. {text}"
            parts.append("Options:\n" + "\n".join(form.format(letter=LETTERS[i], text=c)
                                                   for i, c in enumerate(item.choices)))
        if self.distractor and (hint := distractor_hint(item)) is not None:
            parts.append(f"I think the answer might be {hint}, but I'm not sure.")
        return "\n".join(parts)

    def build_messages(self, item: EvalItem) -> list[dict[str, str]]:
        """Chat messages: the elicitation instruction as system message, then the question."""
        return [
            {"role": "system", "content": self.instruction(item)},
            {"role": "user", "content": self.user_message(item)},
        ]

    def render(self, tokenizer: Any, item: EvalItem) -> str:
        """The prompt string through the tokenizer's chat template (generation prompt added).

        A template that rejects the system role gets the instruction at the head of the user message;
        a tokenizer without a chat template gets a plain ``instruction / question / Response:`` prompt.
        """
        messages = self.build_messages(item)
        if getattr(tokenizer, "chat_template", None):
            try:
                return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception as exc:
                if "system" not in str(exc).lower():
                    raise
                merged = [{"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}]
                return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
        return f"{messages[0]['content']}\n\n{messages[1]['content']}\n\nResponse:"


def _kind(item: EvalItem | None) -> str:
    return "multiple_choice" if item is not None and item.choices else "open"


def check_option_format(form: str) -> str:
    """An option-line format with ``{letter}`` and ``{text}`` (InputError otherwise)."""
    try:
        form.format(letter="A", text="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(f"option format {form!r}: use the placeholders {{letter}} and {{text}} ({exc})") from None
    return form


def distractor_hint(item: EvalItem) -> str | None:
    """A plausible wrong answer for ``item`` (seeded by its id), or None when none is known."""
    rng = random.Random(f"distractor:{item.id}")
    if item.choices:
        correct = _correct_choice(item)
        if correct is None:
            return None
        wrong = [i for i in range(len(item.choices)) if i != correct]
        i = rng.choice(wrong)
        return f"({LETTERS[i]}) {item.choices[i]}"
    numbers = [r for r in item.reference if re.fullmatch(r"-?\d+", r.strip())]
    if numbers:
        value = int(numbers[0])
        refs = {r.strip() for r in item.reference}
        options = [value + d for d in (-2, -1, 1, 2) if str(value + d) not in refs and value + d >= 0]
        return str(rng.choice(options)) if options else None
    return None


def _correct_choice(item: EvalItem) -> int | None:
    """Index of the correct option: a reference letter, else a reference equal to an option's text."""
    assert item.choices is not None
    for ref in item.reference:
        ref = ref.strip()
        if len(ref) == 1 and ref.upper() in LETTERS[: len(item.choices)]:
            return LETTERS.index(ref.upper())
    texts = [c.strip().lower() for c in item.choices]
    for ref in item.reference:
        if ref.strip().lower() in texts:
            return texts.index(ref.strip().lower())
    return None
