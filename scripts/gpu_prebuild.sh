#!/usr/bin/env bash
# Builds the CUDA extension for the GPU machines on a machine WITHOUT a GPU, so that a GPU run
# spends no time compiling: Python 3.12 + torch 2.11.0 built for CUDA 13.0 (what the GPU machines
# run), TORCH_CUDA_ARCH_LIST=9.0 (H100/H200). The result is fused_lstm/_C.cpython-312-*.so in the
# repository (git-ignored); copy it along to the GPU machine, where benchmarks/gpu_check.sh uses
# it when it imports there, and compiles from source otherwise.
#
#   bash scripts/gpu_prebuild.sh          (first run: a ~5 GB venv; then a few minutes of build)
#
# Env: PREBUILD_PYTHON (python3.12 from PATH or pyenv), TORCH_CUDA_ARCH_LIST (9.0).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The first Python 3.12 that runs (a pyenv shim on PATH may exist and still fail).
python=${PREBUILD_PYTHON:-}
if [ -z "$python" ]; then
  for candidate in $(command -v python3.12) "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      python=$candidate
      break
    fi
  done
fi
[ -n "$python" ] || { echo "gpu_prebuild: no working python3.12 found (set PREBUILD_PYTHON)"; exit 1; }
rm -f "$root"/fused_lstm/_C.cpython-312-*.so
CUDA_CHECK_PYTHON=$python CUDA_CHECK_VENV="$HOME/.cache/cuda-build-check/torch-2.11.0-py312" \
  CUDA_CHECK_KEEP_SO="$root/fused_lstm" TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} \
  bash "$root/scripts/cuda_build_check.sh"
ls -l "$root"/fused_lstm/_C.cpython-312-*.so
