"""The template writer and the in-process build on the synthetic demo (the acceptance criteria)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from skinr1.config.loader import ConfigError, load_config
from skinr1.data.records import Record
from skinr1.prompts import parse_completion
from skinr1.trajectories import TrajectoriesConfig, run
from skinr1.trajectories.build import make_job
from skinr1.trajectories.context import build_context
from skinr1.trajectories.ddx import are_neighbours
from skinr1.trajectories.kinds import RANDOM_DDX_TYPES, TRAJECTORY_TYPES
from skinr1.trajectories.verify import verify_completion
from skinr1.trajectories.writers_template import TemplateWriter

DEMO_LEAVES = (
    "melanoma", "melanocytic_nevus", "basal_cell_carcinoma", "squamous_cell_carcinoma",
    "seborrheic_keratosis", "dermatofibroma", "psoriasis", "vitiligo",
)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from skinr1.data.synthetic import synthesize

    out = tmp_path_factory.mktemp("synthetic")
    synthesize(out, scale=0.1)
    return out


@pytest.fixture(scope="module")
def context():
    return build_context(TrajectoriesConfig())


def _jobs(context, config, kind):
    for t in TRAJECTORY_TYPES:
        setattr(config.types, t, float(kind == t))
    return [
        make_job(Record(f"r:{leaf}:{i}", "x.png", leaf, 3, "synthetic", leaf), config, context)
        for leaf in DEMO_LEAVES
        for i in range(6)
    ]


@pytest.mark.parametrize("kind", TRAJECTORY_TYPES)
def test_template_trajectories_are_short_varied_and_state_malignancy(context, kind):
    config = TrajectoriesConfig()
    writer = TemplateWriter(context, seed=0)
    jobs = _jobs(context, config, kind)
    texts = [g.completion for g in writer.generate(jobs)]
    assert texts == [g.completion for g in TemplateWriter(context, seed=0).generate(jobs)]  # deterministic
    assert texts != [g.completion for g in TemplateWriter(context, seed=1).generate(jobs)]
    for job, text in zip(jobs, texts):
        parsed = parse_completion(text)
        assert parsed.format_ok
        assert parsed.stated_malignancy == context.taxonomy.malignancy(job.node_id)
        assert 30 <= len(parsed.reasoning.split()) <= 90, text
        if kind != "direct":
            assert context.taxonomy.node(job.plan.differential).name in parsed.reasoning.lower()
    # Several phrasings: the first sentences of one disease's trajectories differ.
    openings = Counter(t.split(".")[0].split(":")[0].split()[1] for t in texts)
    assert len(openings) >= 3


@pytest.mark.parametrize("kind", RANDOM_DDX_TYPES)
def test_random_ddx_trajectories_pass_verification(context, kind):
    jobs = _jobs(context, TrajectoriesConfig(), kind)
    for job, generation in zip(jobs, TemplateWriter(context, seed=0).generate(jobs)):
        x = job.plan.differential
        assert job.plan.trajectory_type == kind and not are_neighbours(context.graph, job.node_id, x)
        verdict = verify_completion(generation.completion, job.node_id, kind, context.taxonomy, context.graph,
                                    context.matcher, context.fmt, x)
        assert verdict.ok and x in verdict.cited_differentials, (verdict, generation.completion)
        reasoning = parse_completion(generation.completion).reasoning.lower()
        name, x_name = context.taxonomy.node(job.node_id).name, context.taxonomy.node(x).name
        if kind == "random_ddx_switch":  # first impression the differential, conclusion the truth
            assert reasoning.index(x_name) < reasoning.rindex(name) and reasoning.rstrip(".").endswith(name)


def test_random_ddx_retrieval_covers_the_differential(context):
    config = TrajectoriesConfig(top_k=1000)
    for job in _jobs(context, config, "random_ddx_keep"):
        assert job.plan.differential in {r.node_id for r in job.retrieved}


def test_build_on_the_dense_demo_verifies_every_record(synthetic, tmp_path):
    config = TrajectoriesConfig(input=str(synthetic / "dense.jsonl"), output_dir=str(tmp_path / "out"))
    report = run(config)
    records = [json.loads(line) for line in (synthetic / "dense.jsonl").read_text().splitlines()]
    assert report["totals"] == {"records": len(records), "accepted": len(records), "rejected": 0, "accept_rate": 1.0}
    assert all(report["per_type"][t] > 0 for t in ("direct", "ddx_keep", "ddx_switch"))
    assert list(report["per_type"]) == ["direct", "ddx_keep", "ddx_switch"]  # unused random types: not listed
    assert set(report["per_node"]) == set(DEMO_LEAVES)

    rows = [json.loads(line) for line in (tmp_path / "out" / "sft.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["record_id"] for r in records]
    row = rows[0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][1]["content"][0] == {"type": "image"}
    meta = row["metadata"]
    assert meta["verified"] is True and meta["writer"] == "template" and meta["retrieval"]
    assert {"rank", "score", "node_id", "section", "source"} == set(meta["retrieval"][0])
    assert (tmp_path / "out" / "rejects.jsonl").read_text() == ""
    text = (tmp_path / "out" / "report.txt").read_text()
    assert "accepted per trajectory type" in text and "ddx_switch" in text
    assert "writer: template" in (tmp_path / "out" / "config.yaml").read_text()


def test_build_with_the_random_types_verifies_every_record(synthetic, tmp_path):
    config = TrajectoriesConfig(input=str(synthetic / "dense.jsonl"), output_dir=str(tmp_path / "out"))
    config.types.random_ddx_keep = config.types.random_ddx_switch = 0.3
    report = run(config)
    assert report["totals"]["rejected"] == 0 and report["type_fallbacks"] == 0
    assert list(report["per_type"]) == list(TRAJECTORY_TYPES) and all(report["per_type"].values())
    assert report["ddx_sources"]["random"] == report["per_type"]["random_ddx_keep"] + report["per_type"]["random_ddx_switch"]


def test_coarse_labels_and_unmapped_records(synthetic, tmp_path):
    records = [json.loads(line) for line in (synthetic / "sparse.jsonl").read_text().splitlines()]
    records.append({**records[0], "record_id": "x:unmapped", "node_id": None, "label_depth": None})
    records.append({**records[0], "record_id": "x:unknown", "node_id": "not_a_node"})
    manifest = tmp_path / "mixed.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = run(TrajectoriesConfig(input=str(manifest), output_dir=str(tmp_path / "out"), include_system_prompt=False))
    assert report["totals"]["accepted"] == len(records) - 2
    assert report["reject_reasons"] == {"unmapped_label": 1, "unknown_node": 1}
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rejects] == ["x:unmapped", "x:unknown"]
    assert any(d <= 2 for d in (json.loads(line)["metadata"]["label_depth"] for line in (tmp_path / "out" / "sft.jsonl").read_text().splitlines()))
    first = json.loads((tmp_path / "out" / "sft.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]


def test_cli_runs_the_demo_config(synthetic, tmp_path, capsys):
    from skinr1.cli import main

    import skinr1

    demo = Path(skinr1.__file__).parent / "configs" / "trajectories_demo.yaml"
    code = main([
        "trajectories", "--config", str(demo), f"input={synthetic / 'dense.jsonl'}", f"output_dir={tmp_path / 'cli'}",
        "limit=10", "types.ddx_keep=0", "types.ddx_switch=0",
    ])
    assert code == 0
    assert "records 10, accepted 10" in capsys.readouterr().out
    report = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert report["per_type"]["direct"] == 10
    assert main(["trajectories", "writer=nope", f"input={synthetic / 'dense.jsonl'}", f"output_dir={tmp_path}"]) == 2


def test_config_validation():
    with pytest.raises(ConfigError, match="writer"):
        load_config(TrajectoriesConfig, None, ["writer=gpt"])
    with pytest.raises(ConfigError, match="types"):
        load_config(TrajectoriesConfig, None, ["types.direct=0", "types.ddx_keep=0", "types.ddx_switch=0"])
    with pytest.raises(ConfigError):
        load_config(TrajectoriesConfig, None, ["teacher.concurrency=0"])
    with pytest.raises(ValueError, match="input is required"):
        run(TrajectoriesConfig(output_dir="x"))
