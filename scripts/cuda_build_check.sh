#!/usr/bin/env bash
# Builds the whole extension WITH CUDA on a machine without a GPU, against PyTorch 2.11.0's
# CUDA 13.0 wheel (the torch and CUDA of the GPU machines), and reports each kernel's registers
# and spills (ptxas -v) and which fused_lstm ops have no CUDA kernel registered. Runs no kernel.
#
#   bash scripts/cuda_build_check.sh            (CUDA_CHECK_TESTS=1 also runs the CPU tests
#                                                against that build, with torch 2.11)
#
# Exits 0 with a message when there is no nvcc.
# Env: CUDA_HOME, CUDA_CHECK_TORCH (2.11.0), CUDA_CHECK_VENV, CUDA_CHECK_PACKAGE (fused_lstm),
#      TORCH_CUDA_ARCH_LIST (9.0), CUDA_CHECK_TESTS=1, KEEP_LOG=1, MAX_JOBS (2),
#      CUDA_CHECK_PYTHON (python3: the interpreter the venv is made with),
#      CUDA_CHECK_KEEP_SO=DIR (copy the built extension, fused_lstm/_C.*.so, into DIR: the
#      prebuilt extension that benchmarks/gpu_check.sh uses instead of compiling on the GPU
#      machine; scripts/gpu_prebuild.sh sets all of this up).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Find CUDA: $CUDA_HOME, /usr/local/cuda, or the directory of the real nvcc on PATH.
cuda_home=${CUDA_HOME:-/usr/local/cuda}
if [ ! -x "$cuda_home/bin/nvcc" ]; then
  if ! command -v nvcc >/dev/null 2>&1; then
    echo "cuda_build_check: no nvcc found (CUDA_HOME=$cuda_home, none on PATH); skipping the CUDA build check"
    exit 0
  fi
  # nvcc may be a wrapper script (e.g. /usr/local/bin/nvcc -> exec /usr/local/cuda-X/bin/nvcc);
  # ask it where its toolkit is.
  here=$(cd /tmp && nvcc -dryrun -x cu -c /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ _HERE_=//p' | head -1)
  cuda_home=$(cd "${here:-/nonexistent}/.." 2>/dev/null && pwd || true)
  if [ -z "$cuda_home" ] || [ ! -x "$cuda_home/bin/nvcc" ] || [ ! -d "$cuda_home/include" ]; then
    echo "cuda_build_check: nvcc is on PATH but its toolkit directory was not found; set CUDA_HOME"
    exit 1
  fi
fi
export CUDA_HOME=$cuda_home

# The venv with torch's CUDA wheel (first run only; CUDA_CHECK_VENV moves it). It also holds what
# the test suite needs -- matplotlib and tqdm, for tests/test_benchmark_cli.py -- when
# CUDA_CHECK_TESTS=1.
torch_version=${CUDA_CHECK_TORCH:-2.11.0}
python=${CUDA_CHECK_PYTHON:-python3}
venv=${CUDA_CHECK_VENV:-$HOME/.cache/cuda-build-check/torch-$torch_version}
export CUDA_CHECK_TORCH=$torch_version CUDA_CHECK_VENV=$venv
if ! "$venv/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then
  echo "cuda_build_check: making $venv (PyTorch $torch_version built for CUDA 13.0, ~5 GB; first run only)"
  rm -rf "$venv"; "$python" -m venv "$venv"
  # --isolated: the machine's pip settings may prefer a local CPU-only torch wheel; we need CUDA's.
  "$venv/bin/pip" --isolated install -q "torch==$torch_version" numpy ninja pybind11 setuptools \
    wheel pytest hypothesis matplotlib tqdm
fi
if [ -n "${CUDA_CHECK_TESTS:-}" ] && ! "$venv/bin/python" -c "import matplotlib, tqdm" 2>/dev/null; then
  "$venv/bin/pip" --isolated install -q matplotlib tqdm
fi

proj=$root
arch=${TORCH_CUDA_ARCH_LIST:-9.0}
# The CUDA library headers (cuBLAS, cuDNN, ...) come with the wheel's nvidia-* packages.
nv_include=$("$venv/bin/python" -c "import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], 'cu13', 'include'))")

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
# Build a copy (tracked + untracked, not ignored files) so the repo's own build/ is left alone.
(cd "$proj" && git ls-files -co --exclude-standard -z | tar --null -cf - -T -) | tar -xf - -C "$work"
log="$work/build.log"
echo "cuda_build_check: building $(basename "$proj") with CUDA for TORCH_CUDA_ARCH_LIST=$arch"
if ! (cd "$work" && CUDA_HOME="$cuda_home" CPATH="$nv_include${CPATH:+:$CPATH}" FORCE_CUDA=1 \
      TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="${MAX_JOBS:-2}" NVCC_APPEND_FLAGS="-Xptxas -v" \
      "$venv/bin/pip" --isolated install --no-build-isolation --no-deps -v . >"$log" 2>&1); then
  grep -nE "error|Error" "$log" | grep -v -- "-Werror" | head -40 || true
  echo "cuda_build_check: BUILD FAILED (full log: rerun with KEEP_LOG=1)"
  if [ -n "${KEEP_LOG:-}" ]; then cp "$log" "$proj/cuda-build-check.log"; fi
  exit 1
fi
# The extension just built, as installed in the venv.
built_so=$("$venv/bin/python" -c 'import glob, os, sysconfig; print(glob.glob(os.path.join(sysconfig.get_paths()["purelib"], "fused_lstm", "_C.*.so"))[0])')
if [ -n "${CUDA_CHECK_KEEP_SO:-}" ]; then
  mkdir -p "$CUDA_CHECK_KEEP_SO"
  cp "$built_so" "$CUDA_CHECK_KEEP_SO/"
  echo "cuda_build_check: kept the built extension in $CUDA_CHECK_KEEP_SO"
fi
echo "-- ptxas: registers and spills per kernel"
grep -E "Compiling entry function|Used [0-9]+ registers|spill stores" "$log" | sed -E 's/^ *//' |
  awk '/Compiling entry/ {k=$0; sub(/.*function ./,"",k); sub(/. for .*/,"",k)}
       /spill stores/ {s=$0} /Used [0-9]+ registers/ {r=$0; sub(/.*Used /,"",r); sub(/, used.*/,"",r); printf "%s\t%s | %s\n", k, r, s}' |
  sort -u | { command -v c++filt >/dev/null && c++filt || cat; } |
  awk -F'\t' '{printf "%-70.70s %s\n", $1, $2}' | head -60 || true
echo "-- CUDA kernels registered with the dispatcher"
mkdir "$work/run"
(cd "$work/run" && CUDA_CHECK_PACKAGE="${CUDA_CHECK_PACKAGE:-fused_lstm}" "$venv/bin/python" - <<'PY'
import importlib, os, sys, torch
pkg = os.environ["CUDA_CHECK_PACKAGE"]
try:
    mod = importlib.import_module(pkg)
except Exception as e:  # the build installed, but the package does not import
    print(f"import {pkg} failed: {type(e).__name__}: {e}"); sys.exit(1)
ops = sorted({n.split("::", 1)[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names()
              if n.startswith(pkg + "::")})
missing = [n for n in ops if not torch._C._dispatch_has_kernel_for_dispatch_key(f"{pkg}::{n}", "CUDA")]
print(f"ops: {ops}")
print("ops without a CUDA kernel:", missing or "none")
sys.exit(1 if missing or not ops else 0)
PY
)
if [ -n "${CUDA_CHECK_TESTS:-}" ] && [ -d "$work/tests" ]; then
  echo "-- CPU tests against this build (torch $torch_version)"
  # The tests import the `tests` and `benchmarks` packages from the tree and run its scripts, which
  # import the tree's fused_lstm: so the copy gets the extension just built, as an in-place build
  # has it (the copy holds no other: ignored files such as a *.so are not copied).
  cp "$built_so" "$work/fused_lstm/"
  (cd "$work" && "$venv/bin/python" -m pytest -q -x -p no:cacheprovider tests)
fi
echo "cuda_build_check: OK"
