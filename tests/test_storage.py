"""Object-storage run directories against a real S3-compatible server (moto) on 127.0.0.1: commit
markers, half-written uploads ignored (a crash at every point of an upload), re-commits, pruning,
the node-local model cache, and refusal of schemes nothing here can handle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skinr1 import storage
from skinr1.atomic import CRASH_ENV, CRASH_EXIT_CODE

BUCKET = "skinr1-runs"  # made by the session's `bucket_env` (conftest.py)


@pytest.fixture
def s3_server(bucket_env):
    """The session's S3-compatible server (moto on 127.0.0.1, conftest.py); the standard variables
    that reach it are set."""
    return bucket_env["AWS_ENDPOINT_URL"]


@pytest.fixture
def root(s3_server, request):
    return storage.location(f"s3://{BUCKET}/{request.node.name}/checkpoints")


def _checkpoint(tmp_path: Path, name: str, step: int, tag: str) -> Path:
    local = tmp_path / name
    (local / "policy").mkdir(parents=True)
    (local / "policy" / "adapter.safetensors").write_bytes(tag.encode() * 100)
    (local / "engine").mkdir()
    (local / "engine" / "rank0.pt").write_bytes(b"optimizer" + tag.encode())
    (local / "driver_state.json").write_text(json.dumps({"step": step, "tag": tag}))
    return local


def _tag(stored: storage.StoredCheckpoint, tmp_path: Path) -> str:
    local = storage.fetch_checkpoint(stored, tmp_path / f"fetched-{stored.location.path.rsplit('/', 1)[-1]}")
    return json.loads((local / "driver_state.json").read_text())["tag"]


@pytest.mark.parametrize("uri", ["ftp://host/run", "hdfs://namenode/run", "abfs://container/run"])
def test_unsupported_schemes_are_refused_not_taken_for_paths(uri):
    with pytest.raises(storage.UnsupportedStorageURI, match=r"run_dir .*not supported"):
        storage.location(uri)


def test_committed_checkpoints_are_listed_and_fetched(root, tmp_path):
    for step in (1, 2):
        storage.commit_checkpoint(_checkpoint(tmp_path, f"c{step}", step, f"v{step}"), root, step)
    found = storage.committed_checkpoints(root)
    assert [c.step for c in found] == [1, 2]
    latest = storage.latest_committed(root)
    fetched = storage.fetch_checkpoint(latest, tmp_path / "fetched")
    assert sorted(str(p.relative_to(fetched)) for p in fetched.rglob("*") if p.is_file()) == [
        "driver_state.json", "engine/rank0.pt", "policy/adapter.safetensors"]
    assert (fetched / "policy" / "adapter.safetensors").read_bytes() == b"v2" * 100


def test_half_written_and_damaged_checkpoints_are_ignored(root, tmp_path):
    storage.commit_checkpoint(_checkpoint(tmp_path, "c1", 1, "v1"), root, 1)
    # An upload cut short: files, no marker.
    storage.upload_directory(_checkpoint(tmp_path, "c2", 2, "v2"), root.child("step-000002.aaaaaaaaaaaa"))
    # A marker whose files are not all there (a deletion cut short, or a lost object).
    damaged = storage.commit_checkpoint(_checkpoint(tmp_path, "c3", 3, "v3"), root, 3)
    root.filesystem.delete_file(damaged.location.child("engine", "rank0.pt").path)
    # Not a checkpoint at all.
    storage.write_text(root.child("step-000009.notes.txt"), "x")
    assert [c.step for c in storage.committed_checkpoints(root)] == [1]


def test_recommitting_a_step_keeps_the_old_commit_until_the_new_one_is_complete(root, tmp_path):
    storage.commit_checkpoint(_checkpoint(tmp_path, "a1", 1, "first-1"), root, 1)
    storage.commit_checkpoint(_checkpoint(tmp_path, "a2", 2, "first-2"), root, 2)
    storage.commit_checkpoint(_checkpoint(tmp_path, "b2", 2, "second-2"), root, 2)
    found = storage.committed_checkpoints(root)
    assert [(c.step, _tag(c, tmp_path)) for c in found] == [(1, "first-1"), (2, "second-2")]
    storage.prune_checkpoints(root, keep=1)
    assert [(c.step, _tag(c, tmp_path)) for c in storage.committed_checkpoints(root)] == [(2, "second-2")]
    assert len(storage.list_files(root)) == 4  # one checkpoint: three files and its marker


CHILD = r"""
import sys
from pathlib import Path
from skinr1 import storage
storage.commit_checkpoint(Path(sys.argv[2]), storage.location(sys.argv[1]), 2)
"""


def test_an_upload_killed_at_every_point_leaves_the_previous_checkpoint(s3_server, tmp_path):
    uri = f"s3://{BUCKET}/killed/checkpoints"
    root = storage.location(uri)
    storage.commit_checkpoint(_checkpoint(tmp_path, "old", 1, "old"), root, 1)
    new = _checkpoint(tmp_path, "new", 2, "new")
    for k in range(10):
        done = subprocess.run([sys.executable, "-c", CHILD, uri, str(new)], env=os.environ | {CRASH_ENV: str(k)},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode in (0, CRASH_EXIT_CODE), done.stderr
        latest = storage.latest_committed(root)
        if done.returncode == CRASH_EXIT_CODE:
            assert (latest.step, _tag(latest, tmp_path / str(k))) == (1, "old")
        else:
            assert (latest.step, _tag(latest, tmp_path / str(k))) == (2, "new")
            break
    assert k == 3  # a crash after each of the three files, then the commit went through


def test_a_model_uri_is_copied_once_per_node(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("SKINR1_CACHE", str(tmp_path / "cache"))
    model = _checkpoint(tmp_path, "model", 0, "weights")
    uri = f"s3://{BUCKET}/models/tiny"
    storage.upload_directory(model, storage.location(uri))
    local = storage.cached_model(uri)
    assert Path(local, "policy", "adapter.safetensors").read_bytes() == b"weights" * 100
    storage.delete_directory(storage.location(uri))  # a second load does not go to the bucket
    assert storage.cached_model(uri) == local
    assert storage.cached_model(str(model)) == str(model)  # local paths are used in place


# ------------------------------------------------------------------------- run_dir in a bucket
def _bucket_run(uri: str, node_cache: Path, monkeypatch):
    """The run config as a driver on a node with its own (empty at first) local cache sees it."""
    from skinr1.config.schema import load_run_config

    monkeypatch.setenv("SKINR1_CACHE", str(node_cache))
    demo = Path(storage.__file__).resolve().parent / "configs" / "demo.yaml"
    return load_run_config(demo, [f"run_dir={uri}", "data.synthetic_scale=0.05"])


def test_finished_stages_in_a_bucket_are_reused_by_a_driver_on_another_node(s3_server, tmp_path, monkeypatch, capsys):
    from skinr1.pipeline import stages

    uri = f"s3://{BUCKET}/runs/stages"
    first = _bucket_run(uri, tmp_path / "node-a", monkeypatch)
    assert first.run_path.is_relative_to(tmp_path / "node-a")
    stages.trajectories_stage(first, stages.data_stage(first))
    remote = storage.list_files(storage.location(uri))
    assert {"data/stage.json", "data/sparse.jsonl", "trajectories/stage.json", "trajectories/sft.jsonl"} <= set(remote)

    capsys.readouterr()
    second = _bucket_run(uri, tmp_path / "node-b", monkeypatch)
    sft_data = stages.trajectories_stage(second, stages.data_stage(second))
    out = capsys.readouterr().out
    assert "[data] reusing" in out and "[trajectories] reusing" in out, out
    assert sft_data.is_relative_to(tmp_path / "node-b")
    assert sft_data.read_text() == (first.trajectories_dir / "sft.jsonl").read_text()


def test_grpo_checkpoints_go_to_the_bucket_and_a_new_driver_resumes_from_the_newest_committed(
        s3_server, tmp_path, monkeypatch):
    from skinr1.pipeline import rl_checkpoint

    uri = f"s3://{BUCKET}/runs/grpo"
    first = _bucket_run(uri, tmp_path / "node-a", monkeypatch)
    for step in (1, 2, 3):
        staging = rl_checkpoint.staging_directory(first.rl_dir, step)
        (staging / "policy").mkdir()
        (staging / "policy" / "adapter.safetensors").write_bytes(b"w%d" % step * 10)
        rl_checkpoint.commit_checkpoint(staging, first.rl_dir, step, {"step": step}, keep=2)
    remote = storage.location(uri).child("rl", "checkpoints")
    assert [c.step for c in storage.committed_checkpoints(remote)] == [2, 3]
    # A driver killed while uploading step 4 left files but no marker.
    storage.upload_directory(rl_checkpoint.latest_checkpoint(first.rl_dir), remote.child("step-000004.bbbbbbbbbbbb"))

    second = _bucket_run(uri, tmp_path / "node-b", monkeypatch)
    latest = rl_checkpoint.latest_checkpoint(second.rl_dir)
    assert latest.is_relative_to(tmp_path / "node-b") and latest.name == "step-000003"
    assert rl_checkpoint.read_state(latest) == {"step": 3}
    assert (latest / "policy" / "adapter.safetensors").read_bytes() == b"w3" * 10


def test_the_curve_up_to_a_step_is_in_the_bucket_before_the_step_commits(s3_server, tmp_path, monkeypatch):
    """A driver killed right after a commit loses no metrics row, and one killed between pushing a
    step's rows and committing it leaves rows its successor drops (it runs that step again)."""
    from learner.bucket_checkpoint import save_part
    from skinr1 import run_mirror
    from skinr1.metrics import MetricsLogger, drop_rows_after, read_metrics
    from skinr1.pipeline import rl_checkpoint

    uri = f"s3://{BUCKET}/runs/curve"
    first = _bucket_run(uri, tmp_path / "node-a", monkeypatch)
    curve = storage.location(uri).child("rl", "metrics.jsonl")
    in_bucket_at_commit = {}
    write_marker = storage.finish_checkpoint

    def finish_checkpoint(target, step, files):
        in_bucket_at_commit[step] = [json.loads(line)["step"] for line in storage.read_text(curve).splitlines()]
        return write_marker(target, step, files)

    monkeypatch.setattr(storage, "finish_checkpoint", finish_checkpoint)
    with MetricsLogger(first.rl_dir / "metrics.jsonl") as logger:
        logger.log(1, {"reward_mean": 1.0})
        staging = rl_checkpoint.staging_directory(first.rl_dir, 1)  # a checkpoint committed locally, then pushed
        (staging / "policy").mkdir()
        (staging / "policy" / "adapter.safetensors").write_bytes(b"w1")
        rl_checkpoint.commit_checkpoint(staging, first.rl_dir, 1, {"step": 1}, keep=2)
        logger.log(2, {"reward_mean": 2.0})  # ranks that upload their own parts
        rl_checkpoint.commit_parts(first.rl_dir, 2, {"step": 2}, keep=2,
                                   save_parts=lambda prefix: [save_part(prefix, _rank_writer(0))])
        logger.log(3, {"reward_mean": 3.0})
        run_mirror.push_curve(rl_checkpoint.checkpoint_root(first.rl_dir))  # killed before step 3's marker
    assert in_bucket_at_commit == {1: [1], 2: [1, 2]}

    second = _bucket_run(uri, tmp_path / "node-b", monkeypatch)
    run_mirror.pull_stage(second.rl_dir)
    assert rl_checkpoint.latest_checkpoint(second.rl_dir).name == "step-000002"
    assert drop_rows_after(second.rl_dir / "metrics.jsonl", 2) == 1
    assert [row["step"] for row in read_metrics(second.rl_dir / "metrics.jsonl")] == [1, 2]


# ------------------------------------------------------------- GRPO on nodes with no shared disk
def _rank_writer(rank: int):
    """What a learner rank writes into its checkpoint directory: its optimizer shard; rank 0 also
    the model states and the policy."""
    def write(directory: Path) -> None:
        state = directory / "engine" / "state"
        state.mkdir(parents=True)
        (state / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(b"r%d" % rank * 50)
        if rank == 0:
            (state / "mp_rank_00_model_states.pt").write_bytes(b"model" * 10)
            (directory / "policy").mkdir()
            (directory / "policy" / "adapter_model.safetensors").write_bytes(b"adapter")
    return write


def test_ranks_on_other_nodes_upload_their_parts_and_the_commit_waits_for_all(s3_server, tmp_path, monkeypatch):
    from learner.bucket_checkpoint import load_part, save_part
    from skinr1.checkpoint_parts import IncompleteCheckpoint
    from skinr1.pipeline import rl_checkpoint

    uri = f"s3://{BUCKET}/runs/parts"
    driver = _bucket_run(uri, tmp_path / "driver", monkeypatch)
    rl_dir = driver.rl_dir

    def save_parts(prefix: str, lose: str | None = None) -> list:
        parts = []
        for rank in (0, 1):  # each rank on its own node: its own cache, no sight of the driver's mirror
            monkeypatch.setenv("SKINR1_CACHE", str(tmp_path / f"node-{rank}"))
            parts.append(save_part(prefix, _rank_writer(rank)))
        monkeypatch.setenv("SKINR1_CACHE", str(tmp_path / "driver"))
        if lose:  # an upload lost after its rank reported it
            target = storage.location(prefix)
            target.filesystem.delete_file(target.child(lose).path)
        return parts

    stored = rl_checkpoint.commit_parts(rl_dir, 1, {"step": 1}, keep=2, save_parts=save_parts)
    assert sorted(stored.files) == ["driver_state.json", "engine/state/mp_rank_00_model_states.pt",
                                    "engine/state/zero_pp_rank_0_mp_rank_00_optim_states.pt",
                                    "engine/state/zero_pp_rank_1_mp_rank_00_optim_states.pt",
                                    "policy/adapter_model.safetensors"]
    assert not list((tmp_path / "node-1" / "checkpoint-staging").iterdir())  # node-local staging is cleaned
    # What a rank killed while saving left on its node a day ago goes with the next save there.
    from learner.bucket_checkpoint import STALE_AFTER_S

    left = tmp_path / "node-1" / "checkpoint-staging" / "save-killed"
    left.mkdir()
    os.utime(left, (time.time() - STALE_AFTER_S - 60,) * 2)
    fresh = tmp_path / "node-1" / "checkpoint-staging" / "save-another-run"
    fresh.mkdir()
    assert not (rl_dir / "checkpoints").exists()  # nothing went through the driver's mirror

    lost = "engine/state/zero_pp_rank_1_mp_rank_00_optim_states.pt"
    with pytest.raises(IncompleteCheckpoint, match="zero_pp_rank_1_mp_rank_00_optim_states.pt is missing"):
        rl_checkpoint.commit_parts(rl_dir, 2, {"step": 2}, keep=2, save_parts=lambda prefix: save_parts(prefix, lose=lost))
    assert [p.name for p in (tmp_path / "node-1" / "checkpoint-staging").iterdir()] == ["save-another-run"]
    remote = storage.location(uri).child("rl", "checkpoints")
    assert [c.step for c in storage.committed_checkpoints(remote)] == [1]

    # A new driver (nothing local) fetches its part; each rank, on its own node, the engine state.
    resumed = _bucket_run(uri, tmp_path / "driver-2", monkeypatch)
    local = rl_checkpoint.latest_checkpoint(resumed.rl_dir)
    assert sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()) == [
        "driver_state.json", "policy/adapter_model.safetensors"]
    source = rl_checkpoint.learner_source(local)
    assert source == stored.location.uri
    monkeypatch.setenv("SKINR1_CACHE", str(tmp_path / "node-1"))
    read = []
    load_part(source, lambda directory: read.extend(sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())))
    assert read == [name for name in sorted(stored.files) if name.startswith("engine/")]
    assert [p.name for p in (tmp_path / "node-1" / "checkpoint-staging").iterdir()] == ["save-another-run"]
    with pytest.raises(FileNotFoundError, match="not a committed checkpoint"):  # an uncommitted upload is never read
        load_part(remote.child("step-000009.cccccccccccc").uri, lambda directory: None)


def test_what_actors_read_from_a_bucket_run_is_named_so_any_node_can_get_it(s3_server, tmp_path, monkeypatch):
    from skinr1 import run_mirror

    uri = f"s3://{BUCKET}/runs/shipped"
    config = _bucket_run(uri, tmp_path / "driver", monkeypatch)
    merged = config.rl_dir / "policy_base" / "model"
    assert run_mirror.shipped(merged) == f"{uri}/rl/policy_base/model"
    for elsewhere in ("/mnt/shared/models/qwen", "Qwen/Qwen2.5-VL-7B-Instruct"):
        assert run_mirror.shipped(elsewhere) == elsewhere
    image = config.run_path / "data" / "images" / "rl" / "x.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"\x89PNG pixels")
    assert run_mirror.shipped_image(str(image)) == b"\x89PNG pixels"  # no other node sees the mirror
    assert run_mirror.shipped_image("/mnt/shared/images/y.png") == "/mnt/shared/images/y.png"
    # A manifest the first driver wrote on its node names its own mirror; on this node it is this one's.
    first_drivers = f"/home/other/.cache/skinr1/runs/{config.run_path.name}/data/images/rl/x.png"
    assert run_mirror.local_path(first_drivers) == str(image)
    assert run_mirror.shipped_image(run_mirror.local_path(first_drivers)) == b"\x89PNG pixels"

    # A model given as a URI is loaded from this node's copy; actors get the URI back, not the copy.
    model_uri = f"s3://{BUCKET}/models/shipped"
    storage.upload_directory(_checkpoint(tmp_path, "model", 0, "w"), storage.location(model_uri))
    assert run_mirror.shipped(storage.cached_model(model_uri)) == model_uri
    # Another node copies the finished stage output it was handed once into its own cache.
    storage.upload_directory(_checkpoint(tmp_path, "merged", 0, "merged"), storage.location(run_mirror.shipped(merged)))
    monkeypatch.setenv("SKINR1_CACHE", str(tmp_path / "node-2"))
    copy = Path(storage.cached_model(run_mirror.shipped(merged)))
    assert copy.is_relative_to(tmp_path / "node-2") and (copy / "policy" / "adapter.safetensors").read_bytes() == b"merged" * 100
    with pytest.raises(FileNotFoundError, match="holds no files"):
        storage.cached_model(f"{uri}/rl/nothing-here")


def test_a_path_in_another_nodes_mirror_of_the_run_is_moved_into_this_ones():
    from skinr1.run_mirror import relocate

    root = Path("/node-b/cache/runs/0123456789abcdef")
    assert relocate("/node-a/x/runs/0123456789abcdef/data/images/a.png", root) == str(root / "data/images/a.png")
    assert relocate(str(root / "data" / "a.png"), root) == str(root / "data" / "a.png")
    for other in ("/node-a/x/runs/fedcba9876543210/data/a.png", "/data/0123456789abcdef/a.png", "relative/a.png"):
        assert relocate(other, root) == other
