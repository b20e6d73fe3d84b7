"""Subscriptions in a real browser: a reader sees their subscription in the customer zone; staff
stops it from the admin user page (R-SUB-9) and the reader no longer has it as active."""

import re

import pytest
from django.utils import timezone, translation
from django.utils.formats import date_format
from playwright.sync_api import expect

from masthead.core import catalog
from masthead.subscriptions import services
from masthead.subscriptions.models import Subscription
from tests.e2e.conftest import PASSWORD, TIMEOUT_MS, admin_login

pytestmark = pytest.mark.e2e


def shown(value) -> str:
    """A datetime as the English customer zone shows it."""
    with translation.override("en"):
        return date_format(timezone.localtime(value), "DATETIME_FORMAT")


@pytest.fixture
def subscription(reader):
    catalog.load("content_access:\n  - name: web\n    sorting: 10\n  - name: mobile\n    sorting: 20\n")
    web, _ = services.save_subscription_type(
        code="web_month", fields={"name": "Web month", "user_label": "Digital, one month", "price": "9.90",
                                  "length": 31}, content_access=["web", "mobile"], items=[])
    return services.create_subscription(user=reader, subscription_type=web)


def test_reader_sees_subscription_and_staff_stops_it(browser, page, live_server, reader, admin_user, subscription):
    # The reader logs in and opens "My subscriptions" from the navigation.
    page.goto("/login/")
    page.fill('input[name="username"]', "reader@example.com")
    page.fill('input[name="password"]', PASSWORD)
    page.locator("main form button[type=submit]").click()
    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.locator('[data-widget="subscriptions.access"] [data-testid="access-now"]')).to_have_text(
        "web, mobile")
    page.locator("header nav a", has_text="My subscriptions").click()
    expect(page).to_have_url(f"{live_server.url}/subscriptions/")
    expect(page.locator("main h1")).to_have_text("My subscriptions")
    row = page.locator(f'[data-testid="current-subscriptions"] tr[data-subscription="{subscription.pk}"]')
    expect(row.locator("td.label")).to_have_text("Digital, one month")
    expect(row.locator("td.access")).to_have_text("web, mobile")
    expect(row.locator("td.end")).to_have_text(shown(subscription.end_time))
    expect(page.locator('[data-testid="toggle-finished"]')).to_have_count(0)

    # Staff stops it from the reader's admin page, in a browser session of their own.
    staff_context = browser.new_context(base_url=live_server.url, locale="en-US")
    staff_context.set_default_timeout(TIMEOUT_MS)
    try:
        staff = staff_context.new_page()
        admin_login(staff, "boss@example.com", PASSWORD)
        staff.goto(f"/admin/users/user/{reader.pk}/change/")
        widget = staff.locator('[data-placeholder="admin.user.detail"] [data-widget="subscriptions.user"]')
        admin_row = widget.locator(f'tr[data-subscription="{subscription.pk}"]')
        expect(admin_row.locator('[data-testid="actual"]')).to_have_text("actual subscription")
        expect(widget.locator('[data-testid="add-subscription"]')).to_have_attribute(
            "href", f"/admin/subscriptions/subscription/add/?user={reader.pk}")
        admin_row.locator('[data-testid="stop"]').click()
        expect(staff.locator('[data-testid="stop-question"]')).to_have_text(
            "Stop the subscription Web month of reader@example.com?")
        staff.locator('[data-testid="confirm-stop"]').click()
        expect(staff).to_have_url(f"{live_server.url}/admin/users/user/{reader.pk}/change/")
        expect(staff.locator("ul.messagelist li.success")).to_have_text(
            "Subscription Web month of reader@example.com stopped.")
        expect(admin_row.locator('[data-testid="actual"]')).to_have_count(0)
        expect(admin_row.locator('[data-testid="stop"]')).to_have_count(0)
    finally:
        staff_context.close()

    stopped = Subscription.objects.get(pk=subscription.pk)
    assert stopped.end_time < subscription.end_time
    assert stopped.meta.filter(key="expired_by_admin", value="1").exists()

    # The reader no longer has it as active; it is among the finished ones.
    page.reload()
    expect(page.locator('[data-testid="current-subscriptions"]')).to_have_count(0)
    expect(page.locator('[data-testid="no-subscriptions"]')).to_have_text(
        "You have no active or upcoming subscriptions.")
    page.locator('[data-testid="toggle-finished"]').click()
    expect(page).to_have_url(re.compile(r"/subscriptions/\?show=all$"))
    finished = page.locator(f'[data-testid="finished-subscriptions"] tr[data-subscription="{subscription.pk}"]')
    expect(finished.locator("td.end")).to_have_text(shown(stopped.end_time))
    page.goto("/")
    expect(page.locator('[data-widget="subscriptions.access"] [data-testid="access-now"]')).to_have_text(
        "You have no access right now.")
