"""The answer format: which tags wrap the reasoning and the final diagnosis, and the system prompt.

The paper's completions look like::

    <thinking>...</thinking>
    <final diagnosis>B. basal cell carcinoma (malignant)</final diagnosis>

The tag pair is configurable (e.g. ``think``/``answer``) so the same parser and rewards serve other
base models' habits; everything that writes or reads completions takes an `AnswerFormat`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

MODES = ("open", "choice")
"""Question modes: ``open`` asks for a free-text diagnosis, ``choice`` offers lettered options (paper)."""

OPTION_LETTERS = "ABCD"
"""Letters of multiple-choice options, in order; the paper offers four."""

LETTER_PREFIX = re.compile(rf"^\s*[\(\[]?[{OPTION_LETTERS}][\)\]\.:]\s*")
"""An option letter written before a diagnosis: "B. melanoma", "(B) melanoma", "B: melanoma"."""


@dataclass(frozen=True)
class AnswerFormat:
    """Tags that delimit a completion's reasoning and answer, and the parser's length limits."""

    reasoning_tag: str = "thinking"
    """Name of the reasoning tag: the completion starts with ``<reasoning_tag>...</reasoning_tag>``."""

    answer_tag: str = "final diagnosis"
    """Name of the answer tag that follows the reasoning block and holds the diagnosis."""

    max_answer_chars: int = 500
    """Longest answer block the parser accepts; a diagnosis is a few words, so longer is a failure
    ("answer_too_long") rather than something to search for disease names in."""

    max_completion_chars: int = 200_000
    """Longest completion the parser looks at (about 40x the paper's 1024-token cap); anything longer
    fails as "completion_too_long" so one runaway sample cannot slow a whole batch."""

    def __post_init__(self) -> None:
        for field_name in ("reasoning_tag", "answer_tag"):
            tag = getattr(self, field_name)
            if not isinstance(tag, str) or not tag.strip() or any(c in tag for c in "<>/\n"):
                raise ValueError(f"{field_name} must be a non-empty tag name without '<', '>', '/' or newlines: {tag!r}")
        if self.reasoning_tag == self.answer_tag:
            raise ValueError("reasoning_tag and answer_tag must differ")
        if self.max_answer_chars <= 0 or self.max_completion_chars <= 0:
            raise ValueError("max_answer_chars and max_completion_chars must be positive")

    @cached_property  # read per completion: build the string once
    def reasoning_open(self) -> str:
        return f"<{self.reasoning_tag}>"

    @cached_property
    def reasoning_close(self) -> str:
        return f"</{self.reasoning_tag}>"

    @cached_property
    def answer_open(self) -> str:
        return f"<{self.answer_tag}>"

    @cached_property
    def answer_close(self) -> str:
        return f"</{self.answer_tag}>"

    def render(self, reasoning: str, diagnosis: str, malignancy: str | None = None, letter: str | None = None) -> str:
        """A well-formed completion; what trajectories write and tests feed the parser."""
        answer = f"{letter}. {diagnosis}" if letter else diagnosis
        if malignancy:
            answer = f"{answer} ({malignancy})"
        return f"{self.reasoning_open}{reasoning}{self.reasoning_close}\n{self.answer_open}{answer}{self.answer_close}"


DEFAULT_FORMAT = AnswerFormat()


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown question mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode


def system_prompt(fmt: AnswerFormat = DEFAULT_FORMAT, mode: str = "open") -> str:
    """The system message: role, the two-block answer format, and the malignancy suffix."""
    check_mode(mode)
    if mode == "choice":
        answer_rule = (
            "In the answer block, write the letter of the option you choose, a period, the option's "
            "diagnosis, then its malignancy class in parentheses."
        )
        example = fmt.render("...", "basal cell carcinoma", "malignant", letter="B")
    else:
        answer_rule = (
            "In the answer block, write the single most specific diagnosis you can support, then its "
            "malignancy class in parentheses."
        )
        example = fmt.render("...", "basal cell carcinoma", "malignant")
    return (
        "You are a dermatologist. Examine the skin image and reason step by step: describe the "
        "morphology, place the lesion in the disease hierarchy from broad category to specific "
        "disease, and weigh the differential diagnoses before settling on one.\n"
        f"Write your reasoning inside {fmt.reasoning_open}{fmt.reasoning_close}, then your answer "
        f"inside {fmt.answer_open}{fmt.answer_close}, and nothing else.\n"
        f"{answer_rule} The malignancy class is one of: benign, precancerous, malignant, non-neoplastic.\n"
        f"Example:\n{example}"
    )
