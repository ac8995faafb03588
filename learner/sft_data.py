"""Turning SFT records (chat messages + image path) into model inputs with assistant-only labels.

Each record of the trajectory set is `{"id", "image", "messages": [...], "metadata": {...}}`, the
last message being the assistant's reasoning and answer. The loss covers the assistant's tokens only:
the prompt (system, question, image placeholder tokens) is labelled -100.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IGNORE_INDEX = -100


class SFTDataError(ValueError):
    """A record of the SFT set is unusable (missing fields, unreadable image, too long)."""


@dataclass(frozen=True)
class SFTRecord:
    """One supervised example."""

    id: str
    image: str
    messages: list[dict[str, Any]]


def read_sft_records(path: str | Path) -> list[SFTRecord]:
    """Read the trajectory JSONL, with a clear error naming the line of any malformed record."""
    records: list[SFTRecord] = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                messages = row["messages"]
                if not messages or messages[-1]["role"] != "assistant":
                    raise SFTDataError("the last message must be the assistant's")
                records.append(SFTRecord(id=str(row["id"]), image=str(row["image"]), messages=messages))
            except (json.JSONDecodeError, KeyError, TypeError, SFTDataError) as error:
                raise SFTDataError(f"{path}:{line_number}: malformed SFT record ({error})") from None
    if not records:
        raise SFTDataError(f"{path} holds no SFT records")
    return records


def _assistant_text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(item.get("text", "") for item in content if item.get("type") == "text")


def encode_record(
    processor,
    record: SFTRecord,
    max_length: int,
    settings=None,
) -> dict[str, Any]:
    """Tokenise one record; returns input_ids/labels (lists) and the image tensors. `settings`
    (`PolicySettings`) resizes the image as every other stage does (None: unresized)."""
    from skinr1.models.settings import PolicySettings

    settings = settings or PolicySettings()
    try:
        image = settings.load_image(record.image)
    except (OSError, ValueError) as error:
        raise SFTDataError(f"record {record.id}: image {record.image}: {error}") from None
    prompt_messages = record.messages[:-1]
    prompt_text = processor.apply_chat_template(prompt_messages, add_generation_prompt=True, tokenize=False)
    # The chat template closes each turn with <|im_end|>\n; the model must learn to emit im_end.
    completion_text = _assistant_text(record.messages[-1]) + "<|im_end|>"
    prompt = processor(text=[prompt_text], images=[image], return_tensors="pt")
    completion_ids = processor.tokenizer(completion_text, add_special_tokens=False)["input_ids"]
    prompt_ids = prompt["input_ids"][0].tolist()
    if len(prompt_ids) + len(completion_ids) > max_length:
        raise SFTDataError(
            f"record {record.id}: {len(prompt_ids)} prompt + {len(completion_ids)} completion tokens "
            f"exceed max_length {max_length}"
        )
    return {
        "input_ids": prompt_ids + completion_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + completion_ids,
        # Marks image tokens: without it Qwen2.5-VL silently falls back to 1-D positions in training
        # while vLLM and generate() use 3-D (mRoPE) positions, and the model never learns to look.
        "mm_token_type_ids": prompt["mm_token_type_ids"][0].tolist() + [0] * len(completion_ids),
        "pixel_values": prompt["pixel_values"],
        "image_grid_thw": prompt["image_grid_thw"],
    }


def collate(examples: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Right-pad token sequences; concatenate image patches (Qwen-VL's flat pixel_values layout)."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    token_types = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example["input_ids"])
        input_ids[row, :length] = torch.tensor(example["input_ids"])
        labels[row, :length] = torch.tensor(example["labels"])
        attention_mask[row, :length] = 1
        token_types[row, :length] = torch.tensor(example["mm_token_type_ids"])
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention_mask,
        "mm_token_type_ids": token_types,
        "pixel_values": torch.cat([e["pixel_values"] for e in examples]),
        "image_grid_thw": torch.cat([e["image_grid_thw"] for e in examples]),
    }
