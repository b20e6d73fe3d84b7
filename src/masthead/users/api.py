"""REMP users API: login, info, logout, create, email, device token."""

from django.http import JsonResponse
from django.utils.translation import gettext as _
from ninja import Router
from pydantic import BaseModel, Field

from masthead.core.api import ApiError, ErrorOut, error, request_data, route, text
from masthead.core.clock import rfc3339
from masthead.users import queries, services
from masthead.users.models import User

router = Router(tags=["users"])


class LoginIn(BaseModel):
    email: str = Field(description="E-mail of the account")
    password: str
    source: str | None = Field(None, description="Login source, recorded as api+<source>")
    device_token: str | None = Field(None, description="Device token to pair with the new access token")


class CreateIn(BaseModel):
    email: str
    password: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    public_name: str | None = None
    phone_number: str | None = Field(None, description="Local or international; stored as E.164")
    locale: str | None = None
    source: str | None = None


class EmailIn(BaseModel):
    email: str
    password: str | None = None


class DeviceIn(BaseModel):
    device_id: str


def user_json(user: User, *, with_roles: bool) -> dict:
    data = {
        "id": user.pk,
        "uuid": str(user.uuid),
        "email": user.email,
        "first_name": user.first_name or None,
        "last_name": user.last_name or None,
        "public_name": user.public_name or None,
        "confirmed_at": rfc3339(user.confirmed_at),
    }
    if with_roles:
        roles = queries.roles(user)
        if roles:
            data["roles"] = roles
    return data


@route(router, "POST", "/users/login", operation_id="users_login", body=LoginIn,
       response={200: dict, 400: dict, 404: ErrorOut},
       summary="Log in with e-mail and password; returns a user token")
def login(request):
    data = request_data(request)
    email = text(data, "email", max_length=1000)
    password = text(data, "password")
    if not email:
        raise ApiError(400, {"status": "error", "error": "no_email", "message": _("No valid email"),
                             "code": "invalid_email"})
    if not password:
        raise ApiError(400, {"status": "error", "error": "no_password", "message": _("No valid password"),
                             "code": "invalid_password"})
    try:
        result = services.login(email=email, password=password, source=text(data, "source", max_length=90) or "",
                                device_token=text(data, "device_token", max_length=200))
    except services.UserError as exc:
        if exc.code == "device_token_doesnt_exist":
            raise error(404, exc.code, exc.message) from exc
        raise ApiError(400, {"status": "error", "error": "auth_failed", "message": exc.message,
                             "code": exc.code}) from exc
    return JsonResponse({
        "status": "ok",
        "user": user_json(result.user, with_roles=True),
        "user_meta": queries.public_meta(result.user),
        "access": {"token": result.token},
    })


def _info(request):
    user = request.api_user
    return JsonResponse({"status": "ok", "user": user_json(user, with_roles=False),
                         "user_meta": queries.public_meta(user)})


@route(router, "GET", "/users/info", operation_id="users_info", auth="user", response={200: dict, 403: dict},
       summary="The user behind a user token")
def info(request):
    return _info(request)


@route(router, "GET", "/user/info", operation_id="user_info", auth="user", response={200: dict, 403: dict},
       summary="Same as users/info (the path REMP's documentation uses)")
def info_alias(request):
    return _info(request)


@route(router, "POST", "/users/logout", operation_id="users_logout", auth="user", response={200: dict, 403: dict},
       summary="Revoke the user token (and every token of its paired device)")
def logout(request):
    services.logout(access_token=request.access_token)
    return JsonResponse({"status": "ok"})


@route(router, "POST", "/users/create", operation_id="users_create", auth="api", body=CreateIn,
       response={200: dict, 400: ErrorOut, 403: dict, 404: ErrorOut},
       summary="Register a user; answers with the user and a user token")
def create(request):
    data = request_data(request)
    email = text(data, "email", max_length=1000)
    if not email:
        raise error(400, "invalid_email", _("Invalid email"))
    try:
        user, token = services.register(
            email=email,
            password=text(data, "password"),
            first_name=text(data, "first_name", max_length=150) or "",
            last_name=text(data, "last_name", max_length=150) or "",
            public_name=text(data, "public_name", max_length=255) or "",
            phone_number=text(data, "phone_number", max_length=40) or "",
            locale=text(data, "locale", max_length=10) or "en",
            source=text(data, "source", max_length=100) or "api",
        )
    except services.UserError as exc:
        # REMP answers a taken e-mail with 404; every other refusal is invalid input.
        raise error(404 if exc.code == "email_taken" else 400, exc.code, exc.message) from exc
    return JsonResponse({"status": "ok", "user": user_json(user, with_roles=False) | {"roles": []},
                         "access": {"token": token}})


@route(router, "POST", "/users/email", operation_id="users_email", auth="api", body=EmailIn,
       response={200: dict, 400: ErrorOut, 403: dict},
       summary="Whether an e-mail is taken (and, if a password is given, whether it matches)")
def email(request):
    data = request_data(request)
    address = text(data, "email", max_length=1000)
    if not address:
        raise error(400, "invalid_email", _("Invalid email"))
    try:
        address = services.normalize_email(address)
    except services.UserError as exc:
        raise error(400, exc.code, exc.message) from exc
    user = services.find_user_by_email(address)
    password = text(data, "password")
    password_ok = None
    if user is not None and password is not None:
        password_ok = user.is_active and user.check_password(password)
    return JsonResponse({"email": address, "status": "taken" if user else "available",
                         "id": user.pk if user else None, "password": password_ok})


@route(router, "POST", "/users/get-device-token", operation_id="users_get_device_token", body=DeviceIn,
       response={200: dict, 400: ErrorOut}, summary="A token that pairs a mobile device with its logins")
def device_token(request):
    data = request_data(request)
    try:
        token = services.create_device_token(device_id=text(data, "device_id", max_length=255) or "")
    except services.UserError as exc:
        raise error(400, exc.code, exc.message) from exc
    return JsonResponse({"device_token": token})
