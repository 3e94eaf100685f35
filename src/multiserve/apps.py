"""``--app module:name``: load a user's web application and wrap it as the service of an HTTP
server, as WSGI (PEP 3333, ``multiserve.wsgi``) or ASGI 3 (``multiserve.asgi``)."""
from __future__ import annotations

import inspect


def load_app(spec: str):
    """The callable named by ``module:attr`` (gunicorn's syntax; the current directory is
    importable). ValueError with one line when it cannot be found or is not callable."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--app {spec!r}: expected module:name, e.g. examples.hello_wsgi:app")
    from .services import import_object

    app = import_object(module_name, attr, "app")
    if not callable(app):
        raise ValueError(f"{spec} is not callable")
    return app


def is_coroutine_app(app) -> bool:
    """An ASGI app is a coroutine function (or an object whose ``__call__`` is one)."""
    return inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(getattr(app, "__call__", None))


def app_service(config):
    """The service for ``config.app`` under ``config.interface`` (``auto``: ASGI for a coroutine
    function, else WSGI). ValueError (one line) for a bad spec, an app of the other kind, an
    engine that cannot run ASGI, or a protocol other than HTTP."""
    if config.protocol != "http":
        raise ValueError(f"--app serves HTTP: add --protocol http (the protocol is {config.protocol!r})")
    app = load_app(config.app)
    interface = config.interface
    if interface == "auto":
        interface = "asgi" if is_coroutine_app(app) else "wsgi"
    if interface == "asgi":
        from .asgi import ASGI_ENGINES, ASGIService

        if not is_coroutine_app(app):
            raise ValueError(f"{config.app} is not a coroutine function: --interface asgi needs an ASGI app")
        if config.engine not in ASGI_ENGINES:
            raise ValueError(f"ASGI apps run on the event-loop engines ({', '.join(ASGI_ENGINES)}), "
                             f"not on {config.engine!r}: use --engine asyncio or --engine hybrid")
        return ASGIService(app, (config.host, config.port))
    from .wsgi import WSGIService

    if is_coroutine_app(app):
        raise ValueError(f"{config.app} is a coroutine function (an ASGI app): use --interface asgi or auto")
    return WSGIService(app, config.host, config.port, config.engine)
