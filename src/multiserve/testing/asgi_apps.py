"""ASGI 3 apps for the HTTP conformance suite: the routes of ``wsgi_apps`` that ASGI shares, and
lifespan (the startup puts ``greeting`` in the state; shutdown says so on stderr)."""
from __future__ import annotations

import asyncio
import os
import sys
from urllib.parse import parse_qs

ENVIRON_KEYS = {  # the wsgi_apps /environ keys, from the scope
    "REQUEST_METHOD": lambda s: s["method"],
    "PATH_INFO": lambda s: s["path"],
    "QUERY_STRING": lambda s: s["query_string"].decode("latin-1"),
    "SERVER_PROTOCOL": lambda s: "HTTP/" + s["http_version"],
}


async def _read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _reply(send, status, body, headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), *headers]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["greeting"] = "hello from lifespan"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # one write: hybrid's workers share the server's stderr, and print's separate
                # write of the "\n" could land between another worker's line and its own
                sys.stderr.write("lifespan shutdown\n")
                sys.stderr.flush()
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if path == "/":
        return await _reply(send, 200, b"hello")
    if path == "/state":
        return await _reply(send, 200, scope["state"].get("greeting", "").encode())
    if path == "/echo":  # the body, and how it came (as wsgi_apps')
        body = await _read_body(receive)
        chunked = any(name == b"transfer-encoding" for name, _ in scope["headers"])
        return await _reply(send, 200, body, [(b"x-content-length", str(len(body)).encode()),
                                              (b"x-chunked", str(chunked).encode())])
    if path == "/environ":
        keys = q.get("keys", "REQUEST_METHOD,PATH_INFO,QUERY_STRING,SERVER_PROTOCOL").split(",")
        return await _reply(send, 200, "\n".join(f"{k}={ENVIRON_KEYS[k](scope)}" for k in keys).encode("latin-1"))
    if path in ("/stream", "/sized"):
        n, size = int(q.get("n", 5)), int(q.get("size", 10))
        headers = [(b"content-length", str(n * size).encode())] if path == "/sized" else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(n):
            await send({"type": "http.response.body", "body": bytes([65 + i % 26]) * size, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/fail":
        raise RuntimeError("app failed (on purpose)")
    if path == "/fail-midway":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first piece\n", "more_body": True})
        raise RuntimeError("body failed midway (on purpose)")
    if path == "/close":
        return await _reply(send, 200, b"bye", [(b"connection", b"close")])
    if path == "/sleep":
        await asyncio.sleep(float(q.get("s", 0.2)))
        return await _reply(send, 200, b"slept")
    if path == "/barrier":  # n requests inside at once (a directory, as wsgi_apps')
        meeting, n = q["dir"], int(q["n"])
        open(os.path.join(meeting, q["id"]), "w").close()
        for _ in range(2000):
            if len(os.listdir(meeting)) >= n:
                return await _reply(send, 200, b"met")
            await asyncio.sleep(0.01)
        return await _reply(send, 500, b"barrier not met")
    if path == "/no-content":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await _reply(send, 404, b"not found")


async def no_lifespan_app(scope, receive, send):
    """An app that knows only ``http`` (as many do): the server must serve it without lifespan."""
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope {scope['type']!r}")
    await _reply(send, 200, b"no lifespan here")


async def failing_startup_app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable (on purpose)"})
