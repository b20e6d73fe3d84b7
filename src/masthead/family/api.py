"""Family API: a parent's codes and a child's activation (R-FAM-13/14), with REMP's bodies."""

from django.http import JsonResponse
from ninja import Router
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from masthead.core.api import ApiError, api_user, request_data, route, text, validate
from masthead.core.clock import rfc3339
from masthead.family import services
from masthead.family.models import FamilyRequest
from masthead.subscriptions import queries as subscription_queries

router = Router(tags=["family"])


class ActivateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: StrictStr = Field(min_length=1, max_length=64, description="The family code to activate")


def request_json(request: FamilyRequest) -> dict:
    return {
        "code": request.code,
        "master_user_id": request.master_user_id,
        "status": request.status,
        "subscription_type_code": request.subscription_type.code,
        "slave_user_id": request.slave_user_id,
        "created_at": rfc3339(request.created_at),
        "updated_at": rfc3339(request.updated_at),
        "opened_at": rfc3339(request.opened_at),
        "accepted_at": rfc3339(request.accepted_at),
        "canceled_at": rfc3339(request.canceled_at),
        "expires_at": rfc3339(request.expires_at),
    }


@route(router, "GET", "/family/list", operation_id="family_list", auth="user", response={200: dict, 403: dict},
       summary="The codes of every family subscription of the reader (as parent)")
def family_list(request):
    user = api_user(request, with_status=False)
    rows = (FamilyRequest.objects.filter(master_user=user).select_related("subscription_type")
            .order_by("-updated_at", "-created_at", "id"))
    return JsonResponse({"codes": [request_json(row) for row in rows]})


@route(router, "POST", "/family/activate", operation_id="family_activate", auth="user", body=ActivateIn,
       response={201: dict, 400: dict, 403: dict, 404: dict, 409: dict, 500: dict},
       summary="Activate a family code for the reader: a child subscription tied to the parent's")
def family_activate(request):
    user = api_user(request, with_status=False)
    data = request_data(request)
    text(data, "code", max_length=64)
    code = validate(ActivateIn, data).code
    try:
        seat = services.activate(user=user, code=code)
    except services.FamilyError as exc:
        raise ApiError(exc.status, {"message": exc.message, "code": exc.code}) from exc
    child = seat.slave_subscription
    access = subscription_queries.access_names([child.subscription_type_id]).get(child.subscription_type_id, [])
    return JsonResponse({"code": seat.code, "subscription": {
        "start_at": rfc3339(child.start_time), "end_at": rfc3339(child.end_time),
        "code": child.subscription_type.code, "access": access}}, status=201)
