"""``multiserve engines [--json]``: the registry, one line each, with whether each engine can run
on this interpreter (and why not), then the interpreter itself."""
import json

from .. import interpreter
from ..engines import ENGINES, unavailable


def add_arguments(parser):
    parser.add_argument("--json", action="store_true",
                        help="one JSON object: {interpreter, engines: {name: null or the reason it is unavailable}}")


def run(args) -> int:
    reasons = {name: unavailable(name) for name in ENGINES}
    if args.json:
        print(json.dumps({"interpreter": interpreter.describe(), "engines": reasons}))
        return 0
    for name, target in ENGINES.items():
        state = "available" if reasons[name] is None else f"unavailable: {reasons[name]}"
        print(f"{name:12s} {target:56s} {state}")
    print(f"interpreter: {interpreter.label(interpreter.describe())}")
    return 0
