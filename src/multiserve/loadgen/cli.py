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

from .errors import by_kind
from .spec import EXPECTS, LoadSpec


def _target(text: str):
    """``HOST:PORT`` (the line protocol) -> (host, port, None); ``http://HOST:PORT/PATH`` ->
    (host, port, path)."""
    if "://" in text:
        from .http import parse_url

        try:
            return parse_url(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or http://HOST:PORT/PATH, got {text!r}")
    return host.strip("[]"), int(port), None


def _header(text: str):
    from .http import parse_header

    try:
        return parse_header(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# HTTP-only options (their argparse dest) and the line-only ones: naming one for the other
# protocol is a one-line error, never silently ignored.
HTTP_ONLY = ("method", "body", "body_size", "headers", "expect_body")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", type=_target, metavar="HOST:PORT|URL",
                   help="the server to drive: HOST:PORT (line protocol) or http://HOST:PORT/PATH (HTTP/1.1, keep-alive)")
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
    http = p.add_argument_group("HTTP (an http:// target)", "every response's status is checked: a non-2xx one "
                                "is counted as the error kind http_NNN")
    http.add_argument("--method", help="request method (default GET, or POST with a body)")
    http_body = http.add_mutually_exclusive_group()
    http_body.add_argument("--body", help="request body text (sent with a Content-Length)")
    http_body.add_argument("--body-size", type=int, metavar="N", help="a request body of N bytes ('x' repeated)")
    http.add_argument("--header", dest="headers", type=_header, action="append", metavar="'NAME: VALUE'",
                      help="a request header (repeatable)")
    http.add_argument("--expect-body", metavar="TEXT", help="every response body must be exactly TEXT "
                      "(a difference is a mismatch); default: only the status is checked")
    p.add_argument("--warmup", type=float, default=0.0, help="seconds of unrecorded load first (default 0)")
    p.add_argument("--connect-timeout", type=float, default=5.0, help="seconds per connect (default 5)")
    p.add_argument("--reply-timeout", type=float, default=10.0, help="a request unanswered this long is a timeout (its connection is replaced); with -n: end when no reply came for this long (default 10)")
    p.add_argument("--json", metavar="FILE", help="write the result as one JSON object ('-' = stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress line and no table")


def _http_request(args):
    """The HttpRequest of the HTTP options; ValueError (one line) for a bad one."""
    from .http import HttpRequest

    if args.body_size is not None and args.body_size < 0:
        raise ValueError("--body-size must be >= 0")
    body = args.body.encode("utf-8") if args.body is not None else b"x" * (args.body_size or 0)
    has_body = args.body is not None or args.body_size is not None
    method = args.method or ("POST" if has_body else "GET")
    expect = None if args.expect_body is None else args.expect_body.encode("utf-8")
    return HttpRequest(path=args.target[2], method=method, headers=tuple(args.headers or ()), body=body,
                       expect_body=expect)


def spec_from_args(args) -> LoadSpec:
    """The LoadSpec of the arguments; ValueError (one line) for options of the other protocol."""
    host, port, path = args.target
    http = None
    if path is not None:
        http = _http_request(args)
    else:
        given = [name for name in HTTP_ONLY if getattr(args, name, None) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-").replace("headers", "header")
            raise ValueError(f"{flag} needs an http://HOST:PORT/PATH target")
    return LoadSpec(
        host=host, port=port, connections=args.connections,
        duration=None if args.requests is not None else args.duration, requests=args.requests,
        rate=args.rate, pipeline=args.pipeline, processes=args.processes,
        message=args.message.encode("utf-8"), size=args.size, expect=args.expect,
        warmup=args.warmup, connect_timeout=args.connect_timeout, reply_timeout=args.reply_timeout,
        http=http,
    )


def run(args) -> int:
    from .runner import run_load

    try:
        spec = spec_from_args(args)
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
        statuses = result.status_errors
        if result.mismatches:
            reason = f"{result.mismatches} mismatched replies"
        elif statuses:
            reason = f"{sum(statuses.values())} responses with a non-2xx status ({by_kind(statuses)})"
        else:
            reason = "no request succeeded"
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
