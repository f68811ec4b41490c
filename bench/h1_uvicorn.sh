#!/usr/bin/env bash
# HTTP/1.1 hello-world GET: Kyoukai (httptools backend) against uvicorn (httptools) on the same
# machine, interleaved over 3 rounds; prints req/s and the server's peak RSS for each run.
# Server pinned to core 0, h2load --h1 to core 1.   Usage: bash bench/h1_uvicorn.sh
set -euo pipefail
cd "$(dirname "$0")/apps"
python -c "import uvicorn" 2>/dev/null || python -m pip install -q uvicorn
run() {  # name, port, command...
  local name=$1 port=$2; shift 2
  taskset -c 0 "$@" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; python -c "import time; time.sleep(0.1)"; done
  local rps
  rps=$(taskset -c 1 h2load --h1 -D 5 --warm-up-time 1 -c 10 "http://127.0.0.1:$port/" | awk '/^finished in/ {print $4}')
  local hwm
  hwm=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' /proc/$pid/status)
  kill $pid; wait $pid 2>/dev/null || true
  printf "%-8s %10s req/s   peak RSS %6s MiB\n" "$name" "$rps" "$hwm"
}
for round in 1 2 3; do
  echo "round $round"
  run kyoukai 18401 python serve_kyoukai.py --protocol h1 --port 18401
  run uvicorn 18402 python -m uvicorn asgi_app:app --port 18402 --http httptools --loop asyncio --log-level warning --no-access-log
done
