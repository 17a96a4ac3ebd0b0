"""A real uvicorn server on an ephemeral loopback port, and a real SMTP server (aiosmtpd)."""

import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from email import message_from_bytes
from email.message import Message
from typing import Any

import uvicorn
from aiosmtpd.controller import Controller
from fastapi import FastAPI

from digest.deliver.base import OutgoingMessage, SendResult
from digest.deliver.memory import MemoryTransport


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve `app` on 127.0.0.1, port chosen by the OS; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections wait in the backlog until the server accepts: no start-up race
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


class Inbox:
    """An aiosmtpd handler keeping every message; `wait` blocks until `n` have arrived."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._arrived = threading.Condition()

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        with self._arrived:
            self.messages.append(message_from_bytes(envelope.content))
            self._arrived.notify_all()
        return "250 OK"

    def wait(self, n: int, timeout: float = 10) -> list[Message]:
        """The first `n` messages, waiting for them to arrive."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.messages) >= n, timeout=timeout):
                raise AssertionError(f"expected {n} message(s), got {len(self.messages)}")
            return self.messages[:n]


class _EphemeralController(Controller):  # type: ignore[misc]
    """aiosmtpd's Controller, bound to port 0: it learns its port before poking the server."""

    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@contextmanager
def smtp_server(handler: Any) -> Iterator[int]:
    """An SMTP server on 127.0.0.1 (ephemeral port); yields the port."""
    controller = _EphemeralController(handler, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


class SignalingTransport(MemoryTransport):
    """MemoryTransport that lets a test wait for background sends."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = threading.Condition()

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        with self.changed:
            results = super().send(messages)
            self.changed.notify_all()
        return results

    def wait(self, n: int) -> list[OutgoingMessage]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.sent) >= n, timeout=30), f"{len(self.sent)} sent"
            return self.sent[:n]
