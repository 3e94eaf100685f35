"""Which dependencies keep the GIL off on a free-threaded CPython (issue 13, docs/free-threading.md).

    .venv-ft/bin/python benchmarks/ft_deps.py [--json FILE]

For each module multiserve (or its tests) may import: is it installed here, which version, and
is the GIL still off after importing it? Each import runs in a fresh interpreter (one module per
process), because once an extension module has turned the GIL on it stays on for the process.
Run it with the free-threaded venv's python; on a GIL build every row says "GIL on".
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

# module to import -> the distribution that provides it
MODULES = {
    "uvloop": "uvloop", "httptools": "httptools", "psutil": "psutil", "rich": "rich", "redis": "redis",
    "psycopg": "psycopg", "hdrh.histogram": "hdrhistogram", "matplotlib.pyplot": "matplotlib",
    "hypothesis": "hypothesis", "gevent": "gevent", "pytest": "pytest", "xdist": "pytest-xdist",
    "pytest_timeout": "pytest-timeout",
    # what a serving process imports (line and HTTP protocols, every engine, the stores)
    "multiserve.server": "multiserve", "multiserve.engines.asyncio_engine": "multiserve",
    "multiserve.engines.hybrid_engine": "multiserve", "multiserve.protocol.http": "multiserve",
    "multiserve.stores.postgres": "multiserve", "multiserve.stores.redis_store": "multiserve",
    "multiserve.lab.cpu": "multiserve", "multiserve.loadgen": "multiserve",
}
PROBE = """
import json, sys, warnings
from importlib import metadata
warnings.simplefilter("always")
caught = []
warnings.showwarning = lambda message, *a, **k: caught.append(str(message))
module, dist = sys.argv[1], sys.argv[2]
try:
    version = metadata.version(dist)
except metadata.PackageNotFoundError:
    version = None
try:
    __import__(module)
    error = None
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"
print(json.dumps({"module": module, "dist": dist, "version": version, "error": error,
                  "gil_enabled": sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else True,
                  "warnings": [w for w in caught if "GIL" in w]}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = []
    for module, dist in MODULES.items():
        out = subprocess.run([sys.executable, "-c", PROBE, module, dist], capture_output=True, text=True, timeout=120)
        rows.append(json.loads(out.stdout) if out.returncode == 0 else
                    {"module": module, "dist": dist, "version": None, "error": out.stderr.strip()[-200:],
                     "gil_enabled": None, "warnings": []})
    print(f"{sys.executable}: Python {sys.version.split()[0]}, "
          f"GIL at start {'on' if getattr(sys, '_is_gil_enabled', lambda: True)() else 'off'}")
    print("| module | distribution | version | imports | GIL after import |")
    print("|---|---|---|---|---|")
    for r in rows:
        state = "–" if r["error"] else ("**on**" if r["gil_enabled"] else "off")
        imports = "yes" if not r["error"] else ("not installed" if r["version"] is None else r["error"][:80])
        print(f"| `{r['module']}` | {r['dist']} | {r['version'] or '–'} | {imports} | {state} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
