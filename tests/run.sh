#!/usr/bin/env bash
# Install what the test suite needs (Python packages from the `test` extra, Debian's curl,
# nghttp2-client for nghttp/h2load, and haproxy) and run it. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v curl >/dev/null || need+=(curl)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v chromium >/dev/null || need+=(chromium)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
python -m pip install -q -e '.[test]'
python -m pytest "$@"
