"""Entry point of ``multiserve`` and ``python -m multiserve``.

Kept tiny on purpose: when the gevent engine is chosen, gevent's monkey-patching must happen
before threading, socket and the rest of multiserve are imported in this process.
"""
import sys


def _wants_gevent(argv) -> bool:
    return "--engine=gevent" in argv or any(a == "--engine" and b == "gevent" for a, b in zip(argv, argv[1:]))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"] and _wants_gevent(argv):
        from gevent import monkey

        monkey.patch_all()
    from multiserve.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
