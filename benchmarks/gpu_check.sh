#!/usr/bin/env bash
# One GPU verification run, in one call: build with CUDA (or use the extension prebuilt by
# scripts/gpu_prebuild.sh on a machine without a GPU, when it imports), run the CUDA tests (every
# kernel variant, the opt-in ones too), run compute-sanitizer (memcheck, racecheck, synccheck) on a
# small forward+backward, and benchmark against torch.nn.LSTM (cuDNN), then probe the per-step
# cost. Everything lands under $OUT (default ./gpu-out), in eight files:
#   summary.txt (environment, per-stage status, registers/spills)  build.log  tests.log
#   sanitizer.log  bench.log (tables + probe output)  bench.json
#   bench-generic.json (fwd+bwd with the generic backward loop forced, against cuDNN)
#   probe.json (us per step, fused vs cuDNN, and the grid barrier's cost: gpu_step_probe.py,
#   grid_barrier_probe.cu)
# Stage time boxes add up to under 600 s, one device call.
# Usage (repo root, on a machine with a GPU):  bash benchmarks/gpu_check.sh
#   GPU_CHECK_QUICK=1: a ~3-minute subset for the end of a device budget: test_cuda.py only,
#   memcheck and racecheck on the quick sanitizer cases, the gpu suite (inference and fwd+bwd)
#   with shorter timing, no generic-loop comparison, no probes, no synccheck.
# Stages are time-boxed and independent: a failing stage is reported and the next one still runs;
# the exit status is non-zero if any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
PY=${PYTHON:-python3}
QUICK=${GPU_CHECK_QUICK:-0}
status=0
summary="$OUT/summary.txt"
: >"$summary"

stage() {  # stage NAME SECONDS LOG COMMAND...
  local name=$1 seconds=$2 log=$3; shift 3
  local start=$SECONDS
  echo "== $name" | tee -a "$summary"
  timeout "$seconds" "$@" >"$log" 2>&1
  local rc=$?
  echo "   rc=$rc in $((SECONDS - start)) s (log: $(basename "$log"))" | tee -a "$summary"
  [ $rc -eq 0 ] || { status=1; tail -n 25 "$log"; }
  return $rc
}

{
  echo "== environment"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
  nvcc --version | tail -n 2
  echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
} >>"$summary" 2>&1
cat "$summary"

# A prebuilt extension (scripts/gpu_prebuild.sh, copied along as fused_lstm/_C.cpython-312-*.so)
# saves the build minute when it imports here with CUDA against this torch; otherwise build.
prebuilt_ok() {
  ls fused_lstm/_C.*.so >/dev/null 2>&1 && (cd /tmp && PYTHONPATH="$OLDPWD" $PY -c "
import sys, torch, fused_lstm
info = fused_lstm.build_info()
sys.exit(0 if info['cuda_built'] and torch.__version__.startswith(info['torch_version_built']) else 1)")
}
if prebuilt_ok; then
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  echo "== build: using the prebuilt extension $(ls fused_lstm/_C.*.so)" | tee -a "$summary" "$OUT/build.log"
elif ! { rm -f fused_lstm/_C.*.so; stage build 100 "$OUT/build.log" env MAX_JOBS=16 NVCC_APPEND_FLAGS="-Xptxas -v" \
    $PY -m pip install --no-build-isolation --no-deps --no-index -v -e .; }; then
  echo "build failed: nothing else can run" | tee -a "$summary"
  exit 1
fi
grep -E "Compiling entry function|Used [0-9]+ registers|spill stores" "$OUT/build.log" |
  sed -E 's/^ *//' | awk '/Compiling entry/ {k=$0; sub(/.*function ./,"",k); sub(/. for .*/,"",k)}
    /spill stores/ {s=$0} /Used [0-9]+ registers/ {r=$0; sub(/.*Used /,"",r); sub(/, used.*/,"",r);
    printf "%-70.70s %s | %s\n", k, r, s}' | sort -u | c++filt >>"$summary" || true
(cd /tmp && PYTHONPATH="$OLDPWD${PYTHONPATH:+:$PYTHONPATH}" $PY -c "
import fused_lstm
print(fused_lstm.build_info())
for v in fused_lstm.cuda_kernel_variants():
    print(f\"variant {v['name']}: verified_at={v['verified_at']}\")") | tee -a "$summary"
# The tests run every variant, the unverified ones too (tests/test_cuda.py opts them in by name):
# a passing run verifies them all at this commit (Note [Verified CUDA kernel variants]).

if [ "$QUICK" = 1 ]; then
  stage tests 60 "$OUT/tests.log" $PY -m pytest -q -rs tests/test_cuda.py
else
  stage tests 100 "$OUT/tests.log" $PY -m pytest -q -rs tests/test_cuda.py tests/test_layer_parity.py
  # The CUDA parts of the reliability, bad-input, differential and higher-order suites.
  stage "tests (other CUDA-marked)" 45 "$OUT/tests-more.tmp" $PY -m pytest -q -rs -m cuda \
    tests/test_differential.py tests/test_reliability.py tests/test_bad_inputs.py tests/test_higher_order.py
  stage "fuzz (CUDA, 300 configs)" 40 "$OUT/fuzz.tmp" $PY benchmarks/fuzz_differential.py --device cuda --count 300
  { echo "===== other CUDA-marked tests"; cat "$OUT/tests-more.tmp"; echo "===== fuzz"; cat "$OUT/fuzz.tmp"; } >>"$OUT/tests.log"
  tail -n 2 "$OUT/tests-more.tmp" "$OUT/fuzz.tmp" | tee -a "$summary"
  rm -f "$OUT/tests-more.tmp" "$OUT/fuzz.tmp"
fi
tail -n 3 "$OUT/tests.log" | tee -a "$summary"

# memcheck on every kernel variant; racecheck/synccheck (shared-memory hazards, barriers) on one
# packed bidirectional case per dtype and load path: every kernel that uses shared memory.
san="$OUT/sanitizer.log"
: >"$san"
sanitize() {  # sanitize TOOL SECONDS [ARGS]
  local tool=$1 seconds=$2; shift 2
  stage "sanitizer $tool" "$seconds" "$OUT/sanitizer-$tool.tmp" \
    compute-sanitizer --tool "$tool" --error-exitcode 9 $PY benchmarks/gpu_sanitize_case.py "$@"
  { echo "===== $tool"; cat "$OUT/sanitizer-$tool.tmp"; } >>"$san"
  tail -n 3 "$OUT/sanitizer-$tool.tmp" | tee -a "$summary"
  rm -f "$OUT/sanitizer-$tool.tmp"
}
if [ "$QUICK" = 1 ]; then
  sanitize memcheck 25 --quick
  FUSED_LSTM_CUDA_UNVERIFIED=all sanitize memcheck 25 --quick
  sanitize racecheck 40 --quick
  stage benchmark 50 "$OUT/bench.log" $PY benchmarks/benchmark.py --suite gpu --repeat-seconds 0.15 \
    --modes inference,fwdbwd --json "$OUT/bench.json"
  tail -n 30 "$OUT/bench.log"
  echo "status=$status (quick)" | tee -a "$summary"
  exit $status
fi
sanitize memcheck 40
FUSED_LSTM_CUDA_UNVERIFIED=all sanitize memcheck 30 --quick   # the opt-in variants too

stage benchmark 80 "$OUT/bench.log" $PY benchmarks/benchmark.py --suite gpu --repeat-seconds 0.3 \
  --json "$OUT/bench.json"
tail -n 40 "$OUT/bench.log"
# fwd+bwd with the backward's generic per-step loop forced: what the persistent backward gains.
stage "benchmark (generic backward loop)" 40 "$OUT/bench-generic.tmp" \
  $PY benchmarks/benchmark.py --suite gpu --repeat-seconds 0.3 --modes fwdbwd --impls nn,fused_generic \
  --json "$OUT/bench-generic.json"
{ echo "===== --impls nn,fused_generic (FUSED_LSTM_CUDA_ALGO=generic)"; cat "$OUT/bench-generic.tmp"; } >>"$OUT/bench.log"
rm -f "$OUT/bench-generic.tmp"

# Per-step cost: the grid barrier alone (torch-free probe), then fused vs cuDNN per step.
stage "probe (grid barrier)" 30 "$OUT/barrier.tmp" bash -c \
  'nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/grid_barrier_probe benchmarks/grid_barrier_probe.cu && /tmp/grid_barrier_probe'
stage "probe (us per step)" 50 "$OUT/probe.tmp" \
  $PY benchmarks/gpu_step_probe.py --barrier "$OUT/barrier.tmp" --json "$OUT/probe.json"
{ echo "===== probe"; cat "$OUT/barrier.tmp" "$OUT/probe.tmp"; } | tee -a "$OUT/bench.log"
rm -f "$OUT/probe.tmp" "$OUT/barrier.tmp"

sanitize racecheck 40 --quick
sanitize synccheck 20 --quick
echo "status=$status" | tee -a "$summary"
exit $status
