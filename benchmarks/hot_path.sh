#!/bin/bash
# Instructions per request of the Python hot path (benchmarks/hot_path.py) under callgrind: the
# difference between runs of 60,000 and 20,000 requests, over 40,000 (start-up cancels out).
# usage: bash benchmarks/hot_path.sh      (PYTHON=... to choose the interpreter; WHICH="peer engine engine-metrics")
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-$here/../.venv/bin/python}
count() {  # WHICH N
  PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$py" "$here/hot_path.py" "$1" "$2" 2>&1 |
    awk '/refs/ {gsub(",", "", $4); print $4}'
}
for which in ${WHICH:-peer engine}; do
  a=$(count "$which" 20000)
  b=$(count "$which" 60000)
  echo "$which: $(( (b - a) / 40000 )) instructions per request"
done
