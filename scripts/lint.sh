#!/usr/bin/env bash
# Python lint: `ruff check` with pyproject.toml's rules ([tool.ruff]); exits non-zero on any
# violation. Formatting is not checked: the code is not `ruff format`ted (its hand-wrapped calls
# would all change), so only the rules in [tool.ruff.lint] are enforced.
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
