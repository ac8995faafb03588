#!/usr/bin/env bash
# GPU checks (ARCHITECTURE.md, "Verification levels").
#   level 1: the learner alone, in-process (torch, transformers, peft, deepspeed; no Ray, no vLLM):
#            2 SFT + 2 GRPO steps in bf16 on one GPU            -> python -m skinr1.gpu_check
#   level 2: the whole GRPO loop with Ray and CUDA vLLM, 2 steps: engine vs learner log-probs after
#            a sync within the bf16 tolerance, equal image-token counts -> python -m skinr1.gpu_check_level2
# Usage: scripts/gpu_check.sh [1|2|all]   (PYTHON=... picks the interpreter; default python)
# Without CUDA it prints SKIP and exits 0 (SKINR1_REQUIRE_GPU=1 makes that exit 1). Level 1's CPU
# variant runs in the test suite (tests/gpu/test_level1.py), so the code path is exercised anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
LEVEL=${1:-all}

skip() {
  echo "SKIP: $*"
  if [[ "${SKINR1_REQUIRE_GPU:-0}" == "1" ]]; then exit 1; fi
  exit 0
}

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  skip "no CUDA device is visible to torch ($("$PY" -c 'import torch; print("torch", torch.__version__)' 2>/dev/null || echo 'torch not importable')); the GPU checks need one"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

if [[ "$LEVEL" == "1" || "$LEVEL" == "all" ]]; then
  echo "== level 1: learner in-process (bf16)"
  "$PY" -m skinr1.gpu_check --device cuda --dtype bfloat16
fi
if [[ "$LEVEL" == "2" || "$LEVEL" == "all" ]]; then
  if ! "$PY" -c "import ray, vllm" 2>/dev/null; then
    skip "level 2 needs Ray and the CUDA vLLM build (pip install 'skinr1[gpu]'); level 1 ran above"
  fi
  echo "== level 2: Ray + vLLM GRPO loop (bf16)"
  "$PY" -m skinr1.gpu_check_level2 --dtype bfloat16
fi
echo "GPU checks passed (level $LEVEL)"
