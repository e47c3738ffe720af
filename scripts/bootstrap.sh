#!/usr/bin/env bash
# Idempotent setup for a fresh machine: install what the build needs (only what is missing),
# then build and install fused_lstm in place (editable, against the torch that is installed).
#
#   bash scripts/bootstrap.sh
#
# - torch: installs torch==2.13.0 (a CPU wheel on the dev/CI machines) ONLY when `import torch`
#   fails. An installed torch is always kept: the GPU machines have torch 2.11 built for CUDA and
#   no network, and the extension must be built against the torch it will run with.
# - numpy, pybind11, ninja, pytest, setuptools, wheel, matplotlib, tqdm: installed only when
#   missing, so a machine that has them all (the GPU machines) never calls pip for them.
#   matplotlib: benchmark plots (benchmarks/plot.py; tests/test_benchmark_cli.py requires it);
#   tqdm: the benchmark's progress bar. The build does not need these two, so failing to
#   install them (e.g. no network) is a warning, not an error; the build still runs.
# - onnx, onnxscript, onnxruntime: the ONNX export test (fused_lstm.onnx); also optional.
# - Then `pip install --no-build-isolation --no-deps -e .` from the repo root (no build isolation:
#   an isolated build would pull a different torch than the one installed) the first time; later
#   runs rebuild only when the sources changed, incrementally (see the end of this script).
# Env: PYTHON (default python3), FUSED_LSTM_FORCE_CPU=1 (CPU-only build), TORCH_CUDA_ARCH_LIST.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-python3}
say() { echo "bootstrap: $*"; }

has_module() { "$py" -c "import $1" >/dev/null 2>&1; }

# torch
if has_module torch; then
  say "torch $("$py" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)') already installed; keeping it"
else
  say "torch missing; installing torch==2.13.0"
  "$py" -m pip install -q "torch==2.13.0"
fi

# build and test tools; `import name` for each pip package
missing=()
for spec in numpy:numpy pybind11:pybind11 ninja:ninja pytest:pytest setuptools:setuptools wheel:wheel; do
  mod=${spec%%:*}; pkg=${spec##*:}
  if [ "$mod" = ninja ] && command -v ninja >/dev/null 2>&1; then
    continue  # torch.utils.cpp_extension only needs the ninja executable on PATH
  fi
  has_module "$mod" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing missing packages: ${missing[*]}"
  "$py" -m pip install -q "${missing[@]}"
else
  say "numpy pybind11 ninja pytest setuptools wheel: all present"
fi

# Optional packages (not needed to build): installed when missing; failing to install them is a
# warning, not an error.  install_optional WHAT CONSEQUENCE MODULE...
install_optional() {
  local what=$1 consequence=$2; shift 2
  local missing=() mod
  for mod in "$@"; do
    has_module "$mod" || missing+=("$mod")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    say "$*: present"
  elif ! { say "installing missing $what packages: ${missing[*]}"; "$py" -m pip install -q "${missing[@]}"; }; then
    say "WARNING: could not install ${missing[*]}: $consequence"
  fi
}
install_optional benchmark "benchmark plots and tests/test_benchmark_cli.py need them" matplotlib tqdm
# ONNX export test tools (tests/test_onnx_export.py skips without them)
install_optional ONNX "the ONNX export tests will be skipped" onnx onnxscript onnxruntime

# torch.utils.cpp_extension runs `ninja` from PATH; a pip-installed ninja lives in the Python's
# bin directory, which is not on PATH when e.g. a venv's python is used without activating it.
if ! command -v ninja >/dev/null 2>&1; then
  if ninja_bin=$("$py" -c "import ninja; print(ninja.BIN_DIR)" 2>/dev/null); then
    export PATH="$ninja_bin:$PATH"
  fi
fi

# The extension itself. An unchanged tree (same sources, torch, Python and build variables as the
# last successful build) is not rebuilt; a changed one is rebuilt incrementally by ninja in the
# kept build/ directory (only what changed compiles). The first build installs it in place
# (editable), so later runs only need build_ext --inplace.
stamp_file="$root/build/fused_lstm-build.stamp"
stamp=$("$py" - "$root" <<'PY'
import hashlib, os, sys
import torch
root = sys.argv[1]
digest = hashlib.sha256(f"{sys.executable} {sys.version} {torch.__version__}\n".encode())
for name in ("FUSED_LSTM_FORCE_CPU", "FUSED_LSTM_DEBUG", "TORCH_CUDA_ARCH_LIST", "CUDA_HOME"):
    digest.update(f"{name}={os.environ.get(name, '')}\n".encode())
paths = [os.path.join(root, "setup.py")]
for folder, _, files in os.walk(os.path.join(root, "csrc")):
    paths += [os.path.join(folder, f) for f in files]
for path in sorted(paths):
    with open(path, "rb") as f:
        digest.update(path.encode() + b"\0" + f.read())
print(digest.hexdigest())
PY
)
installed_here() {  # fused_lstm imports from this tree, with its compiled extension
  (cd /tmp && "$py" -c "import os, sys, fused_lstm; sys.exit(0 if os.path.dirname(fused_lstm.__file__) == os.path.join(sys.argv[1], 'fused_lstm') else 1)" "$root") >/dev/null 2>&1
}
# ninja's "[3/15] c++ ... -c /path/x.cpp -o ..." lines, shortened to "[3/15] x.cpp": progress.
# (pip -v indents its build backend's output; setup.py does not.)
progress() { { grep --line-buffered -E '^ *\[[0-9]+/[0-9]+\]|error:' || true; } | sed -u -E 's#^ *(\[[0-9]+/[0-9]+\]) .* -c ([^ ]+) .*#  \1 \2#'; }
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] && installed_here; then
  say "fused_lstm is built and unchanged since the last build; nothing to compile"
elif installed_here; then
  say "sources changed: rebuilding fused_lstm incrementally in build/ (python setup.py build_ext --inplace)"
  (cd "$root" && "$py" setup.py build_ext --inplace 2>&1) | progress
else
  say "building and installing fused_lstm from $root (pip install --no-build-isolation --no-deps -e .;"
  say "the first build takes about 5 minutes on 2 cores)"
  (cd "$root" && "$py" -m pip install --no-build-isolation --no-deps -v -e . 2>&1) | progress
fi
mkdir -p "$root/build" && echo "$stamp" >"$stamp_file"
"$py" - <<'PY'
import fused_lstm
info = fused_lstm.build_info()
print(f"bootstrap: fused_lstm installed: {info}")
PY
