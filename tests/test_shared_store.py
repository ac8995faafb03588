"""Versioned policy files for the shared-memory sync: atomic publish, pruning, stale runs, buckets."""

from __future__ import annotations

import pytest
import torch

from learner.shared_store import SharedVersionStore, require_shared_memory, size_of, store_name
from rollout.weight_update import write_weight_buckets
from learner.weight_sync import bucket_named_tensors, make_sync


def _write(payload: bytes):
    def write(directory):
        (directory / "adapter_model.safetensors").write_bytes(payload)
        (directory / "adapter_config.json").write_text("{}")

    return write


def test_publish_is_atomic_and_keeps_the_newest_versions(tmp_path):
    store = SharedVersionStore("run", root=tmp_path, keep=2)
    seen_during_write = []

    def write(directory):
        seen_during_write.append(sorted(p.name for p in store.directory.iterdir()))
        _write(b"x" * 10)(directory)

    for version in range(4):
        final = store.publish(version, write)
        assert final == tmp_path / "run" / f"v{version}"
        assert (final / "adapter_model.safetensors").read_bytes() == b"x" * 10
    # While a version is written only its staging name exists; readers never see a half version.
    assert seen_during_write[1] == [".v1.tmp", "v0"]
    assert sorted(p.name for p in store.directory.iterdir()) == ["v2", "v3"]
    assert store.versions() == [2, 3]
    assert size_of(store.directory / "v3") == 12


def test_failed_write_leaves_the_previous_version_alone(tmp_path):
    store = SharedVersionStore("run", root=tmp_path)
    store.publish(0, _write(b"old"))

    def broken(directory):
        (directory / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.publish(1, broken)
    assert sorted(p.name for p in store.directory.iterdir()) == ["v0"]
    assert (store.directory / "v0" / "adapter_model.safetensors").read_bytes() == b"old"


def test_a_new_store_clears_what_a_killed_run_left(tmp_path):
    first = SharedVersionStore("run", root=tmp_path)
    for version in (27, 28):
        first.publish(version, _write(b"stale"))
    # The resumed run starts again at version 20: stale higher versions must not survive pruning.
    resumed = SharedVersionStore("run", root=tmp_path)
    resumed.publish(20, _write(b"fresh"))
    assert resumed.versions() == [20]
    resumed.clear()
    assert not (tmp_path / "run").exists()


def test_store_names_are_stable_per_run_and_distinct_across_runs():
    assert store_name("/runs/a/rl") == store_name("/runs/a/rl")
    assert store_name("/runs/a/rl") != store_name("/runs/b/rl")
    assert store_name("/runs/a/rl").startswith("skinr1-sync-")


def test_missing_shared_memory_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="sync_backend=object_store"):
        require_shared_memory(tmp_path / "no-such-dir")
    with pytest.raises(ValueError, match="keep"):
        SharedVersionStore("run", root=tmp_path, keep=0)


def test_weight_buckets_round_trip_through_files_in_order(tmp_path):
    from safetensors.torch import load_file

    named = [(f"layer{i}.weight", torch.full((4, 4), float(i))) for i in range(5)]
    buckets = bucket_named_tensors(named, bucket_bytes=2 * 4 * 4 * 4)
    names = write_weight_buckets(tmp_path, buckets)
    assert names == [f"bucket-{i:05d}.safetensors" for i in range(3)]
    loaded = [load_file(str(tmp_path / name)) for name in names]
    assert [list(b) for b in loaded] == [["layer0.weight", "layer1.weight"], ["layer2.weight", "layer3.weight"], ["layer4.weight"]]
    assert all(torch.equal(loaded[i // 2][name], tensor) for i, (name, tensor) in enumerate(named))


def test_unknown_sync_backend_is_refused():
    with pytest.raises(ValueError, match="object_store"):
        make_sync("nccl_magic", learners=None, pool=None, adapters=True)
