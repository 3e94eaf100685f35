"""Entry point of ``multiserve`` and ``python -m multiserve``.

Kept tiny on purpose: when the gevent engine is chosen, gevent's monkey-patching must happen
before threading, socket and the rest of multiserve are imported in this process.
"""
import sys


def _option(argv, name):
    """The value of ``--name VALUE`` or ``--name=VALUE`` (the last one), or None."""
    value = None
    for a, b in zip(argv, [*argv[1:], None]):
        if a == name:
            value = b
        elif a.startswith(name + "="):
            value = a.partition("=")[2]
    return value


def _wants_gevent(argv) -> bool:
    engine = _option(argv, "--engine")
    if engine is None and _option(argv, "--config"):  # the engine may come from the file
        try:
            import tomllib

            with open(_option(argv, "--config"), "rb") as f:
                engine = tomllib.load(f).get("engine")
        except (ImportError, OSError, ValueError):
            return False  # the CLI reports a bad file with one line
    return engine == "gevent"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"] and _wants_gevent(argv):
        try:
            from gevent import monkey
        except ImportError:
            pass  # not installed here (no free-threaded build): serve refuses the engine in one line
        else:
            monkey.patch_all()
    from multiserve.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
