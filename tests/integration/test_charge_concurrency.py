"""Two charge runs at once on PostgreSQL never charge one row twice (R-REC-6, house rule 5); two
confirmations of one payment at once make one subscription (R-PAY-5).

The runs are real concurrent transactions (threads with their own connections) against the test
database; each run also charges with worker threads of its own.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection, connections

from masthead.payments import gateways, services
from masthead.payments.gateways.fake_card import token_for
from masthead.payments.models import Payment, PaymentGateway, RecurrentPayment
from masthead.subscriptions.models import Subscription
from masthead.subscriptions.services import ItemSpec, save_subscription_type
from masthead.users import services as user_services
from tests.conftest import require_service

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ROWS = 200
NOW = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)


@pytest.fixture
def postgres(transactional_db):
    require_service("PostgreSQL", connection.vendor == "postgresql")


@pytest.fixture
def card_world(postgres, settings):
    """ROWS readers, each with a paid first payment and a profile due at NOW + 30 days."""
    settings.FAKE_CARD_LATENCY_MS = 2
    settings.FAKE_CARD_DECLINES = ""
    settings.FASTCHARGE_THRESHOLD_HOURS = 24
    settings.CHARGE_RUN_MINUTES = 15
    # a transactional test may run after another one flushed the seeded rows
    PaymentGateway.objects.get_or_create(code="fake_card", defaults={"name": "Card simulator", "is_recurrent": True})
    subscription_type, _ = save_subscription_type(
        code="monthly", fields={"name": "Monthly", "user_label": "Monthly", "price": "10.00", "length": 30},
        content_access=[], items=[ItemSpec("Monthly", "10.00", "20")])
    adapter = gateways.get("fake_card")
    adapter.reset()
    with time_machine.travel(NOW, tick=False):
        for k in range(ROWS):
            user = user_services.create_user(email=f"reader{k}@example.com")
            payment = services.create_payment(user=user, gateway="fake_card", subscription_type=subscription_type)
            services.confirm(payment=payment, cid=token_for(f"4242{k:012d}"))
    assert RecurrentPayment.objects.filter(state="active").count() == ROWS
    yield adapter
    adapter.reset()


def _in_threads(count: int, target) -> list:
    """Run ``target(k)`` in ``count`` threads started together; their results (exceptions re-raised)."""
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list = []

    def run(k):
        try:
            barrier.wait(timeout=30)
            results[k] = target(k)
        except BaseException as exc:  # noqa: BLE001 (re-raised below)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_two_charge_runs_charge_every_row_exactly_once(card_world, worker_type):
    """Each run charges with 2 workers of its own: threads (time frozen at the due time, the simulator
    of this process counts every call) or spawned processes (real time; each has its own simulator, so
    the database is the witness)."""
    adapter = card_world
    first_rows = set(RecurrentPayment.objects.values_list("pk", flat=True))

    def run(k):
        return services.charge_due(workers=2, worker_type=worker_type, batch_size=20)

    if worker_type == "thread":
        with time_machine.travel(NOW + timedelta(days=30), tick=False):
            runs = _in_threads(2, run)
    else:
        runs = _in_threads(2, run)  # the rows fell due in 2024
    assert sum(run.claimed for run in runs) == ROWS
    assert sum(run["charged"] for run in runs) == ROWS
    assert all(set(run.outcomes) <= {"charged"} for run in runs)
    if worker_type == "thread":
        # the gateway: one call and one charge per row, every idempotency key and card once
        assert adapter.calls == ROWS
        keys = [key for key, _token, _amount in adapter.charges]
        assert len(keys) == ROWS and len(set(keys)) == ROWS
        assert len({token for _key, token, _amount in adapter.charges}) == ROWS
    else:
        assert adapter.calls == 0  # all charged in the worker processes
    # the database: every first row charged once, with its own paid payment
    charged = RecurrentPayment.objects.filter(pk__in=first_rows)
    assert Counter(charged.values_list("state", flat=True)) == {"charged": ROWS}
    payment_ids = list(charged.values_list("payment_id", flat=True))
    assert len(set(payment_ids)) == ROWS
    recurrent = Payment.objects.filter(recurrent_charge=True)
    assert recurrent.count() == ROWS
    assert Counter(recurrent.values_list("status", flat=True)) == {"paid": ROWS}
    assert max(Counter(recurrent.values_list("user_id", flat=True)).values()) == 1
    assert Subscription.objects.count() == 2 * ROWS
    # and every reader has exactly one next row, active
    following = RecurrentPayment.objects.exclude(pk__in=first_rows)
    assert following.count() == ROWS
    assert Counter(following.values_list("state", flat=True)) == {"active": ROWS}
    assert max(Counter(following.values_list("user_id", flat=True)).values()) == 1


def test_concurrent_confirmations_make_one_subscription(postgres):
    PaymentGateway.objects.get_or_create(code="free", defaults={"name": "Free", "is_recurrent": False})
    subscription_type, _ = save_subscription_type(
        code="monthly", fields={"name": "Monthly", "user_label": "Monthly", "price": "10.00", "length": 30},
        content_access=[], items=[])
    user = user_services.create_user(email="twice@example.com")
    payments = [services.create_payment(user=user, gateway="free", subscription_type=subscription_type)
                for _ in range(5)]

    def confirm_all(k):
        for payment in payments:
            services.confirm(payment=Payment.objects.get(pk=payment.pk))

    _in_threads(4, confirm_all)
    assert Subscription.objects.filter(user=user).count() == 5
    assert sorted(Payment.objects.values_list("subscription_id", flat=True)) == sorted(
        Subscription.objects.values_list("pk", flat=True))
