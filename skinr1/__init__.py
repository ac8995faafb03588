"""SkinR1: hierarchical, textbook-guided reinforcement learning for skin-disease diagnosis on Ray."""

from skinr1.platform_fixes import install_import_hook as _install_import_hook

__version__ = "0.1.0"

# Cheap (no torch import): only arms a hook that runs on the first `import torchvision`.
_install_import_hook()
