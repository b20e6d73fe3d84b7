"""Subscription services on the database: placing (R-EXT-*/R-SUB-3), statuses (R-SUB-4), events
(R-SUB-5), links (R-SUB-8), stop (R-SUB-9), closing gaps (R-SUB-10), moving (R-SUB-11), access
look-up and saving subscription types (R-ST-2).

Time is frozen with time_machine; now = 2021-02-01 00:00 in Europe/Bratislava unless a test moves it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.conf import settings

from masthead.core import catalog
from masthead.core import events as bus
from masthead.subscriptions import events, queries, services
from masthead.subscriptions.models import (
    Subscription,
    SubscriptionMeta,
    SubscriptionType,
    SubscriptionTypeItem,
)
from masthead.subscriptions.periods import add_days
from masthead.subscriptions.services import ItemSpec, SubscriptionError

pytestmark = pytest.mark.django_db

TZ = ZoneInfo("Europe/Bratislava")
CONTENT_ACCESS = "content_access:\n  - name: web\n  - name: mobile\n  - name: print\n"
RECORDED = (events.SubscriptionCreated, events.SubscriptionStarted, events.SubscriptionEnded,
            events.SubscriptionUpdated, events.SubscriptionShortened, events.SubscriptionMoved)


def local(year, month, day, hour=0, minute=0, second=0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=TZ).astimezone(UTC)


NOW = local(2021, 2, 1)


def n(days: int) -> datetime:
    """now + ``days`` calendar days, same local time (R-GEN-2)."""
    return add_days(NOW, days)


@pytest.fixture(autouse=True)
def bratislava(settings):
    settings.TIME_ZONE = "Europe/Bratislava"
    settings.EXTEND_LAST_IGNORED_ACCESS = []


@pytest.fixture
def frozen():
    """Time stands at NOW; ``frozen.move_to(when)`` travels."""
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def access(db):
    catalog.load(CONTENT_ACCESS)


@pytest.fixture
def make_type(access):
    def make(code, *, length=30, extension_method="extend_actual", content_access=("web",), **fields):
        obj, _ = services.save_subscription_type(
            code=code,
            fields={"name": code.upper(), "user_label": f"{code} label", "price": "9.90", "length": length,
                    "extension_method": extension_method, **fields},
            content_access=list(content_access), items=[])
        return obj
    return make


@pytest.fixture
def recorded():
    """Every subscription event, in emission order (a sync handler subscribed for the test only)."""
    seen: list = []

    def record(event):
        seen.append(event)

    for cls in RECORDED:
        bus.subscribe(cls, record)
    yield seen
    for cls in RECORDED:
        bus.unsubscribe(cls, record)


def kinds(seen) -> list[tuple[str, int]]:
    return [(type(e).__name__, e.subscription_id) for e in seen]


def create(user, type_, **kwargs) -> Subscription:
    return services.create_subscription(user=user, subscription_type=type_, **kwargs)


def fresh(subscription: Subscription) -> Subscription:
    return Subscription.objects.get(pk=subscription.pk)


def span(subscription: Subscription) -> tuple[datetime, datetime]:
    subscription = fresh(subscription)
    return subscription.start_time, subscription.end_time


def snapshot(user) -> dict:
    return {s.pk: (s.start_time, s.end_time, s.updated_at, s.note, s.next_subscription_id, s.internal_status)
            for s in Subscription.objects.filter(user=user)}


# --- placing on the timeline (R-EXT-* with real rows, R-SUB-3) --------------------------------


def test_extend_actual_same_type_extends_with_extending_length(frozen, user, make_type):
    """R-EXT-2/R-LEN-1: the second T starts at the first's end and uses extending_length."""
    t = make_type("t", extending_length=10)
    first = create(user, t)
    second = create(user, t)
    assert (first.start_time, first.end_time, first.length) == (NOW, n(30), 30)
    assert (second.start_time, second.end_time, second.length) == (n(30), n(40), 10)


def test_extend_actual_other_type_current_is_not_extending(frozen, user, make_type):
    """R-EXT-2: a current T2 → start at its end, not extending (length, not extending_length)."""
    t2 = make_type("t2", length=20)
    t = make_type("t", extending_length=10)
    create(user, t2, start=n(-5))
    new = create(user, t)
    assert (new.start_time, new.end_time, new.length) == (n(15), n(45), 30)


def test_extend_actual_prefers_current_mobile(frozen, user, make_type):
    """R-EXT-2 order: a current mobile subscription wins over a later-ending web one."""
    mobile = make_type("mobile", content_access=("mobile",))
    web = make_type("web", content_access=("web",))
    create(user, mobile, start=n(-20), end=n(10))
    create(user, web, start=n(-20), end=n(50))
    assert create(user, web).start_time == n(10)


def test_extend_actual_only_expired_starts_now(frozen, user, make_type):
    """R-EXT-2: only expired subscriptions → now."""
    t = make_type("t")
    create(user, t, start=local(2020, 12, 28), end=local(2021, 1, 27))
    assert create(user, t).start_time == NOW


def test_other_readers_subscriptions_do_not_count(frozen, user, make_user, make_type):
    """R-EXT-2: only the user's own subscriptions are extended."""
    t = make_type("t")
    create(make_user(), t)
    assert create(user, t).start_time == NOW


def test_start_now_ignores_current(frozen, user, make_type):
    """R-EXT-1."""
    t = make_type("t")
    now_type = make_type("now", extension_method="start_now")
    create(user, t)
    assert (create(user, now_type).start_time) == NOW


def test_extend_same_actual_needs_the_same_type(frozen, user, make_type):
    """R-EXT-3: T2 current only → now; then a current T → its end, extending."""
    t2 = make_type("t2")
    t = make_type("t", extension_method="extend_same_actual", extending_length=7)
    create(user, t2, start=n(-5))
    first = create(user, t)
    assert (first.start_time, first.length) == (NOW, 30)
    second = create(user, t)
    assert (second.start_time, second.end_time, second.length) == (n(30), n(37), 7)


def test_extend_same_type_example(frozen, user, make_type):
    """R-EXT-4: T −5→+25, T +50→+80, T2 +60→+90 → start +80 (2021-04-22), extending."""
    t = make_type("t", extension_method="extend_same_type")
    t2 = make_type("t2")
    create(user, t, start=n(-5), end=n(25))
    create(user, t, start=n(50), end=n(80))
    create(user, t2, start=n(60), end=n(90))
    new = create(user, t)
    assert (new.start_time, new.end_time) == (local(2021, 4, 22), local(2021, 5, 22))


def test_extend_same_type_falls_back_to_current_other_type(frozen, user, make_type):
    """R-EXT-4: T2 current −5→+25, new T → start 2021-02-26, not extending."""
    t = make_type("t", extension_method="extend_same_type", extending_length=3)
    t2 = make_type("t2")
    create(user, t2, start=n(-5), end=n(25))
    new = create(user, t)
    assert (new.start_time, new.length) == (local(2021, 2, 26), 30)


def test_extend_same_type_lifetime_starts_now(frozen, user, make_type):
    """R-EXT-4: only a lifetime T (−5 d → +100 years) → now."""
    t = make_type("t", extension_method="extend_same_type")
    create(user, t, start=n(-5), end=local(2121, 2, 1))
    assert create(user, t).start_time == NOW


def test_extend_same_content_access_examples(frozen, user, make_user, make_type):
    """R-EXT-5: web 0→+5 & web+print +5→+35 → +5; web+print 0→+5 & web +5→+35 → +35."""
    web = make_type("web", extension_method="extend_same_content_access", content_access=("web",))
    web_print = make_type("webprint", content_access=("web", "print"))
    create(user, web, start=n(0), end=n(5))
    create(user, web_print, start=n(5), end=n(35))
    assert create(user, web).start_time == n(5)

    other = make_user()
    create(other, web_print, start=n(0), end=n(5))
    create(other, web, start=n(5), end=n(35))
    assert create(other, web).start_time == n(35)

    only_web_print = make_user()
    create(only_web_print, web_print, start=n(0), end=n(30))
    assert create(only_web_print, web).start_time == NOW


def test_extend_last_subscription_ignores_gaps(frozen, user, make_type):
    """R-EXT-6: T current →+25 and T future +180→+210 → +210 (2021-08-30)."""
    t = make_type("t", extension_method="extend_last_subscription")
    create(user, t, start=n(-5), end=n(25))
    create(user, t, start=n(180), end=n(210))
    assert create(user, t).start_time == local(2021, 8, 30)


def test_fixed_start_and_fixed_end_from_the_type(frozen, user, make_type):
    """R-SUB-3: fixed_start N+7 → N+7…N+38; fixed_end in the past → N…N."""
    fixed = make_type("fixed", length=31, fixed_start=n(7))
    ended = make_type("ended", length=31, fixed_end=n(-62))
    assert span(create(user, fixed)) == (n(7), n(38))
    assert span(create(user, ended)) == (NOW, NOW)  # nothing current: starts now, end clamped to the start


def test_stored_to_whole_seconds(frozen, user, make_type):
    """R-GEN-4: given datetimes are stored to whole seconds."""
    t = make_type("t")
    s = create(user, t, start=n(1) + timedelta(microseconds=900_000), end=n(2) + timedelta(microseconds=5))
    assert span(s) == (n(1), n(2))


def test_fixed_dates_are_stored_to_whole_seconds(frozen, user, make_type):
    """R-GEN-4: a type's fixed_start/fixed_end with a fraction still gives whole-second rows."""
    t = make_type("fixed", fixed_start=n(7) + timedelta(microseconds=500_000),
                  fixed_end=n(20) + timedelta(microseconds=250_000))
    assert span(create(user, t)) == (n(7), n(20))


# --- R-SUB-4 statuses --------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "end", "status"), [
    (-62, -31, Subscription.AFTER_END),
    (-10, 0, Subscription.AFTER_END),  # end = now: already ended
    (0, 30, Subscription.ACTIVE),  # start = now: started
    (-5, 25, Subscription.ACTIVE),
    (7, 37, Subscription.BEFORE_START),
    (0, 0, Subscription.AFTER_END),  # zero length at now
])
def test_status_on_insert(frozen, user, make_type, start, end, status):
    """R-SUB-4: active if start ≤ now < end; after_end if end ≤ now; before_start if start > now."""
    s = create(user, make_type("t"), start=n(start), end=n(end))
    assert s.internal_status == fresh(s).internal_status == status


def test_status_recomputed_on_update_without_fields(frozen, user, make_type, recorded):
    """R-SUB-4/R-SUB-6: an update with no fields recomputes the status and announces the change."""
    s = create(user, make_type("t"), start=n(1), end=n(2))
    recorded.clear()
    frozen.move_to(n(1))
    services.update_subscription(subscription=fresh(s))
    assert fresh(s).internal_status == Subscription.ACTIVE
    assert kinds(recorded) == [("SubscriptionStarted", s.pk)]


# --- R-SUB-5 events on create ------------------------------------------------------------------


def test_events_on_create_active(frozen, user, make_type, recorded):
    """R-SUB-5: NewSubscription, then Starts when inserted active."""
    t = make_type("t")
    s = create(user, t, payment_id=42)
    assert kinds(recorded) == [("SubscriptionCreated", s.pk), ("SubscriptionStarted", s.pk)]
    created = recorded[0]
    assert (created.user_id, created.subscription_type_id, created.payment_id) == (user.pk, t.pk, 42)
    assert recorded[1].user_id == user.pk


def test_events_on_create_after_end(frozen, user, make_type, recorded):
    """R-SUB-5: NewSubscription, then Ends when inserted after_end."""
    s = create(user, make_type("t"), start=n(-62), end=n(-31))
    assert kinds(recorded) == [("SubscriptionCreated", s.pk), ("SubscriptionEnded", s.pk)]
    assert recorded[0].payment_id is None


def test_events_on_create_before_start(frozen, user, make_type, recorded):
    """R-SUB-5: a subscription inserted before_start only announces NewSubscription."""
    s = create(user, make_type("t"), start=n(7))
    assert kinds(recorded) == [("SubscriptionCreated", s.pk)]


# --- R-SUB-8 next_subscription -----------------------------------------------------------------


@pytest.fixture
def pair(frozen, user, make_type):
    """First NOW→N+30, second created 2 h after the first's end: not linked yet."""
    t = make_type("t")
    first = create(user, t)
    second = create(user, t, start=n(30) + timedelta(hours=2), end=n(60))
    return first, second


def next_of(subscription: Subscription) -> int | None:
    return fresh(subscription).next_subscription_id


def test_second_starting_at_first_end_is_linked(frozen, user, make_type):
    """R-SUB-8: second starting at first's end → linked."""
    t = make_type("t")
    first = create(user, t)
    second = create(user, t)
    assert second.start_time == first.end_time
    assert next_of(first) == second.pk
    assert next_of(second) is None


def test_two_hour_gap_is_not_linked(pair):
    """R-SUB-8: 2 h gap → not linked."""
    first, _second = pair
    assert next_of(first) is None


def test_shifting_second_later_unlinks(frozen, user, make_type):
    """R-SUB-8: shifting the second +2 h → unlinked."""
    t = make_type("t")
    first, second = create(user, t), create(user, t)
    services.update_subscription(subscription=fresh(second), start_time=second.start_time + timedelta(hours=2))
    assert next_of(first) is None


def test_shifting_first_end_earlier_unlinks(frozen, user, make_type):
    """R-SUB-8: shifting the first's end −2 h → unlinked."""
    t = make_type("t")
    first, second = create(user, t), create(user, t)
    services.update_subscription(subscription=fresh(first), end_time=first.end_time - timedelta(hours=2))
    assert next_of(first) is None
    assert next_of(second) is None


def test_closing_the_gap_by_moving_second_start_links(pair):
    """R-SUB-8: closing the gap by moving the second's start to the first's end → linked."""
    first, second = pair
    services.update_subscription(subscription=fresh(second), start_time=first.end_time)
    assert next_of(first) == second.pk


def test_closing_the_gap_by_extending_first_end_links(pair):
    """R-SUB-8: closing the gap by moving the first's end to the second's start → linked."""
    first, second = pair
    services.update_subscription(subscription=fresh(first), end_time=second.start_time)
    assert next_of(first) == second.pk


def test_linking_is_per_user(frozen, user, make_user, make_type):
    """R-SUB-8: only the user's own subscriptions ending at the new start are linked."""
    t = make_type("t")
    other = create(make_user(), t)
    mine = create(user, t, start=other.end_time)
    assert next_of(other) is None
    assert mine.start_time == other.end_time


# --- R-SUB-9 stop ------------------------------------------------------------------------------


def test_stop_active_ends_now(frozen, user, make_type, recorded):
    """R-SUB-9: end = now; then SubscriptionShortened(subscription, original end)."""
    s = create(user, make_type("t"))
    recorded.clear()
    when = n(10) + timedelta(hours=12, minutes=34, seconds=56)
    frozen.move_to(when)
    services.stop_subscription(subscription=fresh(s))
    row = fresh(s)
    assert (row.start_time, row.end_time, row.internal_status) == (NOW, when, Subscription.AFTER_END)
    assert kinds(recorded) == [("SubscriptionEnded", s.pk), ("SubscriptionUpdated", s.pk),
                               ("SubscriptionShortened", s.pk)]
    assert recorded[-1].original_end == n(30)
    assert row.note == ""
    assert not SubscriptionMeta.objects.filter(subscription=s).exists()


def test_stop_not_started_ends_at_start(frozen, user, make_type, recorded):
    """R-SUB-9: a subscription that has not started ends at its start (never before it)."""
    s = create(user, make_type("t"), start=n(7))
    recorded.clear()
    services.stop_subscription(subscription=fresh(s))
    assert span(s) == (n(7), n(7))
    assert kinds(recorded) == [("SubscriptionUpdated", s.pk), ("SubscriptionShortened", s.pk)]
    assert recorded[-1].original_end == n(37)


@pytest.mark.parametrize(("note", "expected"), [
    ("", "[Admin stop] Original end_time 2021-03-03T00:00:00+01:00"),
    ("paid by invoice", "paid by invoice\n[Admin stop] Original end_time 2021-03-03T00:00:00+01:00"),
])
def test_admin_stop_marks_meta_and_note(frozen, user, make_type, note, expected):
    """R-SUB-9: admin stop: meta expired_by_admin=1, note gains `[Admin stop] Original end_time <old end>`."""
    s = create(user, make_type("t"), note=note)
    assert s.end_time == local(2021, 3, 3)
    frozen.move_to(n(3))
    services.stop_subscription(subscription=fresh(s), by_admin=True)
    row = fresh(s)
    assert row.end_time == n(3)
    assert row.note == expected
    assert dict(row.meta.values_list("key", "value")) == {"expired_by_admin": "1"}


# --- R-SUB-10 shortened → close the gap --------------------------------------------------------


@pytest.fixture
def year_and_month(make_type):
    """Web year = 365 days, web month = 31 days (the R-SUB-10 examples)."""
    return make_type("web-year", length=365), make_type("web-month", length=31)


def test_stop_pulls_following_chain_after_inserted_month(user, make_user, make_type, year_and_month, recorded):
    """R-SUB-10 ex. 1: Y1 2019-01-01→2020-01-01, Y2 2020-01-01→2020-12-31, M 2019-07-01→2019-08-01;
    Y1 shortened to 2019-07-01 → Y2 moves to 2019-08-01→2020-07-31. Parallel subscriptions, other
    users and zero-length rows are untouched."""
    year, month = year_and_month
    print_type = make_type("print-year", length=365, content_access=("print",))
    with time_machine.travel(local(2018, 12, 1), tick=False) as traveller:
        y1 = create(user, year, start=local(2019, 1, 1))
        y2 = create(user, year, start=local(2020, 1, 1))
        m = create(user, month, start=local(2019, 7, 1))
        parallel = create(user, print_type, start=local(2019, 3, 1))
        zero = create(user, year, start=local(2020, 1, 1), end=local(2020, 1, 1))
        other_user = create(make_user(), year, start=local(2020, 1, 1))
        assert span(y1) == (local(2019, 1, 1), local(2020, 1, 1))
        assert span(y2) == (local(2020, 1, 1), local(2020, 12, 31))
        assert span(m) == (local(2019, 7, 1), local(2019, 8, 1))
        untouched = {s.pk: (s.start_time, s.end_time, s.updated_at)
                     for s in (fresh(parallel), fresh(zero), fresh(other_user))}
        traveller.move_to(local(2019, 7, 1))
        recorded.clear()
        services.stop_subscription(subscription=fresh(y1), by_admin=True)
    assert span(y1) == (local(2019, 1, 1), local(2019, 7, 1))
    assert span(m) == (local(2019, 7, 1), local(2019, 8, 1))
    assert span(y2) == (local(2019, 8, 1), local(2020, 7, 31))
    assert {s.pk: (s.start_time, s.end_time, s.updated_at)
            for s in Subscription.objects.filter(pk__in=untouched)} == untouched
    moved = [e for e in recorded if isinstance(e, events.SubscriptionMoved)]
    assert [(e.subscription_id, e.original_start, e.original_end) for e in moved] == [
        (y2.pk, local(2020, 1, 1), local(2020, 12, 31))]
    # R-SUB-8 follows the new timeline: Y1 → M → Y2
    assert (next_of(y1), next_of(m)) == (m.pk, y2.pk)


def test_stop_pulls_following_subscription_to_the_new_end(user, year_and_month):
    """R-SUB-10 ex. 2: Y1 stopped at 2019-07-01 with Y2 following, nothing inserted → Y2 2019-07-01→2020-06-30."""
    year, _ = year_and_month
    with time_machine.travel(local(2018, 12, 1), tick=False) as traveller:
        y1 = create(user, year, start=local(2019, 1, 1))
        y2 = create(user, year, start=y1.end_time)
        assert span(y2) == (local(2020, 1, 1), local(2020, 12, 31))
        traveller.move_to(local(2019, 7, 1))
        services.stop_subscription(subscription=fresh(y1))
    assert span(y1) == (local(2019, 1, 1), local(2019, 7, 1))
    assert span(y2) == (local(2019, 7, 1), local(2020, 6, 30))
    assert next_of(y1) == y2.pk


def test_stop_moves_a_whole_chain(frozen, user, make_type):
    """R-SUB-10: every member of the chain that started at the original end moves, one after another,
    each keeping its duration (R-SUB-11)."""
    t = make_type("t")
    first = create(user, t)
    chain = []
    for _ in range(3):  # extend_actual only extends the current one: place the rest explicitly
        chain.append(create(user, t, start=(chain[-1] if chain else first).end_time))
    assert [span(s) for s in chain] == [(n(30), n(60)), (n(60), n(90)), (n(90), n(120))]
    frozen.move_to(n(10))
    services.stop_subscription(subscription=fresh(first))
    assert span(first) == (NOW, n(10))
    expected, anchor = [], n(10)
    for start, end in [(n(30), n(60)), (n(60), n(90)), (n(90), n(120))]:
        expected.append((anchor, anchor + (end - start)))
        anchor = anchor + (end - start)
    assert [span(s) for s in chain] == expected
    assert [next_of(s) for s in [first, *chain]] == [chain[0].pk, chain[1].pk, chain[2].pk, None]


def test_stop_before_start_pulls_the_chain_to_the_start(frozen, user, make_type):
    """R-SUB-9/R-SUB-10: a future subscription stopped ends at its start; its follower moves there."""
    t = make_type("t")
    future = create(user, t, start=n(7))
    follower = create(user, t, start=future.end_time)
    assert span(follower) == (n(37), n(67))
    services.stop_subscription(subscription=fresh(future))
    assert span(future) == (n(7), n(7))
    assert span(follower) == (n(7), n(7) + (n(67) - n(37)))  # seconds kept: 30 days less the DST hour


def test_gap_already_filled_moves_nothing(frozen, user, make_type):
    """R-SUB-10: a chain starting at the new end that reaches the original end fills the gap: the
    old follower is already aligned and stays."""
    t = make_type("t")
    first = create(user, t)  # NOW → N+30
    follower = create(user, t)  # N+30 → N+60
    filler = create(user, t, start=n(10), end=n(30))
    frozen.move_to(n(10))
    services.stop_subscription(subscription=fresh(first))
    assert (span(first), span(filler), span(follower)) == ((NOW, n(10)), (n(10), n(30)), (n(30), n(60)))


def test_zero_length_shortened_with_its_own_end_changes_nothing(frozen, user, make_type, recorded):
    """R-SUB-10: a zero-length subscription shortened with its own end → nothing changes, not even
    updated_at or the note."""
    t = make_type("t")
    zero = create(user, t, start=n(10), end=n(10), note="zero")
    create(user, t, start=n(10), end=n(40))
    create(user, t, start=n(40), end=n(70))
    frozen.move_to(n(1))
    before = snapshot(user)
    recorded.clear()
    bus.emit(events.SubscriptionShortened(subscription_id=zero.pk, user_id=user.pk, original_end=zero.end_time))
    assert snapshot(user) == before
    assert kinds(recorded) == [("SubscriptionShortened", zero.pk)]

    recorded.clear()
    services.stop_subscription(subscription=fresh(zero), by_admin=True)
    assert snapshot(user) == before
    assert recorded == []
    assert not SubscriptionMeta.objects.filter(subscription=zero).exists()


# --- R-SUB-11 move -----------------------------------------------------------------------------


def test_move_keeps_exact_seconds(frozen, user, make_type, recorded):
    """R-SUB-11: new end = new start + old (end − start) in seconds, not days (here over DST)."""
    s = create(user, make_type("t", length=31), start=local(2021, 3, 1))
    assert s.end_time == local(2021, 4, 1)  # 31 days less the hour of the spring-forward night
    recorded.clear()
    services.move_subscription(subscription=fresh(s), start=local(2021, 6, 1))
    assert span(s) == (local(2021, 6, 1), local(2021, 6, 1) + (local(2021, 4, 1) - local(2021, 3, 1)))
    assert span(s)[1] == local(2021, 7, 1, 23)
    assert kinds(recorded) == [("SubscriptionUpdated", s.pk), ("SubscriptionMoved", s.pk)]
    moved = recorded[-1]
    assert (moved.original_start, moved.original_end, moved.user_id) == (local(2021, 3, 1), local(2021, 4, 1), user.pk)


# --- queries.access_at -------------------------------------------------------------------------


def test_access_at(frozen, user, make_user, make_type):
    """The access a reader holds at an instant: start inclusive, end exclusive, own subscriptions only."""
    web = make_type("web", content_access=("web",))
    printed = make_type("print", content_access=("print",))
    mobile = make_type("mobile", content_access=("mobile",))
    create(user, web, start=n(0), end=n(30))
    create(user, printed, start=n(10), end=n(40))
    create(make_user(), mobile, start=n(0), end=n(40))
    assert queries.access_at(user, NOW - timedelta(seconds=1)) == set()
    assert queries.access_at(user, NOW) == {"web"}
    assert queries.access_at(user, n(15)) == {"web", "print"}
    assert queries.access_at(user, n(30)) == {"print"}
    assert queries.access_at(user, n(40)) == set()


# --- save_subscription_type (R-ST-1/R-ST-2) ----------------------------------------------------


def type_fields(**extra) -> dict:
    return {"name": "Web month", "user_label": "Web for a month", "price": "9.90", "length": 30,
            "extension_method": "extend_actual", **extra}


def test_type_without_items_gets_one_default_item(access):
    """R-ST-2: one item named user_label, amount = price, vat = VAT_DEFAULT."""
    obj, outcome = services.save_subscription_type(code="web-month", fields=type_fields(), content_access=["web"],
                                                   items=[])
    assert outcome == "created"
    assert obj.price == Decimal("9.90")
    assert list(obj.items.values_list("name", "amount", "vat")) == [
        ("Web for a month", Decimal("9.90"), Decimal(settings.VAT_DEFAULT).quantize(Decimal("0.01")))]
    assert set(obj.content_access.values_list("name", flat=True)) == {"web"}


def test_items_must_sum_to_price(access):
    """R-ST-1: items sum ≠ price → SubscriptionError and nothing is written."""
    items = [ItemSpec("web", "5.00", "23"), ItemSpec("print", "4.00", "10")]
    with pytest.raises(SubscriptionError) as error:
        services.save_subscription_type(code="bundle", fields=type_fields(), content_access=["web", "print"],
                                        items=items)
    assert error.value.code == "items_price_mismatch"
    assert not SubscriptionType.objects.exists()
    assert not SubscriptionTypeItem.objects.exists()


def test_items_mismatch_leaves_existing_type_alone(access):
    """R-ST-1: a refused update writes nothing either."""
    services.save_subscription_type(code="bundle", fields=type_fields(), content_access=["web"], items=[])
    with pytest.raises(SubscriptionError):
        services.save_subscription_type(code="bundle", fields=type_fields(price="12.00", length=31),
                                        content_access=["web", "print"], items=[ItemSpec("web", "9.90")])
    obj = SubscriptionType.objects.get(code="bundle")
    assert (obj.price, obj.length) == (Decimal("9.90"), 30)
    assert list(obj.items.values_list("amount", flat=True)) == [Decimal("9.90")]
    assert set(obj.content_access.values_list("name", flat=True)) == {"web"}


def test_items_summing_to_price_are_kept(access):
    """R-ST-1: explicit items are stored in order."""
    items = [ItemSpec("web", "5.90", "23"), ItemSpec("print", "4.00", "10")]
    obj, outcome = services.save_subscription_type(code="bundle", fields=type_fields(),
                                                   content_access=["web", "print"], items=items)
    assert outcome == "created"
    assert list(obj.items.values_list("name", "amount", "vat")) == [
        ("web", Decimal("5.90"), Decimal("23.00")), ("print", Decimal("4.00"), Decimal("10.00"))]


def test_saving_twice_is_unchanged_then_updated(access):
    """Idempotent: the same definition again is 'unchanged'; a changed one is 'updated'."""
    args = {"code": "web-month", "fields": type_fields(), "content_access": ["web"], "items": []}
    first, outcome = services.save_subscription_type(**args)
    assert outcome == "created"
    again, outcome = services.save_subscription_type(**args)
    assert (again.pk, outcome) == (first.pk, "unchanged")
    _, outcome = services.save_subscription_type(**{**args, "content_access": ["web", "mobile"]})
    assert outcome == "updated"
    obj, outcome = services.save_subscription_type(**{**args, "content_access": ["web", "mobile"],
                                                      "fields": type_fields(price="12.00")})
    assert outcome == "updated"
    assert list(obj.items.values_list("amount", flat=True)) == [Decimal("12.00")]
    assert SubscriptionType.objects.count() == 1


def test_unknown_content_access_is_refused(access):
    with pytest.raises(SubscriptionError) as error:
        services.save_subscription_type(code="x", fields=type_fields(), content_access=["web", "paper"], items=[])
    assert error.value.code == "unknown_content_access"
    assert "paper" in error.value.message
    assert not SubscriptionType.objects.exists()


@pytest.mark.parametrize("field", ["extension_method", "length_method"])
def test_unknown_method_is_refused(access, field):
    """R-EXT-8: an unknown method is a configuration error; nothing is written."""
    with pytest.raises(SubscriptionError) as error:
        services.save_subscription_type(code="x", fields=type_fields(**{field: "extend_forever"}),
                                        content_access=["web"], items=[])
    assert error.value.code == "unknown_method"
    assert not SubscriptionType.objects.exists()


def test_create_subscriptions_matches_create_subscription(frozen, make_user, make_type, recorded):
    """A batch placement writes what one create_subscription per reader with the same dates writes:
    fields, status, the R-SUB-8 link from a subscription ending at the start, and the events."""
    t = make_type("t")
    one, other = make_user(), make_user()
    start, end = NOW + timedelta(days=30), NOW + timedelta(days=60)
    leading = [services.create_subscription(user=u, subscription_type=t) for u in (one, other)]
    single = services.create_subscription(user=one, subscription_type=t, start=start, end=end, type="family",
                                          is_paid=True)
    recorded.clear()
    Subscription.objects.filter(pk=leading[0].pk).update(next_subscription=None)
    Subscription.objects.filter(pk=single.pk).delete()
    batch = services.create_subscriptions(subscription_type=t, placements=[
        services.Placement(user=one, start=start, end=end, is_paid=True, type="family"),
        services.Placement(user=other, start=NOW - timedelta(days=1), end=NOW + timedelta(days=1))])
    fields = ("user_id", "subscription_type_id", "type", "is_paid", "is_recurrent", "start_time", "end_time",
              "length", "internal_status", "note")
    assert [getattr(batch[0], f) for f in fields] == [getattr(single, f) for f in fields]
    assert (batch[1].internal_status, batch[1].is_paid) == ("active", False)
    assert Subscription.objects.get(pk=leading[0].pk).next_subscription_id == batch[0].pk
    assert Subscription.objects.get(pk=leading[1].pk).next_subscription_id is None
    assert [(type(e).__name__, e.subscription_id) for e in recorded] == [
        ("SubscriptionCreated", batch[0].pk), ("SubscriptionCreated", batch[1].pk),
        ("SubscriptionStarted", batch[1].pk)]
    assert services.create_subscriptions(subscription_type=t, placements=[]) == []
