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


TARGETS = [b"/", b"/a/b", b"/a?x=1", b"/a?x=1?y", b"/p%20q", b"//double", b"/a;p=1?q", b"/?", b"/a#frag",
           b"/a?x#f", b"http://h:8/abs?q=1", b"*", b"h:443", b"/%zz", b"/caf%C3%A9"]


@pytest.mark.parametrize("target", TARGETS)
def test_scope_and_environ_split_every_target_as_parse_url_does(target):
    """The fast path for origin-form targets (split at '?', no unquoting without '%') gives what
    httptools.parse_url gives, in the ASGI scope and the WSGI environ alike."""
    import httptools
    from urllib.parse import unquote_to_bytes

    from multiserve.wsgi import WSGIService

    method = b"OPTIONS" if target == b"*" else b"CONNECT" if target == b"h:443" else b"GET"
    raw = method + b" " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    protocol = HTTPProtocol()
    try:
        [req] = protocol.receive_data(raw)
    except ValueError:  # llhttp refused it (CONNECT is an upgrade): nothing to compare
        pytest.skip(f"llhttp does not return {target!r} as a request")
    try:
        url = httptools.parse_url(target)
        path, query = url.path or b"/", url.query or b""
    except httptools.HttpParserInvalidURLError:
        path, _, query = target.partition(b"?")
    scope = ASGIService(None).scope(req, Connection(None))
    assert (scope["raw_path"], scope["query_string"]) == (path, query)
    assert scope["path"] == unquote_to_bytes(path).decode("utf-8", "replace")
    environ = WSGIService(None).environ(req, Connection(None))
    assert (environ["PATH_INFO"], environ["QUERY_STRING"]) == (unquote_to_bytes(path).decode("latin-1"), query.decode("latin-1"))
