"""Admin forms and actions for users and tokens go through the services and refuse bad input."""

import re

import pytest

from masthead.users import services
from masthead.users.models import AccessToken, ApiToken, User

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user(email="boss@example.com", is_superuser=True))
    return client


def test_add_user_goes_through_the_service(staff_client):
    response = staff_client.post("/admin/users/user/add/", {
        "email": "New@Example.com", "password1": "long-enough-1", "first_name": "Eva", "last_name": "",
        "phone_number": "0908 123 456", "locale": "sk"})
    assert response.status_code == 302
    user = User.objects.get(email="new@example.com")
    assert (user.source, user.phone_number, user.locale) == ("admin", "+421908123456", "sk")
    assert user.password.startswith("argon2$") and user.check_password("long-enough-1")


@pytest.mark.parametrize(("fields", "error"), [
    ({"email": "BOSS@example.com"}, "User with this E-mail already exists."),
    ({"email": "x@example.com", "phone_number": "12"}, "Not a valid phone number: 12"),
    ({"email": "not-an-email"}, "Enter a valid email address."),
])
def test_add_user_refusals_are_form_errors(staff_client, fields, error):
    before = User.objects.count()
    response = staff_client.post("/admin/users/user/add/", {"password1": "", "first_name": "", "last_name": "",
                                                            "phone_number": "", "locale": "en", **fields})
    assert response.status_code == 200
    assert error in response.content.decode()
    assert User.objects.count() == before


def test_api_token_add_shows_token_once_and_stores_hash(staff_client):
    response = staff_client.post("/admin/users/apitoken/add/", {
        "name": "paywall", "active": "on", "ip_restrictions": "10.0.0.0/8", "endpoints": ["users_email"]},
        follow=True)
    html = response.content.decode()
    tokens = re.findall(r"not shown again: ([0-9a-f]{32})", html)
    assert len(tokens) == 1
    row = ApiToken.objects.get(name="paywall")
    assert row.token_hash == services.hash_token(tokens[0])
    assert (row.endpoints, row.ip_restrictions, row.all_endpoints) == (["users_email"], "10.0.0.0/8", False)
    # a second visit does not show it again
    assert tokens[0] not in staff_client.get(f"/admin/users/apitoken/{row.pk}/change/").content.decode()
    # and no cookie carries it
    assert all(tokens[0] not in morsel.value for morsel in staff_client.cookies.values())


def test_api_token_bad_ip_restrictions_is_a_form_error(staff_client):
    response = staff_client.post("/admin/users/apitoken/add/", {"name": "x", "ip_restrictions": "999.1.1.1"})
    assert response.status_code == 200
    assert "does not appear to be an IPv4 or IPv6 network" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_active_api_token_cannot_be_deleted_in_admin(staff_client):
    _, row = services.create_api_token(name="live", all_endpoints=True)
    assert staff_client.post(f"/admin/users/apitoken/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ApiToken.objects.filter(pk=row.pk).exists()


def test_revoke_user_tokens_action(staff_client, user):
    token, row = services.issue_access_token(user=user)
    other, _ = services.issue_access_token(user=user)
    response = staff_client.post("/admin/users/accesstoken/", {"action": "revoke", "_selected_action": [row.pk]})
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.revoked_at is not None
    assert staff_client.get("/api/v1/users/info", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 403
    assert staff_client.get("/api/v1/users/info", HTTP_AUTHORIZATION=f"Bearer {other}").status_code == 200
    assert AccessToken.objects.filter(revoked_at__isnull=True).count() == 1
