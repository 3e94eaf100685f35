"""``multiserve drill``: a thin shell over :func:`multiserve.drill.run_drill`.

Every serve option (``--workers 3``, ``--request-timeout 2``, ...) is accepted and passed on to
the server; they come from ``multiserve.config``'s one declaration per setting, so the drill
takes exactly what ``serve`` takes and checks it with the same validators.

Exit status: 0 when no request was lost, timed out or mismatched, no connection was refused
before a ``term`` and every event fired; 1 otherwise (or when the server never became ready);
2 for bad arguments (one line on stderr, no traceback).
"""
from __future__ import annotations

import argparse
import sys

from ..config import SETTINGS, argparse_type
from ..loadgen.cli import write_json
from ..loadgen.spec import EXPECTS
from .attacks import parse_attack
from .events import check_engine, parse_events

# Chosen by the drill itself (the port is free and local), so not passed on.
NOT_PASSED = ("host", "port")


def _positive(kind):
    def parse(text):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", metavar="'COMMAND {port}'",
                   help="drill any server instead of an engine: {port} is replaced by a free port (without it, the "
                        "command must print multiserve's ready line); events go to its main process")
    p.add_argument("--rate", type=_positive(float), default=1000.0, help="open-loop load, requests/s in all (default 1000)")
    p.add_argument("-c", "--connections", type=_positive(int), default=32, help="load connections (default 32)")
    p.add_argument("-d", "--duration", type=_positive(float), default=8.0, help="seconds of load (default 8)")
    p.add_argument("--events", default="", metavar="LIST",
                   help="NAME@SECONDS,...: hup, ttin, ttou, term, kill-worker, stop-worker:S, kill-server")
    p.add_argument("--attack", action="append", default=[], type=_attack, metavar="KIND:N",
                   help="slowloris, idle, never-read, oversize or churn, N attackers beside the load (repeatable)")
    p.add_argument("--processes", type=_positive(int), default=1, help="load generator processes (default 1)")
    p.add_argument("--expect", choices=EXPECTS, help="reply check (default: echo for --service echo, else upper)")
    p.add_argument("--reply-timeout", type=_positive(float), default=5.0,
                   help="a request unanswered this long is a timeout (default 5)")
    p.add_argument("--ready-timeout", type=_positive(float), default=30.0, help="seconds for the server to be ready (default 30)")
    p.add_argument("--json", metavar="FILE", help="write the result as one JSON object ('-' = stdout)")
    p.add_argument("--plot", metavar="FILE", help="a PNG of throughput and latency over time, events marked")
    p.add_argument("--quiet", action="store_true", help="no live line and no table")
    serve = p.add_argument_group("serve options (passed on to `multiserve serve`)")
    for s in SETTINGS:
        if s.name in NOT_PASSED:
            continue
        if s.action:
            serve.add_argument(s.flag, dest="serve_" + s.name, action=s.action, default=argparse.SUPPRESS, help=s.help)
        else:
            serve.add_argument(s.flag, dest="serve_" + s.name, type=argparse_type(s.validate), default=argparse.SUPPRESS,
                               metavar=s.name.upper(), help=f"{s.help} (default: {s.default})")


def _attack(text):
    try:
        return parse_attack(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def serve_args(args) -> tuple[list[str], dict]:
    """The serve options given, as ``multiserve serve`` arguments, and as ``{name: value}``."""
    argv, given = [], {}
    for s in SETTINGS:
        if s.name in NOT_PASSED or not hasattr(args, "serve_" + s.name):
            continue
        value = getattr(args, "serve_" + s.name)
        given[s.name] = value
        argv += [s.flag] if s.action else [s.flag, str(value)]
    return argv, given


def spec_from_args(args):
    """A DrillSpec; ValueError (one line) for a combination the parser cannot refuse alone."""
    from .runner import DEFAULT_ENGINE, DEFAULT_MAX_LINE, DrillSpec

    argv, given = serve_args(args)
    events = parse_events(args.events, args.duration)
    if args.server is not None:
        if given:
            raise ValueError(f"--server runs its own command: serve options ({', '.join('--' + n.replace('_', '-') for n in given)}) do not apply")
    else:
        check_engine(events, given.get("engine", DEFAULT_ENGINE))
    expect = args.expect or ("echo" if given.get("service") == "echo" else "upper")
    return DrillSpec(
        engine=None if args.server else given.get("engine"), command=args.server, serve_args=argv,
        rate=args.rate, connections=args.connections, duration=args.duration, events=events,
        attacks=list(args.attack), processes=args.processes, expect=expect, reply_timeout=args.reply_timeout,
        ready_timeout=args.ready_timeout, max_line=given.get("max_line", DEFAULT_MAX_LINE),
    )


def run(args) -> int:
    from .runner import run_drill
    from .target import TargetError

    try:
        spec = spec_from_args(args)
    except ValueError as exc:
        print(f"multiserve drill: {exc}", file=sys.stderr)
        return 2
    human = sys.stderr if args.json == "-" else sys.stdout
    console = progress = None
    if not args.quiet:
        from rich.console import Console

        # off a terminal (a file, a pipe, a test), wide enough for the table's 13 columns
        console = Console(file=human, width=None if human.isatty() else 150)
    if console is not None and human.isatty():
        from ..loadgen.report import LiveLine

        progress = LiveLine(console).update
    on_fire = None
    if console is not None:
        def on_fire(event):
            what = f"not fired: {event.failed}" if event.failed else " ".join(f"{k}={v}" for k, v in event.detail.items())
            console.print(f"{event.fired_s:6.2f} s  {event.label}: {what}", markup=False)
    try:
        result = run_drill(spec, progress=progress or False, on_fire=on_fire)
    except ValueError as exc:
        print(f"multiserve drill: {exc}", file=sys.stderr)
        return 2
    except TargetError as exc:
        print(f"multiserve drill: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("multiserve drill: interrupted", file=sys.stderr)
        return 130
    finally:
        if progress:
            progress(None, None)
    if console is not None:
        from .report import print_result

        print_result(result, console)
    data = result.to_dict()
    if args.json and not write_json(args.json, data, "multiserve drill"):
        return 2
    if args.plot:
        from .plot import plot

        try:
            plot(data, args.plot)
        except (RuntimeError, OSError) as exc:
            print(f"multiserve drill: --plot: {exc}", file=sys.stderr)
            return 2
    if result.exit_code and args.quiet:
        print("multiserve drill: " + "; ".join(result.reasons), file=sys.stderr)
    return result.exit_code
