"""``multiserve serve``."""
from __future__ import annotations

import logging

from ..config import add_server_arguments, config_from_args

log = logging.getLogger(__name__)


def add_arguments(parser):
    add_server_arguments(parser)


def run(args) -> int:
    from ..server import configure_logging, serve

    try:
        config = config_from_args(args)
    except ValueError as exc:
        configure_logging("info")
        log.error("%s", exc)
        return 2
    configure_logging(config.log_level)
    try:
        serve(config=config)
    except (ValueError, OSError, RuntimeError) as exc:
        log.error("%s", exc)
        return 2
    return 0
