"""Set-up guards: version checks, the torchvision start-up hook, the interim demo command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from skinr1 import versions


def test_installed_stack_passes_the_version_check():
    assert versions.version_problems(need_vllm=True) == []


def test_version_problems_are_explained(monkeypatch):
    real = versions.installed_version
    fake = {"ray": "2.61.0", "torchaudio": "2.11.0"}
    monkeypatch.setattr(versions, "installed_version", lambda name: fake.get(name, real(name)))
    problems = "\n".join(versions.version_problems(need_vllm=False))
    assert "ray 2.61.0 is installed" in problems
    assert "torchaudio is installed next to a CPU torch" in problems
    with pytest.raises(versions.VersionError, match="SKINR1_ALLOW_UNTESTED_VERSIONS"):
        versions.check_versions()
    monkeypatch.setenv(versions.ALLOW_ENV, "1")
    with pytest.warns(UserWarning, match="untested"):
        versions.check_versions()


def test_torchvision_imports_in_a_fresh_interpreter():
    # The .pth hook written by scripts/setup.sh must make a bare `import torchvision` work.
    code = "import torchvision, transformers; print(torchvision.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
