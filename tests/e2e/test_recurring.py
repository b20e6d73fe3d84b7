"""Recurring payments in a real browser: a reader whose subscription was paid by card (fake_card) sees it
in the customer zone, opens "My recurring payments" and stops the recurring charge (R-REC-16)."""

import importlib

import pytest
from django.apps import apps
from django.utils import timezone, translation
from django.utils.formats import date_format
from playwright.sync_api import expect

from masthead.core import catalog
from masthead.payments import services as payment_services
from masthead.payments.gateways.fake_card import token_for
from masthead.payments.models import RecurrentPayment
from masthead.subscriptions import services as subscription_services
from masthead.subscriptions.models import Subscription
from tests.e2e.conftest import PASSWORD

pytestmark = pytest.mark.e2e


def shown(value) -> str:
    """A datetime as the English customer zone shows it."""
    with translation.override("en"):
        return date_format(timezone.localtime(value), "DATETIME_FORMAT")


@pytest.fixture
def recurring(reader):
    """A paid card payment (its subscription) and the recurrent profile it schedules, through the services."""
    # live_server tests flush the database, seeded rows included: seed the gateways again, as the migration does
    importlib.import_module("masthead.payments.migrations.0002_seed_gateways").seed(apps, None)
    catalog.load("content_access:\n  - name: web\n    sorting: 10\n")
    web, _ = subscription_services.save_subscription_type(
        code="web_month", fields={"name": "Web month", "user_label": "Digital, one month", "price": "9.90",
                                  "length": 31}, content_access=["web"], items=[])
    payment = payment_services.create_payment(user=reader, gateway="fake_card", subscription_type=web)
    payment = payment_services.confirm(payment=payment)
    profile = payment_services.create_recurrent_payment(payment=payment, cid=token_for("4242424242424242"))
    return {"subscription": Subscription.objects.get(pk=payment.subscription_id), "profile": profile}


def test_reader_stops_recurring_payment(page, live_server, reader, recurring):
    subscription, profile = recurring["subscription"], recurring["profile"]
    assert profile.state == RecurrentPayment.ACTIVE

    page.goto("/login/")
    page.fill('input[name="username"]', "reader@example.com")
    page.fill('input[name="password"]', PASSWORD)
    page.locator("main form button[type=submit]").click()
    expect(page).to_have_url(f"{live_server.url}/")

    # The paid subscription is on "My subscriptions".
    page.locator("header nav a", has_text="My subscriptions").click()
    expect(page).to_have_url(f"{live_server.url}/subscriptions/")
    row = page.locator(f'[data-testid="current-subscriptions"] tr[data-subscription="{subscription.pk}"]')
    expect(row.locator("td.label")).to_have_text("Digital, one month")
    expect(row.locator("td.end")).to_have_text(shown(subscription.end_time))

    # "My recurring payments" shows the card's next charge, and stops it.
    page.locator("header nav a", has_text="My recurring payments").click()
    expect(page).to_have_url(f"{live_server.url}/recurring/")
    expect(page.locator("main h1")).to_have_text("My recurring payments")
    recurring_row = page.locator(f'[data-testid="recurring-payments"] tr[data-recurrent="{profile.pk}"]')
    expect(recurring_row.locator("td.label")).to_have_text("Digital, one month")
    expect(recurring_row.locator("td.charge")).to_have_text(shown(profile.charge_at))
    expect(recurring_row.locator("td.amount")).to_have_text("9.90")
    expect(recurring_row.locator("td.state")).to_have_text("active")

    recurring_row.locator('[data-testid="stop"]').click()
    expect(page).to_have_url(f"{live_server.url}/recurring/")
    expect(page.locator(".messages li.success")).to_have_text(
        "The recurring payment is stopped: you will not be charged again. Your subscription lasts until its end.")
    expect(recurring_row.locator("td.state")).to_have_text("stopped")
    expect(recurring_row.locator("td.charge")).to_have_text("—")
    expect(recurring_row.locator('[data-testid="stop"]')).to_have_count(0)
    expect(recurring_row.locator('[data-testid="reactivate"]')).to_have_count(1)

    stopped = RecurrentPayment.objects.get(pk=profile.pk)
    assert (stopped.state, stopped.charge_at) == (RecurrentPayment.USER_STOP, profile.charge_at)
    # The subscription itself runs to its end.
    assert Subscription.objects.get(pk=subscription.pk).end_time == subscription.end_time
