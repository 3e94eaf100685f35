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


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: X)" on every option that has one, unless its help already names
    its default (many say it in their own words) or there is nothing worth showing (None, or
    False for an on/off flag)."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if "default" in help_text.lower() or action.default in (None, False, argparse.SUPPRESS):
            return help_text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in one line (where to look next included) instead
    of the usage block, which for ``serve`` is twenty lines above the one that matters."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def subparsers(parser: argparse.ArgumentParser):
    """Every parser under ``parser`` (subcommands of subcommands included), ``parser`` first."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from subparsers(child)


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The ``multiserve`` parser, with the options of the ``chosen`` subcommand only (the
    others' modules are not imported)."""
    from . import __version__

    parser = Parser(prog="multiserve", formatter_class=HelpFormatter,
                                     description="One TCP handler under every Python concurrency model, "
                                                 "measured side by side.")
    parser.add_argument("--version", action="version", version=f"multiserve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                help="`multiserve COMMAND --help` lists its options")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only the chosen command's module
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    for p in subparsers(parser):
        p.formatter_class = HelpFormatter
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    return args._run(args) or 0
