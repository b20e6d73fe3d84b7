"""Payments test plumbing: frozen time, subscription types, gateways, paid payments with a card, events."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine

from masthead.core import events as bus
from masthead.payments import gateways, services
from masthead.payments.gateways.fake_card import token_for
from masthead.payments.models import PaymentGateway
from masthead.subscriptions import services as subscription_services
from masthead.subscriptions.services import ItemSpec as TypeItem

NOW = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)  # no DST change within 60 days
GOOD_CARD = token_for("4242424242424242")
SOFT_DECLINE = token_for("4000000000000002")   # fail_try insufficient_funds
HARD_DECLINE = token_for("4000000000000069")   # fail_stop expired_card
GATEWAY_DOWN = token_for("4000000000000119")   # error
PENDING_CARD = token_for("4000000000000077")   # pending


@pytest.fixture
def clock():
    """Time frozen at NOW; ``clock.move_to(when)`` moves it."""
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def make_type(code="monthly", *, price="10.00", length=30, items=None, **fields):
    subscription_type, _ = subscription_services.save_subscription_type(
        code=code, fields={"name": code.title(), "user_label": code.title(), "price": price, "length": length,
                           **fields},
        content_access=[], items=[TypeItem(*i) for i in (items or [(code.title(), price, "20")])])
    return subscription_type


@pytest.fixture
def monthly(db):
    return make_type()


@pytest.fixture
def card_gateway(db):
    return PaymentGateway.objects.get(code="fake_card")


@pytest.fixture
def free_gateway(db):
    return PaymentGateway.objects.get(code="free")


@pytest.fixture
def fake_card():
    """The process's fake_card adapter, emptied before and after the test."""
    adapter = gateways.get("fake_card")
    adapter.reset()
    yield adapter
    adapter.reset()


@pytest.fixture
def settings_charges(settings):
    settings.RECURRENT_PAYMENT_CHARGES = "PT15M, PT6H, PT6H, PT6H, PT6H"
    settings.RECURRENT_GATEWAY_FAIL_DELAY = "PT1H"
    settings.RECURRENT_CHARGE_BEFORE_HOURS = ""
    settings.FASTCHARGE_THRESHOLD_HOURS = 24
    settings.CHARGE_RUN_MINUTES = 15
    settings.FAKE_CARD_LATENCY_MS = 0
    return settings


def paid_with_card(user, subscription_type, *, card=GOOD_CARD, **payment_fields):
    """A first payment on fake_card, confirmed with a card token: payment, subscription and profile."""
    payment = services.create_payment(user=user, gateway="fake_card", subscription_type=subscription_type,
                                      **payment_fields)
    payment = services.confirm(payment=payment, cid=card)
    return payment


@pytest.fixture
def recorded():
    """``watch(EventType, ...)`` records those events (synchronous handlers) into the returned list."""
    seen: list = []
    registered: list = []

    def handler(event):
        seen.append(event)

    def watch(*types):
        for event_type in types:
            bus.subscribe(event_type, handler)
            registered.append(event_type)
        return seen

    yield watch
    for event_type in registered:
        bus.unsubscribe(event_type, handler)


def money(value: str) -> Decimal:
    return Decimal(value)
