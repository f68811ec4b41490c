#!/usr/bin/env bash
# Run the whole test suite the same way on any machine:
#   1. Debian packages the tests drive (curl, nghttp2-client for nghttp/h2load, chromium, haproxy,
#      nginx);
#   2. a fresh virtual environment, .venv-test, rebuilt on every run, with the project and its
#      `test` extra installed at the exact versions of tests/constraints.txt;
#   3. pytest from that environment. Extra arguments go to pytest.
# Refresh the pinned versions to the newest releases with: bash tests/refresh-constraints.sh
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v curl >/dev/null || need+=(curl)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v chromium >/dev/null || need+=(chromium)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
venv=${KYOUKAI_TEST_VENV:-.venv-test}
constraints=${KYOUKAI_TEST_CONSTRAINTS:-tests/constraints.txt}
python=${PYTHON:-python3}
# The extras installed: the test tools, and the ASGI servers and frameworks the ASGI tests use.
extras=${KYOUKAI_TEST_EXTRAS:-test,interop}
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -c "$constraints" -e ".[$extras]"
"$venv/bin/python" -m pytest "$@"
