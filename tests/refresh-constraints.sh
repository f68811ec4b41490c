#!/usr/bin/env bash
# Pin the newest releases of the runtime dependencies and the test tools in tests/constraints.txt:
# a fresh venv gets `pip install -e '.[test,interop]'` with no constraints, and its `pip freeze` is the file.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-refresh
python=${PYTHON:-python3}
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,interop]'
{
  echo "# Exact versions for bash tests/run.sh; made by bash tests/refresh-constraints.sh on $(date -u +%Y-%m-%d)."
  "$venv/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check
} > tests/constraints.txt
rm -rf "$venv"
echo "tests/constraints.txt: $(grep -vc '^#' tests/constraints.txt) packages pinned"
