"""One question per dataset record: chat messages, rendered prompt text and choice options.

Shared by evaluation and GRPO rollout so that both ask exactly what SFT taught. Choice options are
seeded by the record id, so the same record always gets the same options.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from skinr1.prompts.choice import ChoiceOption, make_choice_options
from skinr1.prompts.format import DEFAULT_FORMAT, AnswerFormat, check_mode
from skinr1.prompts.templates import build_messages


@dataclass(frozen=True)
class Question:
    """What the policy is asked about one record."""

    record_id: str
    image: str
    label: str
    """Ground-truth node id."""
    mode: str
    prompt: str
    """Chat-formatted prompt text with one unexpanded image placeholder."""
    options: tuple[ChoiceOption, ...] = field(default_factory=tuple)


def record_seed(seed: int, record_id: str) -> int:
    digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def question_messages(
    mode: str,
    options: Sequence[ChoiceOption] | None,
    fmt: AnswerFormat,
    include_system_prompt: bool,
    question_variant: int,
) -> list[dict]:
    messages = build_messages(mode, options, fmt, question_variant)
    return messages if include_system_prompt else messages[1:]


def make_question(
    tokenizer,
    record_id: str,
    image: str,
    label: str,
    mode: str,
    taxonomy=None,
    distractor_pool: Iterable[str] = (),
    fmt: AnswerFormat = DEFAULT_FORMAT,
    include_system_prompt: bool = True,
    seed: int = 0,
) -> Question:
    """Build the question for one record (choice mode needs the taxonomy and a distractor pool)."""
    rng = random.Random(record_seed(seed, record_id))
    options: tuple[ChoiceOption, ...] = ()
    if check_mode(mode) == "choice":
        if taxonomy is None:
            raise ValueError("choice questions need the taxonomy")
        options = tuple(make_choice_options(taxonomy, label, sorted(set(distractor_pool)), rng))
    messages = question_messages(mode, options, fmt, include_system_prompt, question_variant=rng.randrange(1 << 16))
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return Question(record_id, image, label, mode, prompt, options)
