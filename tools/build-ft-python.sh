#!/usr/bin/env bash
# Prints the path of a free-threaded CPython (PEP 703), building one when none is at hand.
#
# Order (issue 13): $PYTHON_FT if set; a python3.14t / python3.13t on PATH; else CPython 3.13 built
# with --disable-gil from Debian's source package into a cache OUTSIDE the work tree:
#   ${MULTISERVE_FT_CACHE:-$HOME/.cache/multiserve}/cpython-3.13t   (bin/python3.13t)
# so a second run, a fresh clone and CI on the same machine reuse it (the build takes ~5 min on 2
# idle cores: configure 25 s, make -j2 192 s, make install 23 s, measured for issue 13).
# Why Debian's source package: it is the one CPython source this machine may fetch (apt); trixie
# ships 3.13 (3.13.5 in this archive); the 3.14 sources in sid/forky are listed but not downloadable.
# Every diagnostic goes to stderr; stdout carries the interpreter's path alone.
set -euo pipefail

log() { echo "build-ft-python: $*" >&2; }

is_free_threaded() {  # a CPython built with --disable-gil (Py_GIL_DISABLED), whatever -X gil says
  "$1" -c 'import sys, sysconfig; sys.exit(0 if sysconfig.get_config_var("Py_GIL_DISABLED") else 1)' 2>/dev/null
}

if [ -n "${PYTHON_FT:-}" ]; then
  is_free_threaded "$PYTHON_FT" || { log "PYTHON_FT=$PYTHON_FT is not a free-threaded (--disable-gil) CPython"; exit 1; }
  echo "$PYTHON_FT"; exit 0
fi
for name in python3.14t python3.13t; do
  if found=$(command -v "$name") && is_free_threaded "$found"; then echo "$found"; exit 0; fi
done

CACHE="${MULTISERVE_FT_CACHE:-$HOME/.cache/multiserve}"
PREFIX="$CACHE/cpython-3.13t"
PY="$PREFIX/bin/python3.13t"
STAMP="$PREFIX/.multiserve-built"   # written after `make install` succeeded: a half install is redone
mkdir -p "$CACHE"
exec 9>"$CACHE/.cpython-3.13t.lock"   # two builders (make ft in two trees) wait, then reuse
flock 9
if [ -f "$STAMP" ] && is_free_threaded "$PY"; then echo "$PY"; exit 0; fi

log "no free-threaded CPython found; building 3.13 --disable-gil from Debian's source into $PREFIX"
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
SRC_LIST=/etc/apt/sources.list.d/multiserve-trixie-src.sources
if ! apt-cache showsrc python3.13 2>/dev/null | grep -q '^Package: python3.13'; then
  [ -f "$SRC_LIST" ] || printf '%s\n' 'Types: deb-src' 'URIs: http://deb.debian.org/debian' \
      'Suites: trixie' 'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
      | $SUDO tee "$SRC_LIST" >/dev/null
  $SUDO apt-get update -q >&2
fi
# bookworm's names for CPython's build dependencies (the trixie package's own list names newer ones)
DEPS=(build-essential dpkg-dev libssl-dev zlib1g-dev libbz2-dev libreadline-dev libsqlite3-dev
      libffi-dev liblzma-dev libgdbm-dev uuid-dev libncursesw5-dev tk-dev libexpat1-dev libzstd-dev)
missing=()
for p in "${DEPS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

WORK="$CACHE/build-3.13t"
rm -rf "$WORK"; mkdir -p "$WORK"
# Upstream's source as Debian ships it (the .orig tarball), without Debian's patches: they make
# CPython a Debian *system* python (site-packages become dist-packages, so a venv made from this
# prefix cannot see its own packages; ensurepip refuses to run), which a private prefix is not.
( cd "$WORK" && apt-get source -q --download-only python3.13 >&2 \
  && dpkg-source -x --skip-patches python3.13_*.dsc cpython-src >&2 )
srcdir="$WORK/cpython-src"
[ -x "$srcdir/configure" ] || { log "apt-get source python3.13 unpacked nothing usable in $WORK"; exit 1; }
rm -rf "$PREFIX"
( cd "$srcdir" \
  && nice ./configure -q --prefix="$PREFIX" --disable-gil --with-ensurepip=install >&2 \
  && nice make -s -j"$(nproc)" >&2 \
  && nice make -s install >&2 )
is_free_threaded "$PY" || { log "built $PY, but it is not free-threaded"; exit 1; }
touch "$STAMP"
rm -rf "$WORK"
log "built $("$PY" -VV | head -n1) at $PY"
echo "$PY"
