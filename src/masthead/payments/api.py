"""Payments API: a reader's recurring payments (R-REC-22..24), with REMP's bodies and codes."""

import re
from datetime import datetime

from django.http import JsonResponse
from django.utils.translation import gettext as _
from ninja import Router
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from masthead.core.api import FORM_TYPES, ApiError, api_user, request_data, route, validate
from masthead.core.clock import rfc3339
from masthead.payments import services
from masthead.payments.models import RecurrentPayment

router = Router(tags=["payments"])

RP = RecurrentPayment
MAX_ID = 2**63 - 1
# REMP's `Y-m-d\TH:i:sP`; "Z" is accepted for UTC, as in REMP's documentation example
CHARGEABLE_FROM = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})$")


class RecurrentPaymentIdIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StrictInt = Field(description="ID of one of the reader's recurrent payments")


def recurrent_payment_json(row: RecurrentPayment) -> dict:
    return {
        "id": row.pk,
        "parent_payment_id": row.parent_payment_id,
        "charge_at": rfc3339(row.charge_at),
        "payment_gateway_code": row.gateway.code,
        "subscription_type_code": row.subscription_type.code,
        "state": row.state,
        "retries": row.retries,
    }


def _parse_chargeable_from(value: str) -> datetime:
    candidate = value.strip()
    if re.search(r"\d{2}:\d{2}:\d{2} \d{2}:\d{2}$", candidate):  # an unencoded "+" arrives as a space
        candidate = candidate[:-6] + "+" + candidate[-5:]
    invalid = ApiError(400, {"status": "error", "code": "invalid_date",
                             "message": _("Invalid format provided for charge_at parameter, ISO 8601 expected: "
                                          "%(value)s") % {"value": value}})
    if not CHARGEABLE_FROM.match(candidate):
        raise invalid
    try:
        return datetime.fromisoformat(candidate)
    except ValueError as exc:
        raise invalid from exc


LIST_PARAMETERS = [
    {"in": "query", "name": "states[]", "required": False, "style": "form", "explode": True,
     "description": "Only recurrent payments in these states",
     "schema": {"type": "array", "items": {"type": "string", "enum": list(RP.STATE_CODES)}}},
    {"in": "query", "name": "chargeable_from", "required": False,
     "description": "Only recurrent payments charged at or after this time (ISO 8601, e.g. 2016-01-01T01:23:45Z)",
     "schema": {"type": "string"}},
]


@route(router, "GET", "/users/recurrent-payments", operation_id="users_recurrent_payments", auth="user",
       response={200: list, 400: dict, 403: dict}, openapi_extra={"parameters": LIST_PARAMETERS},
       summary="The reader's recurrent payments (optionally by state and charge time)")
def list_recurrent_payments(request):
    user = api_user(request, with_status=True)
    states = request.GET.getlist("states[]") + request.GET.getlist("states")
    invalid = [state for state in states if state not in RP.STATE_CODES]
    if invalid:
        allowed = ", ".join(RP.STATE_CODES)
        raise ApiError(400, {"status": "error", "code": "invalid_input", "errors": {"states": [
            _("Value '%(value)s' is not allowed. Allowed values: %(allowed)s") % {"value": v, "allowed": allowed}
            for v in invalid]}})
    rows = RP.objects.filter(user=user).select_related("gateway", "subscription_type").order_by("pk")
    if states:
        rows = rows.filter(state__in=states)
    chargeable_from = request.GET.get("chargeable_from")
    if chargeable_from:
        rows = rows.filter(charge_at__gte=_parse_chargeable_from(chargeable_from))
    return JsonResponse([recurrent_payment_json(row) for row in rows], safe=False)


def _requested_row(request) -> RecurrentPayment:
    """Auth, body and ownership checks shared by stop and reactivate (R-REC-23/24), in REMP's order."""
    user = api_user(request, with_status=False)
    data = request_data(request)
    if (request.content_type or "").lower() in FORM_TYPES and isinstance(data.get("id"), str) \
            and data["id"].isdigit():
        data["id"] = int(data["id"])
    requested = validate(RecurrentPaymentIdIn, data).id
    row = None
    if 0 < requested <= MAX_ID:
        row = RP.objects.select_related("gateway", "subscription_type", "parent_payment").filter(pk=requested).first()
    if row is None:
        raise ApiError(404, {"message": _("Recurrent payment with ID [%(id)s] not found.") % {"id": requested},
                             "code": "recurrent_payment_not_found"})
    if row.user_id != user.pk:
        raise ApiError(404, {"message": _("User with [%(user)s] doesn't have recurrent payment with ID [%(id)s].")
                             % {"user": user.pk, "id": requested}, "code": "recurrent_payment_not_found"})
    return row


@route(router, "POST", "/recurrent-payment/stop", operation_id="recurrent_payment_stop", auth="user",
       body=RecurrentPaymentIdIn, response={200: dict, 400: dict, 403: dict, 404: dict, 409: dict},
       summary="Stop one of the reader's active recurrent payments (state user_stop)")
def stop_recurrent_payment(request):
    row = _requested_row(request)
    try:
        row = services.stop_by_user(recurrent_payment=row)
    except services.PaymentError as exc:
        if exc.code == "user_unstoppable_recurrent_payment_gateway":
            raise ApiError(403, {"message": _("Payment gateway [%(code)s] is unstoppable by user.")
                                 % {"code": row.gateway.code}, "code": exc.code}) from exc
        raise ApiError(409, {"message": _(
            "Only active recurrent payment can be stopped by user. Recurrent payment with ID [%(id)s] is in state "
            "[%(state)s].") % {"id": row.pk, "state": exc.params.get("state", row.state)},
            "code": "recurrent_payment_not_active"}) from exc
    return JsonResponse(recurrent_payment_json(row))


@route(router, "POST", "/recurrent-payment/reactivate", operation_id="recurrent_payment_reactivate", auth="user",
       body=RecurrentPaymentIdIn, response={200: dict, 400: dict, 403: dict, 404: dict, 409: dict},
       summary="Reactivate one of the reader's recurrent payments that the reader stopped")
def reactivate_recurrent_payment(request):
    row = _requested_row(request)
    try:
        row = services.reactivate_by_user(recurrent_payment=row)
    except services.PaymentError as exc:
        if exc.code == "recurrent_payment_next_charge_in_past":
            raise ApiError(400, {"message": _(
                "Recurrent payment with ID [%(id)s] cannot be reactivated. Next charge is in past.") % {"id": row.pk},
                "code": exc.code}) from exc
        raise ApiError(409, {"message": _(
            "Only recurrent payment in state [user_stop] can be reactivated by user. Recurrent payment with ID "
            "[%(id)s] is in state [%(state)s].") % {"id": row.pk, "state": exc.params.get("state", row.state)},
            "code": "recurrent_payment_not_active"}) from exc
    return JsonResponse(recurrent_payment_json(row))
