"""The generic HTTP gateway: a JSON POST to ``SMS_HTTP_URL`` with ``Authorization: Bearer
SMS_HTTP_TOKEN`` for third-party SMS platforms.

Request body ``{"id": "<our message id>", "to": "+421...", "text": "...", "encoding": "gsm7"}``
with header ``Idempotency-Key: masthead-sms-<id>``: a platform that honours it sends a repeated
attempt once. Answers: 2xx accepted (the platform's ``id`` from a JSON body, else ours); 408, 429
and 5xx, timeouts and connection errors transient; any other 4xx permanent.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from django.conf import settings

from masthead.messaging.gateways.base import ACCEPTED, PERMANENT, TRANSIENT, Outgoing, Report, SendResult


class HttpGateway:
    code = "http"
    reports_itself = False

    def send(self, message: Outgoing) -> SendResult:
        body = json.dumps({"id": str(message.message_id), "to": message.to, "text": message.text,
                           "encoding": message.encoding}).encode()
        request = urllib.request.Request(settings.SMS_HTTP_URL, data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {settings.SMS_HTTP_TOKEN}",
            "Idempotency-Key": f"masthead-sms-{message.message_id}"})
        try:
            with urllib.request.urlopen(request, timeout=settings.SMS_HTTP_TIMEOUT_SECONDS) as response:
                raw = response.read(65536)
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}: {exc.read(500).decode('utf-8', 'replace')}".strip()
            transient = exc.code in (408, 429) or exc.code >= 500
            return SendResult(TRANSIENT if transient else PERMANENT, error=error[:500])
        except (OSError, ValueError) as exc:  # URLError, timeouts, resets; a bad URL setting
            return SendResult(TRANSIENT, error=f"{type(exc).__name__}: {exc}"[:500])
        try:
            remote_id = str(json.loads(raw or b"{}").get("id") or "")
        except (ValueError, AttributeError):
            remote_id = ""
        return SendResult(ACCEPTED, gateway_message_id=(remote_id or f"http-{message.message_id}")[:100])

    def due_reports(self, sent, now) -> list[Report]:
        return []
