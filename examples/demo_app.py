"""The line services' workloads as a web app, WSGI (``app``) and ASGI (``asgi_app``): what
``multiserve compare --protocol http`` serves when no ``--app`` is given.

    multiserve serve --protocol http --app examples.demo_app:app --engine threadpool --port 8080
    multiserve serve --protocol http --app examples.demo_app:asgi_app --engine asyncio --port 8080
    curl -s http://127.0.0.1:8080/hello       # HELLO   (the upper service: no work)
    curl -s http://127.0.0.1:8080/sleep/10    # HELLO   after 10 ms of waiting (the sleep:10 service)
    curl -s http://127.0.0.1:8080/cpu/1       # HELLO   after 1 ms of CPU (the cpu:1 service)
    curl -s http://127.0.0.1:8080/tickets     # LEFT n  (the ticket office: QUERY)
    curl -s -X POST 'http://127.0.0.1:8080/tickets?buyer=ann'   # SOLD n ann, or 409 SOLDOUT

Each route calls the line service object itself (``multiserve.services``: Upper, Sleep, Cpu,
TicketService over the same stores), so an HTTP cell does exactly the work of its line cell and
only the protocol differs. The ASGI app calls them as the line baselines do: a coroutine is
awaited (sleep), blocking code runs on the loop's default executor (cpu, tickets).

The ticket store is ``$MULTISERVE_DEMO_STORE`` (default ``sqlite:tickets.db``, the ticket service's
default); put tickets on sale first with ``multiserve tickets init``. Without a usable store,
``/tickets`` answers 503 with the store's one-line reason.
"""
import asyncio
import functools
import os
from urllib.parse import parse_qs

from multiserve.services.builtin import Cpu, Sleep, Upper
from multiserve.services.tickets.service import TicketService

# The request line every workload answers (upper-cased: ``HELLO``), as the line services do.
REQUEST = b"hello\n"
TICKETS = TicketService(os.environ.get("MULTISERVE_DEMO_STORE", "sqlite:tickets.db"))
# The ticket service's replies -> HTTP status: a sale, a count -> 200; sold out -> 409 Conflict;
# the store unusable -> 503; anything else (a bad buyer) -> 400.
TICKET_STATUS = ((b"SOLDOUT", 409), (b"ERR unknown outcome", 503), (b"ERR store", 503), (b"ERR", 400))
STATUS_TEXT = {200: "200 OK", 400: "400 Bad Request", 404: "404 Not Found", 405: "405 Method Not Allowed",
               409: "409 Conflict", 503: "503 Service Unavailable"}


@functools.lru_cache(maxsize=64)
def _service(name: str, ms: str):
    """The line service for a route: ``("sleep", "10")`` -> Sleep(10); None for a bad route."""
    try:
        value = float(ms)
    except ValueError:
        return None
    return {"sleep": Sleep, "cpu": Cpu}[name](value) if value >= 0 else None


def route(method: str, path: str, query: str):
    """``(kind, argument)`` for a request: ``("upper", None)``, ``("sleep", Sleep)``,
    ``("cpu", Cpu)``, ``("tickets", b"QUERY"|b"BUY name")``, or ``(status, reason)`` for an error."""
    if path in ("/", "/hello"):
        return "upper", None
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] in ("sleep", "cpu"):
        service = _service(parts[0], parts[1])
        return (parts[0], service) if service is not None else (404, b"expected /sleep/MS or /cpu/MS\n")
    if path == "/tickets":
        if method == "GET":
            return "tickets", b"QUERY\n"
        if method == "POST":
            buyer = parse_qs(query).get("buyer", [""])[0]
            return "tickets", b"BUY " + buyer.encode("utf-8") + b"\n"
        return 405, b"GET or POST /tickets\n"
    return 404, b"not found\n"


def ticket_status(reply: bytes) -> int:
    return next((status for prefix, status in TICKET_STATUS if reply.startswith(prefix)), 200)


def _answer(kind, arg) -> tuple[int, bytes]:
    """The blocking answer: what the line service replies, and its status."""
    if kind == "upper":
        return 200, Upper().handle(REQUEST, None)
    if kind in ("sleep", "cpu"):
        return 200, arg.handle(REQUEST, None)
    reply = TICKETS.handle(arg, None)
    return ticket_status(reply), reply


def app(environ, start_response):
    """WSGI (PEP 3333): every route answers on the calling thread, greenlet or process."""
    kind, arg = route(environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", ""))
    status, body = (kind, arg) if isinstance(kind, int) else _answer(kind, arg)
    start_response(STATUS_TEXT[status], [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope, receive, send):
    """ASGI 3: sleep awaits, cpu and tickets run on the default executor (blocking code)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    kind, arg = route(scope["method"], scope["path"], scope["query_string"].decode("latin-1"))
    if isinstance(kind, int):
        status, body = kind, arg
    elif kind == "sleep":
        status, body = 200, await arg.handle_async(REQUEST, None)
    elif kind == "upper":
        status, body = _answer(kind, arg)
    else:
        status, body = await asyncio.get_running_loop().run_in_executor(None, _answer, kind, arg)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
