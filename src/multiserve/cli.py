"""``multiserve serve|bench|compare|lab|tickets|engines``: a thin shell over the library.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``,
imported only when used, so ``multiserve serve`` never imports matplotlib.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "serve": ("multiserve.commands.serve", "serve a service under one concurrency engine"),
    "bench": ("multiserve.loadgen.cli", "drive a server with verified load; latency percentiles"),
    "compare": ("multiserve.compare.cli", "every engine under the same load, as a report"),
    "lab": ("multiserve.lab.cli", "the classic concurrency experiments, measured"),
    "tickets": ("multiserve.services.tickets.cli", "the ticket office: init, rush, check"),
    "drill": ("multiserve.drill.cli", "faults and attackers under live load, counted per event"),
    "engines": ("multiserve.commands.engines", "list the engines"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="multiserve", description="One TCP handler under every Python concurrency model, measured side by side.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = argv[0] if argv else None
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only the chosen command's module
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    return args._run(args) or 0
