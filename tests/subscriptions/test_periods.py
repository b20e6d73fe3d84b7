"""Pure date math of subscriptions: extension methods (R-EXT-*), length methods (R-LEN-*) and the
resolution order of R-SUB-3. No database.

Worked examples use now = 2021-02-01 00:00 local time (Europe/Bratislava) and a 30-day type T,
as in the spec. "N+k" means k calendar days after now at the same local time (R-GEN-2).
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from masthead.subscriptions import periods
from masthead.subscriptions.periods import (
    EXTENSION_METHODS,
    Existing,
    TypeSpec,
    add_days,
    resolve,
)

TZ = ZoneInfo("Europe/Bratislava")
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope="module")
def bratislava():
    """The installation time zone of the spec, and no ignored access for extend_last_subscription."""
    with override_settings(TIME_ZONE="Europe/Bratislava", EXTEND_LAST_IGNORED_ACCESS=[]):
        yield


def local(year, month, day, hour=0, minute=0, second=0) -> datetime:
    """An instant given as local wall-clock time, as the aware UTC datetime the code works with."""
    return datetime(year, month, day, hour, minute, second, tzinfo=TZ).astimezone(UTC)


NOW = local(2021, 2, 1)
T = TypeSpec(id=1, length=30)
T2 = TypeSpec(id=2, length=30)


def n(days: int) -> datetime:
    """N + ``days`` calendar days (R-GEN-2)."""
    return add_days(NOW, days)


def sub(type_: TypeSpec, start: datetime, end: datetime, access=None) -> Existing:
    return Existing(type_id=type_.id, start=start, end=end,
                    content_access=type_.content_access if access is None else frozenset(access))


def extend(method: str, new_type: TypeSpec, existing, now=NOW):
    return EXTENSION_METHODS[method](new_type=new_type, existing=existing, now=now)


# --- R-EXT-1 start_now -------------------------------------------------------------------------


def test_start_now_ignores_every_existing_subscription():
    """R-EXT-1: start_now is always (now, false), even with a current subscription of the same type."""
    existing = [sub(T, local(2021, 1, 27), local(2021, 2, 26))]
    assert extend("start_now", T, existing) == (NOW, False)
    assert extend("start_now", T, []) == (NOW, False)


# --- R-EXT-2 extend_actual ---------------------------------------------------------------------


def test_extend_actual_same_type_current():
    """R-EXT-2: T current 01-27→02-26 → start 02-26, extending."""
    existing = [sub(T, local(2021, 1, 27), local(2021, 2, 26))]
    assert extend("extend_actual", T, existing) == (local(2021, 2, 26), True)


def test_extend_actual_ignores_future_subscriptions():
    """R-EXT-2: with T 01-22→02-21 current and T 07-31→08-30 future as well → still 02-26."""
    existing = [sub(T, local(2021, 1, 27), local(2021, 2, 26)),
                sub(T, local(2021, 1, 22), local(2021, 2, 21)),
                sub(T, local(2021, 7, 31), local(2021, 8, 30))]
    assert extend("extend_actual", T, existing) == (local(2021, 2, 26), True)


def test_extend_actual_other_type_current_is_not_extending():
    """R-EXT-2: T2 current → start at its end, *not* extending."""
    existing = [sub(T2, local(2021, 1, 27), local(2021, 2, 26))]
    assert extend("extend_actual", T, existing) == (local(2021, 2, 26), False)


def test_extend_actual_only_expired_starts_now():
    """R-EXT-2: only expired subscriptions (12-28→01-27) → now."""
    existing = [sub(T, local(2020, 12, 28), local(2021, 1, 27))]
    assert extend("extend_actual", T, existing) == (NOW, False)


def test_extend_actual_prefers_current_mobile_subscription():
    """R-EXT-2 order (R-ST-3): a current mobile subscription comes before a later-ending web one."""
    mobile = TypeSpec(id=3, length=30, content_access=frozenset({"mobile"}))
    web = TypeSpec(id=4, length=30, content_access=frozenset({"web"}))
    existing = [sub(web, local(2021, 1, 27), local(2021, 3, 20)), sub(mobile, local(2021, 1, 27), local(2021, 2, 10))]
    assert extend("extend_actual", web, existing) == (local(2021, 2, 10), False)
    assert extend("extend_actual", mobile, existing) == (local(2021, 2, 10), True)


def test_current_means_start_le_now_lt_end():
    """R-EXT-2 ("current" = start <= now < end): a subscription ending exactly now is not current."""
    assert extend("extend_actual", T, [sub(T, local(2021, 1, 1), NOW)]) == (NOW, False)
    assert extend("extend_actual", T, [sub(T, NOW, n(30))]) == (n(30), True)


# --- R-EXT-3 extend_same_actual ----------------------------------------------------------------


def test_extend_same_actual_same_type_current():
    """R-EXT-3: a current subscription of the same type → (its end, true)."""
    existing = [sub(T, local(2021, 1, 27), local(2021, 2, 26)), sub(T, local(2021, 7, 31), local(2021, 8, 30))]
    assert extend("extend_same_actual", T, existing) == (local(2021, 2, 26), True)


def test_extend_same_actual_other_type_only_starts_now():
    """R-EXT-3: T2 current only → now."""
    existing = [sub(T2, local(2021, 1, 27), local(2021, 2, 26))]
    assert extend("extend_same_actual", T, existing) == (NOW, False)


def test_extend_same_actual_picks_same_type_among_others():
    """R-EXT-3: T2 ending later is skipped, the current T is extended."""
    existing = [sub(T2, local(2021, 1, 27), local(2021, 3, 26)), sub(T, local(2021, 1, 27), local(2021, 2, 26))]
    assert extend("extend_same_actual", T, existing) == (local(2021, 2, 26), True)


# --- R-EXT-4 extend_same_type ------------------------------------------------------------------


def test_extend_same_type_latest_same_type_future_counts():
    """R-EXT-4: T −5→+25, T +50→+80, T2 +60→+90 → start +80 (2021-04-22), extending."""
    existing = [sub(T, n(-5), n(25)), sub(T, n(50), n(80)), sub(T2, n(60), n(90))]
    assert extend("extend_same_type", T, existing) == (local(2021, 4, 22), True)


def test_extend_same_type_falls_back_to_current_of_other_type():
    """R-EXT-4: T2 current −5→+25, new T → start 2021-02-26, not extending."""
    existing = [sub(T2, n(-5), n(25))]
    assert extend("extend_same_type", T, existing) == (local(2021, 2, 26), False)


def test_extend_same_type_lifetime_only_starts_now():
    """R-EXT-4: only T −5d→+100 years (lifetime) → now."""
    existing = [sub(T, n(-5), local(2121, 2, 1))]
    assert extend("extend_same_type", T, existing) == (NOW, False)


def test_extend_same_type_skips_lifetime_and_extends_the_other():
    """R-EXT-4: T −5→+25 then T +25→+100y → +25 (02-26), extending."""
    existing = [sub(T, n(-5), n(25)), sub(T, n(25), local(2121, 2, 1))]
    assert extend("extend_same_type", T, existing) == (local(2021, 2, 26), True)


@pytest.mark.parametrize("method", ["extend_same_type", "extend_same_content_access"])
def test_thirty_year_horizon_is_thirty_calendar_years(method):
    """R-EXT-4/R-EXT-5: an end before now + 30 years (2051-02-01) is not lifetime: it is extended."""
    web = TypeSpec(id=1, length=30, content_access=frozenset({"web"}))
    end = local(2051, 1, 29)  # 30 years − 3 days; 365*30 days after now is 2051-01-24
    assert extend(method, web, [sub(web, n(-5), end)]) == (end, True)


# --- R-EXT-5 extend_same_content_access --------------------------------------------------------

WEB = TypeSpec(id=10, length=30, content_access=frozenset({"web"}))
WEB_PRINT = TypeSpec(id=11, length=30, content_access=frozenset({"web", "print"}))


def test_extend_same_content_access_latest_exact_match():
    """R-EXT-5: web 0→+5 & web+print +5→+35 → +5."""
    existing = [sub(WEB, n(0), n(5)), sub(WEB_PRINT, n(5), n(35))]
    assert extend("extend_same_content_access", WEB, existing) == (n(5), True)


def test_extend_same_content_access_future_exact_match():
    """R-EXT-5: web+print 0→+5 & web +5→+35 → +35."""
    existing = [sub(WEB_PRINT, n(0), n(5)), sub(WEB, n(5), n(35))]
    assert extend("extend_same_content_access", WEB, existing) == (n(35), True)


def test_extend_same_content_access_superset_does_not_match():
    """R-EXT-5: web 0→+10 & web+print +5→+35 → +10."""
    existing = [sub(WEB, n(0), n(10)), sub(WEB_PRINT, n(5), n(35))]
    assert extend("extend_same_content_access", WEB, existing) == (n(10), True)


def test_extend_same_content_access_no_match_starts_now():
    """R-EXT-5: web+print only → now."""
    existing = [sub(WEB_PRINT, n(0), n(30))]
    assert extend("extend_same_content_access", WEB, existing) == (NOW, False)


def test_extend_same_content_access_matches_another_type_with_the_same_set():
    """R-EXT-5: the set decides, not the type: another type granting exactly {web} is extended."""
    other_web = TypeSpec(id=12, length=365, content_access=frozenset({"web"}))
    assert extend("extend_same_content_access", WEB, [sub(other_web, n(-3), n(20))]) == (n(20), True)


# --- R-EXT-6 extend_last_subscription ----------------------------------------------------------


def test_extend_last_subscription_ignores_gaps():
    """R-EXT-6: T current →+25 and T future +180→+210 → +210 (2021-08-30)."""
    existing = [sub(T, n(-5), n(25)), sub(T, n(180), n(210))]
    assert extend("extend_last_subscription", T, existing) == (local(2021, 8, 30), True)


def test_extend_last_subscription_any_type_is_extending():
    """R-EXT-6: the latest-ending subscription of any type → (its end, true)."""
    assert extend("extend_last_subscription", T, [sub(T2, n(-5), n(25))]) == (n(25), True)


def test_extend_last_subscription_ignores_stopped_ones():
    """R-EXT-6: end != start: a subscription stopped before its start (start = end) is ignored."""
    existing = [sub(T, n(-5), n(25)), sub(T, n(40), n(40))]
    assert extend("extend_last_subscription", T, existing) == (n(25), True)
    assert extend("extend_last_subscription", T, [sub(T, n(40), n(40))]) == (NOW, False)


def test_extend_last_subscription_ended_only_starts_now():
    """R-EXT-6: only subscriptions with end > now count."""
    assert extend("extend_last_subscription", T, [sub(T, n(-40), n(-10))]) == (NOW, False)


def test_extend_last_subscription_ignored_access():
    """R-EXT-6: with `mobile` ignored, a mobile-only future subscription does not count → now."""
    mobile = TypeSpec(id=3, length=30, content_access=frozenset({"mobile"}))
    existing = [sub(mobile, n(10), n(40))]
    assert extend("extend_last_subscription", T, existing) == (n(40), True)
    with override_settings(EXTEND_LAST_IGNORED_ACCESS=["mobile"]):
        assert extend("extend_last_subscription", T, existing) == (NOW, False)
        # a web subscription still counts
        assert extend("extend_last_subscription", T, existing + [sub(WEB, n(0), n(20))]) == (n(20), True)


# --- R-EXT-8 -----------------------------------------------------------------------------------


def test_unknown_extension_method_is_a_configuration_error():
    """R-EXT-8: an unknown method code raises."""
    with pytest.raises(periods.UnknownMethod):
        resolve(subscription_type=TypeSpec(id=1, length=30, extension_method="nope"), existing=[], now=NOW)
    with pytest.raises(periods.UnknownMethod):
        resolve(subscription_type=TypeSpec(id=1, length=30, length_method="nope"), existing=[], now=NOW)


# --- R-LEN-1 fix_days --------------------------------------------------------------------------


def test_fix_days_length():
    """R-LEN-1: length 31, start 2021-02-01 10:00 → 2021-03-04 10:00."""
    type31 = TypeSpec(id=1, length=31, extending_length=28)
    period = resolve(subscription_type=type31, existing=[], now=NOW, start=local(2021, 2, 1, 10))
    assert (period.start, period.end, period.length, period.is_extending) == (
        local(2021, 2, 1, 10), local(2021, 3, 4, 10), 31, False)


def test_fix_days_extending_length():
    """R-LEN-1: the same type extending with extending_length 28 → 2021-03-01 10:00."""
    type31 = TypeSpec(id=1, length=31, extending_length=28)
    existing = [sub(type31, local(2021, 1, 1, 10), local(2021, 2, 1, 10))]
    period = resolve(subscription_type=type31, existing=existing, now=local(2021, 2, 1, 9))
    assert (period.start, period.end, period.length, period.is_extending) == (
        local(2021, 2, 1, 10), local(2021, 3, 1, 10), 28, True)


def test_fix_days_extending_without_extending_length_uses_length():
    """R-LEN-1: extending, but no extending_length set → length."""
    type31 = TypeSpec(id=1, length=31)
    existing = [sub(type31, local(2021, 1, 1, 10), local(2021, 2, 1, 10))]
    period = resolve(subscription_type=type31, existing=existing, now=local(2021, 2, 1, 9))
    assert (period.end, period.length, period.is_extending) == (local(2021, 3, 4, 10), 31, True)


def test_fix_days_not_extending_ignores_extending_length():
    """R-LEN-1: another type's current subscription is not extending → length, not extending_length."""
    type31 = TypeSpec(id=1, length=31, extending_length=28)
    existing = [sub(T2, local(2021, 1, 1, 10), local(2021, 2, 1, 10))]
    period = resolve(subscription_type=type31, existing=existing, now=local(2021, 2, 1, 9))
    assert (period.start, period.end, period.length) == (local(2021, 2, 1, 10), local(2021, 3, 4, 10), 31)


@pytest.mark.parametrize(("start", "end"), [
    (local(2021, 3, 1, 10), local(2021, 4, 1, 10)),  # over the spring-forward night (2021-03-28)
    (local(2021, 10, 1, 10), local(2021, 11, 1, 10)),  # over the fall-back night (2021-10-31)
])
def test_fix_days_keeps_local_time_over_dst(start, end):
    """R-GEN-2/R-LEN-1: +31 days keeps the local time of day across DST (so not 31*24 hours)."""
    period = resolve(subscription_type=TypeSpec(id=1, length=31), existing=[], now=NOW, start=start)
    assert period.end == end
    assert period.end - period.start != timedelta(days=31)


# --- R-LEN-2 calendar_days ---------------------------------------------------------------------

CAL = TypeSpec(id=5, length=30, length_method="calendar_days")


@pytest.mark.parametrize(("start", "days", "end"), [
    (local(2021, 2, 10), 28, local(2021, 3, 10)),
    (local(2020, 2, 15), 29, local(2020, 3, 15)),
    (local(2021, 1, 31), 31, local(2021, 3, 3)),
])
def test_calendar_days_examples(start, days, end):
    """R-LEN-2: N = days of the calendar month of start; type length (30) ignored."""
    period = resolve(subscription_type=CAL, existing=[], now=NOW, start=start)
    assert (period.start, period.end, period.length) == (start, end, days)


def test_calendar_days_uses_the_local_month():
    """R-LEN-2/R-GEN-2: 2021-01-31 23:30 UTC is 2021-02-01 00:30 in Bratislava: February → 28 days."""
    start = datetime(2021, 1, 31, 23, 30, tzinfo=UTC)
    period = resolve(subscription_type=CAL, existing=[], now=NOW, start=start)
    assert period.length == 28
    assert period.end == local(2021, 3, 1, 0, 30)


# --- R-SUB-3 resolution order ------------------------------------------------------------------

T31 = TypeSpec(id=7, length=31)


def spec(**fields) -> TypeSpec:
    return TypeSpec(**{"id": 7, "length": 31, **fields})


def test_fixed_start_in_future():
    """R-SUB-3 ex.: fixed_start N+7 → N+7…N+38."""
    period = resolve(subscription_type=spec(fixed_start=n(7)), existing=[], now=NOW)
    assert (period.start, period.end, period.is_extending) == (n(7), n(38), False)


def test_fixed_start_in_past_starts_now():
    """R-SUB-3 ex.: fixed_start N−62 → N…N+31."""
    period = resolve(subscription_type=spec(fixed_start=n(-62)), existing=[], now=NOW)
    assert (period.start, period.end) == (NOW, n(31))


def test_fixed_start_skips_extension_method():
    """R-SUB-3 step 2: with fixed_start the extension method is not consulted, not extending."""
    existing = [sub(T31, n(-5), n(25))]
    period = resolve(subscription_type=spec(fixed_start=n(7), extending_length=5), existing=existing, now=NOW)
    assert (period.start, period.end, period.length, period.is_extending) == (n(7), n(38), 31, False)


def test_fixed_end_in_past_gives_zero_length():
    """R-SUB-3 ex.: fixed_end N−62 → N…N."""
    period = resolve(subscription_type=spec(fixed_end=n(-62)), existing=[], now=NOW)
    assert (period.start, period.end) == (NOW, NOW)


def test_given_start_beats_fixed_start():
    """R-SUB-3 ex.: start N−62 given with fixed_start N+7 → N−62…N−31."""
    period = resolve(subscription_type=spec(fixed_start=n(7)), existing=[], now=NOW, start=n(-62))
    assert (period.start, period.end, period.is_extending) == (n(-62), n(-31), False)


def test_given_end_before_start_is_clamped():
    """R-SUB-3 ex.: end N−62 given → N…N (step 7)."""
    period = resolve(subscription_type=T31, existing=[], now=NOW, end=n(-62))
    assert (period.start, period.end) == (NOW, NOW)


def test_given_start_and_end_beat_fixed_dates():
    """R-SUB-3 ex.: start N+7 & end N+31 with both fixed dates in the past → N+7…N+31."""
    period = resolve(subscription_type=spec(fixed_start=n(-100), fixed_end=n(-50)), existing=[], now=NOW,
                     start=n(7), end=n(31))
    assert (period.start, period.end) == (n(7), n(31))


def test_given_start_is_not_extending():
    """R-SUB-3 step 1: a given start ignores the extension method and is not extending."""
    existing = [sub(T31, n(-5), n(25))]
    period = resolve(subscription_type=spec(extending_length=5), existing=existing, now=NOW, start=n(3))
    assert (period.start, period.end, period.length, period.is_extending) == (n(3), n(34), 31, False)


def test_stored_length_is_type_length_when_end_is_given():
    """R-SUB-3: the stored length is the type's length when end came from step 4/5 (REMP quirk)."""
    period = resolve(subscription_type=T31, existing=[], now=NOW, end=n(10))
    assert (period.end, period.length) == (n(10), 31)
    period = resolve(subscription_type=spec(fixed_end=n(90)), existing=[], now=NOW)
    assert (period.end, period.length) == (n(90), 31)


def test_stored_length_is_extending_length_when_extending_and_end_given():
    """R-SUB-3: … or extending_length if extending."""
    existing = [sub(T31, n(-5), n(25))]
    period = resolve(subscription_type=spec(extending_length=5), existing=existing, now=NOW, end=n(60))
    assert (period.start, period.end, period.length, period.is_extending) == (n(25), n(60), 5, True)


def test_stored_length_with_given_end_ignores_calendar_days():
    """R-SUB-3: end from step 4/5 → stored length is the type's `length` (30), not February's 28."""
    period = resolve(subscription_type=CAL, existing=[], now=NOW, end=n(10))
    assert (period.end, period.length) == (n(10), 30)
    period = resolve(subscription_type=TypeSpec(id=5, length=30, length_method="calendar_days", fixed_end=n(90)),
                     existing=[], now=NOW)
    assert (period.end, period.length) == (n(90), 30)


# --- properties --------------------------------------------------------------------------------


def in_gap(naive: datetime) -> bool:
    """The local wall-clock time does not exist (skipped by the spring-forward change)."""
    aware = naive.replace(tzinfo=TZ)
    return aware.astimezone(UTC).astimezone(TZ).replace(tzinfo=None) != naive


instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 12, 31),
                        timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=0))
offsets = st.integers(min_value=-400, max_value=4000)


@st.composite
def existing_sets(draw, now):
    type_ids = st.sampled_from([1, 2, 3])
    accesses = st.sampled_from([frozenset(), frozenset({"web"}), frozenset({"mobile"}),
                                frozenset({"web", "print"}), frozenset({"web", "mobile"})])
    result = []
    for _ in range(draw(st.integers(0, 6))):
        start = now + timedelta(seconds=draw(st.integers(-400 * 86400, 400 * 86400)))
        end = start + timedelta(seconds=draw(st.sampled_from([0, 1, 3600, 86400 * 30, 86400 * 365 * 100])
                                             | st.integers(0, 800 * 86400)))
        result.append(Existing(type_id=draw(type_ids), start=start, end=end, content_access=draw(accesses)))
    return result


@st.composite
def scenarios(draw):
    now = draw(instants)
    new_type = TypeSpec(id=draw(st.sampled_from([1, 2, 4])), length=30,
                        content_access=draw(st.sampled_from([frozenset(), frozenset({"web"}), frozenset({"mobile"}),
                                                             frozenset({"web", "print"})])))
    return now, new_type, draw(existing_sets(now))


@PROPERTY
@given(scenarios(), st.sampled_from(sorted(EXTENSION_METHODS)))
def test_every_extension_method_starts_now_or_at_an_existing_end(scenario, method):
    """R-EXT-*: every method returns now or the end of one existing subscription, never before now."""
    now, new_type, existing = scenario
    start, is_extending = EXTENSION_METHODS[method](new_type=new_type, existing=existing, now=now)
    assert start >= now
    assert start == now or start in {s.end for s in existing}
    if start == now:
        assert is_extending is False
    assert isinstance(is_extending, bool)


local_times = st.times().map(lambda t: t.replace(microsecond=0))
dst_dates = st.one_of(
    st.dates(min_value=date(2021, 3, 20), max_value=date(2021, 4, 4)),
    st.dates(min_value=date(2021, 10, 23), max_value=date(2021, 11, 7)),
    st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31)),
)


@PROPERTY
@given(dst_dates, local_times, st.integers(min_value=0, max_value=800), st.sampled_from([0, 1]))
def test_add_days_keeps_local_wall_clock_time(day, clock, days, fold):
    """R-GEN-2: +N days keeps the local time of day across DST and the local date moves N days."""
    naive = datetime.combine(day, clock)
    target = datetime.combine(day + timedelta(days=days), clock)
    assume(not in_gap(naive) and not in_gap(target))
    value = naive.replace(tzinfo=TZ, fold=fold).astimezone(UTC)
    result = add_days(value, days)
    assert result.tzinfo is not None and result.microsecond == 0
    result_local = result.astimezone(TZ)
    assert result_local.date() == day + timedelta(days=days)
    assert result_local.time() == clock


@pytest.mark.parametrize(("start", "days", "end", "hours"), [
    (local(2021, 3, 27, 12), 1, local(2021, 3, 28, 12), 23),
    (local(2021, 3, 28, 1, 30), 1, local(2021, 3, 29, 1, 30), 23),  # starts right before the change
    (local(2021, 10, 30, 12), 1, local(2021, 10, 31, 12), 25),
    (local(2021, 10, 30, 23, 59, 59), 2, local(2021, 11, 1, 23, 59, 59), 49),
])
def test_add_days_over_dst_nights(start, days, end, hours):
    """R-GEN-2: day arithmetic is wall-clock, hour arithmetic absolute."""
    assert add_days(start, days) == end
    assert (end - start).total_seconds() == hours * 3600


@PROPERTY
@given(instants, st.integers(-400, 400), st.integers(-400, 400))
def test_add_days_composes(value, a, b):
    """R-GEN-2: add_days(add_days(x, a), b) == add_days(x, a + b) when x + a is not in a DST gap."""
    wall = value.astimezone(TZ).replace(tzinfo=None)
    assume(not in_gap(wall + timedelta(days=a)))
    assert add_days(add_days(value, a), b) == add_days(value, a + b)


calendar_months = st.sampled_from([(2020, 2), (2021, 2), (2024, 2), (2100, 2), (2000, 2), (2021, 1), (2021, 3),
                                   (2021, 4), (2021, 5), (2021, 7), (2021, 8), (2021, 10), (2021, 12), (2022, 6)])


@PROPERTY
@given(calendar_months, st.data(), local_times)
def test_calendar_days_is_the_number_of_days_of_the_start_month(month, data, clock):
    """R-LEN-2: over month ends and leap days, N = days of the start's local month, end = start + N days."""
    year, mon = month
    days_in_month = calendar.monthrange(year, mon)[1]
    day = data.draw(st.sampled_from(sorted({1, 15, 28, days_in_month - 1, days_in_month})))
    naive = datetime(year, mon, day).replace(hour=clock.hour, minute=clock.minute, second=clock.second)
    assume(not in_gap(naive) and not in_gap(naive + timedelta(days=days_in_month)))
    start = naive.replace(tzinfo=TZ).astimezone(UTC)
    period = resolve(subscription_type=CAL, existing=[], now=start, start=start)
    assert period.length == days_in_month
    end_local = period.end.astimezone(TZ)
    assert end_local.date() == naive.date() + timedelta(days=days_in_month)
    assert end_local.time() == naive.time()
    if day == 1:  # a whole calendar month
        first_of_next = (year, mon + 1, 1) if mon < 12 else (year + 1, 1, 1)
        assert (end_local.year, end_local.month, end_local.day) == first_of_next


@pytest.mark.parametrize(("start", "end"), [
    (local(2024, 2, 29), local(2024, 3, 29)),
    (local(2021, 3, 31), local(2021, 5, 1)),
    (local(2021, 4, 30), local(2021, 5, 30)),
    (local(2021, 12, 31, 23, 59, 59), local(2022, 1, 31, 23, 59, 59)),
])
def test_calendar_days_month_ends(start, end):
    """R-LEN-2: the 31st and leap days."""
    assert resolve(subscription_type=CAL, existing=[], now=NOW, start=start).end == end


optional_instant = st.none() | instants


@PROPERTY
@given(scenarios(), optional_instant, optional_instant, optional_instant, optional_instant,
       st.sampled_from(["fix_days", "calendar_days"]), st.integers(0, 400), st.none() | st.integers(1, 400),
       st.sampled_from(sorted(EXTENSION_METHODS)))
def test_resolve_order(scenario, start, end, fixed_start, fixed_end, length_method, length, extending_length,
                       method):
    """R-SUB-3: start/fixed_start/extension, end/fixed_end/length method, end >= start always."""
    now, new_type, existing = scenario
    type_ = TypeSpec(id=new_type.id, length=length, extension_method=method, length_method=length_method,
                     extending_length=extending_length, fixed_start=fixed_start, fixed_end=fixed_end,
                     content_access=new_type.content_access)
    period = resolve(subscription_type=type_, existing=existing, now=now, start=start, end=end)
    assert period.end >= period.start
    if start is not None:
        assert (period.start, period.is_extending) == (start, False)
    elif fixed_start is not None:
        assert (period.start, period.is_extending) == (max(fixed_start, now), False)
    else:
        assert (period.start, period.is_extending) == EXTENSION_METHODS[method](
            new_type=type_, existing=existing, now=now)
    if end is not None:
        assert period.end == max(end, period.start)
    elif fixed_end is not None:
        assert period.end == max(fixed_end, period.start)
    else:
        if length_method == "fix_days":
            expected = extending_length if period.is_extending and extending_length else length
        else:
            start_local = period.start.astimezone(TZ)
            expected = calendar.monthrange(start_local.year, start_local.month)[1]
        assert period.length == expected
        assert period.end == add_days(period.start, expected)


def test_local_helper_round_trip():
    """Self-check of the helpers: now is 2021-02-01 00:00 in Bratislava (CET, UTC+1)."""
    assert NOW == datetime(2021, 1, 31, 23, 0, tzinfo=UTC)
    assert n(28) == local(2021, 3, 1)
    assert NOW.astimezone(TZ).time() == time(0, 0)
