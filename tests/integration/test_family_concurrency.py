"""Concurrent activations of family codes on PostgreSQL (R-FAM-11, house rule 5).

50 readers activate one code at the same moment: the request's row lock (``select_for_update`` in
``family.services.activate``) lets exactly one win; the 49 others wait on the lock, then see the
code ``accepted`` and get ``family_request_wrong_status`` (409) with nothing written. 20 readers
activating 20 different codes of one parent at once all succeed, without a deadlock.

Each reader runs in its own thread with its own database connection (Django connections are per
thread); every connection is opened before a barrier releases them all together.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection, connections

from masthead.core import events as bus
from masthead.family import events, services
from masthead.family.models import FamilyRequest, FamilySubscriptionType
from masthead.family.services import FamilyError
from masthead.payments.models import PaymentGateway
from masthead.subscriptions.models import Subscription
from masthead.users import services as user_services
from tests.conftest import require_service
from tests.family.conftest import buy, make_type

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

R = FamilyRequest
RACERS = 50  # readers racing for one code
SEATS = 20  # codes of one parent activated at once, one reader each


@pytest.fixture
def postgres(transactional_db):
    require_service("PostgreSQL", connection.vendor == "postgresql")


@pytest.fixture
def family_parent(postgres):
    """A running parent subscription (bought through a payment) carrying SEATS unused codes."""
    # a transactional test may run after another one flushed the seeded rows
    PaymentGateway.objects.get_or_create(code="free", defaults={"name": "Free", "is_recurrent": False})
    child_type = make_type("family_child", price="0", items=[], access=("web", "mobile"))
    parent_type = make_type("family_parent", price="50.00", access=("web", "mobile"))
    FamilySubscriptionType.objects.create(master_subscription_type=parent_type, slave_subscription_type=child_type,
                                          donation_method="copy", count=SEATS, is_paid=True)
    owner = user_services.create_user(email="parent@example.com")
    parent = buy(owner, parent_type).subscription
    assert R.objects.filter(master_subscription=parent, status=R.CREATED).count() == SEATS
    return parent


@pytest.fixture
def accepted_events():
    seen: list[events.FamilyRequestAccepted] = []
    lock = threading.Lock()

    def record(event):
        with lock:
            seen.append(event)

    bus.subscribe(events.FamilyRequestAccepted, record)
    yield seen
    bus.unsubscribe(events.FamilyRequestAccepted, record)


def _readers(count: int, tag: str) -> list:
    return [user_services.create_user(email=f"{tag}{k}@example.com") for k in range(count)]


def _race(count: int, target) -> tuple[list, list[int]]:
    """Run ``target(k)`` in ``count`` threads released together by a barrier, each on its own
    connection (opened before the barrier). Returns each thread's outcome — ``("ok", value)`` or
    ``("error", exception)`` — and the PostgreSQL backend pid each thread used."""
    barrier = threading.Barrier(count)
    outcomes: list = [None] * count
    pids: list = [None] * count

    def run(k):
        try:
            with connection.cursor() as cursor:  # this thread's own connection, opened now
                cursor.execute("SELECT pg_backend_pid()")
                pids[k] = cursor.fetchone()[0]
            barrier.wait(timeout=60)
            outcomes[k] = ("ok", target(k))
        except BaseException as exc:  # noqa: BLE001 (asserted by the test)
            outcomes[k] = ("error", exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(k,), name=f"reader-{k}") for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a reader hung (lock wait or deadlock)"
    return outcomes, pids


def test_fifty_readers_racing_for_one_code_make_one_child(family_parent, accepted_events):
    """R-FAM-11 step 3 under a race: one winner, 49 × 409 wrong_status, one child subscription."""
    parent = family_parent
    request = R.objects.filter(master_subscription=parent, status=R.CREATED).order_by("pk").first()
    readers = _readers(RACERS, "racer")
    subscriptions_before = Subscription.objects.count()
    codes_before = dict(R.objects.values_list("pk", "status"))

    outcomes, pids = _race(RACERS, lambda k: services.activate(user=readers[k], code=request.code))

    assert len(set(pids)) == RACERS  # every reader had its own connection
    winners = [k for k, (kind, _) in enumerate(outcomes) if kind == "ok"]
    losers = [value for kind, value in outcomes if kind == "error"]
    assert len(winners) == 1, f"winners: {winners}, errors: {Counter(type(e).__name__ for e in losers)}"
    assert len(losers) == RACERS - 1
    assert {type(exc) for exc in losers} == {FamilyError}, [repr(e) for e in losers if type(e) is not FamilyError]
    assert Counter((exc.code, exc.status) for exc in losers) == {("family_request_wrong_status", 409): RACERS - 1}
    assert {exc.message for exc in losers} == {
        f"Family request code [{request.code}] has wrong status: accepted"}
    winner = readers[winners[0]]

    # the request: accepted by the winner, pointing at the one child subscription
    request.refresh_from_db()
    assert (request.status, request.slave_user_id) == (R.ACCEPTED, winner.pk)
    assert request.accepted_at is not None and request.canceled_at is None
    children = Subscription.objects.filter(type="family")
    assert list(children.values_list("pk", flat=True)) == [request.slave_subscription_id]
    child = children.get()
    assert (child.user_id, child.subscription_type_id) == (winner.pk, request.subscription_type_id)
    assert (child.start_time, child.end_time) == (parent.start_time, parent.end_time)
    assert R.objects.filter(slave_subscription__isnull=False).count() == 1

    # nothing else written: one subscription more, no code created, canceled or taken besides this one
    assert Subscription.objects.count() == subscriptions_before + 1
    assert not Subscription.objects.filter(user_id__in=[r.pk for r in readers]).exclude(user=winner).exists()
    assert dict(R.objects.values_list("pk", "status")) == {**codes_before, request.pk: R.ACCEPTED}
    assert Counter(R.objects.filter(master_subscription=parent).values_list("status", flat=True)) == {
        R.CREATED: SEATS - 1, R.ACCEPTED: 1}
    assert [(e.request_id, e.slave_user_id, e.slave_subscription_id) for e in accepted_events] == [
        (request.pk, winner.pk, child.pk)]


def test_twenty_readers_activating_twenty_codes_of_one_parent_all_succeed(family_parent, accepted_events):
    """Different codes lock different rows: all SEATS activations succeed at once, no deadlock."""
    parent = family_parent
    codes = list(R.objects.filter(master_subscription=parent, status=R.CREATED).order_by("pk")
                 .values_list("code", flat=True))
    assert len(codes) == SEATS
    readers = _readers(SEATS, "seat")
    subscriptions_before = Subscription.objects.count()

    outcomes, pids = _race(SEATS, lambda k: services.activate(user=readers[k], code=codes[k]))

    assert len(set(pids)) == SEATS
    errors = [value for kind, value in outcomes if kind == "error"]
    assert errors == []
    seats = {r.code: r for r in R.objects.filter(master_subscription=parent)}
    assert Counter(r.status for r in seats.values()) == {R.ACCEPTED: SEATS}
    assert {code: seats[code].slave_user_id for code in codes} == {
        code: reader.pk for code, reader in zip(codes, readers, strict=True)}
    children = Subscription.objects.filter(type="family")
    assert children.count() == SEATS
    assert set(children.values_list("pk", flat=True)) == {r.slave_subscription_id for r in seats.values()}
    assert Counter(children.values_list("user_id", flat=True)) == Counter({reader.pk: 1 for reader in readers})
    assert set(children.values_list("start_time", "end_time")) == {(parent.start_time, parent.end_time)}
    assert Subscription.objects.count() == subscriptions_before + SEATS
    assert R.objects.filter(master_subscription=parent).count() == SEATS  # no code added or replaced
    assert sorted(e.request_id for e in accepted_events) == sorted(r.pk for r in seats.values())
