"""The status sweep (R-SUB-7): due rows change status once and announce it once.

Rows are created through create_subscription at a frozen past time (now = 2021-02-01 00:00
Europe/Bratislava), then time travels forward and the sweep runs.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine

from masthead.core import catalog
from masthead.core import events as bus
from masthead.subscriptions import events, services
from masthead.subscriptions.models import Subscription
from masthead.subscriptions.periods import add_days

pytestmark = pytest.mark.django_db

TZ = ZoneInfo("Europe/Bratislava")
NOW = datetime(2021, 2, 1, tzinfo=TZ).astimezone(UTC)
S = Subscription


def n(days: int) -> datetime:
    return add_days(NOW, days)


@pytest.fixture(autouse=True)
def bratislava(settings):
    settings.TIME_ZONE = "Europe/Bratislava"


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def web_type(db):
    catalog.load("content_access:\n  - name: web\n  - name: mobile\n  - name: print\n")
    obj, _ = services.save_subscription_type(
        code="web", fields={"name": "Web", "user_label": "Web", "price": "9.90", "length": 30,
                            "extension_method": "start_now"},
        content_access=["web"], items=[])
    return obj


@pytest.fixture
def recorded():
    seen: list = []

    def record(event):
        seen.append(event)

    for cls in (events.SubscriptionStarted, events.SubscriptionEnded):
        bus.subscribe(cls, record)
    yield seen
    for cls in (events.SubscriptionStarted, events.SubscriptionEnded):
        bus.unsubscribe(cls, record)


@pytest.fixture
def make(frozen, make_user, web_type):
    """A subscription from day ``start`` to day ``end`` (relative to NOW), created at NOW."""
    reader = make_user()

    def create(start: int, end: int) -> Subscription:
        return services.create_subscription(user=reader, subscription_type=web_type, start=n(start), end=n(end))

    return create


def by_id(seen) -> dict[int, list[str]]:
    announced: dict[int, list[str]] = defaultdict(list)
    for event in seen:
        announced[event.subscription_id].append(type(event).__name__)
    return dict(announced)


def row(subscription: Subscription) -> Subscription:
    return Subscription.objects.get(pk=subscription.pk)


STARTED, ENDED = "SubscriptionStarted", "SubscriptionEnded"


def test_sweep_moves_due_rows_once(frozen, make, recorded):
    """R-SUB-7: before_start→active (Starts once), active→after_end (Ends once), and a before_start row
    that started and ended between two sweeps → Starts then Ends (our fix of the REMP quirk)."""
    to_start = make(1, 31)
    to_end = make(0, 2)
    both = make(1, 2)
    future = make(10, 40)
    running = make(0, 30)
    ended = make(-10, -5)
    assert [row(s).internal_status for s in (to_start, to_end, both, future, running, ended)] == [
        S.BEFORE_START, S.ACTIVE, S.BEFORE_START, S.BEFORE_START, S.ACTIVE, S.AFTER_END]
    untouched = {s.pk: row(s).updated_at for s in (future, running, ended)}
    recorded.clear()

    frozen.move_to(n(3))
    result = services.sweep_statuses()

    assert (result.started, result.ended) == (2, 2)
    assert by_id(recorded) == {to_start.pk: [STARTED], to_end.pk: [ENDED], both.pk: [STARTED, ENDED]}
    assert row(to_start).internal_status == S.ACTIVE
    assert row(to_end).internal_status == S.AFTER_END
    assert row(both).internal_status == S.AFTER_END
    assert [row(s).updated_at for s in (to_start, to_end, both)] == [n(3)] * 3
    # rows not due keep their status and are not written at all
    assert [row(s).internal_status for s in (future, running, ended)] == [S.BEFORE_START, S.ACTIVE, S.AFTER_END]
    assert {pk: Subscription.objects.get(pk=pk).updated_at for pk in untouched} == untouched
    assert all(row(s).updated_at == NOW for s in (future, running, ended))
    assert all(e.user_id == to_start.user_id for e in recorded)


def test_second_sweep_emits_nothing(frozen, make, recorded):
    """R-SUB-7: each transition is announced once: sweeping again finds nothing."""
    make(1, 31), make(0, 2), make(1, 2)
    frozen.move_to(n(3))
    services.sweep_statuses()
    recorded.clear()
    result = services.sweep_statuses()
    assert (result.started, result.ended) == (0, 0)
    assert recorded == []


def test_sweep_boundaries(frozen, make, recorded):
    """R-SUB-4/R-SUB-7: start = now is started; end = now is ended."""
    starts_now = make(3, 10)
    ends_now = make(0, 3)
    recorded.clear()
    frozen.move_to(n(3))
    services.sweep_statuses()
    assert by_id(recorded) == {starts_now.pk: [STARTED], ends_now.pk: [ENDED]}
    assert (row(starts_now).internal_status, row(ends_now).internal_status) == (S.ACTIVE, S.AFTER_END)


def test_small_batches_move_every_due_row(frozen, make, recorded):
    """R-SUB-7: a batch_size smaller than the number of due rows still moves all of them, each once."""
    to_start = [make(1, 31) for _ in range(7)]
    to_end = [make(0, 2) for _ in range(5)]
    both = [make(1, 2) for _ in range(3)]
    not_due = [make(10, 40) for _ in range(2)]
    recorded.clear()
    frozen.move_to(n(3))
    result = services.sweep_statuses(batch_size=2)
    assert (result.started, result.ended) == (10, 8)
    expected = {**{s.pk: [STARTED] for s in to_start}, **{s.pk: [ENDED] for s in to_end},
                **{s.pk: [STARTED, ENDED] for s in both}}
    assert by_id(recorded) == expected
    assert {row(s).internal_status for s in to_start} == {S.ACTIVE}
    assert {row(s).internal_status for s in to_end + both} == {S.AFTER_END}
    assert {(row(s).internal_status, row(s).updated_at) for s in not_due} == {(S.BEFORE_START, NOW)}


def test_batch_size_equal_to_due_rows(frozen, make, recorded):
    """R-SUB-7: a full last batch is followed by an empty one, not a missed row."""
    rows = [make(1, 31) for _ in range(4)]
    recorded.clear()
    frozen.move_to(n(3))
    result = services.sweep_statuses(batch_size=2)
    assert result.started == 4
    assert by_id(recorded) == {s.pk: [STARTED] for s in rows}


def test_unknown_rows_are_recomputed(frozen, make, recorded):
    """R-SUB-7 (a)/(b): rows in `unknown` are swept too: current → Starts, ended → Ends."""
    current = make(1, 31)
    ended = make(0, 2)
    Subscription.objects.filter(pk__in=[current.pk, ended.pk]).update(internal_status=S.UNKNOWN)
    recorded.clear()
    frozen.move_to(n(3))
    services.sweep_statuses()
    assert by_id(recorded) == {current.pk: [STARTED], ended.pk: [ENDED]}
    assert (row(current).internal_status, row(ended).internal_status) == (S.ACTIVE, S.AFTER_END)


def test_sweep_task_reports_counts(frozen, make, recorded):
    """The periodic task runs the same sweep and reports what it moved."""
    from masthead.subscriptions import tasks

    make(1, 31), make(0, 2)
    frozen.move_to(n(3) + timedelta(hours=1))
    assert tasks.sweep_statuses.call_local() == {"started": 1, "ended": 1}
