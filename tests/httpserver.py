"""A real local HTTP server for fetch tests: routes are plain functions, every request is recorded."""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """What a route answers: status, headers, and a body (bytes, or chunks to stream)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterator[bytes] = b""


@dataclass
class Seen:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    peer: tuple[str, int] = ("", 0)  # the client's address and port: one per connection


Route = Callable[[Seen], Reply]


class FeedServer:
    """Serves routes on 127.0.0.1 at an ephemeral port; `url(path)` builds links to it."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.release = threading.Event()  # routes that hang wait on this; set at shutdown
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen = Seen(self.path, headers, self.client_address[:2])
                server.seen.append(seen)
                route = server.routes.get(self.path.split("?")[0])
                reply = route(seen) if route else Reply(404, body=b"not found")
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if isinstance(reply.body, bytes):
                    if reply.status != 304:
                        self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for chunk in reply.body:
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up (on purpose, in the size-cap tests)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def url(self, path: str) -> str:
        """Absolute URL of a path on this server."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def route(self, path: str, reply: Reply | Route) -> None:
        """Serve a fixed reply, or a function of the request, at a path."""
        self.routes[path] = reply if callable(reply) else (lambda _seen: reply)


@contextmanager
def serving() -> Iterator[FeedServer]:
    """A running FeedServer, shut down afterwards."""
    server = FeedServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.httpd.shutdown()
        server.httpd.server_close()
