"""A minimal loopback SMTP sink for benchmarks: accepts everything, keeps nothing but a count.

aiosmtpd handles DATA line by line in Python and would be the bottleneck; this sink reads in
64 KB chunks and looks for the end-of-data marker, so the client side is what gets measured.
"""

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


def _serve(
    port_out: "multiprocessing.connection.Connection",
    stop: "multiprocessing.synchronize.Event",
    count: "multiprocessing.sharedctypes.Synchronized[int]",
) -> None:
    server = _Server()
    port_out.send(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stop.wait()
    count.value = server.messages
    server.shutdown()


class ProcessSink:
    """The sink in its own process, as a real server would be: it does not share our GIL."""

    def __enter__(self) -> "ProcessSink":
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._stop = ctx.Event()
        self._count = ctx.Value("q", 0)
        self._proc = ctx.Process(target=_serve, args=(child, self._stop, self._count), daemon=True)
        self._proc.start()
        self.port = int(parent.recv())
        return self

    @property
    def messages(self) -> int:
        """Messages received (read after exit)."""
        return int(self._count.value)

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
