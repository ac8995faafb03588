"""Offline checks of the cluster launch files in clusters/ and the guide docs/cluster.md.

Nothing here starts Ray or contacts a cloud: the launcher configs are validated with Ray's own
cluster-config JSON schema and its `prepare_config` / `validate_config` (which only read local
defaults files; a fixture makes any network connection fail the test), the KubeRay manifests are
checked against the field names of KubeRay's ray.io/v1 Go types, the runtime env against the keys
`ray.runtime_env.RuntimeEnv` knows. Who can reach the cluster, and submit.sh, are checked in
test_cluster_access.py.
"""

from __future__ import annotations

import copy
import json
import re
import socket
from pathlib import Path

import pytest
import yaml

from cluster_files import CLUSTERS, CODE_ROOT, ROOT, TOKEN_MOUNT, config_path, load_skinr1_command, load_yaml

LAUNCHER_CONFIGS = ("aws.yaml", "gcp.yaml")
# The shared file system every node mounts; skinr1/configs/paper.yaml keeps run_dir and data there.
SHARED = "/mnt/shared"

# Field names of KubeRay's ray.io/v1 types (ray-operator/apis/ray/v1/raycluster_types.go and
# rayjob_types.go, KubeRay 1.x). A misspelt field is pruned or rejected by the CRD's schema, so the
# manifests may only use these.
RAY_CLUSTER_SPEC_FIELDS = {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling",
                           "autoscalerOptions", "headServiceAnnotations", "suspend", "authOptions"}
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

    config = load_yaml(CLUSTERS / name)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # the file as written
    # What `ray up` does before it talks to the cloud: merge the provider's defaults, then validate
    # (head/worker types, per-type min/max against the global max_workers, docker settings).
    validate_config(prepare_config(copy.deepcopy(config)))


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_node_types_label_the_roles(name):
    config = load_yaml(CLUSTERS / name)
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
    config = load_yaml(CLUSTERS / name)
    assert config["file_mounts"] == {CODE_ROOT: ".", TOKEN_MOUNT: "~/.ray/auth_token"}, \
        "the checkout `ray up` runs in, and the Ray auth token, go to every node"
    installs = [c for c in config["setup_commands"] if re.search(r"pip install\b", c)]
    assert any(f'"{CODE_ROOT}[gpu]"' in c for c in installs), installs
    assert any("check_versions(need_vllm=True)" in c for c in config["setup_commands"])
    for excluded in (".venv", "runs", ".git"):
        assert excluded in config["rsync_exclude"]


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_mounts_the_shared_file_system(name):
    config = load_yaml(CLUSTERS / name)
    assert f"--volume={SHARED}:{SHARED}" in config["docker"]["run_options"]
    assert any(f" {SHARED})" in c or c.rstrip().endswith(SHARED) for c in config["initialization_commands"]), (
        "the host must mount the shared file system before the container starts"
    )


# ----------------------------------------------------------------- images and versions
def _images() -> dict[str, str]:
    images = {}
    for name in LAUNCHER_CONFIGS:
        images[name] = load_yaml(CLUSTERS / name)["docker"]["image"]
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
        manifest = load_yaml(CLUSTERS / "kuberay" / name)
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
    paper = load_yaml(ROOT / "skinr1" / "configs" / "paper.yaml")
    assert paper["run_dir"].startswith(SHARED + "/") and paper["data"]["dir"].startswith(SHARED + "/")
    runtime_env = load_yaml(CLUSTERS / "runtime_env.yaml")
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
    manifest = load_yaml(CLUSTERS / "kuberay" / "raycluster.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    assert manifest["metadata"]["name"]
    _check_cluster_spec(manifest["spec"])


def test_rayjob_manifest_runs_skinr1_on_the_same_cluster_spec():
    job = load_yaml(CLUSTERS / "kuberay" / "rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert set(spec) <= RAY_JOB_SPEC_FIELDS, set(spec) - RAY_JOB_SPEC_FIELDS
    assert ("rayClusterSpec" in spec) != ("clusterSelector" in spec), "one of rayClusterSpec / clusterSelector"
    if "rayClusterSpec" in spec:
        _check_cluster_spec(spec["rayClusterSpec"])
        cluster = load_yaml(CLUSTERS / "kuberay" / "raycluster.yaml")
        assert spec["rayClusterSpec"] == cluster["spec"], "rayjob.yaml and raycluster.yaml describe different clusters"
        assert spec["shutdownAfterJobFinishes"] is True
    assert spec.get("submissionMode", "K8sJobMode") in SUBMISSION_MODES
    assert isinstance(spec.get("backoffLimit", 0), int) and spec.get("backoffLimit", 0) >= 0
    if "entrypointResources" in spec:
        assert isinstance(json.loads(spec["entrypointResources"]), dict)  # a JSON string, not a mapping
    config, overrides = load_skinr1_command(spec["entrypoint"])
    run_dir = next(o.split("=", 1)[1] for o in overrides if o.startswith("run_dir="))
    assert run_dir.startswith(SHARED + "/") and "://" not in run_dir
    assert str(config.run_path) == run_dir


def test_rayjob_runtime_env_matches_the_submitted_one():
    from ray.runtime_env import RuntimeEnv

    job_env = yaml.safe_load(load_yaml(CLUSTERS / "kuberay" / "rayjob.yaml")["spec"]["runtimeEnvYAML"])
    assert set(job_env) <= _public_runtime_env_fields()
    RuntimeEnv(**job_env)
    assert job_env["env_vars"] == load_yaml(CLUSTERS / "runtime_env.yaml")["env_vars"]


# ----------------------------------------------------------------- runtime env
def _public_runtime_env_fields() -> set[str]:
    from ray.runtime_env import RuntimeEnv

    return {f for f in RuntimeEnv.known_fields if not f.startswith("_")}


def test_runtime_env_uses_only_keys_ray_knows_and_installs_nothing_when_built(offline, tmp_path, monkeypatch):
    from ray.runtime_env import RuntimeEnv

    data = load_yaml(CLUSTERS / "runtime_env.yaml")
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

    env_vars = load_yaml(CLUSTERS / "runtime_env.yaml")["env_vars"]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()), "Ray wants strings"
    # init_ray passes these to ray.init inside the job; Ray refuses to merge a job runtime env and
    # a driver runtime env that set the same variable.
    assert not set(env_vars) & (set(LOOPBACK_ENV) | set(LOCAL_NODE_ENV))
    assert not [k for k in env_vars if re.search(r"(^|_)(KEY|TOKEN|SECRET|PASSWORD)(_|$)", k)], "no secrets in a job's runtime env"


# ----------------------------------------------------------------- references
SUBMIT = CLUSTERS / "submit.sh"


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
    missing = {ref: where for ref, where in found.items() if not config_path(ref).is_file()}
    assert not missing, missing
