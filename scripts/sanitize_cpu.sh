#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer run of the CPU extension (off CI: the build takes
# about 5 minutes on 2 cores).
#
#   bash scripts/sanitize_cpu.sh                 # the bad-input battery
#   bash scripts/sanitize_cpu.sh tests --deselect tests/test_benchmark_cli.py \
#       --deselect tests/test_nvcc_compile.py    # any pytest arguments: the whole suite but the
#                                                # two tests that run nvcc / an installed package
#
# Builds fused_lstm._C with -fsanitize=address,undefined in a copy of the checkout (ASAN_DIR, default
# a new temporary folder; an existing one is rebuilt incrementally), then runs pytest there with
# the sanitizer runtimes preloaded (the Python interpreter and the torch wheel are not
# instrumented, so the runtimes must come first). Any ASan report or UB aborts the run: the exit
# status is pytest's. detect_leaks=0: CPython's interned objects would drown real reports.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${ASAN_DIR:-$(mktemp -d)}
mkdir -p "$work"
# The checkout's files (tracked, and untracked ones git does not ignore), so every test finds
# what it reads (README.md, benchmarks/, pyproject.toml); no build outputs.
git -C "$root" ls-files -z -co --exclude-standard \
  | tar -C "$root" --null --ignore-failed-read -T - -cf - | tar -xf - -C "$work"
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -g"
echo "sanitize_cpu: building in $work (log: $work/build.log)"
if ! (cd "$work" && CFLAGS="$flags" CXXFLAGS="$flags" LDFLAGS="-fsanitize=address,undefined" \
      FUSED_LSTM_FORCE_CPU=1 python3 setup.py build_ext --inplace >build.log 2>&1); then
  tail -n 20 "$work/build.log"
  exit 1
fi
[ $# -gt 0 ] || set -- tests/test_bad_inputs.py
cd "$work"
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
PYTHONPATH="$work" python3 -m pytest -q -p no:cacheprovider "$@"
