"""Where the cluster launch files are, and how the tests read them (no Ray, no network)."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"
# Where file_mounts (launcher) and clusters/Dockerfile (KubeRay image) put the checkout.
CODE_ROOT = "/home/ray/skinr1"
# Where the launcher configs put this machine's Ray auth token on every node (Ray's default path).
TOKEN_MOUNT = "/home/ray/.ray/auth_token"


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def config_path(path: str) -> Path:
    """A --config path as the cluster sees it, mapped back into this checkout."""
    if path.startswith(CODE_ROOT + "/"):
        return ROOT / path[len(CODE_ROOT) + 1:]
    assert not path.startswith("/"), f"{path}: absolute config paths must live under {CODE_ROOT}"
    return ROOT / path


def load_skinr1_command(command: str):
    """Parse `skinr1 STAGE --config FILE k=v ...` and load the run config it names (no Ray)."""
    from skinr1.config.schema import load_run_config

    words = shlex.split(command)
    assert words[:1] == ["skinr1"] and words[1] in ("rl", "pipeline"), command
    assert "--config" in words, command
    config_file = config_path(words[words.index("--config") + 1])
    assert config_file.is_file(), f"{command}: {config_file} does not exist"
    overrides = [w for w in words[2:] if "=" in w and not w.startswith("-")]
    return load_run_config(config_file, overrides), overrides
