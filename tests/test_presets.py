"""The README's table of the paper's recipe against this project's recommendation matches the two
preset files, cell by cell."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from skinr1.config.schema import load_run_config

ROOT = Path(__file__).resolve().parents[1]


def _value(config, dotted: str):
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def _cell(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _table_rows() -> list[tuple[str, str, str]]:
    rows = re.findall(r"^\| `([a-z_.]+)` \| ([^|]+) \| ([^|]+) \|", (ROOT / "README.md").read_text(), flags=re.M)
    return [(key, paper.strip(), recommended.strip()) for key, paper, recommended in rows]


ROWS = _table_rows()


def test_the_table_lists_the_settings_that_differ():
    assert len(ROWS) >= 10
    paper = load_run_config(ROOT / "skinr1/configs/paper.yaml")
    recommended = load_run_config(ROOT / "skinr1/configs/recommended.yaml")
    assert all(_value(paper, key) != _value(recommended, key) for key, _, _ in ROWS)


@pytest.mark.parametrize("key, paper, recommended", ROWS, ids=[row[0] for row in ROWS])
def test_each_row_matches_the_presets(key, paper, recommended):
    assert _cell(_value(load_run_config(ROOT / "skinr1/configs/paper.yaml"), key)) == paper
    assert _cell(_value(load_run_config(ROOT / "skinr1/configs/recommended.yaml"), key)) == recommended
