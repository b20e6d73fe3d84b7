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

Requests go over kept-alive connections to smsbox: a new TCP connection per message costs more
than the request itself at a few thousand messages a second (and smsbox accepts slowly under load).
The dispatcher uses :meth:`KannelGateway.pump`: one thread with up to ``SMS_CONCURRENCY`` requests
in flight, a connection each, answers read as they arrive (a selector; connections are opened
without waiting and kept between runs). :meth:`KannelGateway.send` sends one message on the
calling thread's connection. A connection is a plain socket with a small HTTP/1.1 reader
(Content-Length, chunked, or read to close): smsbox's answers are a few short headers and a line of
text, and ``http.client`` spends about four times the CPU per request on them, mostly parsing
headers. A request that fails because smsbox closed an idle kept-alive connection before answering
is sent once more on a fresh connection; every other failure is reported as transient.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
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
PUMP_POLL = 0.005  # seconds between looks for new messages while requests are in flight
# Connections the pump opens at once: smsbox accepts slowly under load, and a burst of connects
# overflows its backlog (the dropped ones wait out TCP's retries: 1 s, 3 s, 7 s...)
PUMP_OPENING = 8


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


def _shared_parts() -> tuple[str, str, str]:
    return _query_parts(settings.KANNEL_USERNAME, settings.KANNEL_PASSWORD, settings.SMS_SENDER,
                        settings.SMS_PUBLIC_URL, settings.SMS_WEBHOOK_SECRET)


def sendsms_query(message: Outgoing, shared: tuple[str, str, str] | None = None) -> str:
    """The query of one message; ``shared``: :func:`_shared_parts`, when the caller has it already."""
    head, dlr_before, dlr_after = shared or _shared_parts()
    coding = "&coding=2" if message.encoding == "ucs2" else ""
    return (f"{head}&to={quote(message.to, safe='')}&text={quote(message.text, safe='')}&charset=UTF-8{coding}"
            f"&dlr-mask={DLR_MASK}&dlr-url={dlr_before}{int(message.message_id)}{dlr_after}")


BAD_URL = SendResult(TRANSIENT, error="KANNEL_SENDSMS_URL is not an http(s) URL")


def _configured_endpoint() -> tuple[tuple[str, str, int], str] | None:
    """:func:`_endpoint` of KANNEL_SENDSMS_URL; None (logged as an error) when it is not usable."""
    endpoint = _endpoint(settings.KANNEL_SENDSMS_URL)
    if endpoint is None:
        logger.error("KANNEL_SENDSMS_URL is not an http(s) URL: %r", settings.KANNEL_SENDSMS_URL)
    return endpoint


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


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    keep_alive: bool
    rest: bytes  # what followed the answer


def parse_answer(data: bytes, ended: bool) -> _Answer | None:
    """The first whole HTTP/1.1 answer in ``data``, or None while more is needed. ``ended``: the
    server has closed (no more will come). Bodies by Content-Length, chunked, or up to the close."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_ANSWER:
            raise ValueError("answer headers too long")
        if ended:
            raise _Closed("closed before answering") if not data else ConnectionError(
                "closed in the middle of an answer")
        return None
    lines = data[:end].decode("latin-1").split("\r\n")
    version, status = (lines[0].split(" ", 2) + [""])[:2]
    if not version.startswith("HTTP/") or not status.isdigit():
        raise ValueError(f"not an HTTP answer: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    token = headers.get("connection", "").lower()
    keep = token != "close" and (version != "HTTP/1.0" or token == "keep-alive")
    rest = data[end + 4:]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        found = _dechunk(rest)
    elif "content-length" in headers:
        size = int(headers["content-length"])
        if not 0 <= size <= MAX_ANSWER:
            raise ValueError(f"answer of {size} bytes")
        found = (rest[:size], rest[size:]) if len(rest) >= size else None
    else:  # the answer ends when the server closes
        if len(rest) > MAX_ANSWER:
            raise ValueError("answer too long")
        found, keep = ((rest, b"") if ended else None), False
    if found is None:
        if ended:
            raise ConnectionError("closed in the middle of an answer")
        return None
    return _Answer(int(status), found[0], keep, found[1])


def _dechunk(data: bytes) -> tuple[bytes, bytes] | None:
    """(body, rest) of a whole chunked body at the start of ``data``, or None while more is needed."""
    body, at = b"", 0
    while True:
        end = data.find(b"\r\n", at)
        if end < 0:
            if len(data) - at > MAX_ANSWER:
                raise ValueError("chunk header too long")
            return None
        size = int(data[at:end].split(b";")[0].strip() or b"x", 16)
        at = end + 2
        if not size:
            break
        if len(body) + size > MAX_ANSWER:
            raise ValueError("answer too long")
        if len(data) < at + size + 2:
            return None
        body, at = body + data[at:at + size], at + size + 2
    while True:  # trailers, up to the empty line
        end = data.find(b"\r\n", at)
        if end < 0:
            return None
        line, at = data[at:end], end + 2
        if not line:
            return body, data[at:]


class _Connection:
    """A kept-alive HTTP/1.1 connection to smsbox, opened at its first request."""

    def __init__(self, key: tuple[str, str, int], timeout: float):
        scheme, host, port = key
        self.key, self.timeout, self.used_at, self.requests = key, timeout, 0.0, 0
        self.host = host if port == (443 if scheme == "https" else 80) else f"{host}:{port}"
        self.sock: socket.socket | None = None
        self.buffer = b""

    def request(self, path: str) -> None:
        """Send the GET (connecting first if needed); the answer is read by :meth:`get` or :meth:`feed`."""
        if self.sock is None:
            scheme, host, port = self.key
            sock = socket.create_connection((host, port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            self.sock = sock
        data = f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: text/plain\r\n\r\n".encode("ascii")
        if self.sock.gettimeout() == 0.0:  # the pump's: a send without waiting, the whole request as a rule
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent < len(data):  # the socket's buffer is full: wait for room, as long as the timeout
                self.sock.settimeout(self.timeout)
                self.sock.sendall(data[sent:])
                self.sock.setblocking(False)
        else:
            self.sock.sendall(data)

    def connect_later(self) -> bool:
        """Start connecting without waiting (plain http); True: the socket becomes writable when it is
        done, see :meth:`connected`. False: connected already (https connects at once)."""
        scheme, host, port = self.key
        if scheme == "https":
            sock = socket.create_connection((host, port), timeout=self.timeout)
            self.sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            return False
        family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        error = sock.connect_ex(address)
        if error not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(error, os.strerror(error))
        self.sock = sock
        return True

    def connected(self) -> None:
        """The connection :meth:`connect_later` started is done: its error, or ready for requests,
        left non-blocking (the pump reads it when the selector says so; a blocking socket with a
        timeout would poll before every send and receive)."""
        error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def feed(self) -> tuple[int, str, bool] | None:
        """Read what has arrived (one receive; blocks up to the timeout if nothing has): the answer's
        (status, body, whether the connection may carry another request) once it is whole, else None."""
        try:
            data = self.sock.recv(MAX_ANSWER)
        except BlockingIOError:  # woken for nothing
            return None
        # TLS may hold more decrypted bytes than one receive returns, and the selector would not
        # report them: take them now
        while data and isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            data += self.sock.recv(MAX_ANSWER)
        self.buffer += data
        answer = parse_answer(self.buffer, ended=not data)
        if answer is None:
            return None
        self.buffer = answer.rest
        self.requests += 1
        self.used_at = time.monotonic()
        # a surplus byte means the two ends are out of step: start afresh
        return answer.status, answer.body.decode("utf-8", "replace"), answer.keep_alive and not self.buffer

    def get(self, path: str) -> tuple[int, str]:
        self.request(path)
        while (answer := self.feed()) is None:
            pass
        status, body, reusable = answer
        if not reusable:
            self.close()
        return status, body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, b""


def _failure(exc: Exception) -> SendResult:
    return SendResult(TRANSIENT, error=f"kannel: {type(exc).__name__}: {exc}"[:500])


@dataclass
class _InFlight:
    item: object
    message: Outgoing
    path: str
    attempt: int
    reused: bool
    deadline: float
    connecting: bool = False


class KannelGateway:
    code = "kannel"
    reports_itself = False

    def __init__(self):
        self._local = threading.local()
        self._idle: list[_Connection] = []  # the pump's kept-alive connections between two pumps
        self._idle_lock = threading.Lock()

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
        """One message on this thread's kept-alive connection."""
        endpoint = _configured_endpoint()
        if endpoint is None:
            return BAD_URL
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
                return _failure(exc)
            except (OSError, ValueError) as exc:  # timeouts, refused, bad answers
                self._drop()
                return _failure(exc)
            return interpret(status, body, message.message_id)
        return SendResult(TRANSIENT, error="kannel: connection closed")

    def pump(self, work, concurrency: int) -> None:
        """Send what ``work.take(block)`` gives (``(item, Outgoing)``; None: nothing now, or no more when
        blocking), up to ``concurrency`` requests at once from this one thread: a kept-alive connection
        per request in flight, answers read as they arrive (a selector) and handed to
        ``work.give(item, result)``. Returns once there is no more and every request is answered. The
        answers, the retry on a connection smsbox closed, and the timeout are those of :meth:`send`;
        threads waiting on sockets would cost twice the CPU per message."""
        endpoint, timeout = _configured_endpoint(), settings.KANNEL_TIMEOUT_SECONDS
        shared = _shared_parts()  # the settings are read once per pump: a dispatcher run
        selector = selectors.DefaultSelector()
        with self._idle_lock:
            kept, self._idle = self._idle, []
        idle: list[_Connection] = []
        now, key = time.monotonic(), endpoint[0] if endpoint else None
        for connection in kept:
            if connection.key == key and connection.timeout == timeout and now - connection.used_at <= IDLE_SECONDS:
                selector.register(connection.sock, selectors.EVENT_READ, connection)
                idle.append(connection)
            else:
                connection.close()
        busy: dict[_Connection, _InFlight] = {}
        opening: set[_Connection] = set()  # connecting, with their first request waiting
        deadlines: deque[tuple[float, _Connection, _InFlight]] = deque()
        # Connections stay registered for reading while they live: an idle one that turns readable
        # was closed by smsbox (or is out of step) and is closed here too.

        def close(connection: _Connection) -> None:
            if connection.sock is not None:
                if connection.sock.fileno() in selector.get_map():  # not yet, if it failed while opening
                    selector.unregister(connection.sock)
                connection.close()

        def failed(connection: _Connection, flight: _InFlight, exc: Exception) -> None:
            busy.pop(connection, None)
            opening.discard(connection)
            close(connection)
            if isinstance(exc, _STALE) and flight.reused and flight.attempt == 1:
                start(flight.item, flight.message, 2)  # smsbox closed the idle connection: once more on a new one
            else:
                work.give(flight.item, _failure(exc))

        def start(item, message: Outgoing, attempt: int = 1) -> None:
            if endpoint is None:
                work.give(item, BAD_URL)
                return
            key, path = endpoint
            path = f"{path}?{sendsms_query(message, shared)}"
            now = time.monotonic()
            connection = None
            while attempt == 1 and idle and connection is None:
                connection = idle.pop()
                if now - connection.used_at > IDLE_SECONDS:
                    close(connection)
                    connection = None
            connection = connection or _Connection(key, timeout)
            flight = _InFlight(item, message, path, attempt, connection.requests > 0, now + timeout)
            busy[connection] = flight
            try:
                if connection.sock is not None:
                    connection.request(path)
                elif connection.connect_later():
                    # a slow accept (smsbox's is, under load) holds up this request only
                    flight.connecting = True
                    selector.register(connection.sock, selectors.EVENT_WRITE, connection)
                    opening.add(connection)
                else:
                    connection.request(path)
                    selector.register(connection.sock, selectors.EVENT_READ, connection)
            except (OSError, ValueError) as exc:
                failed(connection, flight, exc)
                return
            deadlines.append((flight.deadline, connection, flight))

        def ready(connection: _Connection) -> None:
            flight = busy.get(connection)
            if flight is None:  # an idle connection smsbox closed
                idle.remove(connection)
                close(connection)
                return
            try:
                if flight.connecting:
                    opening.discard(connection)
                    connection.connected()
                    connection.request(flight.path)
                    flight.connecting = False
                    selector.modify(connection.sock, selectors.EVENT_READ, connection)
                    return
                answer = connection.feed()
            except (OSError, ValueError) as exc:
                failed(connection, flight, exc)
                return
            if answer is not None:
                status, body, reusable = answer
                del busy[connection]
                if reusable:
                    idle.append(connection)
                else:
                    close(connection)
                work.give(flight.item, interpret(status, body, flight.message.message_id))

        try:
            while True:
                wait = None  # full: until an answer, a connect or a deadline
                if len(busy) < concurrency and (idle or len(opening) < PUMP_OPENING):
                    taken = work.take(block=not busy)  # one at a time: it may wait for the rate limit
                    if taken is not None:
                        start(*taken)
                        wait = 0.0  # the sockets first (a connect done sends its request), then the next
                    elif not busy:
                        return
                    else:
                        wait = PUMP_POLL  # nothing to take now: look again soon
                if not busy:
                    continue
                if deadlines:
                    until = max(0.0, deadlines[0][0] - time.monotonic())
                    wait = until if wait is None else min(wait, until)
                for key, _events in selector.select(wait):
                    ready(key.data)
                now = time.monotonic()
                while deadlines and deadlines[0][0] <= now:
                    _deadline, connection, flight = deadlines.popleft()
                    if busy.get(connection) is flight:  # still unanswered
                        del busy[connection]
                        opening.discard(connection)
                        close(connection)
                        work.give(flight.item, _failure(TimeoutError("timed out")))
        except BaseException as exc:  # a bug here must not leave the requests in flight unanswered
            for connection, flight in list(busy.items()):
                close(connection)
                work.give(flight.item, _failure(exc))
            raise
        finally:
            for connection in idle:
                selector.unregister(connection.sock)
            with self._idle_lock:
                self._idle.extend(idle)  # for the next pump, unless they idle too long by then
            selector.close()

    def due_reports(self, sent, now) -> list[Report]:
        return []
