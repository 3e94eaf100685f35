"""``multiserve serve``."""
from __future__ import annotations

import logging

from ..config import ServerConfig, add_server_arguments

log = logging.getLogger("multiserve")


def add_arguments(parser):
    add_server_arguments(parser)


def run(args) -> int:
    from ..server import configure_logging, serve

    config = ServerConfig.from_args(args)
    configure_logging(config.log_level)
    try:
        serve(config=config)
    except (ValueError, OSError, RuntimeError) as exc:
        log.error("%s", exc)
        return 2
    return 0
