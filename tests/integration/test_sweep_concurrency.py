"""Two status sweeps at once on PostgreSQL (R-SUB-7): every due subscription changes status once
and each transition is announced exactly once, by one of the two sweepers.

Each sweeper runs in its own thread with its own database connection (Django connections are per
thread) and a small batch size, so the two interleave over many ``UPDATE … FOR UPDATE SKIP
LOCKED … RETURNING`` batches.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection

from masthead.core import catalog, clock
from masthead.core import events as bus
from masthead.subscriptions import events, services
from masthead.subscriptions.models import Subscription
from masthead.users.models import User
from tests.conftest import require_service

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

S = Subscription
TO_START, TO_END, BOTH, NOT_DUE = 800, 700, 500, 200  # 2000 due rows
BATCH = 100
SWEEPERS = 2


def test_concurrent_sweeps_announce_each_transition_once():
    require_service("PostgreSQL", connection.vendor == "postgresql")
    catalog.load("content_access:\n  - name: web\n")
    web, _ = services.save_subscription_type(
        code="web", fields={"name": "Web", "user_label": "Web", "price": "9.90", "length": 30},
        content_access=["web"], items=[])
    users = User.objects.bulk_create(User(email=f"sweep{i}@example.com") for i in range(50))
    now = clock.now()
    day = timedelta(days=1)
    kinds = ([(S.BEFORE_START, now - day, now + 30 * day)] * TO_START  # started since the last sweep
             + [(S.ACTIVE, now - 30 * day, now - day)] * TO_END  # ended
             + [(S.BEFORE_START, now - 3 * day, now - day)] * BOTH  # started and ended
             + [(S.BEFORE_START, now + 10 * day, now + 40 * day)] * (NOT_DUE // 2)
             + [(S.ACTIVE, now - day, now + 30 * day)] * (NOT_DUE // 2))
    rows = Subscription.objects.bulk_create(
        (Subscription(user=users[i % len(users)], subscription_type=web, start_time=start, end_time=end,
                      length=30, internal_status=status)
         for i, (status, start, end) in enumerate(kinds)), batch_size=500)
    ids = [r.pk for r in rows]
    to_start = set(ids[:TO_START])
    to_end = set(ids[TO_START:TO_START + TO_END])
    both = set(ids[TO_START + TO_END:TO_START + TO_END + BOTH])
    not_due = set(ids[TO_START + TO_END + BOTH:])
    not_due_before = dict(Subscription.objects.filter(pk__in=not_due).values_list("pk", "updated_at"))

    lock = threading.Lock()
    seen: list[tuple[str, int, int]] = []
    results: list[services.SweepResult] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(SWEEPERS)

    def record(event):
        with lock:
            seen.append((type(event).__name__, event.subscription_id, threading.get_ident()))

    def sweeper():
        try:
            barrier.wait(timeout=30)
            result = services.sweep_statuses(batch_size=BATCH)
            with lock:
                results.append(result)
        except Exception as exc:  # noqa: BLE001 (reported by the main thread)
            with lock:
                errors.append(exc)
        finally:
            connection.close()

    for cls in (events.SubscriptionStarted, events.SubscriptionEnded):
        bus.subscribe(cls, record)
    try:
        threads = [threading.Thread(target=sweeper, name=f"sweeper-{k}") for k in range(SWEEPERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not any(thread.is_alive() for thread in threads), "a sweeper hung"
        assert errors == []
        assert len(results) == SWEEPERS

        counts = Counter((kind, pk) for kind, pk, _ in seen)
        duplicates = {key: count for key, count in counts.items() if count > 1}
        assert duplicates == {}
        started = {pk for kind, pk in counts if kind == "SubscriptionStarted"}
        ended = {pk for kind, pk in counts if kind == "SubscriptionEnded"}
        assert started == to_start | both
        assert ended == to_end | both
        order = {}
        for position, (kind, pk, _) in enumerate(seen):
            order.setdefault(pk, {})[kind] = position
        assert all(order[pk]["SubscriptionStarted"] < order[pk]["SubscriptionEnded"] for pk in both)
        assert sum(r.started for r in results) == TO_START + BOTH
        assert sum(r.ended for r in results) == TO_END + BOTH

        status = dict(Subscription.objects.values_list("pk", "internal_status"))
        assert {status[pk] for pk in to_start} == {S.ACTIVE}
        assert {status[pk] for pk in to_end | both} == {S.AFTER_END}
        assert dict(Subscription.objects.filter(pk__in=not_due).values_list("pk", "updated_at")) == not_due_before
        assert dict(Subscription.objects.filter(pk__in=not_due).values_list("pk", "internal_status")) == {
            pk: status[pk] for pk in not_due}
        assert {status[pk] for pk in not_due} == {S.BEFORE_START, S.ACTIVE}

        # nothing is left for a third sweep
        seen.clear()
        again = services.sweep_statuses(batch_size=BATCH)
        assert (again.started, again.ended, seen) == (0, 0, [])
    finally:
        for cls in (events.SubscriptionStarted, events.SubscriptionEnded):
            bus.unsubscribe(cls, record)
