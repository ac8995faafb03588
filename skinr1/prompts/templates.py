"""Question templates and chat messages in Hugging Face format (image first, then the text).

The image itself is attached by the caller (processor / vLLM multi-modal data); the messages only
carry the ``{"type": "image"}`` placeholder, so they serialise to JSON and hash stably.
"""

from __future__ import annotations

from typing import Sequence

from skinr1.prompts.choice import ChoiceOption, format_options
from skinr1.prompts.format import DEFAULT_FORMAT, AnswerFormat, check_mode, system_prompt

OPEN_QUESTIONS = (
    "What is the diagnosis of the skin condition shown in this image?",
    "Examine this skin image. What is the most likely diagnosis?",
    "Based on the clinical appearance in this image, which skin disease is this?",
)
"""Open-mode phrasings; several so the policy does not overfit one wording."""

CHOICE_QUESTIONS = (
    "What is the diagnosis of the skin condition shown in this image? Choose one option.",
    "Examine this skin image and choose the best diagnosis from the options below.",
    "Which of the following options best describes the lesion in this image?",
)
"""Multiple-choice phrasings; the lettered options are appended to each."""


def question_text(mode: str, options: Sequence[ChoiceOption] | None = None, question_variant: int = 0) -> str:
    """The user turn's text for `mode`; `question_variant` indexes the phrasings (wrapping around)."""
    check_mode(mode)
    if not isinstance(question_variant, int) or question_variant < 0:
        raise ValueError(f"question_variant must be a non-negative int, got {question_variant!r}")
    if mode == "open":
        return OPEN_QUESTIONS[question_variant % len(OPEN_QUESTIONS)]
    if not options:
        raise ValueError("choice mode needs options")
    return f"{CHOICE_QUESTIONS[question_variant % len(CHOICE_QUESTIONS)]}\nOptions:\n{format_options(options)}"


def build_messages(
    mode: str,
    options: Sequence[ChoiceOption] | None = None,
    fmt: AnswerFormat = DEFAULT_FORMAT,
    question_variant: int = 0,
) -> list[dict]:
    """System + user messages; the user content is ``[{"type": "image"}, {"type": "text", ...}]``."""
    return [
        {"role": "system", "content": [{"type": "text", "text": system_prompt(fmt, mode)}]},
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "text", "text": question_text(mode, options, question_variant)},
            ],
        },
    ]
