"""The Kannel gateway: an HTTP GET to Kannel's ``sendsms`` (smsbox) per message, with a ``dlr-url``
that brings the delivery reports back to ``/sms/kannel/dlr``.

Request (URL-encoded query): ``username``, ``password`` (``KANNEL_USERNAME`` / ``KANNEL_PASSWORD``),
``from`` (``SMS_SENDER``), ``to``, ``text`` with ``charset=UTF-8``, ``coding=2`` for a UCS-2 text
(else Kannel sends 7-bit), ``dlr-mask=27`` (delivered 1 + failed 2 + SMSC ack 8 + SMSC nack 16) and
``dlr-url`` = ``SMS_PUBLIC_URL/sms/kannel/dlr?secret=…&ref=<our id>&status=%d&answer=%A&ts=%T``.
The ``%`` escapes must reach Kannel literally, so the whole ``dlr-url`` is one URL-encoded value
(``%d`` travels as ``%25d``); Kannel replaces them in each report.

Kannel returns no message id; the reports carry our ``ref``, so the gateway id is our id.

Answers (Kannel 1.4.5):

=====  ==========================================  ==========================================
202    ``0: Accepted for delivery``                accepted
202    ``3: Queued for later delivery``            accepted (no SMSC link now; sent on reconnect)
503    ``Temporal failure, try again later.``      transient
403    ``Not routable. Do not try again.``         permanent (a DLR 16 follows)
400    ``... rejected`` (bad field, bad charset)   permanent
403    ``Authorization failed for sendsms``        transient, logged as an error: a wrong
                                                   password is our misconfiguration, and
                                                   rejecting would burn every message queued
=====  ==========================================  ==========================================

Any other 5xx, 408 and 429, timeouts (``KANNEL_TIMEOUT_SECONDS``) and connection errors are
transient; any other 4xx is permanent.

Each dispatcher thread keeps one keep-alive connection to smsbox (``http.client``): a new TCP
connection per message costs more than the request itself at a few thousand messages a second.
A request that fails because smsbox closed an idle kept-alive connection before answering is sent
once more on a fresh connection; every other failure is reported as transient.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from urllib.parse import quote, urlencode, urlsplit

from django.conf import settings

from masthead.messaging.gateways.base import ACCEPTED, PERMANENT, TRANSIENT, Outgoing, Report, SendResult

logger = logging.getLogger(__name__)

DLR_MASK = 1 | 2 | 8 | 16  # delivered, failed, SMSC accepted, SMSC rejected (not 4: buffered)
DLR_PATH = "/sms/kannel/dlr"
IDLE_SECONDS = 10.0  # a kept-alive connection idle longer than this is not reused
# what a kept-alive connection closed by the server looks like before any answer
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def dlr_url(message_id: int) -> str:
    """The ``dlr-url`` of one message, with Kannel's escapes left for Kannel to fill in."""
    base = settings.SMS_PUBLIC_URL.rstrip("/")
    secret = quote(settings.SMS_WEBHOOK_SECRET, safe="")
    return f"{base}{DLR_PATH}?secret={secret}&ref={message_id}&status=%d&answer=%A&ts=%T"


def sendsms_query(message: Outgoing) -> str:
    params = {
        "username": settings.KANNEL_USERNAME,
        "password": settings.KANNEL_PASSWORD,
        "from": settings.SMS_SENDER,
        "to": message.to,
        "text": message.text,
        "charset": "UTF-8",
    }
    if message.encoding == "ucs2":
        params["coding"] = "2"
    params["dlr-mask"] = str(DLR_MASK)
    params["dlr-url"] = dlr_url(message.message_id)
    return urlencode(params, quote_via=quote, safe="")


def interpret(status: int, body: str, message_id: int) -> SendResult:
    """The outcome of one sendsms answer (status code and body text)."""
    text = " ".join(body.split())[:300]
    error = f"kannel {status}: {text}" if text else f"kannel {status}"
    if 200 <= status < 300:
        if not text.startswith(("0:", "3:")):
            logger.warning("Kannel answered %s %r to message %s; taken as accepted", status, text, message_id)
        return SendResult(ACCEPTED, gateway_message_id=str(message_id))
    if status == 403 and text.lower().startswith("authorization failed"):
        logger.error("Kannel refused the sendsms credentials (KANNEL_USERNAME / KANNEL_PASSWORD or the "
                     "allowed IPs are wrong); message %s stays queued for a retry", message_id)
        return SendResult(TRANSIENT, error=error)
    if status >= 500 or status in (408, 429):
        return SendResult(TRANSIENT, error=error)
    return SendResult(PERMANENT, error=error)


class _Connection:
    """One thread's kept-alive connection to smsbox."""

    def __init__(self, key: tuple[str, str, int], timeout: float):
        scheme, host, port = key
        cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        self.key, self.conn, self.used_at, self.requests = key, cls(host, port, timeout=timeout), 0.0, 0

    def get(self, path: str) -> tuple[int, str]:
        self.conn.request("GET", path, headers={"Accept": "text/plain"})
        response = self.conn.getresponse()
        body = response.read(4096)
        if not response.isclosed():  # a longer answer than Kannel gives: do not reuse this connection
            self.conn.close()
        self.requests += 1
        self.used_at = time.monotonic()
        return response.status, body.decode("utf-8", "replace")

    def close(self) -> None:
        self.conn.close()


class KannelGateway:
    code = "kannel"
    reports_itself = False

    def __init__(self):
        self._local = threading.local()

    def _connection(self, key: tuple[str, str, int], timeout: float, fresh: bool) -> _Connection:
        current: _Connection | None = getattr(self._local, "connection", None)
        if current is not None and (fresh or current.key != key or current.conn.timeout != timeout
                                    or time.monotonic() - current.used_at > IDLE_SECONDS):
            current.close()
            current = None
        if current is None:
            current = self._local.connection = _Connection(key, timeout)
        return current

    def _drop(self) -> None:
        current = getattr(self._local, "connection", None)
        if current is not None:
            current.close()
            self._local.connection = None

    def send(self, message: Outgoing) -> SendResult:
        url = urlsplit(settings.KANNEL_SENDSMS_URL)
        if url.scheme not in ("http", "https") or not url.hostname:
            logger.error("KANNEL_SENDSMS_URL is not an http(s) URL: %r", settings.KANNEL_SENDSMS_URL)
            return SendResult(TRANSIENT, error="KANNEL_SENDSMS_URL is not an http(s) URL")
        key = (url.scheme, url.hostname, url.port or (443 if url.scheme == "https" else 80))
        path = f"{url.path or '/'}?{sendsms_query(message)}"
        timeout = settings.KANNEL_TIMEOUT_SECONDS
        for attempt in (1, 2):
            connection = self._connection(key, timeout, fresh=attempt == 2)
            reused = connection.requests > 0
            try:
                status, body = connection.get(path)
            except _STALE as exc:
                self._drop()
                if reused and attempt == 1:  # smsbox closed the idle connection: try once on a new one
                    continue
                return SendResult(TRANSIENT, error=f"kannel: {type(exc).__name__}: {exc}"[:500])
            except (OSError, http.client.HTTPException, ValueError) as exc:  # timeouts, refused, bad answers
                self._drop()
                return SendResult(TRANSIENT, error=f"kannel: {type(exc).__name__}: {exc}"[:500])
            return interpret(status, body, message.message_id)
        return SendResult(TRANSIENT, error="kannel: connection closed")

    def due_reports(self, sent, now) -> list[Report]:
        return []
