"""Prompts that do not fit the engines' context are skipped and counted, never sent to vLLM.

vLLM rejects a prompt of max_model_len tokens or more (it must generate at least one token), and
inside a batched `generate` that rejection raises and ends the job. Image tokens dominate a prompt
(Qwen2.5-VL: one per 28x28 pixels after resizing), so the count needs the image's size: its header
is read, never its pixels. `oversized_prompt` is the pure rule; `PromptBudget` applies it to
records and keeps the count that the GRPO metrics and the evaluation report show.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


def oversized_prompt(record_id: str, prompt_tokens: int, max_model_len: int) -> str | None:
    """Why this prompt cannot be sent (a message naming the record), or None when it fits."""
    if max_model_len < 1:
        raise ValueError(f"max_model_len must be >= 1, got {max_model_len}")
    if prompt_tokens < max_model_len:
        return None
    return (
        f"record {record_id}: its prompt is {prompt_tokens} tokens (text + image) and the engines' "
        f"max_model_len is {max_model_len} (room for at least one generated token is needed); skipped. "
        "Lower model.max_pixels or raise rl.rollout.max_model_len."
    )


@dataclass
class PromptBudget:
    """Counts prompts against max_model_len with the policy's processor and pixel bounds."""

    processor: object
    """The policy's processor, loaded through `PolicySettings.load_processor` (its bounds count)."""
    settings: object
    """The run's `PolicySettings`."""
    max_model_len: int
    """Context length of the engines."""
    skipped: list[str] = field(default_factory=list)
    """Record ids skipped so far."""

    def prompt_tokens(self, prompt: str, image: str) -> int:
        from skinr1.data.images import image_size
        from skinr1.models.settings import prompt_token_count

        return prompt_token_count(self.processor, self.settings, prompt, image_size(image))

    def fits(self, record_id: str, prompt: str, image: str) -> bool:
        """True when the prompt fits; otherwise (too long, or an image whose header cannot be read)
        log why, count the record and return False."""
        from skinr1.data.images import ImageError

        try:
            problem = oversized_prompt(record_id, self.prompt_tokens(prompt, image), self.max_model_len)
        except ImageError as error:
            problem = f"record {record_id}: its image cannot be used ({error}); skipped."
        if problem is None:
            return True
        if record_id not in self.skipped:  # an epoch later the same record says nothing new
            log.warning(problem)
            self.skipped.append(record_id)
        return False
