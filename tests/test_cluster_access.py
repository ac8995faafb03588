"""Who can reach a SkinR1 cluster (Ray token authentication on, no dashboard open to every
interface, in the launcher configs and the KubeRay manifests) and clusters/submit.sh, run with
--help / --dry-run against a fake `ray` that records any call. Offline: nothing starts Ray."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from cluster_files import CLUSTERS, TOKEN_MOUNT, load_skinr1_command, load_yaml

AUTH_OPTION_FIELDS = {"mode", "secretName", "enableK8sTokenAuth"}
"""KubeRay's ray.io/v1 AuthOptions fields (a misspelt one is pruned by the CRD's schema)."""
ALL_INTERFACES = {"0.0.0.0", "::", "[::]"}
SUBMIT = CLUSTERS / "submit.sh"


# ----------------------------------------------------------------- who can reach the cluster
def _cluster_specs(manifest: dict) -> list[dict]:
    """The Ray cluster specs of a KubeRay manifest (RayCluster.spec, RayJob.spec.rayClusterSpec)."""
    if manifest["kind"] == "RayCluster":
        return [manifest["spec"]]
    return [manifest["spec"]["rayClusterSpec"]] if "rayClusterSpec" in manifest["spec"] else []


def _sets_token_mode(container: dict) -> bool:
    return any(e.get("name") == "RAY_AUTH_MODE" and e.get("value") == "token" for e in container.get("env", []))


def kuberay_exposure_problems(manifest: dict) -> list[str]:
    """Why a KubeRay manifest lets someone reach Ray without its auth token (empty: it does not). Pure."""
    problems = []
    for spec in _cluster_specs(manifest):
        options = spec.get("authOptions") or {}
        assert set(options) <= AUTH_OPTION_FIELDS, set(options) - AUTH_OPTION_FIELDS
        groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
        containers = [c for g in groups for c in g["template"]["spec"]["containers"]]
        token = options.get("mode") == "token" or all(_sets_token_mode(c) for c in containers)
        if not token:
            problems.append("Ray token authentication is off (set authOptions.mode: token)")
        host = spec["headGroupSpec"].get("rayStartParams", {}).get("dashboard-host")
        if host in ALL_INTERFACES and not token:
            problems.append(f"dashboard-host {host} serves the job API (arbitrary code) to the whole pod network without auth")
    return problems


def launcher_exposure_problems(config: dict) -> list[str]:
    """Why a `ray up` config starts Ray without token authentication or with an open dashboard. Pure."""
    problems = []
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in config.get(key, [])
              if "ray start" in c]
    if not starts:
        problems.append("no `ray start` command")
    for command in starts:
        if not re.search(r"(^|[;&\s])RAY_AUTH_MODE=token\s+ray start\b", command):
            problems.append(f"`ray start` without RAY_AUTH_MODE=token: {command.strip()}")
        host = re.search(r"--dashboard-host[= ](\S+)", command)
        if host and host.group(1).strip("'\"") in ALL_INTERFACES:
            problems.append(f"the dashboard listens on {host.group(1)}: {command.strip()}")
    if TOKEN_MOUNT not in config.get("file_mounts", {}):
        problems.append(f"no token on the nodes: file_mounts lacks {TOKEN_MOUNT}")
    return problems


@pytest.mark.parametrize("path", sorted((CLUSTERS / "kuberay").glob("*.yaml")), ids=lambda p: p.name)
def test_kuberay_clusters_demand_the_ray_token(path):
    manifest = load_yaml(path)
    assert _cluster_specs(manifest), f"{path.name} describes no cluster"
    assert kuberay_exposure_problems(manifest) == []


@pytest.mark.parametrize("path", sorted(CLUSTERS.glob("*.yaml")), ids=lambda p: p.name)
def test_cluster_files_never_turn_ray_auth_off(path):
    text = path.read_text()
    assert not re.search(r"RAY_AUTH_MODE[\"']?\s*[:=]\s*[\"']?disabled", text), f"{path.name} disables Ray auth"
    config = load_yaml(path)
    if "head_start_ray_commands" in config:  # a `ray up` launcher config
        assert launcher_exposure_problems(config) == []


def test_exposure_checks_catch_an_open_cluster():
    manifest = load_yaml(CLUSTERS / "kuberay" / "raycluster.yaml")
    del manifest["spec"]["authOptions"]
    problems = kuberay_exposure_problems(manifest)
    assert any("token authentication is off" in p for p in problems)
    assert any("dashboard-host 0.0.0.0" in p for p in problems)
    launcher = load_yaml(CLUSTERS / "aws.yaml")
    launcher["head_start_ray_commands"] = ["ray start --head --dashboard-host=0.0.0.0"]
    del launcher["file_mounts"][TOKEN_MOUNT]
    problems = launcher_exposure_problems(launcher)
    assert len(problems) == 3, problems


def test_submit_sends_the_token_by_default(fake_ray, tmp_path):
    env, marker = fake_ray
    # The fake ray records its RAY_AUTH_MODE next to its arguments.
    script = Path(env["PATH"].split(os.pathsep)[0]) / "ray"
    script.write_text(f"#!/bin/sh\necho \"mode=$RAY_AUTH_MODE\" > {shlex.quote(str(marker))}\nexit 0\n")
    env.pop("RAY_AUTH_MODE", None)
    result = _submit(env, "-a", "http://127.0.0.1:8265", "--id", "auth-1")
    assert result.returncode == 0, result.stderr
    assert marker.read_text().strip() == "mode=token"


# ----------------------------------------------------------------- submit.sh
@pytest.fixture
def fake_ray(tmp_path):
    """A `ray` first on PATH that records any call: --help and --dry-run must never reach it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "ray-called"
    script = bin_dir / "ray"
    script.write_text(f"#!/bin/sh\necho \"$@\" > {shlex.quote(str(marker))}\nexit 99\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    return env, marker


def _submit(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SUBMIT), *args], env=env, capture_output=True, text=True, timeout=30, cwd="/")


def test_submit_script_parses_and_is_executable():
    assert subprocess.run(["bash", "-n", str(SUBMIT)], capture_output=True).returncode == 0
    assert SUBMIT.stat().st_mode & stat.S_IXUSR
    text = SUBMIT.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text


def test_submit_help_contacts_nothing(fake_ray):
    env, marker = fake_ray
    result = _submit(env, "--help")
    assert result.returncode == 0 and "Usage: clusters/submit.sh" in result.stdout
    for topic in ("--address", "--config", "--dry-run", "key=value"):
        assert topic in result.stdout
    assert not marker.exists()


def test_submit_dry_run_composes_the_job_submission(fake_ray):
    env, marker = fake_ray
    env = {**env, "DRY_SECRET": "s3cr3t-value"}
    result = _submit(env, "--dry-run", "--address", "http://127.0.0.1:8265", "--id", "paper-1", "--env", "DRY_SECRET",
                     "--", "run_dir=/mnt/shared/skinr1/runs/paper-1", "rl.learner.num_ranks=8")
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert "s3cr3t-value" not in result.stdout + result.stderr, "a dry run must not print forwarded values"
    words = shlex.split(result.stdout)
    assert words[:3] == ["ray", "job", "submit"]
    assert words[words.index("--address") + 1] == "http://127.0.0.1:8265"
    assert words[words.index("--submission-id") + 1] == "paper-1"
    assert "--no-wait" in words and "--runtime-env" in words
    entry = words[words.index("--") + 1:]
    config, _ = load_skinr1_command(shlex.join(entry))
    assert entry[:4] == ["skinr1", "rl", "--config", "skinr1/configs/paper.yaml"]
    assert config.rl.learner.num_ranks == 8 and str(config.run_path) == "/mnt/shared/skinr1/runs/paper-1"


def test_submit_follow_and_pipeline_stage(fake_ray):
    env, _ = fake_ray
    result = _submit(env, "--dry-run", "-a", "http://h:8265", "--follow", "--stage", "pipeline")
    words = shlex.split(result.stdout)
    assert "--no-wait" not in words
    assert words[words.index("--runtime-env") + 1] == "clusters/runtime_env.yaml"
    assert words[words.index("--") + 1:words.index("--") + 3] == ["skinr1", "pipeline"]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--dry-run",), "no cluster address"),
        (("--dry-run", "-a", "http://h:8265", "epochs"), "key=value"),
        (("--dry-run", "-a", "http://h:8265", "--stage", "sft"), "rl or pipeline"),
        (("--dry-run", "-a", "http://h:8265", "--config", "nope.yaml"), "does not exist"),
        (("--dry-run", "-a", "http://h:8265", "--env", "SKINR1_SURELY_UNSET_VARIABLE"), "not set"),
        (("--bogus",), "unknown option"),
    ],
)
def test_submit_rejects_bad_arguments_before_contacting_anything(fake_ray, args, message):
    env, marker = fake_ray
    result = _submit(env, *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not marker.exists()
