"""`skinr1 reward`: presets, options and overrides; on hostile input it never eats its input, never
shifts lines and never scores silently."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from reward_helpers import good, tiny_resolver

import skinr1.cli.reward_cmd as reward_cmd
from skinr1.cli import main


@pytest.fixture(autouse=True)
def _tiny_taxonomy(monkeypatch):
    import skinr1.taxonomy

    resolver = tiny_resolver()
    monkeypatch.setattr(skinr1.taxonomy, "default_resolver", lambda: resolver)


def scored(label: str = "mel") -> str:
    return json.dumps({"completion": good("melanoma (malignant)"), "label": label, "source": "ham10000"})


def run(src: Path, dst: Path, *args: str) -> tuple[int, list[dict]]:
    code = main(["reward", "--input", str(src), "--output", str(dst), *args])
    out = [json.loads(line) for line in dst.read_text().splitlines()] if dst.exists() else []
    return code, out


def test_input_and_output_may_not_be_one_file(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(scored() + "\n")
    before = src.read_bytes()
    assert main(["reward", "--input", str(src), "--output", str(src)]) == 2
    link = tmp_path / "link.jsonl"
    os.symlink(src, link)
    assert main(["reward", "--input", str(src), "--output", str(link)]) == 2
    assert main(["reward", "--input", str(link), "--output", str(tmp_path / "." / "in.jsonl")]) == 2
    hard = tmp_path / "hard.jsonl"
    os.link(src, hard)
    assert main(["reward", "--input", str(hard), "--output", str(src)]) == 2
    assert src.read_bytes() == before
    assert "is the input file" in capsys.readouterr().err


def test_a_crash_leaves_the_previous_output_intact(tmp_path, monkeypatch):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join([scored()] * 5) + "\n")
    dst.write_text("previous results\n")
    calls = {"n": 0}
    real = reward_cmd.score_line

    def crash_on_third(line, scorer, resolver):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return real(line, scorer, resolver)

    monkeypatch.setattr(reward_cmd, "score_line", crash_on_third)
    with pytest.raises(RuntimeError):
        main(["reward", "--input", str(src), "--output", str(dst)])
    assert dst.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # no temporary left


def test_one_output_line_per_input_line_with_its_number(tmp_path):
    lines = [scored(), "", "   ", scored(), "{broken", scored()]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    code, out = run(src, tmp_path / "out.jsonl")
    assert code == 0 and [o["line"] for o in out] == [1, 2, 3, 4, 5, 6]
    assert [o["reward"] is None for o in out] == [False, True, True, False, True, False]
    assert out[3]["reward"] == out[0]["reward"] == 2.0


def test_a_deeply_nested_line_gets_an_error_record(tmp_path):
    lines = [scored()] * 14 + ["[" * 100_000 + "]" * 100_000, json.dumps({"label": "mel", "completion": [[[[1]]]] * 1}), scored()]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    code, out = run(src, tmp_path / "out.jsonl")
    assert code == 0 and len(out) == 17
    assert out[14]["reward"] is None and "nested" in out[14]["error"] and out[14]["line"] == 15
    assert out[16]["reward"] == 2.0


@pytest.mark.parametrize("record, reason", [
    ({"label": "mel"}, "missing 'completion'"),
    ({"label": "mel", "completion": None}, "missing 'completion'"),
    ({"label": "mel", "completion": 42}, "'completion' must be a string, got int"),
    ({"label": "mel", "completion": ["text"]}, "'completion' must be a string, got list"),
    ({"label": "mel", "completion": "x", "source": ["ham10000"]}, "'source' must be a string, got list"),
])
def test_a_missing_or_non_string_completion_is_an_error_not_zero(tmp_path, record, reason):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(record) + "\n")
    _, out = run(src, tmp_path / "out.jsonl")
    assert out == [{"line": 1, "reward": None, "error": f"line 1: {reason}"}]


def run_lines(tmp_path: Path, lines: list[str], *args: str) -> tuple[int, list[dict]]:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return run(src, tmp_path / "out.jsonl", *args)


def test_open_preset_scores_each_line_or_says_why(tmp_path, capsys):
    lines = [
        json.dumps({"completion": good("melanoma (malignant)"), "label": "mel", "source": "ham10000"}),
        "{not json",
        json.dumps({"completion": good("melanoma"), "label": "unk", "source": "ham10000"}),
        "",
        json.dumps({"completion": "junk", "label": "Psoriasis"}),
        json.dumps(["a list"]),
    ]
    code, out = run_lines(tmp_path, lines, "--preset", "open")
    # One output line per input line, blank ones included, each carrying its line number.
    assert code == 0 and len(out) == 6 and [o["line"] for o in out] == [1, 2, 3, 4, 5, 6]
    assert out[0]["reward"] == 2.0 and out[0]["reasons"][1] == "hierarchical:exact"
    assert out[1]["reward"] is None and out[1]["error"]
    assert out[2]["reward"] is None and out[2]["error"].startswith("line 3:") and "unk" in out[2]["error"]
    assert out[3]["reward"] is None and out[3]["error"] == "line 4: blank line"
    assert out[4]["reward"] == 0.0
    assert out[5]["reward"] is None
    assert "6 lines, 2 scored, 4 errors" in capsys.readouterr().err


def test_paper_preset_with_options_and_an_override(tmp_path):
    line = {"completion": good("B. melanoma (malignant)"), "label": "mel", "source": "ham10000",
            "options": ["A. malignant", "B. mel", "C. df", "D. vitiligo"]}
    code, out = run_lines(tmp_path, [json.dumps(line)], "--preset", "paper", "--override", "format_weight=0.5")
    assert code == 0 and out[0]["reward"] == pytest.approx(1.5)
    code, out = run_lines(tmp_path, [json.dumps({**line, "options": None})], "--preset", "paper")
    assert out[0]["reward"] is None and "options" in out[0]["error"]


def test_bad_arguments_exit_2(tmp_path):
    assert main(["reward", "--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o")]) == 2
    code, _ = run_lines(tmp_path, ["{}"], "--override", "colour=red")
    assert code == 2
