"""Chat format, answer tags, question templates (open and multiple choice) and the answer parser.

Typical use::

    from skinr1.prompts import AnswerFormat, build_messages, parse_completion, resolve_answer
    messages = build_messages("open")                       # system + user(image, question)
    parsed = parse_completion(completion_text)               # format check + answer fields
    node_id, reason = resolve_answer(parsed, resolver, "open")
"""

from __future__ import annotations

from skinr1.prompts.choice import (
    MAX_CORRECT_OPTIONS,
    ChoiceOption,
    correct_options,
    format_options,
    is_related,
    make_choice_options,
    options_from_labels,
)
from skinr1.prompts.format import (
    DEFAULT_FORMAT,
    MODES,
    OPTION_LETTERS,
    AnswerFormat,
    check_mode,
    system_prompt,
)
from skinr1.prompts.parser import ParsedCompletion, parse_completion, resolve_answer
from skinr1.prompts.templates import CHOICE_QUESTIONS, OPEN_QUESTIONS, build_messages, question_text

__all__ = [
    "CHOICE_QUESTIONS",
    "DEFAULT_FORMAT",
    "MAX_CORRECT_OPTIONS",
    "MODES",
    "OPEN_QUESTIONS",
    "OPTION_LETTERS",
    "AnswerFormat",
    "ChoiceOption",
    "ParsedCompletion",
    "build_messages",
    "check_mode",
    "correct_options",
    "format_options",
    "is_related",
    "make_choice_options",
    "options_from_labels",
    "parse_completion",
    "question_text",
    "resolve_answer",
    "system_prompt",
]
