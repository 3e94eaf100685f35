"""``multiserve serve``."""
from __future__ import annotations

import logging

from ..config import add_server_arguments, flags_from_args

log = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument("--config", metavar="FILE.toml",
                        help="settings from a TOML file: keys are the long option names (max-conns = 100); "
                             "command-line flags win over it")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective settings and where each came from (default, file, flag), then exit")
    add_server_arguments(parser)


def run(args) -> int:
    from ..config_file import layered_config, render
    from ..server import configure_logging, serve

    try:
        config, sources = layered_config(flags_from_args(args), args.config)
    except ValueError as exc:
        configure_logging("info")
        log.error("%s", exc)
        return 2
    if args.print_config:
        print(render(config, sources))
        return 0
    configure_logging(config.log_level)
    try:
        serve(config=config)
    except (ValueError, OSError, RuntimeError) as exc:
        log.error("%s", exc)
        return 2
    return 0
