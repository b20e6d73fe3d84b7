"""Masthead's JSON API plumbing: the NinjaAPI instance, REMP error bodies, token auth, body parsing.

Every route is declared through :func:`route`, which gives it a stable ``operation_id`` and one of
three kinds of authentication: ``"api"`` (server-to-server API token whitelisted for that
operation), ``"user"`` (a reader's token from ``users/login``) or none.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.http import Http404, HttpRequest, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.utils.translation import gettext as _
from ninja import NinjaAPI, Router
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import HttpBearer
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

log = logging.getLogger(__name__)

API_TOKEN_OPERATIONS: set[str] = set()


# --- errors ---------------------------------------------------------------------------------


class ApiError(Exception):
    """Raise anywhere in a handler to answer ``status`` with ``body``."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(body.get("message", body))
        self.status = status
        self.body = body


def error(status: int, code: str, message: str, **extra) -> ApiError:
    return ApiError(status, {"status": "error", "code": code, "message": message, **extra})


def api_user(request, *, with_status: bool):
    """The reader behind the user token; REMP's "Cannot authorize user" when there is none."""
    user = getattr(request, "api_user", None)
    if user is None or not user.is_active:
        body = {"message": _("Cannot authorize user")}
        if with_status:
            raise ApiError(403, {"status": "error", **body})
        raise ApiError(403, {**body, "code": "cannot_authorize_user"})
    return user


def payload_error(errors: list[dict[str, str]]) -> ApiError:
    return ApiError(400, {"status": "error", "code": "payload_error", "message": "Payload error", "errors": errors})


class NotAuthorized(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ErrorOut(BaseModel):
    status: str = "error"
    code: str
    message: str


# --- the API --------------------------------------------------------------------------------

api = NinjaAPI(
    title="Masthead API",
    version="1",
    description="Subscriptions, payments, family codes and SMS. REMP CRM compatible paths and bodies.",
    urls_namespace="api",
    docs_url="/docs",
    openapi_url="/openapi.json",
)


@api.exception_handler(ApiError)
def _api_error(request, exc: ApiError):
    return JsonResponse(exc.body, status=exc.status)


@api.exception_handler(NotAuthorized)
def _not_authorized(request, exc: NotAuthorized):
    return JsonResponse(
        {
            "status": "error",
            "code": "no_authorization",
            "error": "no_authorization",
            "message": f"Not authorized: {exc.reason}",
        },
        status=403,
    )


@api.exception_handler(AuthenticationError)
def _authentication_error(request, exc):
    return _not_authorized(request, NotAuthorized("Token doesn't exists"))


@api.exception_handler(ValidationError)
def _validation_error(request, exc: ValidationError):
    errors: dict[str, list[str]] = {}
    for item in exc.errors:
        loc = [str(part) for part in item.get("loc", ()) if part not in ("query", "path", "body", "form")]
        errors.setdefault(".".join(loc) or "request", []).append(item.get("msg", "invalid"))
    return JsonResponse({"status": "error", "code": "invalid_input", "errors": errors}, status=400)


@api.exception_handler(RequestDataTooBig)
def _too_big(request, exc):
    return JsonResponse(
        {"status": "error", "code": "request_too_large", "message": "Request body is too large"}, status=413
    )


@api.exception_handler(Http404)
def _not_found(request, exc):
    return JsonResponse({"status": "error", "code": "not_found", "message": "Not found"}, status=404)


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    return JsonResponse({"status": "error", "code": "http_error", "message": str(exc)}, status=exc.status_code)


@api.exception_handler(Exception)
def _unexpected(request, exc):
    log.exception("unhandled API error on %s %s", request.method, request.path)
    return JsonResponse({"status": "error", "code": "internal_server_error"}, status=500)


def unknown_api_call(request: HttpRequest, version: str, rest: str = ""):
    """R-AUTH-1: a path under /api/v<n>/ that no route serves."""
    parts = [p for p in rest.split("/") if p]
    category = parts[0] if parts else ""
    action = "/".join(parts[1:])
    return JsonResponse(
        {"error": f"Unknown api call: version [{version}], category [{category}], action [{action}]"}, status=404
    )


# --- authentication -------------------------------------------------------------------------


def bearer_token(request: HttpRequest) -> str:
    """The token of ``Authorization: Bearer <token>``, or NotAuthorized with REMP's reasons (R-AUTH-3)."""
    header = request.headers.get("Authorization")
    if header is None or header == "":
        raise NotAuthorized("Authorization header HTTP_Authorization is not set")
    parts = header.split(" ")
    if len(parts) != 2 or parts[0].lower() != "bearer" or not parts[1]:
        raise NotAuthorized("Authorization header contains invalid structure")
    return parts[1]


def client_ip(request: HttpRequest) -> str:
    if settings.TRUSTED_PROXY_COUNT > 0:
        forwarded = [p.strip() for p in request.headers.get("X-Forwarded-For", "").split(",") if p.strip()]
        if len(forwarded) >= settings.TRUSTED_PROXY_COUNT:
            return forwarded[-settings.TRUSTED_PROXY_COUNT]
    return request.META.get("REMOTE_ADDR", "")


class _BearerAuth(HttpBearer):
    """Bearer auth that refuses with REMP's 403 body instead of ninja's 401."""

    def __call__(self, request: HttpRequest):
        return self.authenticate(request, bearer_token(request))


class ApiTokenAuth(_BearerAuth):
    """A server-to-server API token whitelisted for ``operation_id`` (R-AUTH-4)."""

    def __init__(self, operation_id: str):
        super().__init__()
        self.operation_id = operation_id

    def authenticate(self, request, token):
        from masthead.users import services

        try:
            api_token = services.authenticate_api_token(
                token=token, operation_id=self.operation_id, ip=client_ip(request)
            )
        except services.TokenRejected as exc:
            raise NotAuthorized(exc.reason) from exc
        request.api_token = api_token
        return api_token


class UserTokenAuth(_BearerAuth):
    """A reader's access token from ``users/login`` (R-AUTH-5)."""

    def authenticate(self, request, token):
        from masthead.users import services

        try:
            access_token = services.authenticate_user_token(token=token)
        except services.TokenRejected as exc:
            raise NotAuthorized(exc.reason) from exc
        request.access_token = access_token
        request.api_user = access_token.user
        return access_token


def route(router: Router, method: str, path: str, *, operation_id: str, auth: str | None = None,
          body: type[BaseModel] | None = None, **kwargs):
    """Declare a route with a stable operation id, its auth kind and (for docs) its body schema.

    Handlers with a ``body`` read it themselves through :func:`request_data`, which accepts
    JSON and form bodies alike, as REMP clients send either.
    """
    if auth == "api":
        auth_obj = ApiTokenAuth(operation_id)
        API_TOKEN_OPERATIONS.add(operation_id)
    elif auth == "user":
        auth_obj = UserTokenAuth()
    elif auth is None:
        auth_obj = None
    else:
        raise ValueError(f"unknown auth kind {auth!r}")
    if body is not None:
        schema = body.model_json_schema()
        kwargs["openapi_extra"] = {
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": schema},
                    "application/x-www-form-urlencoded": {"schema": schema},
                },
            }
        }
    return router.api_operation([method], path, operation_id=operation_id, auth=auth_obj, **kwargs)


def api_token_operations() -> list[str]:
    """Operation ids an API token can be whitelisted for (every route declared with auth="api")."""
    import masthead.urls  # noqa: F401  (registers every router)

    return sorted(API_TOKEN_OPERATIONS)


# --- bodies ---------------------------------------------------------------------------------

FORM_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data"}


def request_data(request: HttpRequest) -> dict[str, Any]:
    """The request's parameters from a JSON object or a form body (R-AUTH-9 error bodies)."""
    content_type = (request.content_type or "").lower()
    raw = request.body  # RequestDataTooBig here answers 413
    if content_type in FORM_TYPES:
        try:
            return {key: request.POST.get(key) for key in request.POST}
        except (TooManyFieldsSent, MultiPartParserError, SuspiciousOperation) as exc:
            raise error(400, "invalid_form", f"Form body could not be read: {exc}") from exc
    if content_type == "application/json" or content_type.endswith("+json") or raw.strip()[:1] in (b"{", b"["):
        if not raw.strip():
            raise ApiError(400, {"status": "error", "code": "empty_request", "message": "Empty request"})
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(
                400, {"status": "error", "code": "malformed_json", "message": "Malformed JSON", "errors": [str(exc)]}
            ) from exc
        if not isinstance(data, dict):
            raise payload_error([{"body": "must be a JSON object"}])
        return data
    if not raw.strip():
        return {}
    raise error(400, "unsupported_content_type",
                f"Unsupported content type '{content_type}': send application/json or a form")


def text(data: dict[str, Any], name: str, *, max_length: int = 4096) -> str | None:
    """A text parameter: None when absent or empty; "Payload error" when it is not a string, is longer
    than ``max_length`` or holds a NUL character (which PostgreSQL cannot store)."""
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise payload_error([{name: "must be a string"}])
    if len(value) > max_length:
        raise payload_error([{name: f"must be at most {max_length} characters"}])
    if "\x00" in value:
        raise payload_error([{name: "must not contain NUL characters"}])
    return value


def validate(schema: type[BaseModel], data: dict[str, Any]):
    """Validate ``data`` against ``schema``; schema violations answer 400 "Payload error"."""
    try:
        return schema.model_validate(data)
    except PydanticValidationError as exc:
        raise payload_error(
            [{".".join(str(p) for p in e["loc"]) or "body": e["msg"]} for e in exc.errors()]
        ) from exc


# --- core routes ----------------------------------------------------------------------------

router = Router(tags=["core"])


@route(router, "GET", "/health", operation_id="health", response={200: dict},
       summary="Liveness: answers without touching the database")
def health(request):
    return JsonResponse({"status": "ok"})
