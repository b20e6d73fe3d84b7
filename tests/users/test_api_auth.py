"""API authentication (R-AUTH-1..5, R-AUTH-9): tokens, whitelist, IP restrictions, error bodies."""

import pytest

from masthead.users import services
from masthead.users.models import ApiToken, User
from tests.conftest import bearer

pytestmark = pytest.mark.django_db

EMAIL_URL = "/api/v1/users/email"


def not_authorized(reason):
    return {"status": "error", "code": "no_authorization", "error": "no_authorization",
            "message": f"Not authorized: {reason}"}


def test_missing_header_is_refused_and_handler_never_runs(client):
    response = client.post("/api/v1/users/create", {"email": "new@example.com"})
    assert response.status_code == 403
    assert response.json() == not_authorized("Authorization header HTTP_Authorization is not set")
    assert not User.objects.exists()


@pytest.mark.parametrize("header", ["Bearer", "Bearer a b", "Basic abc", "token"])
def test_malformed_header_is_refused(client, header):
    response = client.post(EMAIL_URL, {"email": "x@example.com"}, HTTP_AUTHORIZATION=header)
    assert response.status_code == 403
    assert response.json() == not_authorized("Authorization header contains invalid structure")


def test_unknown_token_is_refused(client, api_token):
    response = client.post(EMAIL_URL, {"email": "x@example.com"}, **bearer("0" * 32))
    assert response.status_code == 403
    assert response.json() == not_authorized("Token doesn't exists")


def test_inactive_token_is_refused(client):
    token, row = services.create_api_token(name="off", all_endpoints=True, active=False)
    response = client.post(EMAIL_URL, {"email": "x@example.com"}, **bearer(token))
    assert response.status_code == 403
    assert response.json() == not_authorized("Token isn't active")


def test_endpoint_not_whitelisted_is_refused(client):
    token, _ = services.create_api_token(name="email-only", endpoints=["users_email"])
    response = client.post("/api/v1/users/create", {"email": "new@example.com"}, **bearer(token))
    assert response.status_code == 403
    assert response.json() == not_authorized("Token has no access to resource [users_create]")
    assert not User.objects.exists()


def test_whitelisted_endpoint_is_allowed_and_last_use_recorded(client):
    token, row = services.create_api_token(name="email-only", endpoints=["users_email"])
    assert row.last_used_at is None
    response = client.post(EMAIL_URL, {"email": "x@example.com"}, **bearer(token))
    assert response.status_code == 200
    assert response.json() == {"email": "x@example.com", "status": "available", "id": None, "password": None}
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_new_token_calls_nothing(client):
    token, _ = services.create_api_token(name="nothing")
    response = client.post(EMAIL_URL, {"email": "x@example.com"}, **bearer(token))
    assert response.status_code == 403


def test_token_stored_only_as_hash(db):
    token, row = services.create_api_token(name="hashed", all_endpoints=True)
    assert len(token) == 32 and token == token.lower() and int(token, 16) >= 0
    stored = ApiToken.objects.get(pk=row.pk)
    assert token not in (stored.token_hash, stored.token_hint)
    assert stored.token_hash == services.hash_token(token)


def test_scheme_word_is_case_insensitive(client, api_token):
    response = client.post(EMAIL_URL, {"email": "x@example.com"}, HTTP_AUTHORIZATION=f"bearer {api_token}")
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("restrictions", "ip", "allowed"),
    [
        ("*", "43.24.132.64", True),
        ("43.24.132.64", "43.24.132.64", True),
        ("43.24.132.64", "43.24.132.65", False),
        ("43.24.132.64,123.32.36.15", "123.32.36.15", True),
        ("43.24.132.64 123.32.36.15", "123.32.36.15", True),
        ("43.24.132.64\n123.32.36.15", "123.32.36.15", True),
        ("123.32.36.0/24", "123.32.36.15", True),
        ("123.32.36.0/24", "123.32.37.15", False),
        ("2001:db8::/32", "2001:db8::1", True),
        ("2001:db8::/32", "123.32.36.15", False),
    ],
)
def test_ip_restrictions(client, restrictions, ip, allowed):
    """R-AUTH-4 examples."""
    token, _ = services.create_api_token(name="ip", all_endpoints=True, ip_restrictions=restrictions)
    response = client.post(EMAIL_URL, {"email": "x@example.com"}, REMOTE_ADDR=ip, **bearer(token))
    if allowed:
        assert response.status_code == 200
    else:
        assert response.status_code == 403
        assert response.json() == not_authorized("Invalid IP")


def test_bad_ip_restrictions_are_refused_at_creation(db):
    with pytest.raises(services.UserError) as exc:
        services.create_api_token(name="bad", all_endpoints=True, ip_restrictions="300.1.1.1")
    assert exc.value.code == "invalid_ip_restrictions"
    assert not ApiToken.objects.exists()


def test_unknown_endpoint_is_refused_at_creation(db):
    with pytest.raises(services.UserError) as exc:
        services.create_api_token(name="bad", endpoints=["users_email", "no_such_thing"])
    assert exc.value.code == "unknown_endpoint"
    assert not ApiToken.objects.exists()


def test_active_token_cannot_be_deleted(db):
    _, row = services.create_api_token(name="live", all_endpoints=True)
    with pytest.raises(services.UserError):
        services.delete_api_token(api_token=row)
    assert ApiToken.objects.filter(pk=row.pk).exists()
    services.update_api_token(api_token=row, name="live", endpoints=[], all_endpoints=True,
                              ip_restrictions="*", active=False)
    services.delete_api_token(api_token=row)
    assert not ApiToken.objects.filter(pk=row.pk).exists()


def test_user_token_on_user_endpoint(client, user, user_token):
    response = client.get("/api/v1/users/info", **bearer(user_token))
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "user": {"id": user.pk, "uuid": str(user.uuid), "email": "jana@example.com", "first_name": "Jana",
                 "last_name": "Novakova", "public_name": None, "confirmed_at": None},
        "user_meta": {},
    }


def test_api_token_is_not_a_user_token(client, api_token):
    response = client.get("/api/v1/users/info", **bearer(api_token))
    assert response.status_code == 403
    assert response.json() == not_authorized("Token doesn't exists")


def test_user_token_of_inactive_user_is_refused(client, user, user_token):
    user.is_active = False
    user.save()
    response = client.get("/api/v1/users/info", **bearer(user_token))
    assert response.status_code == 403
    assert response.json() == not_authorized("Token isn't active")


def test_unknown_api_call(client):
    """R-AUTH-1."""
    response = client.get("/api/v1/foo/bar")
    assert response.status_code == 404
    assert response.json() == {"error": "Unknown api call: version [1], category [foo], action [bar]"}


def test_cors_preflight_and_refused_origin(client, settings):
    """R-AUTH-2."""
    response = client.options(EMAIL_URL, HTTP_ORIGIN="https://paywall.example")
    assert response.status_code == 200
    assert response.json() == {"options": "ok"}
    assert "Authorization" in response["Access-Control-Allow-Headers"]
    settings.API_CORS_ORIGINS = ["https://paywall.example"]
    response = client.post(EMAIL_URL, {"email": "x@example.com"}, HTTP_ORIGIN="https://evil.example")
    assert response.status_code == 403
    assert response.json() == {"error": "origin_not_allowed", "message": "Origin is not allowed: https://evil.example"}


def test_wrong_method_gets_a_json_error(client):
    response = client.get("/api/v1/users/login")
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json() == {"status": "error", "code": "method_not_allowed",
                               "message": "Method GET is not allowed here; use POST"}


def test_user_token_last_use_is_written_at_most_once_per_resolution(client, user, settings):
    import time_machine

    from masthead.users.models import AccessToken

    settings.TOKEN_LAST_USED_RESOLUTION = 60
    token, row = services.issue_access_token(user=user)
    with time_machine.travel("2026-03-29 00:59:30+00:00", tick=False):
        assert client.get("/api/v1/users/info", **bearer(token)).status_code == 200
    first = AccessToken.objects.get(pk=row.pk).last_used_at
    assert first.isoformat() == "2026-03-29T00:59:30+00:00"
    with time_machine.travel("2026-03-29 01:00:20+00:00", tick=False):
        client.get("/api/v1/users/info", **bearer(token))
    assert AccessToken.objects.get(pk=row.pk).last_used_at == first
    with time_machine.travel("2026-03-29 01:00:31+00:00", tick=False):
        client.get("/api/v1/users/info", **bearer(token))
    assert AccessToken.objects.get(pk=row.pk).last_used_at.isoformat() == "2026-03-29T01:00:31+00:00"


def test_revoked_user_token_is_refused(client, user):
    token, row = services.issue_access_token(user=user)
    services.revoke_access_tokens(tokens=[row])
    response = client.get("/api/v1/users/info", **bearer(token))
    assert response.status_code == 403
    assert response.json() == not_authorized("Token doesn't exists")
