#!/usr/bin/env bash
# One GPU verification run, in one call: build with CUDA, run the CUDA tests, run
# compute-sanitizer (memcheck, racecheck, synccheck) on a small forward+backward, and benchmark
# against torch.nn.LSTM (cuDNN). Everything lands under $OUT (default ./gpu-out):
#   env.txt build.log tests.log sanitizer.log bench.log bench.json summary.txt
# Usage (repo root, on a machine with a GPU):  bash benchmarks/gpu_check.sh
# Stages are time-boxed and independent: a failing stage is reported and the next one still runs;
# the exit status is non-zero if any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
PY=${PYTHON:-python3}
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
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
  nvcc --version | tail -n 2
  echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if ! stage build 300 "$OUT/build.log" env MAX_JOBS=16 NVCC_APPEND_FLAGS="-Xptxas -v" \
    $PY -m pip install --no-build-isolation --no-deps --no-index -v -e .; then
  echo "build failed: nothing else can run" | tee -a "$summary"
  exit 1
fi
grep -E "Compiling entry function|Used [0-9]+ registers|spill stores" "$OUT/build.log" |
  sed -E 's/^ *//' | awk '/Compiling entry/ {k=$0; sub(/.*function ./,"",k); sub(/. for .*/,"",k)}
    /spill stores/ {s=$0} /Used [0-9]+ registers/ {r=$0; sub(/.*Used /,"",r); sub(/, used.*/,"",r);
    printf "%-70.70s %s | %s\n", k, r, s}' | sort -u | c++filt >"$OUT/registers.txt" || true
(cd /tmp && $PY -c "import fused_lstm; print(fused_lstm.build_info())") | tee -a "$summary"

stage tests 240 "$OUT/tests.log" $PY -m pytest -q -rs tests/test_cuda.py tests/test_layer_parity.py
tail -n 3 "$OUT/tests.log" | tee -a "$summary"

san="$OUT/sanitizer.log"
: >"$san"
for tool in memcheck racecheck synccheck; do
  stage "sanitizer $tool" 150 "$OUT/sanitizer-$tool.log" \
    compute-sanitizer --tool "$tool" --error-exitcode 9 $PY benchmarks/gpu_sanitize_case.py
  tail -n 4 "$OUT/sanitizer-$tool.log" | tee -a "$summary"
done

stage benchmark 300 "$OUT/bench.log" $PY benchmarks/benchmark.py --suite gpu --json "$OUT/bench.json"
tail -n 40 "$OUT/bench.log"
echo "status=$status" | tee -a "$summary"
exit $status
