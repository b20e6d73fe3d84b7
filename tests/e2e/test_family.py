"""Family codes in a real browser: the parent copies a code's link from "My subscriptions", a new reader
opens it in another browser, creates an account, activates and has web access; the parent sees the seat
taken, then revokes it (R-FAM-5, R-FAM-11/12, R-FAM-15, R-FAM-16)."""

import importlib

import pytest
from django.apps import apps
from django.utils import timezone, translation
from django.utils.formats import date_format
from playwright.sync_api import expect

from masthead.core import catalog
from masthead.family.models import FamilyRequest, FamilySubscriptionType
from masthead.subscriptions.models import Subscription
from masthead.users import services as user_services
from masthead.users.models import User
from tests.e2e.conftest import PASSWORD, TIMEOUT_MS
from tests.family.conftest import buy, make_type

pytestmark = pytest.mark.e2e


def shown(value) -> str:
    """A datetime as the English customer zone shows it."""
    with translation.override("en"):
        return date_format(timezone.localtime(value), "DATETIME_FORMAT")


@pytest.fixture
def parent(live_server):
    """Petra's running family pack (two seats of a web child type), bought through the services."""
    # live_server tests flush the database, seeded rows included: seed the gateways again, as the migration does
    importlib.import_module("masthead.payments.migrations.0002_seed_gateways").seed(apps, None)
    catalog.load("content_access:\n  - name: web\n    sorting: 10\n")
    child_type = make_type("family_web", price="0", items=[], user_label="Digital for the family")
    pack = make_type("family_pack", price="30.00", user_label="Family pack")
    FamilySubscriptionType.objects.create(master_subscription_type=pack, slave_subscription_type=child_type,
                                          donation_method="copy", count=2)
    owner = user_services.create_user(email="petra@example.com", password=PASSWORD, first_name="Petra",
                                      last_name="Rodic")
    return buy(owner, pack).subscription


def log_in(page, email: str) -> None:
    page.goto("/login/")
    page.fill('input[name="username"]', email)
    page.fill('input[name="password"]', PASSWORD)
    page.locator("main form button[type=submit]").click()
    page.wait_for_load_state()


def test_a_shared_code_from_copy_to_activation_to_revoke(browser, context, page, live_server, parent):
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    first, second = FamilyRequest.objects.filter(master_subscription=parent).order_by("pk")
    link = f"{live_server.url}/family/activate/{first.code}/"

    # The parent copies the first code's link from "My subscriptions".
    log_in(page, "petra@example.com")
    page.locator("header nav a", has_text="My subscriptions").click()
    section = page.locator(f'[data-testid="family-codes"][data-subscription="{parent.pk}"]')
    expect(section.locator("h2")).to_have_text("Share Family pack")
    expect(section.locator("p.seats")).to_contain_text("0 of 2 seats in use.")
    row = section.locator(f'tr[data-code="{first.code}"]')
    expect(row.locator('[data-testid="activation-url"]')).to_have_value(link)
    expect(row.locator("td.status")).to_have_text("unused")
    expect(row.locator('[data-testid="revoke"]')).to_have_count(0)
    expect(row.locator('[data-testid="copied"]')).to_be_hidden()
    row.locator('[data-testid="copy"]').click()
    expect(row.locator('[data-testid="copied"]')).to_be_visible()
    expect(row.locator('[data-testid="copied"]')).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == link

    # A new reader opens the link in a browser of their own, creates an account and activates.
    other = browser.new_context(base_url=live_server.url, locale="en-US")
    other.set_default_timeout(TIMEOUT_MS)
    try:
        reader = other.new_page()
        reader.goto(link)
        expect(reader.locator("main h1")).to_have_text("Petra Rodic shares a subscription with you")
        expect(reader.locator('[data-testid="login"]')).to_have_attribute(
            "href", f"/login/?next=/family/activate/{first.code}/")
        signup = reader.locator('[data-testid="signup"]')
        signup.locator('input[name="email"]').fill("nova@example.com")
        signup.locator('input[name="password"]').fill("short")
        signup.locator("button[type=submit]").click()
        expect(signup.locator(".errorlist")).to_have_text(
            "This password is too short. It must contain at least 8 characters.")
        assert not User.objects.filter(email="nova@example.com").exists()

        signup.locator('input[name="password"]').fill(PASSWORD)
        signup.locator('input[name="first_name"]').fill("Nova")
        signup.locator("button[type=submit]").click()
        expect(reader).to_have_url(link)
        expect(reader.locator('[data-testid="whoami"]')).to_have_text("nova@example.com")
        reader.locator('[data-testid="activate"]').click()

        expect(reader.locator("main h1")).to_have_text("Your shared subscription is active")
        child = Subscription.objects.get(user__email="nova@example.com")
        table = reader.locator('[data-testid="family-subscription"]')
        expect(table.locator("td.access")).to_have_text("web")
        expect(table.locator("td.start")).to_have_text(shown(parent.start_time))
        expect(table.locator("td.end")).to_have_text(shown(parent.end_time))
        assert (child.start_time, child.end_time) == (parent.start_time, parent.end_time)
        reader.goto("/")
        expect(reader.locator('[data-testid="access-now"]')).to_have_text("web")

        # The parent sees the seat taken by Nova.
        page.reload()
        expect(row.locator("td.status")).to_have_text("accepted")
        accepted_at = FamilyRequest.objects.get(pk=first.pk).accepted_at
        expect(row.locator("td.holder")).to_have_text(f"Nova since {shown(accepted_at)}")
        expect(section.locator("p.seats")).to_contain_text("1 of 2 seats in use.")

        # Revoking asks first: dismissed, nothing happens; accepted, the seat is free and Nova's access ends.
        page.once("dialog", lambda dialog: dialog.dismiss())
        row.locator('[data-testid="revoke"]').click()
        expect(row.locator("td.status")).to_have_text("accepted")
        assert FamilyRequest.objects.get(pk=first.pk).status == FamilyRequest.ACCEPTED

        questions = []

        def accept(dialog):
            questions.append(dialog.message)
            dialog.accept()

        page.once("dialog", accept)
        row.locator('[data-testid="revoke"]').click()
        expect(page.locator(".messages li.success")).to_have_text(
            "The seat is free again: its holder no longer has access. A new code replaces the old one.")
        assert questions == ["Revoke the seat of Nova? Their access ends now."]
        expect(row).to_have_count(0)
        expect(section.locator("tr[data-code]")).to_have_count(2)
        expect(section.locator('tr[data-status="created"]')).to_have_count(2)
        expect(section.locator(f'tr[data-code="{second.code}"]')).to_have_count(1)
        assert FamilyRequest.objects.get(pk=first.pk).status == FamilyRequest.CANCELED

        reader.reload()
        expect(reader.locator('[data-testid="access-now"]')).to_have_text("You have no access right now.")
        reader.goto(link)
        expect(reader.locator("main h1")).to_have_text("This code is no longer valid")
    finally:
        other.close()
