"""REMP users API: login (R-AUTH-6), info, logout, create, email; bad input (R-AUTH-9)."""

import json

import pytest

from masthead.users import services
from masthead.users.models import AccessToken, User
from tests.conftest import bearer

pytestmark = pytest.mark.django_db

LOGIN = "/api/v1/users/login"


def post_json(client, url, body, **extra):
    return client.post(url, data=json.dumps(body), content_type="application/json", **extra)


def test_login_success_form(client, user):
    response = client.post(LOGIN, {"email": "Jana@Example.com", "password": "correct-horse-1", "source": "app"})
    assert response.status_code == 200
    body = response.json()
    token = body["access"]["token"]
    assert body == {
        "status": "ok",
        "user": {"id": user.pk, "uuid": str(user.uuid), "email": "jana@example.com", "first_name": "Jana",
                 "last_name": "Novakova", "public_name": None, "confirmed_at": None},
        "user_meta": {},
        "access": {"token": token},
    }
    row = AccessToken.objects.get(user=user)
    assert row.token_hash == services.hash_token(token)
    assert row.source == "api+app"
    # the token works
    assert client.get("/api/v1/users/info", **bearer(token)).status_code == 200


def test_login_success_json_with_roles_and_public_meta(client, make_user):
    admin = make_user(email="boss@example.com", is_superuser=True)
    admin.meta.create(key="newsletter", value="1", is_public=True)
    admin.meta.create(key="secret", value="x", is_public=False)
    response = post_json(client, LOGIN, {"email": "boss@example.com", "password": "correct-horse-1"})
    assert response.status_code == 200
    body = response.json()
    assert body["user"]["roles"] == ["superadmin"]
    assert body["user_meta"] == {"newsletter": "1"}
    assert AccessToken.objects.get(user=admin).source == "api"


def test_login_no_email(client):
    response = client.post(LOGIN, {"password": "x"})
    assert response.status_code == 400
    assert response.json() == {"status": "error", "error": "no_email", "message": "No valid email",
                               "code": "invalid_email"}


def test_login_no_password(client):
    response = client.post(LOGIN, {"email": "jana@example.com"})
    assert response.status_code == 400
    assert response.json() == {"status": "error", "error": "no_password", "message": "No valid password",
                               "code": "invalid_password"}


def test_login_unknown_email(client, user):
    response = client.post(LOGIN, {"email": "nobody@example.com", "password": "correct-horse-1"})
    assert response.status_code == 400
    assert response.json() == {
        "status": "error", "error": "auth_failed", "code": "identity_not_found",
        "message": "Email you entered doesn't match our records. Please log in as you would on the website."}
    assert not AccessToken.objects.exists()


def test_login_wrong_password(client, user):
    response = client.post(LOGIN, {"email": "jana@example.com", "password": "wrong"})
    assert response.status_code == 400
    assert response.json() == {
        "status": "error", "error": "auth_failed", "code": "invalid_credential",
        "message": "The password you entered doesn't match our records. Please log in as you would on the website."}
    assert not AccessToken.objects.exists()


def test_login_inactive_user(client, user):
    user.is_active = False
    user.save()
    response = client.post(LOGIN, {"email": "jana@example.com", "password": "correct-horse-1"})
    assert response.status_code == 400
    assert response.json()["code"] == "identity_not_found"


def test_login_unknown_device_token(client, user):
    response = client.post(LOGIN, {"email": "jana@example.com", "password": "correct-horse-1",
                                   "device_token": "f" * 32})
    assert response.status_code == 404
    assert response.json() == {"status": "error", "code": "device_token_doesnt_exist",
                               "message": "Device token doesn't exist"}
    assert not AccessToken.objects.exists()


def test_login_pairs_device_and_logout_revokes_device_tokens(client, user):
    device = client.post("/api/v1/users/get-device-token", {"device_id": "phone-1"}).json()["device_token"]
    first = client.post(LOGIN, {"email": "jana@example.com", "password": "correct-horse-1",
                                "device_token": device}).json()["access"]["token"]
    second = client.post(LOGIN, {"email": "jana@example.com", "password": "correct-horse-1",
                                 "device_token": device}).json()["access"]["token"]
    other = services.issue_access_token(user=user)[0]
    assert client.post("/api/v1/users/logout", **bearer(first)).json() == {"status": "ok"}
    assert client.get("/api/v1/users/info", **bearer(second)).status_code == 403
    assert client.get("/api/v1/users/info", **bearer(other)).status_code == 200


def test_logout_revokes_only_that_token(client, user):
    first = services.issue_access_token(user=user)[0]
    second = services.issue_access_token(user=user)[0]
    assert client.post("/api/v1/users/logout", **bearer(first)).status_code == 200
    assert client.get("/api/v1/users/info", **bearer(first)).status_code == 403
    assert client.get("/api/v1/users/info", **bearer(second)).status_code == 200


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        ("", "application/json", {"status": "error", "code": "empty_request", "message": "Empty request"}),
        ("{nope", "application/json", None),
        ("[1, 2]", "application/json", {"status": "error", "code": "payload_error", "message": "Payload error",
                                        "errors": [{"body": "must be a JSON object"}]}),
        ('{"email": 5, "password": "x"}', "application/json",
         {"status": "error", "code": "payload_error", "message": "Payload error",
          "errors": [{"email": "must be a string"}]}),
        ("<xml/>", "application/xml", None),
    ],
)
def test_login_bad_bodies(client, body, content_type, expected):
    response = client.generic("POST", LOGIN, body.encode(), content_type=content_type, CONTENT_TYPE=content_type)
    assert response.status_code == 400
    if expected is not None:
        assert response.json() == expected
    else:
        assert response.json()["code"] in {"malformed_json", "unsupported_content_type"}
    assert not AccessToken.objects.exists()


def test_oversized_body_is_413(client, settings, user):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = post_json(client, LOGIN, {"email": "jana@example.com", "password": "x" * 5000})
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"
    assert not AccessToken.objects.exists()


def test_huge_email_is_refused_cleanly(client):
    response = post_json(client, LOGIN, {"email": "a" * 100_000 + "@example.com", "password": "x"})
    assert response.status_code == 400
    assert response.json()["code"] == "payload_error"


def test_create_user(client, api_token):
    response = client.post("/api/v1/users/create", {"email": " New@Example.com ", "password": "long-enough-1",
                                                    "first_name": "Eva", "phone_number": "0908 123 456"},
                           **bearer(api_token))
    assert response.status_code == 200
    body = response.json()
    user = User.objects.get(email="new@example.com")
    assert body == {
        "status": "ok",
        "user": {"id": user.pk, "uuid": str(user.uuid), "email": "new@example.com", "first_name": "Eva",
                 "last_name": None, "public_name": None, "confirmed_at": None, "roles": []},
        "access": {"token": body["access"]["token"]},
    }
    assert user.phone_number == "+421908123456"
    assert user.source == "api"
    assert user.check_password("long-enough-1")
    assert client.get("/api/v1/users/info", **bearer(body["access"]["token"])).json()["user"]["id"] == user.pk


def test_create_user_without_password_cannot_log_in(client, api_token):
    client.post("/api/v1/users/create", {"email": "nopass@example.com"}, **bearer(api_token))
    user = User.objects.get(email="nopass@example.com")
    assert not user.has_usable_password()


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        ({}, 400, "invalid_email"),
        ({"email": "not-an-email"}, 400, "invalid_email"),
        ({"email": "x@example.com", "phone_number": "123"}, 400, "invalid_phone_number"),
        ({"email": "x@example.com", "locale": "xx"}, 400, "invalid_locale"),
        ({"email": "x@example.com", "first_name": "a" * 151}, 400, "payload_error"),
        ({"email": "jana@example.com"}, 404, "email_taken"),
        ({"email": "JANA@example.com"}, 404, "email_taken"),
    ],
)
def test_create_user_refusals_write_nothing(client, api_token, user, data, status, code):
    before = User.objects.count()
    response = client.post("/api/v1/users/create", data, **bearer(api_token))
    assert response.status_code == status
    assert response.json()["code"] == code
    assert response.json()["status"] == "error"
    assert User.objects.count() == before
    assert not AccessToken.objects.exclude(user=user).exists()


def test_email_taken_with_password_check(client, api_token, user):
    ok = client.post("/api/v1/users/email", {"email": "JANA@example.com", "password": "correct-horse-1"},
                     **bearer(api_token))
    assert ok.json() == {"email": "jana@example.com", "status": "taken", "id": user.pk, "password": True}
    bad = client.post("/api/v1/users/email", {"email": "jana@example.com", "password": "nope"}, **bearer(api_token))
    assert bad.json() == {"email": "jana@example.com", "status": "taken", "id": user.pk, "password": False}


def test_email_invalid(client, api_token):
    response = client.post("/api/v1/users/email", {"email": "nope"}, **bearer(api_token))
    assert response.status_code == 400
    assert response.json() == {"status": "error", "code": "invalid_email", "message": "Invalid email"}


def test_health_is_open(client):
    assert client.get("/api/v1/health").json() == {"status": "ok"}


def test_openapi_lists_stable_operation_ids(client):
    schema = client.get("/api/v1/openapi.json").json()
    operation_ids = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {"users_login", "users_info", "user_info", "users_logout", "users_create", "users_email",
            "users_get_device_token", "health"} <= operation_ids
    assert client.get("/api/v1/docs").status_code == 200


@pytest.mark.parametrize("url", ["/api/v1/users/login", "/api/v1/users/get-device-token"])
def test_nul_characters_are_refused(client, url):
    response = post_json(client, url, {"email": "a\x00@example.com", "password": "x", "device_id": "\x00"})
    assert response.status_code == 400
    assert response.json()["code"] == "payload_error"
    assert not AccessToken.objects.exists()
