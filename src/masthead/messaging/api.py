"""SMS API (``/api/v1/sms``): send one message to a reader or a staff member, list messages, show
one with its status history and replies, cancel a queued one, start a batch and watch its progress.

Every route takes an API token whitelisted for its own operation id (``sms_send``, ``sms_list``,
``sms_detail``, ``sms_cancel``, ``sms_batch_create``, ``sms_batch_detail``); what a token creates
records the token's name as ``created_by``. Bodies are JSON (a form body works for the flat fields).

Answers:

- one message: ``{"status": "ok", "sms": MESSAGE}`` (send: 201; detail, cancel: 200), MESSAGE as
  :func:`message_json`; the detail adds ``history`` and ``replies``;
- a page of messages: ``{"status": "ok", "page", "per_page", "total", "pages", "sms": [MESSAGE]}``;
- a batch: ``{"status": "ok", "batch": BATCH}`` (create: 201; detail: 200), BATCH as :func:`batch_json`;
- a refusal: ``{"status": "error", "code": "<machine code>", "message": "<text>"}``; a body that does
  not fit the schema answers R-AUTH-9 "Payload error" (``code`` ``payload_error``, ``errors`` per
  property), a bad query parameter R-AUTH-9 ``invalid_input`` (``errors`` per parameter).

The two POSTs that create honour an ``Idempotency-Key`` header: a repeated call with the same key
creates nothing and answers what the first call created.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Model
from django.http import JsonResponse
from django.utils.translation import gettext as _
from ninja import Header, Router
from pydantic import BaseModel, ConfigDict, Field

from masthead.core import clock
from masthead.core.api import ApiError, error, payload_error, request_data, route
from masthead.core.clock import rfc3339
from masthead.core.models import ApiIdempotencyKey
from masthead.messaging import batches, services
from masthead.messaging.models import SmsBatch, SmsMessage
from masthead.users.models import User

router = Router(tags=["sms"])

M = SmsMessage
MAX_ID = 2**63 - 1  # the largest value an id column (and SQLite) holds
MAX_TEXT = 4096  # characters; anything over 1,530 is more than 10 segments in any encoding anyway
MAX_NAME = 255
MAX_CODE = 100
MAX_PARAMS = 50
MAX_PARAM_TEXT = 1000
MAX_AHEAD = timedelta(days=365)  # how far ahead send_at may be
# Readers per batch through the API: the batch service looks them up with one ``IN`` list, and
# PostgreSQL takes at most 65,535 bind parameters per query.
MAX_BATCH_USER_IDS = min(batches.MAX_USER_IDS, 50_000)
PER_PAGE, MAX_PER_PAGE, MAX_PAGE = 20, 100, 1_000_000_000
STATUSES = [code for code, _label in M.STATUSES]
# Strict RFC 3339 (PHP's ``Y-m-d\TH:i:sP``, "Z" allowed); ASCII digits only.
RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:Z|[+-][0-9]{2}:[0-9]{2})")
EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
# Template parameters are keyword arguments of the renderer: identifiers, and never ``self``.
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
RESERVED_PARAMS = frozenset({"self"})

SEND_FIELDS = frozenset({"user_id", "staff_id", "message", "template_code", "params", "send_at"})
BATCH_FIELDS = frozenset({"name", "message", "template_code", "params", "user_ids", "content_access", "send_at"})

IDEMPOTENCY_KEY = Header(None, alias="Idempotency-Key",
                         description="Repeating a call with the same key creates nothing twice and answers the same")


# --- documented bodies (the handlers parse them with the helpers below) ---------------------------

ParamValue = str | int | float | bool | None


class SendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: int | None = Field(None, ge=1, le=MAX_ID, description="The reader (exactly one of user_id, staff_id)")
    staff_id: int | None = Field(None, ge=1, le=MAX_ID, description="A staff member (exactly one of user_id, staff_id)")
    message: str | None = Field(None, max_length=MAX_TEXT,
                                description="The text (exactly one of message, template_code); at most 10 segments")
    template_code: str | None = Field(None, max_length=MAX_CODE, description="An active SMS template's code")
    params: dict[str, ParamValue] | None = Field(
        None, description=f"The template's parameters (with template_code only): at most {MAX_PARAMS}, names are "
                          f"identifiers, values strings (at most {MAX_PARAM_TEXT} characters), numbers, booleans "
                          "or null")
    send_at: str | None = Field(None, description="When to send: strict RFC 3339, e.g. 2024-05-06T12:00:00+02:00; "
                                                  "past means now; at most 365 days ahead")


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=MAX_NAME, description="What the batch is, for staff")
    message: str | None = Field(None, max_length=MAX_TEXT, description="The text (exactly one of message, "
                                                                        "template_code)")
    template_code: str | None = Field(None, max_length=MAX_CODE,
                                      description="An active SMS template's code; first_name and last_name of each "
                                                  "reader are added to params")
    params: dict[str, ParamValue] | None = Field(None, description="The template's parameters (as for sms_send)")
    user_ids: list[int] | None = Field(None, max_length=MAX_BATCH_USER_IDS,
                                       description="The readers (exactly one of user_ids, content_access)")
    content_access: str | None = Field(None, max_length=MAX_CODE,
                                       description="Every reader with active access to it, e.g. print")
    send_at: str | None = Field(None, description="As for sms_send")


# --- body parsing: schema violations answer R-AUTH-9 "Payload error" --------------------------------


def _refuse(name: str, message: str) -> ApiError:
    return payload_error([{name: message}])


def _known_properties(data: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise payload_error([{name: _("Unknown property")} for name in unknown])


def _string(data: dict[str, Any], name: str, *, max_length: int) -> str | None:
    """A string property; None when absent or null (an empty string stays, to be refused clearly)."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _refuse(name, _("Must be a string"))
    if len(value) > max_length:
        raise _refuse(name, _("Must be at most %(max)s characters") % {"max": max_length})
    if "\x00" in value:
        raise _refuse(name, _("Must not contain NUL characters"))
    return value


def _positive_id(value: Any) -> int | None:
    """``value`` as an id (an integer or, from a form, a string of digits), or None if it is not one."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,19}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        return None
    return value


def _id(data: dict[str, Any], name: str) -> int | None:
    if data.get(name) in (None, ""):
        return None
    value = _positive_id(data[name])
    if value is None:
        raise _refuse(name, _("Must be a positive integer"))
    return value


def _ids(data: dict[str, Any], name: str) -> list[int] | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
            not isinstance(i, bool) and isinstance(i, int) and 1 <= i <= MAX_ID for i in value):
        raise _refuse(name, _("Must be a list of positive integers"))
    if len(value) > MAX_BATCH_USER_IDS:
        raise _refuse(name, _("Must have at most %(max)s items") % {"max": MAX_BATCH_USER_IDS})
    return value


def _param_value_ok(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) <= MAX_ID
    if isinstance(value, float):
        return math.isfinite(value)  # json.loads reads NaN and Infinity, which no database stores as JSON
    return isinstance(value, str) and len(value) <= MAX_PARAM_TEXT and "\x00" not in value


def _params(data: dict[str, Any]) -> dict[str, ParamValue] | None:
    value = data.get("params")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _refuse("params", _("Must be an object"))
    if len(value) > MAX_PARAMS:
        raise _refuse("params", _("Must have at most %(max)s properties") % {"max": MAX_PARAMS})
    problems = []
    for name, item in value.items():
        if not PARAM_NAME.fullmatch(name) or name in RESERVED_PARAMS:
            problems.append({"params": _("Parameter names must be identifiers (letters, digits and underscores, "
                                         "not starting with a digit) other than 'self'")})
        elif not _param_value_ok(item):
            problems.append({f"params.{name}": _(
                "Must be a string of at most %(max)s characters without NUL, a number, a boolean or null")
                % {"max": MAX_PARAM_TEXT}})
    if problems:
        raise payload_error(problems[:20])
    return value


def _moment(raw: str) -> datetime | None:
    """Strict RFC 3339 in UTC, or None if ``raw`` is not one (or out of the range the API accepts)."""
    if not RFC3339.fullmatch(raw):
        return None
    try:
        value = datetime.fromisoformat(raw).astimezone(UTC)
    except (ValueError, OverflowError):  # 2024-02-30, +25:00, year 1 with an eastern offset
        return None
    return value if EARLIEST <= value <= LATEST else None


def _send_at(raw: str | None) -> datetime | None:
    """When to send: None for now (absent, empty or in the past); at most MAX_AHEAD ahead."""
    if not raw:
        return None
    value = _moment(raw)
    if value is None:
        raise error(400, "send_at_wrong_format",
                    _("send_at has wrong format - RFC3339 format required, e.g. 2024-05-06T12:00:00+02:00"))
    now = clock.now()
    if value > now + MAX_AHEAD:
        raise error(400, "send_at_too_late", _("send_at may be at most %(days)s days ahead.")
                    % {"days": MAX_AHEAD.days})
    return value if value > now else None


def _content(data: dict[str, Any]) -> tuple[str | None, str | None, dict | None, str | None]:
    """(message, template_code, params, send_at) as given, each of the right type."""
    return (_string(data, "message", max_length=MAX_TEXT),
            _string(data, "template_code", max_length=MAX_CODE) or None,
            _params(data),
            _string(data, "send_at", max_length=100))


def _text_or_template(message: str | None, template_code: str | None, params: dict | None) -> None:
    """Exactly one of message and template_code; params only with a template."""
    if (message is None) == (template_code is None):
        raise error(400, "text_or_template", _("Give exactly one of message and template_code."))
    if params is not None and template_code is None:
        raise error(400, "params_without_template", _("params can only be given with a template_code."))


def _sms_error(exc: services.SmsError) -> ApiError:
    return error(exc.status, exc.code, exc.message)


def _token_name(request) -> str:
    return request.api_token.name


# --- idempotency ---------------------------------------------------------------------------------------
#
# The key row (path, key) is written first in the transaction that creates, so a concurrent twin
# waits on it and then fails; a second row (path#<id>, key) in the same transaction records what the
# key created, so a repeated call answers it. Both exist only if the creation committed.


def _idempotency_key(value: str | None) -> str | None:
    return _string({"Idempotency-Key": value}, "Idempotency-Key", max_length=255) or None


def _created_with(path: str, key: str, model: type[Model]):
    """What a call to ``path`` with ``key`` created; None if there was no such call; 409 if it is gone."""
    link = ApiIdempotencyKey.objects.filter(key=key, path__startswith=f"{path}#").values_list("path", flat=True)
    link = link.first()
    if link is None:
        if not ApiIdempotencyKey.objects.filter(path=path, key=key).exists():
            return None
        found = None
    else:
        found = model.objects.filter(pk=int(link.rpartition("#")[2])).first()
    if found is None:
        raise error(409, "idempotency_key_used", _("This Idempotency-Key was already used"))
    return found


def _create_once(path: str, key: str | None, model: type[Model], create: Callable[[], Model]) -> Model:
    """``create()``, recording ``key`` with it (the caller answered a known key already)."""
    if key is None:
        return create()
    try:
        with transaction.atomic():
            ApiIdempotencyKey.objects.create(path=path, key=key)
            created = create()
            ApiIdempotencyKey.objects.create(path=f"{path}#{created.pk}", key=key)
    except IntegrityError:
        # The same key won a race with this call: answer what the winner created.
        if (found := _created_with(path, key, model)) is None:
            raise
        return found
    return created


# --- rendering -----------------------------------------------------------------------------------------


def message_json(message: SmsMessage) -> dict[str, Any]:
    return {
        "id": message.pk,
        "user_id": message.user_id,
        "staff_id": message.staff_id,
        "phone_number": message.phone_number,
        "body": message.body,
        "template_code": message.template.code if message.template_id else None,
        "params": message.params or {},
        "status": message.status,
        "segments": message.segments,
        "encoding": message.encoding,
        "scheduled_at": rfc3339(message.scheduled_at),
        "sent_at": rfc3339(message.sent_at),
        "delivered_at": rfc3339(message.delivered_at),
        "attempts": message.attempts,
        "gateway": message.gateway or None,
        "gateway_message_id": message.gateway_message_id or None,
        "error_message": message.error_message or None,
        "batch_id": message.batch_id,
        "created_by": message.created_by,
        "created_at": rfc3339(message.created_at),
    }


def message_detail_json(message: SmsMessage) -> dict[str, Any]:
    return {
        **message_json(message),
        "history": [{"old": change.old_status or None, "new": change.new_status, "detail": change.detail or None,
                     "at": rfc3339(change.created_at)} for change in message.history.order_by("created_at", "id")],
        "replies": [{"id": reply.pk, "phone_number": reply.phone_from, "text": reply.text,
                     "received_at": rfc3339(reply.received_at)}
                    for reply in message.replies.order_by("received_at", "id")],
    }


def batch_json(batch: SmsBatch) -> dict[str, Any]:
    return {
        "id": batch.pk,
        "name": batch.name,
        "status": batch.status,
        "body": batch.body or None,
        "template_code": batch.template.code if batch.template_id else None,
        "params": batch.params or {},
        "content_access": batch.content_access or None,
        "scheduled_at": rfc3339(batch.scheduled_at),
        "total": batch.total,
        "fanned_out": batch.fanned_out,
        "skipped": batch.skipped,
        "counts": batches.counts(batch),
        "created_by": batch.created_by or None,
        "created_at": rfc3339(batch.created_at),
        "finished_at": rfc3339(batch.finished_at),
    }


def _one_message(sms_id: int) -> SmsMessage:
    found = M.objects.select_related("template").filter(pk=sms_id).first() if sms_id <= MAX_ID else None
    if found is None:
        raise error(404, "sms_not_found", _("SMS message %(id)s not found.") % {"id": sms_id})
    return found


# --- send -------------------------------------------------------------------------------------------------


def _recipient(user_id: int | None, staff_id: int | None) -> dict[str, User]:
    if (user_id is None) == (staff_id is None):
        raise error(400, "one_recipient", _("Give exactly one of user_id and staff_id."))
    if user_id is not None:
        user = User.objects.filter(pk=user_id).first()
        if user is None:
            raise error(404, "user_not_found", _("User %(id)s not found.") % {"id": user_id})
        return {"user": user}
    staff = User.objects.filter(pk=staff_id).first()
    if staff is None:
        raise error(404, "staff_not_found", _("Staff member %(id)s not found.") % {"id": staff_id})
    return {"staff": staff}


@route(router, "POST", "/sms", operation_id="sms_send", auth="api", body=SendIn,
       response={201: dict, 400: dict, 403: dict, 404: dict, 409: dict},
       summary="Queue one SMS to a reader (user_id) or a staff member (staff_id): a message or a template "
               "with params, now or at send_at. 201 {status: ok, sms: MESSAGE} with sms.id and sms.status "
               "(queued), segments and encoding; errors {status: error, code, message}")
def send(request, idempotency_key: str | None = IDEMPOTENCY_KEY):
    data = request_data(request)
    _known_properties(data, SEND_FIELDS)
    user_id, staff_id = _id(data, "user_id"), _id(data, "staff_id")
    message, template_code, params, send_at = _content(data)
    key = _idempotency_key(idempotency_key)
    _text_or_template(message, template_code, params)
    send_at = _send_at(send_at)
    if key is not None and (replayed := _created_with(request.path, key, M)) is not None:
        return JsonResponse({"status": "ok", "sms": message_json(replayed)}, status=201)
    recipient = _recipient(user_id, staff_id)
    try:
        queued = _create_once(request.path, key, M, lambda: services.queue_sms(
            **recipient, body=message, template_code=template_code, params=params, send_at=send_at,
            created_by=_token_name(request)))
    except services.SmsError as exc:
        raise _sms_error(exc) from exc
    return JsonResponse({"status": "ok", "sms": message_json(queued)}, status=201)


# --- list, detail, cancel -----------------------------------------------------------------------------------


LIST_PARAMETERS = [
    {"in": "query", "name": "page", "required": False, "description": "Page number (default 1)",
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1}},
    {"in": "query", "name": "per_page", "required": False, "description": f"Messages per page (default {PER_PAGE})",
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE, "default": PER_PAGE}},
    {"in": "query", "name": "user_id", "required": False, "description": "Only messages to this reader",
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}},
    {"in": "query", "name": "staff_id", "required": False, "description": "Only messages to this staff member",
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}},
    {"in": "query", "name": "status", "required": False, "description": "Only messages in this status",
     "schema": {"type": "string", "enum": STATUSES}},
    {"in": "query", "name": "batch_id", "required": False, "description": "Only messages of this batch",
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}},
    {"in": "query", "name": "created_from", "required": False,
     "description": "Only messages created at or after this time (RFC 3339, e.g. 2024-05-06T12:00:00+02:00)",
     "schema": {"type": "string", "format": "date-time"}},
    {"in": "query", "name": "created_to", "required": False,
     "description": "Only messages created at or before this time, to the second (RFC 3339)",
     "schema": {"type": "string", "format": "date-time"}},
]


def _query_int(query, name: str, errors: dict[str, list[str]], *, high: int, message: str,
               default: int | None = None) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,19}", raw) or not 1 <= int(raw) <= high:
        errors[name] = [message]
        return default
    return int(raw)


def _query_time(query, name: str, errors: dict[str, list[str]]) -> datetime | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    # an unencoded "+" in a query string arrives as a space
    value = _moment(re.sub(r" ([0-9]{2}:[0-9]{2})$", r"+\1", raw))
    if value is None:
        errors[name] = [_("Must be an RFC 3339 time, e.g. 2024-05-06T12:00:00+02:00")]
    return value


@route(router, "GET", "/sms", operation_id="sms_list", auth="api", response={200: dict, 400: dict, 403: dict},
       openapi_extra={"parameters": LIST_PARAMETERS},
       summary="Messages, newest first, a page at a time, filtered by recipient, status, batch and creation time: "
               "{status: ok, page, per_page, total, pages, sms: [MESSAGE]}")
def list_messages(request):
    query, errors = request.GET, {}
    range_message = _("Must be an integer from %(min)s to %(max)s")
    page = _query_int(query, "page", errors, high=MAX_PAGE, default=1,
                      message=range_message % {"min": 1, "max": MAX_PAGE})
    per_page = _query_int(query, "per_page", errors, high=MAX_PER_PAGE, default=PER_PAGE,
                          message=range_message % {"min": 1, "max": MAX_PER_PAGE})
    positive = _("Must be a positive integer")
    filters = {}
    for name, field in (("user_id", "user_id"), ("staff_id", "staff_id"), ("batch_id", "batch_id")):
        value = _query_int(query, name, errors, high=MAX_ID, message=positive)
        if value is not None:
            filters[field] = value
    status = query.get("status")
    if status not in (None, ""):
        if status in STATUSES:
            filters["status"] = status
        else:
            errors["status"] = [_("Value '%(value)s' is not allowed. Allowed values: %(allowed)s")
                                % {"value": status, "allowed": ", ".join(STATUSES)}]
    if (created_from := _query_time(query, "created_from", errors)) is not None:
        filters["created_at__gte"] = created_from
    if (created_to := _query_time(query, "created_to", errors)) is not None:
        filters["created_at__lt"] = created_to + timedelta(seconds=1)  # created_at keeps fractions of a second
    if errors:
        raise ApiError(400, {"status": "error", "code": "invalid_input", "errors": errors})
    rows = M.objects.filter(**filters)
    total = rows.count()
    start = (page - 1) * per_page
    page_rows = rows.select_related("template").order_by("-created_at", "-id")[start:start + per_page] \
        if start < total else []
    return JsonResponse({"status": "ok", "page": page, "per_page": per_page, "total": total,
                         "pages": -(-total // per_page), "sms": [message_json(m) for m in page_rows]})


@route(router, "GET", "/sms/{int:sms_id}", operation_id="sms_detail", auth="api",
       response={200: dict, 403: dict, 404: dict},
       summary="One message with its status history (old, new, detail, at) and the replies it received: "
               "{status: ok, sms: MESSAGE + history + replies}")
def detail(request, sms_id: int):
    return JsonResponse({"status": "ok", "sms": message_detail_json(_one_message(sms_id))})


@route(router, "POST", "/sms/{int:sms_id}/cancel", operation_id="sms_cancel", auth="api",
       response={200: dict, 403: dict, 404: dict, 409: dict},
       summary="Cancel a message that is still queued (409 sms not_queued otherwise): {status: ok, sms: MESSAGE}")
def cancel(request, sms_id: int):
    message = _one_message(sms_id)
    try:
        message = services.cancel(message=message, by=_token_name(request))
    except services.SmsError as exc:
        raise _sms_error(exc) from exc
    return JsonResponse({"status": "ok", "sms": message_json(message)})


# --- batches -------------------------------------------------------------------------------------------------


@route(router, "POST", "/sms/batches", operation_id="sms_batch_create", auth="api", body=BatchIn,
       response={201: dict, 400: dict, 403: dict, 404: dict, 409: dict},
       summary="Start a batch: one message or template to a list of readers (user_ids) or every reader with a "
               "content access; queued in the background. 201 {status: ok, batch: BATCH}")
def create_batch(request, idempotency_key: str | None = IDEMPOTENCY_KEY):
    data = request_data(request)
    _known_properties(data, BATCH_FIELDS)
    name = _string(data, "name", max_length=MAX_NAME) or ""
    message, template_code, params, send_at = _content(data)
    user_ids = _ids(data, "user_ids")
    content_access = _string(data, "content_access", max_length=MAX_CODE) or ""
    key = _idempotency_key(idempotency_key)
    _text_or_template(message, template_code, params)
    send_at = _send_at(send_at)
    if key is not None and (replayed := _created_with(request.path, key, SmsBatch)) is not None:
        return JsonResponse({"status": "ok", "batch": batch_json(replayed)}, status=201)
    try:
        if message is not None:
            services.compose(body=message)  # an empty or too long text, refused as for a single message
        batch = _create_once(request.path, key, SmsBatch, lambda: batches.create_batch(
            name=name, body=message, template_code=template_code, params=params, user_ids=user_ids,
            content_access=content_access, send_at=send_at, created_by=_token_name(request)))
    except services.SmsError as exc:
        raise _sms_error(exc) from exc
    return JsonResponse({"status": "ok", "batch": batch_json(batch)}, status=201)


@route(router, "GET", "/sms/batches/{int:batch_id}", operation_id="sms_batch_detail", auth="api",
       response={200: dict, 403: dict, 404: dict},
       summary="A batch's progress: status, total, fanned_out, skipped and counts of its messages per status: "
               "{status: ok, batch: BATCH}")
def batch_detail(request, batch_id: int):
    batch = SmsBatch.objects.select_related("template").filter(pk=batch_id).first() if batch_id <= MAX_ID else None
    if batch is None:
        raise error(404, "batch_not_found", _("SMS batch %(id)s not found.") % {"id": batch_id})
    return JsonResponse({"status": "ok", "batch": batch_json(batch)})
