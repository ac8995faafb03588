"""The GRPO prompt stream: a checkpoint's cursor continues the same prompts, the probe prompts stay
fixed while the stream moves on, and unmapped labels are left out before any prompt is built."""

from __future__ import annotations

import logging

import pytest
from PIL import Image

from skinr1.data.records import Record, write_jsonl
from skinr1.pipeline.prompt_budget import PromptBudget
from skinr1.pipeline.rl_prompts import PromptStream, mapped_records

LABELS = ["melanoma", "dermatofibroma", "lipoma", "cherry_angioma", "pyogenic_granuloma"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("rl-prompts")
    records = []
    for index, label in enumerate(LABELS * 2):
        path = root / f"lesion_{index}.png"
        Image.new("RGB", (56, 56), (120 + index, 90, 80)).save(path)
        records.append(Record(f"synthetic:{index}", str(path), label, 3, "synthetic", label))
    records.append(Record("synthetic:unmapped", str(root / "lesion_0.png"), None, None, "synthetic", "made-up-dermatosis"))
    write_jsonl(root / "sparse.jsonl", records)
    return str(root / "sparse.jsonl")


@pytest.fixture(scope="module")
def budget(tiny_model_dir):
    from skinr1.models.settings import PolicySettings

    settings = PolicySettings()
    return PromptBudget(settings.load_processor(tiny_model_dir), settings, max_model_len=4096)


def _stream(manifest, budget, taxonomy, **options) -> PromptStream:
    return PromptStream(mapped_records(manifest, taxonomy), budget, "choice", taxonomy, seed=3, **options)


def test_mapped_records_leave_out_unmapped_labels_and_say_so(manifest, taxonomy, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        records = mapped_records(manifest, taxonomy)
    assert len(records) == 2 * len(LABELS) and "synthetic:unmapped" not in {r.record_id for r in records}
    assert "1 of 11 records have no label on the taxonomy" in caplog.text
    write_jsonl(tmp_path / "none.jsonl", [Record("x:1", "x.png", None, None, "synthetic", "made-up")])
    with pytest.raises(ValueError, match="has no record with a mapped label"):
        mapped_records(str(tmp_path / "none.jsonl"), taxonomy)


def test_a_stream_continued_from_a_cursor_draws_the_same_prompts(manifest, budget, taxonomy):
    whole = _stream(manifest, budget, taxonomy)
    first, rest = whole.next_requests(7), whole.next_requests(6)
    continued = _stream(manifest, budget, taxonomy, cursor=7)
    again = continued.next_requests(6)
    assert [(r.prompt_id, r.prompt, r.image, r.metadata) for r in again] == \
        [(r.prompt_id, r.prompt, r.image, r.metadata) for r in rest]
    assert whole.cursor == continued.cursor == 13
    # One epoch visits every record once; the prompt id names the stream position and the record.
    epoch = [r.metadata["record_id"] for r in (first + rest)[:10]]
    assert sorted(epoch) == sorted(f"synthetic:{i}" for i in range(10))
    assert [r.prompt_id.split(":", 1)[0] for r in first] == [str(i) for i in range(7)]
    assert all(r.metadata["label"] in LABELS and r.metadata["options"] for r in first)


def test_probe_prompts_stay_fixed_while_the_stream_moves_on(manifest, budget, taxonomy):
    stream = _stream(manifest, budget, taxonomy)
    before = stream.probe_requests(4)
    stream.next_requests(5)
    after = stream.probe_requests(4)
    assert [(r.prompt_id, r.prompt) for r in after] == [(r.prompt_id, r.prompt) for r in before]
    assert len(before) == 4 and all(r.prompt_id.startswith("probe:synthetic:") for r in before)
    assert len(stream.probe_requests(50)) == 2 * len(LABELS)  # capped at the manifest's size
