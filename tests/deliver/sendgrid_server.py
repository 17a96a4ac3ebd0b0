"""A local SendGrid stand-in: validates every request body against the published spec."""

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest

# SendGrid's published OpenAPI description (twilio/sendgrid-oai), kept beside the repository.
SPEC = Path(
    os.environ.get("DIGEST_SENDGRID_SPEC")
    or Path(__file__).resolve().parents[2].parent / "shared" / "sendgrid" / "tsg_mail_v3.patched.json"
)
BODY_SCHEMA = "#/components/requestBodies/PostMailSend/content/application~1json/schema"


def mail_send_validator() -> jsonschema.protocols.Validator:
    """A JSON Schema 2020-12 validator (OpenAPI 3.1) for POST /v3/mail/send bodies."""
    if not SPEC.exists():
        pytest.skip(f"SendGrid spec not found at {SPEC} (set DIGEST_SENDGRID_SPEC)")
    spec = json.loads(SPEC.read_text())
    schema = {**spec, "$ref": BODY_SCHEMA}
    cls = jsonschema.validators.validator_for({"$schema": "https://json-schema.org/draft/2020-12/schema"})
    return cls(schema, format_checker=cls.FORMAT_CHECKER)  # type: ignore[no-any-return]


@dataclass
class Script:
    """What the server answers, in order; when the list runs out it answers 202."""

    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)  # JSON for the next error answers
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def sendgrid_server(script: Script) -> Iterator[str]:
    """Serve on 127.0.0.1, an ephemeral port; yields the base URL."""
    validator = mail_send_validator()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.loads(raw)
            errors = sorted(validator.iter_errors(body), key=str)
            with script.lock:
                script.requests.append(body)
                script.headers.append(dict(self.headers))
                if self.path != "/v3/mail/send":
                    errors_text = [f"unexpected path {self.path}"]
                else:
                    errors_text = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
                script.violations.extend(errors_text)
                status, headers = (
                    (400, {})
                    if errors_text
                    else (script.answers.pop(0) if script.answers else (202, {"X-Message-Id": "sg-msg-1"}))
                )
                scripted = (
                    script.bodies.pop(0) if status != 202 and script.bodies and not errors_text else None
                )
            payload = (
                b""
                if status == 202
                else json.dumps(
                    scripted or {"errors": [{"message": m} for m in errors_text or [f"HTTP {status}"]]}
                ).encode()
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
