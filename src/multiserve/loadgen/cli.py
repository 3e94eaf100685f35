"""``multiserve bench HOST:PORT ...``: a thin shell over :func:`multiserve.loadgen.run_load`.

Output: the table (and, on a terminal, a progress line) on stdout; with ``--json -`` the JSON
alone is on stdout and everything else on stderr, so ``bench --json - | jq`` works.

Exit status: 0 when every reply matched and at least one request succeeded, 1 otherwise, 2 for
bad arguments (one line on stderr, no traceback).
"""
from __future__ import annotations

import argparse
import json
import sys

from .spec import EXPECTS, LoadSpec


def _target(text: str):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", type=_target, metavar="HOST:PORT", help="the server to drive")
    p.add_argument("-c", "--connections", type=int, default=16, help="connections (default 16)")
    bound = p.add_mutually_exclusive_group()
    bound.add_argument("-d", "--duration", type=float, default=5.0, help="seconds to measure (default 5)")
    bound.add_argument("-n", "--requests", type=int, help="stop after this many replies instead")
    p.add_argument("--rate", type=float, help="open loop: total requests/s, latency from the intended send time")
    p.add_argument("--pipeline", type=int, default=1, help="requests in flight per connection (default 1)")
    p.add_argument("--processes", type=int, help="worker processes (default: one per usable core)")
    body = p.add_mutually_exclusive_group()
    body.add_argument("--message", default="hello world", help="request text; a counter is appended (default 'hello world')")
    body.add_argument("--size", type=int, help="request line size in bytes, newline and counter included")
    p.add_argument("--expect", choices=EXPECTS, default="upper", help="reply check (default upper)")
    p.add_argument("--warmup", type=float, default=0.0, help="seconds of unrecorded load first (default 0)")
    p.add_argument("--connect-timeout", type=float, default=5.0, help="seconds per connect (default 5)")
    p.add_argument("--reply-timeout", type=float, default=10.0, help="a request unanswered this long is a timeout (its connection is replaced); with -n: end when no reply came for this long (default 10)")
    p.add_argument("--json", metavar="FILE", help="write the result as one JSON object ('-' = stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress line and no table")


def spec_from_args(args) -> LoadSpec:
    host, port = args.target
    return LoadSpec(
        host=host, port=port, connections=args.connections,
        duration=None if args.requests is not None else args.duration, requests=args.requests,
        rate=args.rate, pipeline=args.pipeline, processes=args.processes,
        message=args.message.encode("utf-8"), size=args.size, expect=args.expect,
        warmup=args.warmup, connect_timeout=args.connect_timeout, reply_timeout=args.reply_timeout,
    )


def run(args) -> int:
    from .runner import run_load

    spec = spec_from_args(args)
    try:
        spec.validate()
    except ValueError as exc:
        print(f"multiserve bench: {exc}", file=sys.stderr)
        return 2
    # With --json -, stdout carries the JSON alone: the progress line and the table go to stderr.
    human = sys.stderr if args.json == "-" else sys.stdout
    progress = False
    if not args.quiet and human.isatty():
        from rich.console import Console

        from .report import LiveLine

        line = LiveLine(Console(file=human))
        progress = line.update
    try:
        result = run_load(spec, progress=progress)
    except KeyboardInterrupt:
        print("multiserve bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if progress:
            progress(None, None)
    if not args.quiet:
        from rich.console import Console

        from .report import print_result

        print_result(result, Console(file=human))
    if args.json and not write_json(args.json, result.to_dict(), "multiserve bench"):
        return 2
    for failure in result.worker_failures:
        print(f"multiserve bench: {failure}", file=sys.stderr)
    if not result.ok:
        reason = f"{result.mismatches} mismatched replies" if result.mismatches else "no request succeeded"
        print(f"multiserve bench: {reason}", file=sys.stderr)
        return 1
    return 0


def write_json(target: str, data: dict, prog: str) -> bool:
    """``data`` as JSON to ``target`` (a path, or ``-``: stdout). False, after one line on
    stderr naming ``prog``, when the file cannot be written."""
    text = json.dumps(data, indent=2)
    if target == "-":
        print(text)
        return True
    try:
        with open(target, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    except OSError as exc:
        print(f"{prog}: cannot write {target}: {exc.strerror}", file=sys.stderr)
        return False
    return True
