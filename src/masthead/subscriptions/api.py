"""REMP subscriptions API: a reader's subscriptions, create and update (R-SAPI-*); content access and
subscription types."""

import re
from datetime import UTC, datetime

from django.db import IntegrityError, transaction
from django.http import JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from ninja import Header, Router
from pydantic import BaseModel, Field

from masthead.core import clock
from masthead.core.api import ApiError, error, request_data, route, text
from masthead.core.clock import rfc3339
from masthead.core.models import ApiIdempotencyKey
from masthead.subscriptions import queries, services
from masthead.subscriptions.models import ContentAccess, Subscription, SubscriptionType
from masthead.users.services import find_user_by_email

router = Router(tags=["subscriptions"])

TRUE = {"1", "true", "on", "yes"}
FALSE = {"0", "false", "off", "no", ""}
MAX_ID = 2**63 - 1  # the largest value an id column (and SQLite) holds
# Dates the API accepts: wide enough for any real subscription, narrow enough that adding a type's
# length or converting to the local time zone can never leave Python's datetime range.
EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
# R-SAPI-9: PHP's ``Y-m-d\TH:i:sP``; ASCII digits only (``\d`` would match any Unicode digit).
RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:Z|[+-][0-9]{2}:[0-9]{2})")
IDEMPOTENT_KEY = "idempotent_key"  # subscription meta holding the Idempotency-Key it was created with


class CreateIn(BaseModel):
    email: str = Field(description="E-mail of an existing user")
    subscription_type_id: int | None = Field(None, description="Type id (looked up first)")
    subscription_type_code: str | None = Field(None, description="Type code (used when the id is absent or unknown)")
    is_paid: bool = Field(description="1/true/on/yes or 0/false/off/no")
    start_time: datetime | None = Field(None, description="RFC 3339 recommended; without an offset: local time")
    end_time: datetime | None = Field(None, description="RFC 3339 recommended; without an offset: local time")
    type: str | None = Field(None, description="Label (regular, free, gift, ...); unknown or inactive → regular")
    note: str | None = Field(None, max_length=255)


class UpdateIn(BaseModel):
    id: int
    subscription_type_id: int | None = None
    is_paid: bool | None = Field(None, description="1/true/on/yes or 0/false/off/no")
    start_time: str | None = Field(None, description="Strict RFC 3339, e.g. 2024-01-31T10:00:00+01:00")
    end_time: str | None = Field(None, description="Strict RFC 3339, e.g. 2024-01-31T10:00:00+01:00")
    type: str | None = Field(None, description="An active label (regular, free, gift, ...)")
    note: str | None = Field(None, max_length=255)


# --- parsing --------------------------------------------------------------------------------


def invalid_input(errors: dict[str, list[str]]) -> ApiError:
    """R-AUTH-9."""
    return ApiError(400, {"status": "error", "code": "invalid_input", "errors": errors})


def given(data: dict, name: str) -> bool:
    return data.get(name) not in (None, "")


def parse_bool(value) -> bool | None:
    """1/true/on/yes → True, 0/false/off/no/"" → False (any case); None for anything else (R-SAPI-4)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        if value.lower() in TRUE:
            return True
        if value.lower() in FALSE:
            return False
    return None


def boolean(data: dict, name: str) -> bool | None:
    """The boolean parameter ``name``; None when absent; invalid_input when it is not a boolean."""
    if data.get(name) is None:
        return None
    value = parse_bool(data[name])
    if value is None:
        raise invalid_input({name: [_("Must be a boolean (1, true, on, yes, 0, false, off, no)")]})
    return value


def object_id(data: dict, name: str) -> int | None:
    """The id parameter ``name``; None when absent; invalid_input unless a positive integer."""
    if not given(data, name):
        return None
    value = data[name]
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,19}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise invalid_input({name: [_("Must be a positive integer")]})
    return value


def wrong_format(name: str) -> ApiError:
    if name == "start_time":
        return error(400, "start_time_wrong_format", _("Start time has wrong format - RFC3339 format required"))
    return error(400, "end_time_wrong_format", _("End time has wrong format - RFC3339 format required"))


def moment(data: dict, name: str, *, strict: bool) -> datetime | None:
    """The datetime parameter ``name`` in UTC; None when absent. ``strict``: RFC 3339 with seconds and
    an offset (R-SAPI-9); otherwise any ISO 8601 form, a value without offset being local time (R-SAPI-4)."""
    raw = text(data, name, max_length=100)
    if raw is None:
        return None
    try:
        if strict:
            if not RFC3339.fullmatch(raw):
                raise wrong_format(name)
            value = datetime.fromisoformat(raw)
        else:
            value = parse_datetime(raw)
            if value is None:
                raise wrong_format(name)
            if timezone.is_naive(value):
                value = timezone.make_aware(value, timezone.get_default_timezone())
        value = value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # 2024-02-30, +25:00, year 1 with an eastern offset
        raise wrong_format(name) from exc
    if not EARLIEST <= value <= LATEST:
        raise wrong_format(name)
    return value


# --- rendering ------------------------------------------------------------------------------


def subscription_json(subscription: Subscription) -> dict:
    """The seven fields of R-SAPI-5 / R-SAPI-10."""
    return {
        "id": subscription.pk,
        "subscription_type_id": subscription.subscription_type_id,
        "is_paid": subscription.is_paid,
        "start_time": rfc3339(subscription.start_time),
        "end_time": rfc3339(subscription.end_time),
        "type": subscription.type,
        "note": subscription.note or None,
    }


def created(subscription: Subscription) -> JsonResponse:
    return JsonResponse({"status": "ok", "message": _("Subscription created"),
                         "subscriptions": subscription_json(subscription)})


# --- a reader's subscriptions (R-SAPI-1) ----------------------------------------------------


def _user_subscriptions(request, show_finished: str | None) -> JsonResponse:
    ending_from = None if (show_finished or "").lower() in TRUE else clock.now()
    return JsonResponse({"status": "ok", "subscriptions": [
        {"id": s.id, "start_at": rfc3339(s.start_time), "end_at": rfc3339(s.end_time), "code": s.code,
         "access": s.access, "name": s.name, "label": s.label}
        for s in queries.reader_subscriptions(request.api_user.pk, ending_from=ending_from)
    ]})


@route(router, "GET", "/users/subscriptions", operation_id="users_subscriptions", auth="user",
       response={200: dict, 403: dict},
       summary="The reader's current and future subscriptions (all of them with show_finished)")
def user_subscriptions(request, show_finished: str | None = None):
    return _user_subscriptions(request, show_finished)


@route(router, "POST", "/users/subscriptions", operation_id="users_subscriptions_post", auth="user",
       response={200: dict, 403: dict}, summary="Same as GET users/subscriptions (show_finished in the query string)")
def user_subscriptions_post(request, show_finished: str | None = None):
    return _user_subscriptions(request, show_finished)


# --- create (R-SAPI-2..7) -------------------------------------------------------------------


def _replay(path: str, key: str) -> JsonResponse | None:
    """R-SAPI-6: the answer to a call already made with this (path, Idempotency-Key), or None."""
    if not ApiIdempotencyKey.objects.filter(path=path, key=key).exists():
        return None
    subscription = Subscription.objects.filter(meta__key=IDEMPOTENT_KEY, meta__value=key).order_by("pk").first()
    if subscription is None:  # recorded, but the subscription it created is gone
        raise error(409, "idempotency_key_used", _("This Idempotency-Key was already used"))
    return created(subscription)


def _subscription_type(type_id: int | None, code: str | None) -> SubscriptionType:
    """R-SAPI-3 step 3: by id first, then by code."""
    found = SubscriptionType.objects.filter(pk=type_id).first() if type_id is not None else None
    if found is None and code is not None:
        found = SubscriptionType.objects.filter(code=code).first()
    if found is None:
        raise ApiError(404, {"status": "error", "message": _("Subscription type not found")})
    return found


@route(router, "POST", "/subscriptions/create", operation_id="subscriptions_create", auth="api", body=CreateIn,
       response={200: dict, 400: dict, 403: dict, 404: dict, 409: dict},
       summary="Give a user a subscription (is_recurrent false); repeatable safely with an Idempotency-Key header")
def create(request, idempotency_key: str | None = Header(
        None, alias="Idempotency-Key", description="Repeating a call with the same key creates nothing twice")):
    data = request_data(request)
    email = text(data, "email", max_length=1000)
    required = [_("Field is required")]
    errors = {}
    if email is None:
        errors["email"] = required
    if data.get("is_paid") is None:
        errors["is_paid"] = required
    if errors:
        raise invalid_input(errors)
    is_paid = boolean(data, "is_paid")
    type_code = text(data, "subscription_type_code", max_length=1000)
    if not given(data, "subscription_type_id") and type_code is None:
        raise invalid_input({
            "subscription_type_id": [_("Field is required if subscription_type_code is not present")],
            "subscription_type_code": [_("Field is required if subscription_type_id is not present")],
        })
    type_id = object_id(data, "subscription_type_id")
    start = moment(data, "start_time", strict=False)
    end = moment(data, "end_time", strict=False)
    label = services.active_label(text(data, "type", max_length=1000)) or "regular"
    note = text(data, "note", max_length=255) or ""
    key = text({"Idempotency-Key": idempotency_key}, "Idempotency-Key", max_length=255)
    if key is not None and (replayed := _replay(request.path, key)) is not None:
        return replayed

    subscription_type = _subscription_type(type_id, type_code)
    user = find_user_by_email(email)
    if user is None:
        raise error(404, "user_not_found", _("User not found"))
    try:
        with transaction.atomic():
            if key is not None:
                # First, so that a concurrent call with the same key waits here and then fails.
                ApiIdempotencyKey.objects.create(path=request.path, key=key)
            subscription = services.create_subscription(
                user=user, subscription_type=subscription_type, type=label, is_paid=is_paid, is_recurrent=False,
                start=start, end=end, note=note, meta={IDEMPOTENT_KEY: key} if key is not None else None,
                enforce_limit=True)
    except services.SubscriptionError as exc:
        raise ApiError(400, {"status": "error", "message": exc.message}) from exc
    except IntegrityError:
        # The same key won a race with this call: answer what the winner answered.
        if key is None or (replayed := _replay(request.path, key)) is None:
            raise
        return replayed
    return created(subscription)


# --- update (R-SAPI-8..10) ------------------------------------------------------------------


@route(router, "POST", "/subscriptions/update", operation_id="subscriptions_update", auth="api", body=UpdateIn,
       response={200: dict, 400: dict, 403: dict, 404: dict},
       summary="Change a subscription's type, label, dates, paid flag or note")
def update(request):
    data = request_data(request)
    if not given(data, "id"):
        raise invalid_input({"id": [_("Field is required")]})
    subscription_id = object_id(data, "id")
    subscription = Subscription.objects.filter(pk=subscription_id).first()
    if subscription is None:
        raise error(404, "subscription_not_found", _("Subscription not found: %(id)s") % {"id": subscription_id})
    changes = {}
    type_id = object_id(data, "subscription_type_id")
    if type_id is not None:
        changes["subscription_type"] = SubscriptionType.objects.filter(pk=type_id).first()
        if changes["subscription_type"] is None:
            raise error(404, "subscription_type_not_found",
                        _("Subscription type not found: %(id)s") % {"id": type_id})
    if (is_paid := boolean(data, "is_paid")) is not None:
        changes["is_paid"] = is_paid
    if (start := moment(data, "start_time", strict=True)) is not None:
        changes["start_time"] = start
    if (end := moment(data, "end_time", strict=True)) is not None:
        changes["end_time"] = end
    if (label := text(data, "type", max_length=1000)) is not None:
        if services.active_label(label) is None:
            raise error(400, "wrong_type", _("Wrong type: %(type)s") % {"type": label})
        changes["type"] = label
    if (note := text(data, "note", max_length=255)) is not None:
        changes["note"] = note
    try:
        services.update_subscription(subscription=subscription, **changes)
    except services.SubscriptionError as exc:
        raise error(400, exc.code, exc.message) from exc
    return JsonResponse({"status": "ok", "message": _("Subscription updated"),
                         "subscription": subscription_json(subscription)})


# --- catalog --------------------------------------------------------------------------------


@route(router, "GET", "/content-access/list", operation_id="content_access_list", auth="api",
       response={200: list, 403: dict}, summary="Every content access, by sorting (R-SAPI-11)")
def content_access_list(request):
    rows = ContentAccess.objects.order_by("sorting", "name").values_list("name", "description")
    return JsonResponse([{"code": name, "description": description or None} for name, description in rows],
                        safe=False)


@route(router, "GET", "/subscription-types", operation_id="subscription_types", auth="api",
       response={200: dict, 403: dict}, summary="Every subscription type with its content access, by sorting")
def subscription_types(request):
    types = list(SubscriptionType.objects.order_by("sorting", "code"))
    access = queries.access_names()
    return JsonResponse({"status": "ok", "subscription_types": [
        {
            "id": t.pk,
            "code": t.code,
            "name": t.name,
            "label": t.user_label,
            "price": f"{t.price:.2f}",
            "length": t.length,
            "content_access": access.get(t.pk, []),
            "active": t.active,
            "visible": t.visible,
        }
        for t in types
    ]})
