"""A tiny WSGI app (PEP 3333, no framework), served on every engine:

    multiserve serve --protocol http --app examples.hello_wsgi:app --engine threadpool --port 8080
    curl -s http://127.0.0.1:8080/            # hello
    curl -s -d 'some data' http://127.0.0.1:8080/echo
    curl -sN http://127.0.0.1:8080/stream?n=3 # three lines, one per 0.1 s, chunked
"""
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello\n"]
    if path == "/echo":  # the request body back (wsgi.input: Content-Length or chunked)
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/stream":  # a body of unknown length, produced as it goes: sent chunked
        n = int(parse_qs(environ["QUERY_STRING"]).get("n", ["3"])[0])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"line {i}\n".encode() for i in range(n) if i == 0 or not time.sleep(0.1))
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]
