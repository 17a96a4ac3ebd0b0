"""SendGrid's Event Webhook: signed events in, bounces and complaints applied
(subscribers/webhooks.py checks the signature and reads the events)."""

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from digest.db.engine import session_scope
from digest.errors import WebhookError
from digest.subscribers import webhooks
from digest.web.deps import Site

log = logging.getLogger(__name__)


def webhook_routes(site: Site) -> APIRouter:
    """POST /webhooks/sendgrid (403 when no public key is configured)."""
    router = APIRouter()
    settings = site.settings
    key_text = settings.sendgrid_webhook_public_key
    webhook_key = webhooks.load_public_key(key_text) if key_text else None

    @router.post("/webhooks/sendgrid")
    async def sendgrid_webhook(request: Request) -> JSONResponse:
        # Unsigned, badly signed or replayed requests get 403 and change nothing.
        if webhook_key is None:
            return JSONResponse({"error": "webhook not configured"}, status_code=403)
        payload = await request.body()  # at most webhooks.MAX_BODY: BodyLimit stops more as it streams
        try:
            webhooks.verify_signature(
                webhook_key,
                payload=payload,
                signature=request.headers.get(webhooks.SIGNATURE_HEADER),
                timestamp=request.headers.get(webhooks.TIMESTAMP_HEADER),
                now=site.clock(),
                max_age=settings.sendgrid_webhook_max_age,
            )
        except WebhookError as e:
            return JSONResponse({"error": str(e)}, status_code=403)
        try:
            events = webhooks.parse_events(payload)
        except WebhookError as e:
            log.warning("sendgrid webhook refused: %s", e)
            return JSONResponse({"error": str(e)}, status_code=400)
        with session_scope(site.engine) as session:
            outcome = webhooks.apply_events(events, session=session, now=site.clock())
        return JSONResponse(outcome)

    return router
