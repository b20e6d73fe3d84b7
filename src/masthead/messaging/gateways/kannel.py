"""The Kannel gateway: an HTTP GET to Kannel's ``sendsms`` (smsbox) per message, with a ``dlr-url``
that brings the delivery reports back to ``/sms/kannel/dlr``.

Request (URL-encoded query): ``username``, ``password`` (``KANNEL_USERNAME`` / ``KANNEL_PASSWORD``),
``from`` (``SMS_SENDER``), ``to``, ``text`` with ``charset=UTF-8``, ``coding=2`` for a UCS-2 text
(else Kannel sends 7-bit), ``dlr-mask=19`` (delivered 1 + failed 2 + SMSC refused 16) and
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

Each dispatcher thread keeps one keep-alive connection to smsbox: a new TCP connection per message
costs more than the request itself at a few thousand messages a second. The connection is a plain
socket with a small HTTP/1.1 reader (Content-Length, chunked, or read to close), since smsbox's
answers are a few short headers and a line of text: ``http.client`` spends about four times the CPU
per request on them, mostly parsing headers, and the dispatcher's threads share one interpreter
lock. A request that fails because smsbox closed an idle kept-alive connection before answering is
sent once more on a fresh connection; every other failure is reported as transient.
"""

from __future__ import annotations

import functools
import logging
import socket
import ssl
import threading
import time
from urllib.parse import quote, urlencode, urlsplit

from django.conf import settings

from masthead.messaging.gateways.base import ACCEPTED, PERMANENT, TRANSIENT, Outgoing, Report, SendResult

logger = logging.getLogger(__name__)

# Delivered, failed, refused by the SMSC. Not 4 (buffered: no change for us), and not 8 (the SMSC took
# it): the message is "sent" from sendsms's answer already, and that report would double the
# callbacks Kannel makes and our webhook takes (Kannel's throughput with reports is bound by them).
DLR_MASK = 1 | 2 | 16
DLR_PATH = "/sms/kannel/dlr"
IDLE_SECONDS = 10.0  # a kept-alive connection idle longer than this is not reused
MAX_ANSWER = 65536  # bytes of headers, and of body, read at most from one answer


def dlr_url(message_id: int | str) -> str:
    """The ``dlr-url`` of one message, with Kannel's escapes left for Kannel to fill in."""
    base = settings.SMS_PUBLIC_URL.rstrip("/")
    secret = quote(settings.SMS_WEBHOOK_SECRET, safe="")
    return f"{base}{DLR_PATH}?secret={secret}&ref={message_id}&status=%d&answer=%A&ts=%T"


@functools.lru_cache(maxsize=16)
def _query_parts(username: str, password: str, sender: str, public_url: str, secret: str) -> tuple[str, str, str]:
    """What every message's query shares, encoded once: the credentials and sender, and the
    ``dlr-url`` before and after the message id (quoting works character by character)."""
    head = urlencode({"username": username, "password": password, "from": sender}, quote_via=quote, safe="")
    before, after = dlr_url("\x00").split("\x00")
    return head, quote(before, safe=""), quote(after, safe="")


def sendsms_query(message: Outgoing) -> str:
    head, dlr_before, dlr_after = _query_parts(settings.KANNEL_USERNAME, settings.KANNEL_PASSWORD,
                                               settings.SMS_SENDER, settings.SMS_PUBLIC_URL,
                                               settings.SMS_WEBHOOK_SECRET)
    coding = "&coding=2" if message.encoding == "ucs2" else ""
    return (f"{head}&to={quote(message.to, safe='')}&text={quote(message.text, safe='')}&charset=UTF-8{coding}"
            f"&dlr-mask={DLR_MASK}&dlr-url={dlr_before}{int(message.message_id)}{dlr_after}")


@functools.lru_cache(maxsize=16)
def _endpoint(url: str) -> tuple[tuple[str, str, int], str] | None:
    """((scheme, host, port), path) of KANNEL_SENDSMS_URL, or None when it is not an http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), parts.path or "/"


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


class _Closed(ConnectionError):
    """The server closed a kept-alive connection before answering."""


# what a kept-alive connection closed by the server looks like before any answer
_STALE = (_Closed, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class _Connection:
    """One thread's kept-alive HTTP/1.1 connection to smsbox, opened at its first request."""

    def __init__(self, key: tuple[str, str, int], timeout: float):
        scheme, host, port = key
        self.key, self.timeout, self.used_at, self.requests = key, timeout, 0.0, 0
        self.host = host if port == (443 if scheme == "https" else 80) else f"{host}:{port}"
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _connect(self) -> socket.socket:
        scheme, host, port = self.key
        sock = socket.create_connection((host, port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        return sock

    def get(self, path: str) -> tuple[int, str]:
        if self.sock is None:
            self.sock = self._connect()
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: text/plain\r\n\r\n".encode("ascii"))
        version, status, headers = self._head()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body, keep = self._chunked(), True
        elif "content-length" in headers:
            body, keep = self._exactly(int(headers["content-length"])), True
        else:  # the answer ends when the server closes
            body, keep = self._until_closed(), False
        token = headers.get("connection", "").lower()
        if not keep or token == "close" or (version == "HTTP/1.0" and token != "keep-alive") or self.buffer:
            self.close()
        self.requests += 1
        self.used_at = time.monotonic()
        return status, body.decode("utf-8", "replace")

    def _receive(self, started: bool = True) -> None:
        data = self.sock.recv(MAX_ANSWER)
        if not data:
            if not started:
                raise _Closed("closed before answering")
            raise ConnectionError("closed in the middle of an answer")
        self.buffer += data

    def _head(self) -> tuple[str, int, dict[str, str]]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > MAX_ANSWER:
                raise ValueError("answer headers too long")
            self._receive(started=bool(self.buffer))
        lines = self.buffer[:end].decode("latin-1").split("\r\n")
        self.buffer = self.buffer[end + 4:]
        version, status = (lines[0].split(" ", 2) + [""])[:2]
        if not version.startswith("HTTP/") or not status.isdigit():
            raise ValueError(f"not an HTTP answer: {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return version, int(status), headers

    def _exactly(self, size: int) -> bytes:
        if not 0 <= size <= MAX_ANSWER:
            raise ValueError(f"answer of {size} bytes")
        while len(self.buffer) < size:
            self._receive()
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return body

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > MAX_ANSWER:
                raise ValueError("chunk header too long")
            self._receive()
        line, self.buffer = self.buffer[:end], self.buffer[end + 2:]
        return line

    def _chunked(self) -> bytes:
        body = b""
        while size := int(self._line().split(b";")[0].strip() or b"x", 16):
            if len(body) + size > MAX_ANSWER:
                raise ValueError("answer too long")
            body += self._exactly(size)
            self._line()
        while self._line():  # trailers, up to the empty line
            pass
        return body

    def _until_closed(self) -> bytes:
        while data := self.sock.recv(MAX_ANSWER):
            self.buffer += data
            if len(self.buffer) > MAX_ANSWER:
                raise ValueError("answer too long")
        body, self.buffer = self.buffer, b""
        return body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, b""


class KannelGateway:
    code = "kannel"
    reports_itself = False

    def __init__(self):
        self._local = threading.local()

    def _connection(self, key: tuple[str, str, int], timeout: float, fresh: bool) -> _Connection:
        current: _Connection | None = getattr(self._local, "connection", None)
        if current is not None and (fresh or current.key != key or current.timeout != timeout
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
        endpoint = _endpoint(settings.KANNEL_SENDSMS_URL)
        if endpoint is None:
            logger.error("KANNEL_SENDSMS_URL is not an http(s) URL: %r", settings.KANNEL_SENDSMS_URL)
            return SendResult(TRANSIENT, error="KANNEL_SENDSMS_URL is not an http(s) URL")
        key, path = endpoint
        path = f"{path}?{sendsms_query(message)}"
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
            except (OSError, ValueError) as exc:  # timeouts, refused, bad answers
                self._drop()
                return SendResult(TRANSIENT, error=f"kannel: {type(exc).__name__}: {exc}"[:500])
            return interpret(status, body, message.message_id)
        return SendResult(TRANSIENT, error="kannel: connection closed")

    def due_reports(self, sent, now) -> list[Report]:
        return []
