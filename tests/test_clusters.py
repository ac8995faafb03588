"""Offline checks of the cluster launch files in clusters/ and the guide docs/cluster.md.

Nothing here starts Ray or contacts a cloud: the launcher configs are validated with Ray's own
cluster-config JSON schema and its `prepare_config` / `validate_config` (which only read local
defaults files; a fixture makes any network connection fail the test), the KubeRay manifests are
checked against the field names of KubeRay's ray.io/v1 Go types, the runtime env against the keys
`ray.runtime_env.RuntimeEnv` knows, and submit.sh is run with --help / --dry-run only.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import socket
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"
LAUNCHER_CONFIGS = ("aws.yaml", "gcp.yaml")
# Where file_mounts (launcher) and clusters/Dockerfile (KubeRay image) put the checkout.
CODE_ROOT = "/home/ray/skinr1"
# The shared file system every node mounts; skinr1/configs/paper.yaml keeps run_dir and data there.
SHARED = "/mnt/shared"

# Field names of KubeRay's ray.io/v1 types (ray-operator/apis/ray/v1/raycluster_types.go and
# rayjob_types.go, KubeRay 1.x). A misspelt field is pruned or rejected by the CRD's schema, so the
# manifests may only use these.
RAY_CLUSTER_SPEC_FIELDS = {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling",
                           "autoscalerOptions", "headServiceAnnotations", "suspend", "authOptions"}
AUTH_OPTION_FIELDS = {"mode", "secretName", "enableK8sTokenAuth"}
HEAD_GROUP_FIELDS = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_GROUP_FIELDS = {"groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts", "rayStartParams",
                       "template", "scaleStrategy"}
AUTOSCALER_OPTION_FIELDS = {"resources", "image", "imagePullPolicy", "env", "envFrom", "volumeMounts",
                            "securityContext", "idleTimeoutSeconds", "upscalingMode"}
RAY_JOB_SPEC_FIELDS = {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
                       "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint",
                       "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus",
                       "entrypointNumGpus", "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend", "schedule"}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode"}
ROLE_LABELS = {"learner_node", "rollout_node"}
# Where the launcher configs put this machine's Ray auth token on every node (Ray's default path).
TOKEN_MOUNT = "/home/ray/.ray/auth_token"
ALL_INTERFACES = {"0.0.0.0", "::", "[::]"}


def _load(path: Path):
    return yaml.safe_load(path.read_text())


def _pyproject() -> str:
    # Read as text: tomllib only exists from Python 3.11 and the project supports 3.10.
    return (ROOT / "pyproject.toml").read_text()


def _ray_pin() -> str:
    match = re.search(r'^\s*"ray(?:\[[^\]]*\])?==([\w.]+)"', _pyproject(), re.M)
    assert match, "pyproject.toml pins no ray version"
    return match.group(1)


def _python_range() -> tuple[int, int]:
    """Minor versions allowed by requires-python (">=3.10,<3.13" -> (10, 13))."""
    low, high = re.search(r'requires-python\s*=\s*">=3\.(\d+),<3\.(\d+)"', _pyproject()).groups()
    return int(low), int(high)


def _packages() -> set[str]:
    """The top-level packages setuptools installs ([tool.setuptools.packages.find] include)."""
    include = re.search(r"^include\s*=\s*\[([^\]]*)\]", _pyproject(), re.M).group(1)
    return {name.rstrip("*") for name in re.findall(r'"([^"]+)"', include)}


def _config_path(path: str) -> Path:
    """A --config path as the cluster sees it, mapped back into this checkout."""
    if path.startswith(CODE_ROOT + "/"):
        return ROOT / path[len(CODE_ROOT) + 1:]
    assert not path.startswith("/"), f"{path}: absolute config paths must live under {CODE_ROOT}"
    return ROOT / path


def _load_skinr1_command(command: str):
    """Parse `skinr1 STAGE --config FILE k=v ...` and load the run config it names (no Ray)."""
    from skinr1.config.schema import load_run_config

    words = shlex.split(command)
    assert words[:1] == ["skinr1"] and words[1] in ("rl", "pipeline"), command
    assert "--config" in words, command
    config_file = _config_path(words[words.index("--config") + 1])
    assert config_file.is_file(), f"{command}: {config_file} does not exist"
    overrides = [w for w in words[2:] if "=" in w and not w.startswith("-")]
    return load_run_config(config_file, overrides), overrides


def _kuberay_resources(value: str) -> dict:
    """KubeRay's rayStartParams `resources` value: a JSON object inside escaped quotes."""
    assert value.startswith('"') and value.endswith('"'), f"KubeRay expects '\"{{...}}\"', got {value!r}"
    return json.loads(value[1:-1].replace('\\"', '"'))


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ----------------------------------------------------------------- cluster launcher (ray up)
@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_passes_rays_own_validation(name, offline):
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load(CLUSTERS / name)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # the file as written
    # What `ray up` does before it talks to the cloud: merge the provider's defaults, then validate
    # (head/worker types, per-type min/max against the global max_workers, docker settings).
    validate_config(prepare_config(copy.deepcopy(config)))


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_node_types_label_the_roles(name):
    config = _load(CLUSTERS / name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert not head["resources"].get("GPU") and not ROLE_LABELS & set(head["resources"]), "the head stays CPU-only"
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    by_role = {label: [k for k, v in workers.items() if label in v["resources"]] for label in ROLE_LABELS}
    assert len(by_role["learner_node"]) == 1 and len(by_role["rollout_node"]) >= 1, by_role
    for name_, node in workers.items():
        resources = node["resources"]
        labels = ROLE_LABELS & set(resources)
        assert len(labels) == 1, f"{name_}: exactly one role label, got {labels}"
        # One label unit per GPU, so an actor asking for {label: 1} next to 1 GPU always fits.
        assert resources["GPU"] >= 1 and resources[labels.pop()] == resources["GPU"], name_
        assert 0 <= node["min_workers"] <= node["max_workers"], name_
    learner = workers[by_role["learner_node"][0]]
    assert learner["min_workers"] == learner["max_workers"], "the learner group is not elastic"
    assert sum(n["max_workers"] for n in workers.values()) == config["max_workers"]


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_setup_installs_the_checkout_with_the_gpu_extra(name):
    config = _load(CLUSTERS / name)
    assert config["file_mounts"] == {CODE_ROOT: ".", TOKEN_MOUNT: "~/.ray/auth_token"}, \
        "the checkout `ray up` runs in, and the Ray auth token, go to every node"
    installs = [c for c in config["setup_commands"] if re.search(r"pip install\b", c)]
    assert any(f'"{CODE_ROOT}[gpu]"' in c for c in installs), installs
    assert any("check_versions(need_vllm=True)" in c for c in config["setup_commands"])
    for excluded in (".venv", "runs", ".git"):
        assert excluded in config["rsync_exclude"]


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_mounts_the_shared_file_system(name):
    config = _load(CLUSTERS / name)
    assert f"--volume={SHARED}:{SHARED}" in config["docker"]["run_options"]
    assert any(f" {SHARED})" in c or c.rstrip().endswith(SHARED) for c in config["initialization_commands"]), (
        "the host must mount the shared file system before the container starts"
    )


# ----------------------------------------------------------------- images and versions
def _images() -> dict[str, str]:
    images = {}
    for name in LAUNCHER_CONFIGS:
        images[name] = _load(CLUSTERS / name)["docker"]["image"]
    dockerfile = (CLUSTERS / "Dockerfile").read_text()
    images["Dockerfile"] = re.search(r"^FROM\s+(\S+)", dockerfile, re.M).group(1)
    return images


def test_images_and_ray_versions_match_the_pinned_ray():
    pin = _ray_pin()
    low, high = _python_range()
    for where, image in _images().items():
        match = re.fullmatch(r"rayproject/ray:([\d.]+)-py3(\d+)-gpu", image)
        assert match, f"{where}: {image}"
        assert match.group(1) == pin, f"{where}: {image} is not Ray {pin}"
        assert low <= int(match.group(2)) < high, f"{where}: {image} Python outside requires-python"
    for name in ("raycluster.yaml", "rayjob.yaml"):
        manifest = _load(CLUSTERS / "kuberay" / name)
        spec = manifest["spec"] if manifest["kind"] == "RayCluster" else manifest["spec"]["rayClusterSpec"]
        assert spec["rayVersion"] == pin, name


def test_dockerfile_installs_every_package_with_the_gpu_extra():
    text = (CLUSTERS / "Dockerfile").read_text()
    assert re.search(rf"^WORKDIR\s+{re.escape(CODE_ROOT)}\s*$", text, re.M)
    assert re.search(r'pip install[^\n]*-e "\.\[gpu\]"', text)
    copied = set(re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+\s*$", text, re.M))
    sources = {word for line in copied for word in line.split()}
    assert "skinr1" in _packages()  # the include list was found
    assert _packages() | {"pyproject.toml", "README.md"} <= sources, sources


def test_files_begin_with_what_they_assume():
    for path in [CLUSTERS / n for n in (*LAUNCHER_CONFIGS, "runtime_env.yaml", "Dockerfile")] + [
        CLUSTERS / "kuberay" / n for n in ("raycluster.yaml", "rayjob.yaml")
    ]:
        lines = path.read_text().splitlines()
        header = []
        for line in lines:
            if not line.startswith("#"):
                break
            header.append(line)
        text = "\n".join(header).lower()
        assert len(header) >= 5 and "assum" in text, f"{path.name} needs a leading comment block of assumptions"
    for name in LAUNCHER_CONFIGS:
        header = (CLUSTERS / name).read_text().split("\ncluster_name:")[0].lower()
        for topic in ("region", "image", "storage", "run_dir", "gpu"):
            assert topic in header, f"{name}: the header says nothing about {topic}"


def test_paper_preset_keeps_its_run_on_the_shared_file_system():
    paper = _load(ROOT / "skinr1" / "configs" / "paper.yaml")
    assert paper["run_dir"].startswith(SHARED + "/") and paper["data"]["dir"].startswith(SHARED + "/")
    runtime_env = _load(CLUSTERS / "runtime_env.yaml")
    assert runtime_env["env_vars"]["HF_HOME"].startswith(SHARED + "/")


# ----------------------------------------------------------------- KubeRay
def _check_cluster_spec(spec: dict) -> None:
    assert set(spec) <= RAY_CLUSTER_SPEC_FIELDS, set(spec) - RAY_CLUSTER_SPEC_FIELDS
    assert spec["enableInTreeAutoscaling"] is True
    assert set(spec.get("autoscalerOptions", {})) <= AUTOSCALER_OPTION_FIELDS
    head = spec["headGroupSpec"]
    assert set(head) <= HEAD_GROUP_FIELDS, set(head) - HEAD_GROUP_FIELDS
    assert isinstance(head["rayStartParams"], dict)
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), "rayStartParams is map[string]string"
    containers = head["template"]["spec"]["containers"]
    assert containers and all(c.get("image") for c in containers)
    assert not any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in containers)
    groups = spec["workerGroupSpecs"]
    names = [g["groupName"] for g in groups]
    assert len(names) == len(set(names)) and {"learner", "rollout"} <= set(names), names
    for group in groups:
        assert set(group) <= WORKER_GROUP_FIELDS, set(group) - WORKER_GROUP_FIELDS
        name = group["groupName"]
        assert all(isinstance(group[k], int) for k in ("replicas", "minReplicas", "maxReplicas")), name
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        params = group["rayStartParams"]
        assert isinstance(params, dict) and all(isinstance(v, str) for v in params.values()), name
        containers = group["template"]["spec"]["containers"]
        assert containers and all(c.get("image") for c in containers), name
        resources = containers[0]["resources"]
        gpus = int(resources["limits"]["nvidia.com/gpu"])
        assert gpus >= 1, name
        # Kubernetes requires requests == limits for extended resources such as GPUs.
        assert resources.get("requests", {}).get("nvidia.com/gpu", str(gpus)) == resources["limits"]["nvidia.com/gpu"]
        labels = _kuberay_resources(params["resources"])
        assert set(labels) == {f"{name}_node"} and labels[f"{name}_node"] == gpus, (name, labels)
        mounts = {m["mountPath"] for m in containers[0].get("volumeMounts", [])}
        assert SHARED in mounts, name
    learner = next(g for g in groups if g["groupName"] == "learner")
    assert learner["minReplicas"] == learner["maxReplicas"], "the learner group is not elastic"


def test_raycluster_manifest_has_the_required_fields():
    manifest = _load(CLUSTERS / "kuberay" / "raycluster.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    assert manifest["metadata"]["name"]
    _check_cluster_spec(manifest["spec"])


def test_rayjob_manifest_runs_skinr1_on_the_same_cluster_spec():
    job = _load(CLUSTERS / "kuberay" / "rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert set(spec) <= RAY_JOB_SPEC_FIELDS, set(spec) - RAY_JOB_SPEC_FIELDS
    assert ("rayClusterSpec" in spec) != ("clusterSelector" in spec), "one of rayClusterSpec / clusterSelector"
    if "rayClusterSpec" in spec:
        _check_cluster_spec(spec["rayClusterSpec"])
        cluster = _load(CLUSTERS / "kuberay" / "raycluster.yaml")
        assert spec["rayClusterSpec"] == cluster["spec"], "rayjob.yaml and raycluster.yaml describe different clusters"
        assert spec["shutdownAfterJobFinishes"] is True
    assert spec.get("submissionMode", "K8sJobMode") in SUBMISSION_MODES
    assert isinstance(spec.get("backoffLimit", 0), int) and spec.get("backoffLimit", 0) >= 0
    if "entrypointResources" in spec:
        assert isinstance(json.loads(spec["entrypointResources"]), dict)  # a JSON string, not a mapping
    config, overrides = _load_skinr1_command(spec["entrypoint"])
    run_dir = next(o.split("=", 1)[1] for o in overrides if o.startswith("run_dir="))
    assert run_dir.startswith(SHARED + "/") and "://" not in run_dir
    assert str(config.run_path) == run_dir


def test_rayjob_runtime_env_matches_the_submitted_one():
    from ray.runtime_env import RuntimeEnv

    job_env = yaml.safe_load(_load(CLUSTERS / "kuberay" / "rayjob.yaml")["spec"]["runtimeEnvYAML"])
    assert set(job_env) <= _public_runtime_env_fields()
    RuntimeEnv(**job_env)
    assert job_env["env_vars"] == _load(CLUSTERS / "runtime_env.yaml")["env_vars"]


# ----------------------------------------------------------------- runtime env
def _public_runtime_env_fields() -> set[str]:
    from ray.runtime_env import RuntimeEnv

    return {f for f in RuntimeEnv.known_fields if not f.startswith("_")}


def test_runtime_env_uses_only_keys_ray_knows_and_installs_nothing_when_built(offline, tmp_path, monkeypatch):
    from ray.runtime_env import RuntimeEnv

    data = _load(CLUSTERS / "runtime_env.yaml")
    # RuntimeEnv accepts unknown keys silently (they are dropped at job start with a warning).
    assert set(data) <= _public_runtime_env_fields(), set(data) - _public_runtime_env_fields()
    monkeypatch.chdir(tmp_path)
    env = RuntimeEnv(**data)  # validation only: uploading and pip run at submission / on the nodes
    assert list(tmp_path.iterdir()) == []
    assert env.working_dir() == "." and env.has_pip()
    assert any("[gpu]" in p and "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}" in p for p in data["pip"]["packages"])
    assert {".venv/", "runs/", ".git/"} <= set(data["excludes"])


def test_runtime_env_variables_do_not_collide_with_the_drivers():
    from skinr1.cluster import LOCAL_NODE_ENV, LOOPBACK_ENV

    env_vars = _load(CLUSTERS / "runtime_env.yaml")["env_vars"]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()), "Ray wants strings"
    # init_ray passes these to ray.init inside the job; Ray refuses to merge a job runtime env and
    # a driver runtime env that set the same variable.
    assert not set(env_vars) & (set(LOOPBACK_ENV) | set(LOCAL_NODE_ENV))
    assert not [k for k in env_vars if re.search(r"(^|_)(KEY|TOKEN|SECRET|PASSWORD)(_|$)", k)], "no secrets in a job's runtime env"


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
    manifest = _load(path)
    assert _cluster_specs(manifest), f"{path.name} describes no cluster"
    assert kuberay_exposure_problems(manifest) == []


@pytest.mark.parametrize("path", sorted(CLUSTERS.glob("*.yaml")), ids=lambda p: p.name)
def test_cluster_files_never_turn_ray_auth_off(path):
    text = path.read_text()
    assert not re.search(r"RAY_AUTH_MODE[\"']?\s*[:=]\s*[\"']?disabled", text), f"{path.name} disables Ray auth"
    config = _load(path)
    if "head_start_ray_commands" in config:  # a `ray up` launcher config
        assert launcher_exposure_problems(config) == []


def test_exposure_checks_catch_an_open_cluster():
    manifest = _load(CLUSTERS / "kuberay" / "raycluster.yaml")
    del manifest["spec"]["authOptions"]
    problems = kuberay_exposure_problems(manifest)
    assert any("token authentication is off" in p for p in problems)
    assert any("dashboard-host 0.0.0.0" in p for p in problems)
    launcher = _load(CLUSTERS / "aws.yaml")
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
SUBMIT = CLUSTERS / "submit.sh"


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
    config, _ = _load_skinr1_command(shlex.join(entry))
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


# ----------------------------------------------------------------- references
def test_every_referenced_config_exists():
    pattern = re.compile(r"--config[ =]+[\"'`]?([\w./-]+\.ya?ml)")
    found = {}
    for path in [*CLUSTERS.rglob("*"), ROOT / "docs" / "cluster.md"]:
        if path.is_file():
            for reference in pattern.findall(path.read_text()):
                found.setdefault(reference, []).append(path.name)
    default = re.search(r'^config="([^"]+)"', SUBMIT.read_text(), re.M).group(1)
    found.setdefault(default, []).append("submit.sh default")
    assert "skinr1/configs/paper.yaml" in found
    missing = {ref: where for ref, where in found.items() if not _config_path(ref).is_file()}
    assert not missing, missing
