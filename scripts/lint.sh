#!/usr/bin/env bash
# Lint: `ruff check` with pyproject.toml's rules ([tool.ruff]) on the Python, and clang-format
# (.clang-format, version 19.1.7: other versions format differently) on csrc/; exits non-zero on
# any violation. Python formatting is not checked: the code is not `ruff format`ted (its
# hand-wrapped calls would all change), so only the rules in [tool.ruff.lint] are enforced.
# Then the size limits on files and functions (scripts/check_sizes.py).
# Usage (repo root or anywhere):  bash scripts/lint.sh [extra ruff arguments, e.g. --fix]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if command -v ruff >/dev/null 2>&1; then
  RUFF=(ruff)
elif python3 -c "import ruff" >/dev/null 2>&1; then
  RUFF=(python3 -m ruff)
else
  echo "scripts/lint.sh: ruff is not installed (pip install ruff)" >&2
  exit 2
fi
"${RUFF[@]}" --version
"${RUFF[@]}" check "$@" .

# C++/CUDA: clang-format --dry-run reports every line it would change.
if ! command -v clang-format >/dev/null 2>&1; then
  echo "scripts/lint.sh: clang-format is not installed (pip install clang-format==19.1.7)" >&2
  exit 2
fi
clang-format --version
find csrc \( -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' \) -print0 |
  xargs -0 clang-format --dry-run --Werror
python3 scripts/check_sizes.py
echo "scripts/lint.sh: ruff, clang-format and the size limits clean"
