"""The ASGI adapter alone, on a plain event loop: the message rules and a streamed body's ends."""
from __future__ import annotations

import asyncio

import pytest

from multiserve.asgi import ASGIService
from multiserve.protocol.http import HTTPProtocol
from multiserve.services.base import Connection


def request(raw=b"POST /p%20q?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"):
    [req] = HTTPProtocol().receive_data(raw)
    return req


async def collect(response):
    if isinstance(response.body, bytes):
        return response.body
    return b"".join([piece async for piece in response.body])


def run(app, raw=None):
    async def main():
        response = await ASGIService(app).handle_async(request(raw) if raw else request(), Connection(("10.0.0.1", 9)))
        return response, await collect(response)
    return asyncio.run(main())


def test_scope_receive_and_a_whole_response():
    seen = {}

    async def app(scope, receive, send):
        seen.update(scope)
        seen["message"] = await receive()
        await send({"type": "http.response.start", "status": 201, "headers": [(b"x", b"y")]})
        await send({"type": "http.response.body", "body": b"done"})
        seen["after"] = await receive()  # the response is complete: the client is "gone"

    response, body = run(app)
    assert (response.status, response.reason, response.headers, body) == (201, "Created", [(b"x", b"y")], b"done")
    assert seen["path"] == "/p q" and seen["raw_path"] == b"/p%20q" and seen["query_string"] == b"x=1"
    assert seen["method"] == "POST" and seen["client"] == ("10.0.0.1", 9) and seen["http_version"] == "1.1"
    assert seen["message"] == {"type": "http.request", "body": b"abc", "more_body": False}
    assert seen["after"] == {"type": "http.disconnect"}


def test_streamed_response_and_its_errors():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in (b"a", b"b", b"c"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    response, body = run(app)
    assert body == b"abc"

    async def fails_with_a_piece_queued(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"1", "more_body": True})
        await send({"type": "http.response.body", "body": b"2", "more_body": True})  # fills the queue
        raise RuntimeError("midway")

    with pytest.raises(RuntimeError, match="midway"):  # surfaces in the stream, never hangs
        asyncio.run(asyncio.wait_for(_stream_of(fails_with_a_piece_queued), 10))

    async def ends_early(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"1", "more_body": True})

    with pytest.raises(RuntimeError, match="before its last body piece"):
        asyncio.run(asyncio.wait_for(_stream_of(ends_early), 10))


async def _stream_of(app):
    response = await ASGIService(app).handle_async(request(), Connection(None))
    return await collect(response)


@pytest.mark.parametrize("messages, error", [
    ([{"type": "http.response.body", "body": b"x"}], "before http.response.start"),
    ([{"type": "http.response.start", "status": 200, "headers": [(b"bad name", b"v")]},
      {"type": "http.response.body", "body": b""}], "invalid response header"),
    ([{"type": "http.response.start", "status": 200, "headers": [(b"x", b"a\r\nInjected: 1")]},
      {"type": "http.response.body", "body": b""}], "invalid response header"),
    ([], "without sending http.response.start"),
])
def test_app_mistakes_are_errors(messages, error):
    async def app(scope, receive, send):
        for message in messages:
            await send(message)

    with pytest.raises((RuntimeError, ValueError), match=error):
        run(app)
