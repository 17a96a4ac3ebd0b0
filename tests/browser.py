"""Headless Chromium driven over the DevTools protocol through a pipe (no extra package, no port).

`--remote-debugging-pipe` makes Chromium read commands from its fd 3 and write answers and events
to its fd 4, each a JSON object ended by a NUL byte. A bash `exec` with redirections puts our
pipe ends on those numbers without a preexec_fn (unsafe in a process that runs server threads).
"""

import fcntl
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tests.render.tools import require

WAIT = 60.0  # seconds: a bound for a hung browser, never an assertion about speed


class Browser:
    """One Chromium process; `page()` opens a tab to drive."""

    def __init__(self, proc: subprocess.Popen[bytes], to_browser: int, from_browser: int) -> None:
        self.proc, self._out = proc, os.fdopen(to_browser, "wb", buffering=0)
        self._in = os.fdopen(from_browser, "rb", buffering=0)
        self._next_id = 0
        self._changed = threading.Condition()
        self._answers: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while chunk := self._in.read(65536):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._changed:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._answers[message["id"]] = message
                    else:
                        self.events.append(message)
                self._changed.notify_all()

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer; a protocol error raises AssertionError."""
        with self._changed:
            self._next_id += 1
            ident = self._next_id
        command: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session is not None:
            command["sessionId"] = session
        self._out.write(json.dumps(command).encode() + b"\0")
        with self._changed:
            if not self._changed.wait_for(lambda: ident in self._answers, timeout=WAIT):
                raise AssertionError(f"Chromium did not answer {method}")
            answer = self._answers.pop(ident)
        if "error" in answer:
            raise AssertionError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def wait_event(self, method: str, session: str, after: int) -> dict[str, Any]:
        """The first event `method` of `session` among events[after:], waiting for it."""

        def found() -> dict[str, Any] | None:
            return next(
                (e for e in self.events[after:] if e["method"] == method and e.get("sessionId") == session),
                None,
            )

        with self._changed:
            if not self._changed.wait_for(lambda: found() is not None, timeout=WAIT):
                raise AssertionError(f"Chromium sent no {method}")
            event = found()
        assert event is not None
        return event

    def page(self) -> "Page":
        """A new tab, attached, with page, runtime and log events on."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.call(domain, session)
        return Page(self, session)


class Page:
    """One tab: navigate, evaluate, click like a person (a real mouse press), read the console."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session

    def _mark(self) -> int:
        with self.browser._changed:
            return len(self.browser.events)

    def emulate(self, width: int, height: int, *, scale: float = 1, mobile: bool = True) -> None:
        """Lay pages out as a screen `width` x `height` CSS px wide (a phone's when `mobile`)."""
        self.browser.call(
            "Emulation.setDeviceMetricsOverride",
            self.session,
            width=width,
            height=height,
            deviceScaleFactor=scale,
            mobile=mobile,
        )

    def open(self, url: str) -> None:
        """Load `url` and wait for its load event."""
        mark = self._mark()
        self.browser.call("Page.navigate", self.session, url=url)
        self.browser.wait_event("Page.loadEventFired", self.session, mark)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (DevTools is not bound by the page's CSP)."""
        result = self.browser.call(
            "Runtime.evaluate", self.session, expression=expression, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """Press and release the mouse on the middle of `selector`, then wait for the next page."""
        box = self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        mark = self._mark()
        for kind in ("mousePressed", "mouseReleased"):
            self.browser.call(
                "Input.dispatchMouseEvent",
                self.session,
                type=kind,
                x=box[0],
                y=box[1],
                button="left",
                clickCount=1,
            )
        self.browser.wait_event("Page.loadEventFired", self.session, mark)

    def console(self) -> list[str]:
        """What the browser logged for this tab (CSP refusals land here)."""
        with self.browser._changed:
            events = list(self.browser.events)
        return [
            e["params"]["entry"]["text"]
            for e in events
            if e["method"] == "Log.entryAdded" and e.get("sessionId") == self.session
        ]


def _high(*fds: int) -> tuple[int, ...]:
    """The same pipe ends moved to numbers above 9, so that `3<&N` can never close what it copies."""
    moved = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds)
    for fd in fds:
        os.close(fd)
    return moved


@contextmanager
def chromium(workdir: Path) -> Iterator[Browser]:
    """A headless Chromium for the test; closed at the end."""
    program = require("chromium")
    to_browser_r, to_browser_w = _high(*os.pipe())
    from_browser_r, from_browser_w = _high(*os.pipe())
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={workdir / 'chromium-profile'}",
        "--remote-debugging-pipe",
    ]
    proc = subprocess.Popen(
        [
            "bash",
            "-c",
            f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-',
            program,
            *flags,
        ],
        pass_fds=(to_browser_r, from_browser_w),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(to_browser_r)
    os.close(from_browser_w)
    browser = Browser(proc, to_browser_w, from_browser_r)
    try:
        yield browser
    finally:
        with suppress(AssertionError, OSError):
            browser.call("Browser.close")
        try:
            proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        browser._out.close()
        browser._reader.join(timeout=WAIT)  # Chromium is gone: its end of the pipe is closed
        browser._in.close()
