"""``multiserve engines``: the registry, one line each."""
from ..engines import ENGINES


def add_arguments(parser):
    pass


def run(args) -> int:
    for name, target in ENGINES.items():
        print(f"{name:12s} {target}")
    return 0
