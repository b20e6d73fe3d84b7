"""Webhooks of the SMS gateways: delivery reports (DLR) and inbound messages (MO).

Every endpoint takes the shared secret ``SMS_WEBHOOK_SECRET`` as ``?secret=`` or in the
``X-Webhook-Secret`` header (compared in constant time); without it: 403 and nothing written.
Answers are short plain-text machine answers. They are idempotent: a repeated or late report
changes nothing (the status machine never moves back), a repeated inbound message is stored once.

Kannel (``GET`` with a query, or ``POST`` form-encoded):

- ``/sms/kannel/dlr?ref=<our id>&status=<bit>&answer=%A&ts=%T``: 1 delivered, 2 failed, 8 sent
  (SMSC accepted), 16 rejected (SMSC refused), 4 buffered (no change). An unknown ``ref`` answers
  200 and is logged: anything else makes Kannel retry a report that can never match.
- ``/sms/kannel/mo?from=%p&to=%P&text=%b&id=%I&ts=%T&charset=%C``: stored once per Kannel id, then
  STOP/START handled in the background. The answer is 200 with an EMPTY body: Kannel must not send
  a body back to the phone as an SMS.

Generic HTTP platforms (``POST`` JSON):

- ``/sms/http/dlr`` ``{"id": "<id>", "status": "sent|delivered|failed|rejected|expired",
  "detail": "...", "at": "<ISO 8601>"}`` (``detail`` and ``at`` optional); ``id`` is the platform's
  id that the http gateway stored, or ours.
- ``/sms/http/mo`` ``{"id": "...", "from": "+421...", "to": "...", "text": "...",
  "received_at": "<ISO 8601 with offset>"}`` (``to`` and ``received_at`` optional).

Bad input (a missing or oversized field, a NUL character, a non-numeric ``ref``, an unknown
status) answers 400 with the reason and writes nothing.
"""

from __future__ import annotations

import codecs
import hmac
import json
import logging
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from masthead.messaging import services, status
from masthead.messaging.models import SmsMessage

logger = logging.getLogger(__name__)

MAX_TEXT = 2000  # characters of an inbound text (10 concatenated parts are at most 1,530)
MAX_ID = 100
MAX_PHONE = 40
MAX_DETAIL = 300
KANNEL_DLR = {1: "delivered", 2: "failed", 8: "sent", 16: "rejected"}
KANNEL_BUFFERED = 4
UTF8_NAMES = frozenset({"", "UTF-8", "UTF8"})


class BadRequest(Exception):
    pass


def _answer(text: str = "", status: int = 200) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


def _authorised(request: HttpRequest) -> bool:
    expected = settings.SMS_WEBHOOK_SECRET or ""
    given = request.GET.get("secret") or request.headers.get("X-Webhook-Secret") or ""
    return bool(expected) and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def webhook(view):
    """CSRF-exempt, GET or POST, authenticated; BadRequest → 400 with its reason."""

    @csrf_exempt
    @require_http_methods(["GET", "POST"])
    def wrapped(request: HttpRequest) -> HttpResponse:
        if not _authorised(request):
            return _answer("forbidden: bad or missing secret\n", 403)
        try:
            return view(request)
        except BadRequest as exc:
            return _answer(f"bad request: {exc}\n", 400)

    wrapped.__name__ = wrapped.__qualname__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


# --- field checks ---------------------------------------------------------------------------------


def _clean(name: str, value, *, limit: int, required: bool = False, allow_empty: bool = True) -> str:
    if value is None:
        if required:
            raise BadRequest(f"missing field: {name}")
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise BadRequest(f"field {name} must be a string")
    if "\x00" in value:
        raise BadRequest(f"field {name} contains a NUL character")
    if len(value) > limit:
        raise BadRequest(f"field {name} is longer than {limit} characters")
    if not allow_empty and not value.strip():
        raise BadRequest(f"field {name} is empty")
    return value


def _unix_time(name: str, raw: str) -> datetime | None:
    raw = raw.strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 12:
        raise BadRequest(f"field {name} is not a Unix time")
    try:
        return datetime.fromtimestamp(int(raw), UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise BadRequest(f"field {name} is out of range") from exc


def _iso_time(name: str, value) -> datetime | None:
    raw = _clean(name, value, limit=64)
    if not raw.strip():
        return None
    try:
        parsed = datetime.fromisoformat(raw.strip())
    except ValueError as exc:
        raise BadRequest(f"field {name} is not an ISO 8601 time") from exc
    if parsed.tzinfo is None:
        raise BadRequest(f"field {name} needs a UTC offset")
    return parsed.astimezone(UTC)


def _form(request: HttpRequest):
    """Kannel's parameters: the query, or a form-encoded POST body (whose fields win)."""
    if request.method == "POST" and request.POST:
        merged = request.GET.copy()
        for key in request.POST:
            merged.setlist(key, request.POST.getlist(key))
        return merged
    return request.GET


def _json(request: HttpRequest) -> dict:
    if request.method != "POST":
        raise BadRequest("POST a JSON object")
    try:
        data = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("the body is not JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def _text_in_charset(request: HttpRequest, charset: str, fallback: str) -> str:
    """The ``text`` query value decoded from ``charset`` (Kannel's %C) when it is not UTF-8."""
    name = charset.strip().upper()
    if name in UTF8_NAMES:
        return fallback
    try:
        codec = codecs.lookup(name).name
    except LookupError as exc:
        raise BadRequest(f"unknown charset: {charset[:40]}") from exc
    raw = request.META.get("QUERY_STRING", "")
    if request.method == "POST" and request.body:
        raw = request.body.decode("latin-1")
    values = [v for k, v in parse_qsl(raw, keep_blank_values=True, encoding="latin-1") if k == "text"]
    if not values:
        return fallback
    try:
        return values[-1].encode("latin-1").decode(codec)
    except UnicodeError as exc:
        raise BadRequest(f"text is not valid {charset[:40]}") from exc


# --- delivery reports ---------------------------------------------------------------------------------


def _apply_report(found: tuple[int, str] | None, report: str | None, *, gateway: str, label: str, detail: str,
                  at: datetime | None) -> HttpResponse:
    """``found``: (message id, its status now) or None when no message matches."""
    if report is None:
        return _answer("ok: no change\n")
    if found is None:
        logger.warning("%s delivery report for unknown message %s (%s)", gateway, label, report)
        return _answer("ok: unknown message\n")
    message_id, current = found
    if not status.can(current, services.REPORT_STATUSES[report]):  # a repeat or a late report: no write
        return _answer("ok: no change\n")
    moved = services.record_report(message_id=message_id, report=report, detail=detail, at=at, known=current)
    return _answer(f"ok: {report}\n" if moved else "ok: no change\n")


@webhook
def kannel_dlr(request: HttpRequest) -> HttpResponse:
    """A Kannel delivery report for the message ``ref``."""
    form = _form(request)
    ref = _clean("ref", form.get("ref"), limit=20, required=True, allow_empty=False).strip()
    raw_status = _clean("status", form.get("status"), limit=5, required=True, allow_empty=False).strip()
    answer = " ".join(_clean("answer", form.get("answer"), limit=2000).split())
    at = _unix_time("ts", _clean("ts", form.get("ts"), limit=20))
    if not ref.isdigit() or not ref.isascii():
        raise BadRequest("ref is not a message id")
    if not raw_status.isdigit() or not raw_status.isascii():
        raise BadRequest("status is not a number")
    bit = int(raw_status)
    if bit != KANNEL_BUFFERED and bit not in KANNEL_DLR:
        raise BadRequest(f"unknown status: {bit}")
    report = KANNEL_DLR.get(bit)
    message_id = int(ref)
    found = None
    if report is not None and message_id < 2**63:
        found = services.status_of(message_id, gateway="kannel")
    detail = f"kannel dlr {bit}" + (f": {answer}" if answer else "")
    return _apply_report(found, report, gateway="Kannel", label=ref, detail=detail[:MAX_DETAIL], at=at)


@webhook
def http_dlr(request: HttpRequest) -> HttpResponse:
    """A delivery report of the generic HTTP gateway (JSON)."""
    data = _json(request)
    gateway_id = _clean("id", data.get("id"), limit=MAX_ID, required=True, allow_empty=False).strip()
    report = _clean("status", data.get("status"), limit=20, required=True, allow_empty=False).strip().lower()
    if report not in services.REPORT_STATUSES:
        raise BadRequest(f"unknown status: {report[:20]} (one of {', '.join(services.REPORT_STATUSES)})")
    detail = " ".join(_clean("detail", data.get("detail"), limit=2000).split())
    at = _iso_time("at", data.get("at"))
    mine = SmsMessage.objects.filter(gateway="http")
    found = mine.filter(gateway_message_id=gateway_id).values_list("pk", "status").first()
    if found is None and gateway_id.isdigit() and gateway_id.isascii() and int(gateway_id) < 2**63:
        found = mine.filter(pk=int(gateway_id)).values_list("pk", "status").first()
    return _apply_report(found, report, gateway="HTTP", label=gateway_id,
                         detail=(f"http report: {detail}" if detail else f"http report: {report}")[:MAX_DETAIL], at=at)


# --- inbound messages ---------------------------------------------------------------------------------


@webhook
def kannel_mo(request: HttpRequest) -> HttpResponse:
    """An inbound SMS from Kannel's sms-service; answered with an empty body."""
    form = _form(request)
    phone_from = _clean("from", form.get("from"), limit=MAX_PHONE, required=True, allow_empty=False).strip()
    phone_to = _clean("to", form.get("to"), limit=MAX_PHONE).strip()
    gateway_id = _clean("id", form.get("id"), limit=MAX_ID, required=True, allow_empty=False).strip()
    charset = _clean("charset", form.get("charset"), limit=40)
    if form.get("text") is None:
        raise BadRequest("missing field: text")
    text = _clean("text", _text_in_charset(request, charset, form.get("text")), limit=MAX_TEXT)
    received_at = _unix_time("ts", _clean("ts", form.get("ts"), limit=20))
    services.record_inbound(gateway="kannel", gateway_message_id=gateway_id, phone_from=phone_from,
                            phone_to=phone_to, text=text, received_at=received_at)
    return _answer("")


@webhook
def http_mo(request: HttpRequest) -> HttpResponse:
    """An inbound SMS from the generic HTTP gateway (JSON)."""
    data = _json(request)
    gateway_id = _clean("id", data.get("id"), limit=MAX_ID, required=True, allow_empty=False).strip()
    phone_from = _clean("from", data.get("from"), limit=MAX_PHONE, required=True, allow_empty=False).strip()
    phone_to = _clean("to", data.get("to"), limit=MAX_PHONE).strip()
    text = _clean("text", data.get("text"), limit=MAX_TEXT, required=True)
    received_at = _iso_time("received_at", data.get("received_at"))
    _row, created = services.record_inbound(gateway="http", gateway_message_id=gateway_id, phone_from=phone_from,
                                            phone_to=phone_to, text=text, received_at=received_at)
    return _answer("ok: stored\n" if created else "ok: already stored\n")
