#!/bin/bash
# multiserve bench http://... against wrk on the same server: is the load generator the limit?
# Server pinned to core 0, each client to core 1, wrk -t1 -c64 and bench -c64 --processes 1,
# 3 s each, 3 interleaved rounds. Client CPU: wrk's user+sys (/usr/bin/time), bench's worker_cpu_s.
# usage: flock /tmp/multiserve-bench.lock benchmarks/bench_http_vs_wrk.sh uvicorn|asyncio|granian
cd "$(dirname "$0")/.."
. .venv/bin/activate
PORT=${PORT:-18556}
case $1 in
 uvicorn) taskset -c 0 python -m uvicorn --http httptools --loop uvloop --host 127.0.0.1 --port $PORT --log-level warning --no-access-log examples.demo_app:asgi_app & ;;
 asyncio) taskset -c 0 multiserve serve --engine asyncio --protocol http --app examples.demo_app:asgi_app --port $PORT --log-level warning & ;;
 granian) taskset -c 0 python -m granian --interface wsgi --host 127.0.0.1 --port $PORT --workers 1 --log-level warning --no-ws examples.demo_app:app & ;;
 *) echo "usage: $0 uvicorn|asyncio|granian" >&2; exit 2 ;;
esac
SRV=$!
trap 'kill $SRV; wait $SRV' EXIT
for i in $(seq 100); do curl -s http://127.0.0.1:$PORT/hello >/dev/null && break; sleep 0.1; done
uptime
for round in 1 2 3; do
  /usr/bin/time -f "wrk cpu_s %U %S" taskset -c 1 wrk -t1 -c64 -d3 http://127.0.0.1:$PORT/hello 2>&1 | grep -E "Requests/sec|cpu_s|Non-2xx|Socket"
  taskset -c 1 multiserve bench http://127.0.0.1:$PORT/hello -c 64 -d 3 --processes 1 --expect-body $'HELLO\n' --quiet --json - \
    | python -c "import json,sys; d=json.load(sys.stdin); print('multiserve rps', d['rps'], 'cpu_s', d['worker_cpu_s'], 'errors', d['errors'], 'mismatches', d['mismatches'])"
done
uptime
