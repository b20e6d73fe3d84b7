"""Admin in a real browser: login, dashboard widgets, user pages, API tokens."""

import re

import httpx
import pytest
from playwright.sync_api import expect

from masthead.users import services
from masthead.users.models import ApiToken, User
from tests.e2e.conftest import PASSWORD, admin_login

pytestmark = pytest.mark.e2e

ADMIN_LOGIN_ERROR = ("Please enter the correct e-mail and password for a staff account. "
                     "Note that both fields may be case-sensitive.")


def test_admin_login_dashboard_user_list_and_user_page(page, live_server, admin_user):
    anna = services.create_user(email="anna@example.com", password=PASSWORD, first_name="Anna")
    services.create_user(email="bob@example.com", password=PASSWORD, first_name="Bob")
    _token, access_token = services.issue_access_token(user=anna, source="e2e")
    total = User.objects.count()
    assert total == 3

    admin_login(page, "boss@example.com", PASSWORD)

    # The dashboard (admin index) with the widgets apps registered into "admin.dashboard".
    expect(page).to_have_url(f"{live_server.url}/admin/")
    expect(page.locator("#content h1")).to_have_text("Dashboard")
    dashboard = page.locator('[data-placeholder="admin.dashboard"]')
    users_widget = dashboard.locator('[data-widget="users.counts"]')
    expect(users_widget).to_be_visible()
    expect(users_widget.locator("h2")).to_have_text("Users")
    expect(users_widget.locator('[data-testid="users-total"]')).to_have_text(str(total))
    worker_widget = dashboard.locator('[data-widget="core.worker"]')
    expect(worker_widget).to_be_visible()
    expect(worker_widget.locator("h2")).to_have_text("Background worker")
    expect(worker_widget.locator("p.mh-bad")).to_have_text("No heartbeat handled yet: is the worker running?")

    # The user list, newest first.
    page.goto("/admin/users/user/")
    expect(page.locator("#result_list tbody tr")).to_have_count(3)
    expect(page.locator("#result_list tbody th.field-email a")).to_have_text(
        ["bob@example.com", "anna@example.com", "boss@example.com"])

    # One user's change page shows the "admin.user.detail" placeholder with the live tokens widget.
    page.locator("#result_list th.field-email a", has_text="anna@example.com").click()
    expect(page).to_have_url(f"{live_server.url}/admin/users/user/{anna.pk}/change/")
    expect(page.locator("#id_email")).to_have_value("anna@example.com")
    detail = page.locator('[data-placeholder="admin.user.detail"]')
    tokens_widget = detail.locator('[data-widget="users.tokens"]')
    expect(tokens_widget).to_be_visible()
    expect(tokens_widget.locator("h2")).to_have_text("Live user tokens (1)")
    expect(tokens_widget.locator("tbody tr")).to_have_count(1)
    expect(tokens_widget.locator("tbody tr td").nth(0)).to_have_text(f"{access_token.token_hint}…")
    expect(tokens_widget.locator("tbody tr td").nth(1)).to_have_text("e2e")
    expect(tokens_widget.locator("a", has_text="Manage tokens")).to_have_attribute(
        "href", f"/admin/users/accesstoken/?user__id__exact={anna.pk}")


def test_admin_login_refuses_wrong_password_and_non_staff(page, live_server, admin_user, reader):
    admin_login(page, "boss@example.com", "wrong-password")
    expect(page).to_have_url(f"{live_server.url}/admin/login/")
    expect(page.locator(".errornote")).to_have_text(ADMIN_LOGIN_ERROR)
    expect(page.locator("#id_username")).to_have_value("boss@example.com")

    # A reader with the right password is not staff: same refusal, still on the login page.
    admin_login(page, "reader@example.com", PASSWORD)
    expect(page).to_have_url(f"{live_server.url}/admin/login/")
    expect(page.locator(".errornote")).to_have_text(ADMIN_LOGIN_ERROR)

    # And the admin stays closed to this browser.
    page.goto("/admin/")
    expect(page).to_have_url(f"{live_server.url}/admin/login/?next=/admin/")
    expect(page.locator('[data-placeholder="admin.dashboard"]')).to_have_count(0)


def test_admin_creates_api_token_shown_once_and_whitelisted(page, live_server, admin_user):
    admin_login(page, "boss@example.com", PASSWORD)
    expect(page).to_have_url(f"{live_server.url}/admin/")

    page.goto("/admin/users/apitoken/add/")
    page.fill("#id_name", "newsletter-backend")
    endpoint = page.locator('input[name="endpoints"][value="users_email"]')
    endpoint.check()
    expect(endpoint).to_be_checked()
    expect(page.locator('input[name="endpoints"]:checked')).to_have_count(1)
    page.click('input[name="_save"]')

    expect(page).to_have_url(f"{live_server.url}/admin/users/apitoken/")
    warning = page.locator(".messagelist li.warning")
    expect(warning).to_have_count(1)
    match = re.fullmatch(r"Copy the token now, it is not shown again: ([0-9a-f]{32})", warning.inner_text().strip())
    assert match, warning.inner_text()
    token = match.group(1)
    assert page.content().count(token) == 1
    assert page.locator("body").inner_text().count(token) == 1

    api_token = ApiToken.objects.get(name="newsletter-backend")
    assert api_token.endpoints == ["users_email"]
    assert api_token.all_endpoints is False
    assert api_token.token_hash == services.hash_token(token)
    assert api_token.token_hint == token[:6]

    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=live_server.url, timeout=10) as http:
        allowed = http.post("/api/v1/users/email", data={"email": "x@example.com"}, headers=headers)
        assert allowed.status_code == 200, allowed.text
        assert allowed.json() == {"email": "x@example.com", "status": "available", "id": None, "password": None}

        refused = http.post("/api/v1/users/create", data={"email": "x@example.com", "password": PASSWORD},
                            headers=headers)
        assert refused.status_code == 403, refused.text
        assert refused.json()["message"] == "Not authorized: Token has no access to resource [users_create]"

    assert not User.objects.filter(email="x@example.com").exists()
