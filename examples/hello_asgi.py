"""A tiny ASGI 3 app (no framework), served on the event-loop engines:

    multiserve serve --protocol http --app examples.hello_asgi:app --engine asyncio --port 8080
    curl -s http://127.0.0.1:8080/            # hello
    curl -s -d 'some data' http://127.0.0.1:8080/echo
    curl -sN http://127.0.0.1:8080/stream?n=3 # three lines, one per 0.1 s, chunked
"""
import asyncio
from urllib.parse import parse_qs


async def app(scope, receive, send):
    if scope["type"] == "lifespan":  # startup/shutdown, once per serving loop
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["greeting"] = b"hello\n"  # e.g. open a database pool here
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": scope["state"]["greeting"]})
    elif path == "/echo":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
    elif path == "/stream":  # more_body: streamed as it is sent, chunked
        n = int(parse_qs(scope["query_string"].decode()).get("n", ["3"])[0])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(n):
            if i:
                await asyncio.sleep(0.1)
            await send({"type": "http.response.body", "body": f"line {i}\n".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found\n"})
