"""`skinr1 ablate`: the variants file, where each variant trains, and which pairs the report compares."""

from __future__ import annotations

from pathlib import Path

import pytest

from skinr1.config.schema import load_run_config
from skinr1.pipeline.ablation import comparison_pairs, load_variants

CONFIGS = Path(__file__).resolve().parents[1] / "skinr1" / "configs"


def test_shipped_variants_load_and_each_makes_a_valid_config(tmp_path):
    variants = load_variants(CONFIGS / "ablations.yaml")
    assert list(variants) == ["hierarchical", "binary", "choice", "no_sft"]
    assert variants["hierarchical"] == []
    for name, overrides in variants.items():
        config = load_run_config(CONFIGS / "demo.yaml", [f"run_dir={tmp_path}", *overrides, *([f"variant={name}"] if overrides else [])])
        expected = tmp_path / "rl" if not overrides else tmp_path / "ablations" / name / "rl"
        assert config.rl_dir == expected.resolve()
        assert config.sft_dir == (tmp_path / "sft").resolve()  # the warm start is shared
    binary = load_run_config(CONFIGS / "demo.yaml", variants["binary"])
    assert binary.reward.partial_credit is False


@pytest.mark.parametrize("text, message", [
    ("variants: {}", "at least one variant"),
    ("[1, 2]", "expected a mapping"),
    ("variants: {a: [reward.partial_credit]}", "key=value"),
    ("variants: {a: 3}", "key=value"),
])
def test_bad_variants_files_are_refused(tmp_path, text, message):
    path = tmp_path / "variants.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_variants(path)


def test_variant_names_cannot_escape_the_run_directory():
    with pytest.raises(ValueError, match="plain name"):
        load_run_config(CONFIGS / "demo.yaml", ["variant=../elsewhere"])


def test_each_variant_is_compared_with_sft_and_with_the_first_variant():
    assert comparison_pairs(["hierarchical", "binary", "no_sft"]) == [
        ("sft", "hierarchical"), ("sft", "binary"), ("sft", "no_sft"),
        ("hierarchical", "binary"), ("hierarchical", "no_sft"),
    ]


def test_only_takes_a_list_and_leaves_the_overrides_alone():
    from skinr1.cli import build_parser

    args = build_parser().parse_args(["ablate", "--variants", "v.yaml", "--only", "hierarchical,binary", "run_dir=runs/x"])
    assert args.only == ["hierarchical", "binary"] and args.overrides == ["run_dir=runs/x"]
