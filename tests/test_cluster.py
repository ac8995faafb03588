"""The one Ray entry point keeps every Ray process on loopback."""

from __future__ import annotations

import psutil
import pytest


def _descendants_and_ray_processes() -> list[psutil.Process]:
    me = psutil.Process()
    procs = {p.pid: p for p in me.children(recursive=True)}
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if "ray" in cmdline and ("gcs_server" in cmdline or "raylet" in cmdline or "default_worker" in cmdline):
            procs[proc.pid] = proc
    return list(procs.values())


@pytest.mark.slow
def test_local_ray_listens_on_loopback_only(ray_local):
    import ray

    nodes = ray.nodes()
    assert nodes and all(node["NodeManagerAddress"] == "127.0.0.1" for node in nodes)

    @ray.remote
    def where() -> str:
        return ray.util.get_node_ip_address()

    assert ray.get(where.remote()) == "127.0.0.1"
    listening = []
    for proc in _descendants_and_ray_processes():
        try:
            connections = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        listening += [c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN]
    assert listening, "expected Ray processes to listen on some port"
    assert set(listening) <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}, f"Ray listens beyond loopback: {sorted(set(listening))}"


def test_init_ray_sets_loopback_environment(monkeypatch):
    from skinr1.cluster import apply_loopback_environment

    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    apply_loopback_environment()
    import os

    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"


@pytest.mark.slow
def test_local_ray_runs_with_token_authentication(ray_local):
    """The local node demands Ray's auth token (Ray's default for a new local node, which
    skinr1.cluster keeps), and its worker processes run in the same mode."""
    import os

    import ray
    from ray._raylet import AuthenticationMode, get_authentication_mode

    assert get_authentication_mode() == AuthenticationMode.TOKEN

    @ray.remote
    def worker_mode() -> str | None:
        return os.environ.get("RAY_AUTH_MODE")

    expected = os.environ.get("RAY_AUTH_MODE", "token")
    assert ray.get(worker_mode.remote()) == expected == "token", "a local cluster without auth"
