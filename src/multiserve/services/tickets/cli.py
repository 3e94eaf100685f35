"""``multiserve tickets init|rush|check``.

Exit status: 0 when all is well; 1 when ``check`` or a rush's verification finds a broken
invariant (``rush --unsafe`` included: the race it shows is a failure), or when no server named by
``rush --via`` answered at all; 2 for bad arguments or an unusable store. Errors are one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

from ...config import positive_int
from ...loadgen.errors import by_kind
from ...stores import DEFAULT_URL, StoreError, open_store, redact, violations
from .rush import DEFAULT_CONNECTIONS, UNSAFE_PAUSE_SECONDS, rush


def address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def non_negative_seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True,
                                help="`multiserve tickets ACTION --help` lists its options")
    store_help = f"store URL: sqlite:PATH, json:PATH, postgresql://..., redis://... (default {DEFAULT_URL})"

    p = sub.add_parser("init", help="put N tickets on sale (refuses to wipe sales without --force)")
    p.add_argument("--store", default=DEFAULT_URL, help=store_help)
    p.add_argument("--count", type=positive_int, required=True, help="tickets on sale")
    p.add_argument("--force", action="store_true", help="wipe existing sales")
    p.add_argument("--create-dir", action="store_true",
                   help="sqlite:/json: create the store file's missing directory (else init refuses)")
    p.set_defaults(_action=run_init)

    p = sub.add_parser("rush", help="N buyers each QUERY then BUY; verify the outcome")
    p.add_argument("--store", default=DEFAULT_URL, help=store_help + "; read before and after to verify")
    p.add_argument("--buyers", type=positive_int, required=True, help="how many buyers (each QUERYs, then BUYs one ticket)")
    p.add_argument("--via", type=address, action="append", default=[], metavar="HOST:PORT",
                   help="buy through this server (repeat to spread over several); default: straight at the store")
    p.add_argument("--processes", type=positive_int, default=1, help="buyer processes")
    p.add_argument("--connections", type=positive_int, default=DEFAULT_CONNECTIONS,
                   help=f"concurrent buyers in all, each on one connection (default {DEFAULT_CONNECTIONS})")
    p.add_argument("--unsafe", action="store_true",
                   help="the tutorial's naive read, pause, write with no lock (json: store only): watch it oversell")
    p.add_argument("--pause", type=non_negative_seconds, default=UNSAFE_PAUSE_SECONDS,
                   help=f"--unsafe: seconds between read and write (default {UNSAFE_PAUSE_SECONDS})")
    p.add_argument("--json", metavar="FILE", help="write the summary and every operation as JSON")
    p.set_defaults(_action=run_rush)

    p = sub.add_parser("check", help="verify the store's invariants; exit 1 and say why if one fails")
    p.add_argument("--store", default=DEFAULT_URL, help=store_help)
    p.set_defaults(_action=run_check)


def run(args) -> int:
    try:
        return args._action(args)
    except (StoreError, ValueError, OSError) as exc:
        print(f"multiserve tickets {args.action}: {exc}", file=sys.stderr)
        return 2


def run_init(args) -> int:
    with open_store(args.store) as store:
        store.init(args.count, force=args.force, create_dir=args.create_dir)
    print(f"{store.name}: {args.count} tickets on sale")
    return 0


def run_check(args) -> int:
    with open_store(args.store) as store:
        snap = store.snapshot()
    problems = violations(snap)
    print(f"{store.name}: initial {snap.initial}, sold {snap.sold}, left {snap.left}")
    for problem in problems:
        print(f"FAIL {problem}")
    if not problems:
        print("OK: sold + left == initial, ticket numbers unique and in range, every sale has a buyer")
    return 1 if problems else 0


def run_rush(args) -> int:
    result = rush(args.store, args.buyers, via=args.via, processes=args.processes,
                  connections=args.connections, unsafe=args.unsafe, pause=args.pause)
    s = result.summary()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"store": redact(args.store), **s,
                       "ops": [[op.buyer, op.type, op.ticket, op.detail, op.error] for op in result.ops]},
                      f, indent=1, ensure_ascii=False)
    if args.via and not result.answered:
        # Nothing was sold or refused: the summary's figures would all be zeros beside an "OK".
        print(f"multiserve tickets rush: no server answered: {by_kind(s['errors_by_kind'])}", file=sys.stderr)
        return 1
    where = ", ".join(f"{h}:{p}" for h, p in args.via) or "straight at the store"
    mode = " UNSAFE (no lock)" if args.unsafe else ""
    print(f"rush{mode}: {s['buyers']} buyers via {where}, {args.processes} processes, "
          f"{min(args.connections, args.buyers)} connections")
    errors = f"errors {s['errors']}" + (f" ({by_kind(s['errors_by_kind'])})" if s["errors"] else "")
    print(f"  sold {s['sold']} (ok {s['ok']}), sold out {s['soldout']}, {errors}, "
          f"info/unknown {s['info']}, left {s['left']} of {s['initial']}")
    print(f"  {s['seconds']:.3f} s, {s['purchases_per_s']} purchases/s")
    if args.unsafe or s["oversold"]:
        print(f"  oversold: {s['oversold']} buyers were told SOLD for a ticket already sold")
    for problem in result.problems:
        print(f"  FAIL {problem}")
    if not result.problems:
        print("  OK: every ok sale is in the ledger, #ok <= sold <= #ok + #info, no ticket twice, sold + left == initial")
    return 1 if result.problems else 0
