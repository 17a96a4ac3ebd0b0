"""Minimal loopback sinks for benchmarks: accept everything, keep nothing but counts.

SMTP: aiosmtpd handles DATA line by line in Python and would be the bottleneck; this sink reads
in 64 KB chunks and looks for the end-of-data marker, so the client side is what gets measured.
SendGrid: `POST /v3/mail/send` answered 202 with an X-Message-Id, as the real API does; it
counts requests (API calls) and personalizations (messages). Validating bodies against the
spec is the tests' job (tests/deliver/sendgrid_server.py), not the benchmark's.
"""

import http.server
import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.sharedctypes
import multiprocessing.synchronize
import socket
import socketserver
import threading


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"220 sink ESMTP\r\n")
        buf = b""
        in_data = False
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                return
            buf += chunk
            while True:
                if in_data:
                    end = buf.find(b"\r\n.\r\n")
                    if end < 0:
                        buf = buf[-4:]  # keep a possible partial marker
                        break
                    buf = buf[end + 5 :]
                    in_data = False
                    self.server.messages += 1  # type: ignore[attr-defined]
                    sock.sendall(b"250 2.0.0 queued\r\n")
                    continue
                end = buf.find(b"\r\n")
                if end < 0:
                    break
                line, buf = buf[:end].upper(), buf[end + 2 :]
                if line.startswith((b"EHLO", b"HELO")):
                    sock.sendall(b"250-sink\r\n250-8BITMIME\r\n250 PIPELINING\r\n")
                elif line == b"DATA":
                    in_data = True
                    sock.sendall(b"354 go ahead\r\n")
                elif line == b"QUIT":
                    sock.sendall(b"221 bye\r\n")
                    return
                else:
                    sock.sendall(b"250 OK\r\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.messages = 0
        self.requests = 0


class _SendGridHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/v3/mail/send":
            self.send_response(404)
            self.end_headers()
            return
        personalizations = len(json.loads(body)["personalizations"])
        server: _SendGridServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.requests += 1
            server.messages += personalizations
            number = server.requests
        self.send_response(202)
        self.send_header("X-Message-Id", f"sink-{number}")
        self.send_header("Content-Length", "0")
        self.end_headers()


class _SendGridServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SendGridHandler)
        self.lock = threading.Lock()
        self.messages = 0
        self.requests = 0


def _serve(
    kind: str,
    port_out: "multiprocessing.connection.Connection",
    stop: "multiprocessing.synchronize.Event",
    counts: "multiprocessing.sharedctypes.SynchronizedArray[int]",
) -> None:
    server = _SendGridServer() if kind == "sendgrid" else _Server()
    port_out.send(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stop.wait()
    counts[0], counts[1] = server.messages, server.requests
    server.shutdown()


class ProcessSink:
    """A sink in its own process, as a real server would be: it does not share our GIL.

    `kind` is "smtp" (the default) or "sendgrid" (base URL `http://127.0.0.1:{port}`).
    """

    def __init__(self, kind: str = "smtp") -> None:
        self.kind = kind

    def __enter__(self) -> "ProcessSink":
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._stop = ctx.Event()
        self._counts = ctx.Array("q", 2)
        self._proc = ctx.Process(
            target=_serve, args=(self.kind, child, self._stop, self._counts), daemon=True
        )
        self._proc.start()
        self.port = int(parent.recv())
        return self

    @property
    def url(self) -> str:
        """The base URL of a SendGrid sink."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def messages(self) -> int:
        """Messages received: SMTP DATA commands, or SendGrid personalizations (read after exit)."""
        return int(self._counts[0])

    @property
    def requests(self) -> int:
        """SendGrid API calls received (read after exit)."""
        return int(self._counts[1])

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._proc.join(timeout=30)


class Sink(socketserver.ThreadingTCPServer):
    """Listening on 127.0.0.1, an ephemeral port; `messages` counts completed DATA commands."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.messages = 0
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The port the kernel gave us."""
        return int(self.server_address[1])

    def __enter__(self) -> "Sink":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
