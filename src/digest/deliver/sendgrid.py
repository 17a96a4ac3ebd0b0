"""The SendGrid transport: the official library against DIGEST_SENDGRID_HOST."""

import json
import logging
from collections.abc import Sequence
from typing import Any
from urllib.error import HTTPError, URLError

from sendgrid import SendGridAPIClient

from digest.deliver.base import OutgoingMessage, SendResult

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 30.0  # the library has none by default


def mail_body(message: OutgoingMessage) -> dict[str, Any]:
    """The /v3/mail/send request body for one message (our unsubscribe, not SendGrid's)."""
    personalization: dict[str, Any] = {
        "to": [{"email": message.to_email, **({"name": message.to_name} if message.to_name else {})}],
        "custom_args": {
            "digest_edition": str(message.edition_id),
            "digest_subscriber": str(message.subscriber_id),
        },
        "headers": {k: v for k, v in message.headers.items() if k != "Reply-To"},
    }
    body: dict[str, Any] = {
        "personalizations": [personalization],
        "from": {"email": message.from_email, "name": message.from_name},
        "subject": message.subject,
        "content": [
            {"type": "text/plain", "value": message.text},
            {"type": "text/html", "value": message.html},
        ],
        "tracking_settings": {"subscription_tracking": {"enable": False}},
    }
    if "Reply-To" in message.headers:
        body["reply_to"] = {"email": message.headers["Reply-To"]}
    return body


class SendGridTransport:
    """Posts each message to /v3/mail/send; 4xx other than 429 are permanent failures."""

    name = "sendgrid"

    def __init__(self, api_key: str, *, host: str) -> None:
        self.client = SendGridAPIClient(api_key=api_key, host=host)
        self.client.client.timeout = REQUEST_TIMEOUT

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """One request per message."""
        return [self._send_one(m) for m in messages]

    def _send_one(self, message: OutgoingMessage) -> SendResult:
        try:
            response = self.client.client.mail.send.post(request_body=mail_body(message))
        except HTTPError as e:
            status = e.code
            detail = _error_text(getattr(e, "body", b""))
            permanent = 400 <= status < 500 and status != 429
            return SendResult(message.delivery_id, False, permanent, f"SendGrid HTTP {status}: {detail}")
        except (URLError, TimeoutError, OSError) as e:
            return SendResult(message.delivery_id, False, False, f"SendGrid unreachable: {e}")
        provider_id = response.headers.get("X-Message-Id") if response.headers else None
        return SendResult(message.delivery_id, True, provider_id=provider_id)

    def close(self) -> None:
        """Nothing to release (urllib opens a connection per request)."""


def _error_text(body: bytes | str) -> str:
    try:
        data = json.loads(body)
        return "; ".join(e.get("message", "") for e in data.get("errors", [])) or str(data)
    except (ValueError, TypeError, AttributeError):
        return str(body)[:200]
