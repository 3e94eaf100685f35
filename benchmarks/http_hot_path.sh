#!/bin/bash
# Instructions per HTTP request of the Python hot path (benchmarks/http_hot_path.py) under
# callgrind: the difference between runs of B=30,000 and A=10,000 requests, over B - A (start-up
# cancels out). usage: bash benchmarks/http_hot_path.sh [WHICH...]   (PYTHON=... for the interpreter)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-$here/../.venv/bin/python}
A=${A:-10000} B=${B:-30000}
count() {  # WHICH N
  (cd "$here/.." && PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$py" "$here/http_hot_path.py" "$1" "$2" 2>&1) |
    awk '/refs/ {gsub(",", "", $4); print $4}'
}
for which in "${@:-uvicorn asyncio}"; do
  for w in $which; do
    a=$(count "$w" "$A")
    b=$(count "$w" "$B")
    echo "$w: $(( (b - a) / (B - A) )) instructions per request"
  done
done
