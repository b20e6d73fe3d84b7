"""A Mobiletech provider on loopback, for integration tests and the demo (issue 7).

It plays the provider's two sides of the protocol (R-MT-1..7):

* it answers the ``send`` command (what ``clients.HttpClient`` posts) with
  ``<message command="send_rsp"><id>UUID</id></message>`` and, ``delay`` seconds later, posts one
  ``status`` report per configured code to our webhook (default ``D1``; ``A0,D1`` posts the billing
  report, then the delivery report). A rule ``REGEX:CODES`` gives the numbers it matches (``re.search``
  on ``to``) other codes, e.g. ``^\\+421999:A5``; the codes ``none`` (or ``-``) send no report at all,
  as when the operator never answers;
* :func:`inject` posts a ``receive`` message (an SMS a reader sent to the short code) to the webhook.

Only the standard library and defusedxml: it needs no database and no Django settings, so the
``masthead mobiletech simulator`` command and the tests start it in-process::

    with Simulator(webhook="http://127.0.0.1:8000/api/v1/mobiletech/webhook") as sim:
        ...  # MOBILETECH_CLIENT=http, MOBILETECH_GATEWAY_URL=sim.url
"""

from __future__ import annotations

import hmac
import itertools
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from defusedxml import DefusedXmlException, ElementTree

from masthead.mobiletech import numbers

SEND_FIELDS = ("serv_id", "project_id", "rcv_msg_id", "from", "to", "billkey", "content", "content_coding", "esm",
               "dcs", "expiration", "operator_type")
NO_REPORT = ("none", "-")
MAX_BODY = 65536
PROVIDER_ZONE = ZoneInfo("Europe/Bratislava")  # receive_date is the provider's local time
_XML = "application/xml; charset=utf-8"


class SimulatorError(ValueError):
    pass


def parse_codes(text: str) -> tuple[str, ...]:
    """``"A0,D1"`` → ``("A0", "D1")``; ``"none"`` / ``"-"`` → ``()`` (no report)."""
    text = (text or "").strip()
    if text.lower() in NO_REPORT:
        return ()
    codes = tuple(code.strip() for code in text.split(",") if code.strip())
    if not codes:
        raise SimulatorError(f"no status code in {text!r}")
    return codes


@dataclass(frozen=True)
class Rule:
    """Numbers matching ``pattern`` (``re.search`` on the ``to`` field) get ``codes``."""

    pattern: re.Pattern
    codes: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Rule:
        """``REGEX:CODES``: split at the last colon, so the regex may hold colons itself."""
        regex, sep, codes = text.rpartition(":")
        if not sep or not regex:
            raise SimulatorError(f"a fail pattern is REGEX:CODE, not {text!r}")
        try:
            return cls(re.compile(regex), parse_codes(codes))
        except re.error as exc:
            raise SimulatorError(f"bad regex {regex!r}: {exc}") from exc


@dataclass
class Sent:
    """A ``send`` command the simulator accepted."""

    id: str
    fields: dict[str, str]
    codes: tuple[str, ...]
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Report:
    """A ``status`` report the simulator posted, with the webhook's answer (0: no answer)."""

    id: str
    status: str
    http_status: int
    body: bytes


def receive_xml(*, mobiletech_id: str, phone_from: str, to: str, text: str, serv_id: str = "1",
                project_id: str = "1", operator_type: str = "", at: datetime | None = None) -> bytes:
    """The ``receive`` message (R-MT-2) of an SMS ``phone_from`` sent to the short number ``to``."""
    at = (at or datetime.now(PROVIDER_ZONE)).astimezone(PROVIDER_ZONE)
    stamp = at.strftime("%y%m%d%H%M%S") + str(at.microsecond // 100_000)
    fields = [("id", mobiletech_id), ("serv_id", serv_id), ("project_id", project_id), ("from", phone_from),
              ("to", to), ("content", text), ("content_coding", "text"), ("dcs", "0"), ("esm", "0"),
              ("operator_type", operator_type), ("receive_date", stamp)]
    inner = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in fields)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<message command="receive">{inner}</message>'.encode()


def status_xml(mobiletech_id: str, status: str) -> bytes:
    """The ``status`` report (R-MT-3) of an outbound message."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<message command="status"><id>{escape(mobiletech_id)}</id>'
            f"<status>{escape(status)}</status></message>").encode()


def post(url: str, body: bytes, *, secret: str = "", timeout: float = 10) -> tuple[int, bytes]:
    """POST XML to our webhook; (HTTP status, body); (0, reason) when nothing answered."""
    headers = {"Content-Type": "text/xml; charset=UTF-8"}
    if secret:
        headers["X-Webhook-Secret"] = secret
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(MAX_BODY)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(MAX_BODY)
    except (OSError, ValueError) as exc:
        return 0, f"{type(exc).__name__}: {exc}".encode()


def inject(webhook: str, *, phone_from: str, to: str, text: str, mobiletech_id: str | None = None,
           serv_id: str = "1", project_id: str = "1", operator_type: str | None = None, secret: str = "",
           timeout: float = 30) -> tuple[str, int, bytes]:
    """Post a ``receive`` (an inbound SMS) to ``webhook``: (its id, HTTP status, answer body). The
    operator defaults to the one of the number's prefix (R-MT-8)."""
    mid = mobiletech_id or str(uuid.uuid4())
    if operator_type is None:
        operator_type = numbers.operator_by_prefix(phone_from) or ""
    body = receive_xml(mobiletech_id=mid, phone_from=phone_from, to=to, text=text, serv_id=serv_id,
                       project_id=project_id, operator_type=operator_type)
    status, answer = post(webhook, body, secret=secret, timeout=timeout)
    return mid, status, answer


class Simulator:
    """The provider: an HTTP server on ``host:port`` (0 = a free port) taking ``send`` commands, and
    a timer per accepted message that posts its status reports to ``webhook``.

    ``status`` (codes for every number) and ``rules`` (first match wins) may be changed while it runs;
    a message's codes are fixed when it arrives. ``token``: the bearer token ``send`` must carry
    (empty: any). ``secret``: sent as ``X-Webhook-Secret`` with each report. ``echo``: called with
    a line per event (the command prints them).
    """

    def __init__(self, *, webhook: str, port: int = 0, host: str = "127.0.0.1", delay: float = 1.0,
                 status: str | Iterable[str] = "D1", rules: Iterable[Rule | str] = (), token: str = "",
                 secret: str = "", echo: Callable[[str], None] | None = None):
        self.webhook, self.host, self.port, self.delay = webhook, host, port, delay
        self.status = parse_codes(status) if isinstance(status, str) else tuple(status)
        self.rules = [rule if isinstance(rule, Rule) else Rule.parse(rule) for rule in rules]
        self.token, self.secret, self.echo = token, secret, echo
        self.sent: list[Sent] = []
        self.reports: list[Report] = []
        self.refused: list[tuple[int, str]] = []
        self._lock = threading.Condition()
        self._timers: set[threading.Timer] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._serial = itertools.count(1)

    # --- life cycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where our ``http`` client posts ``send`` (MOBILETECH_GATEWAY_URL)."""
        return f"http://{self.host}:{self.port}/"

    def start(self) -> Simulator:
        simulator = self

        class Handler(_Handler):
            owner = simulator

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"mobiletech-sim-{self.port}",
                                        daemon=True)
        self._thread.start()
        self._say(f"simulator on {self.url}, reports to {self.webhook} after {self.delay:g} s "
                  f"(default {','.join(self.status) or 'none'}"
                  + "".join(f"; {r.pattern.pattern} → {','.join(r.codes) or 'none'}" for r in self.rules) + ")")
        return self

    def stop(self) -> None:
        """Stop serving; reports not yet posted are dropped."""
        with self._lock:
            timers, self._timers = list(self._timers), set()
            self._lock.notify_all()
        for timer in timers:
            timer.cancel()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- what happened ------------------------------------------------------------------------

    def codes_for(self, number: str) -> tuple[str, ...]:
        for rule in self.rules:
            if rule.pattern.search(number or ""):
                return rule.codes
        return self.status

    def wait_for(self, predicate: Callable[[Simulator], bool], timeout: float = 10) -> None:
        """Block until ``predicate(self)`` holds (checked on every event); TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"simulator: condition not met within {timeout:g} s; sent {self.sent!r}, "
                                       f"reports {self.reports!r}, refused {self.refused!r}")
                self._lock.wait(min(left, 0.2))

    def wait_sent(self, count: int, timeout: float = 10) -> list[Sent]:
        """Block until ``count`` messages in all were accepted; the accepted messages."""
        self.wait_for(lambda sim: len(sim.sent) >= count, timeout)
        return list(self.sent)

    def wait_idle(self, timeout: float = 10) -> None:
        """Block until every scheduled report was posted."""
        self.wait_for(lambda sim: not sim._timers, timeout)

    # --- the protocol -------------------------------------------------------------------------

    def _say(self, line: str) -> None:
        if self.echo is not None:
            self.echo(line)

    def _accept(self, body: bytes, authorization: str) -> tuple[int, bytes]:
        if self.token and not hmac.compare_digest(authorization.encode(), f"Bearer {self.token}".encode()):
            return self._refuse(401, "bad or missing bearer token")
        try:
            root = ElementTree.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        except (ElementTree.ParseError, DefusedXmlException, ValueError) as exc:
            return self._refuse(400, f"malformed XML: {type(exc).__name__}")
        if root.tag != "message" or root.get("command") != "send":
            return self._refuse(400, f"expected <message command=\"send\">, got <{root.tag} "
                                     f"command={root.get('command')!r}>")
        fields = {name: (root.findtext(name) or "") for name in SEND_FIELDS}
        missing = [name for name in ("to", "content") if not fields[name].strip()]
        if missing:
            return self._refuse(400, f"missing field: {', '.join(missing)}")
        message = Sent(id=str(uuid.uuid4()), fields=fields, codes=self.codes_for(fields["to"]))
        with self._lock:
            self.sent.append(message)
            if message.codes:
                timer = threading.Timer(self.delay, self._report, args=(message,))
                timer.daemon = True
                self._timers.add(timer)
                timer.start()
            self._lock.notify_all()
        self._say(f"send #{next(self._serial)} {message.id}: to {fields['to']} from {fields['from']} "
                  f"billkey {fields['billkey'] or '-'} rcv_msg_id {fields['rcv_msg_id'] or '-'} "
                  f"operator {fields['operator_type'] or '-'}: {fields['content']!r} "
                  f"→ reports {','.join(message.codes) or 'none'}")
        return 200, (f'<?xml version="1.0" encoding="UTF-8"?>\n<message command="send_rsp">'
                     f"<id>{message.id}</id></message>").encode()

    def _refuse(self, code: int, reason: str) -> tuple[int, bytes]:
        with self._lock:
            self.refused.append((code, reason))
            self._lock.notify_all()
        self._say(f"refused ({code}): {reason}")
        return code, (f'<?xml version="1.0" encoding="UTF-8"?>\n<message command="error">'
                      f"<reason>{escape(reason)}</reason></message>").encode()

    def _report(self, message: Sent) -> None:
        try:
            for code in message.codes:
                status, body = post(self.webhook, status_xml(message.id, code), secret=self.secret)
                with self._lock:
                    self.reports.append(Report(message.id, code, status, body))
                    self._lock.notify_all()
                self._say(f"status {code} for {message.id} → webhook answered {status or body.decode()}")
        finally:
            with self._lock:
                self._timers = {t for t in self._timers if t.args[0] is not message}
                self._lock.notify_all()


class _Handler(BaseHTTPRequestHandler):
    owner: Simulator
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True  # the unread body must not be taken for the next request
            code, body = self.owner._refuse(400, "missing or too large Content-Length")
        else:
            code, body = self.owner._accept(self.rfile.read(length), self.headers.get("Authorization") or "")
        self.send_response(code)
        self.send_header("Content-Type", _XML)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # the simulator reports what it did itself
        return
