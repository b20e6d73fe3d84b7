"""Read-side helpers for subscriptions."""

import calendar
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, F, OuterRef, Q
from django.db.models.functions import TruncMonth
from django.utils import timezone

from masthead.core import clock
from masthead.subscriptions import periods
from masthead.subscriptions.models import ContentAccess, Subscription, SubscriptionType


def access_at(user, when: datetime) -> set[str]:
    """Names of the content access ``user`` holds at ``when``."""
    return set(
        ContentAccess.objects.filter(subscription_types__subscriptions__user=user,
                                     subscription_types__subscriptions__start_time__lte=when,
                                     subscription_types__subscriptions__end_time__gt=when)
        .values_list("name", flat=True).distinct()
    )


def type_spec(subscription_type: SubscriptionType) -> periods.TypeSpec:
    return periods.TypeSpec(
        id=subscription_type.pk,
        length=subscription_type.length,
        extension_method=subscription_type.extension_method,
        length_method=subscription_type.length_method,
        extending_length=subscription_type.extending_length,
        fixed_start=subscription_type.fixed_start,
        fixed_end=subscription_type.fixed_end,
        content_access=frozenset(subscription_type.content_access.values_list("name", flat=True)),
    )


#: callables giving the ids of family (parent and child) types; the family app registers one
FAMILY_TYPE_PROVIDERS: list = []


def existing_periods(user) -> list[periods.Existing]:
    """The user's subscriptions as the date math sees them (one query for rows, one for access,
    one per family-type provider)."""
    rows = list(Subscription.objects.filter(user=user).values_list("subscription_type_id", "start_time", "end_time"))
    access: dict[int, set[str]] = {}
    type_ids = {r[0] for r in rows}
    for type_id, name in SubscriptionType.content_access.through.objects.filter(
            subscriptiontype_id__in=type_ids).values_list("subscriptiontype_id", "contentaccess__name"):
        access.setdefault(type_id, set()).add(name)
    family = set().union(*(provider() for provider in FAMILY_TYPE_PROVIDERS)) if rows else set()
    return [periods.Existing(type_id=t, start=s, end=e, content_access=frozenset(access.get(t, ())),
                             is_family=t in family) for t, s, e in rows]


# --- admin and customer-zone read side ---------------------------------------------------------
# Each function below runs a fixed number of queries whatever the table size: the counts are
# aggregates computed by the database, never loops over rows.

def _running(now: datetime, prefix: str = "") -> Q:
    """Subscriptions running at ``now``: start ≤ now < end."""
    return Q(**{f"{prefix}start_time__lte": now, f"{prefix}end_time__gt": now})


def _local(value: datetime) -> datetime:
    """``value`` as a naive local wall-clock time (``settings.TIME_ZONE``)."""
    return clock.localtime(value).replace(tzinfo=None)


def _from_local(naive: datetime) -> datetime:
    """A local wall-clock time (``settings.TIME_ZONE``) as an aware datetime."""
    return timezone.make_aware(naive)


def _month_back(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) - months
    return index // 12, index % 12 + 1


def active_subscribers(now: datetime) -> dict:
    """Readers with a subscription running at ``now`` (distinct users), in total and per content access."""
    total = Subscription.objects.filter(_running(now)).aggregate(users=Count("user", distinct=True))["users"]
    per_access = (
        ContentAccess.objects
        .annotate(users=Count("subscription_types__subscriptions__user", distinct=True,
                              filter=_running(now, "subscription_types__subscriptions__")))
        .order_by("sorting", "name").values_list("name", "users"))
    return {"total": total, "by_access": [{"name": name, "users": users} for name, users in per_access]}


def new_subscriptions(now: datetime) -> dict:
    """Subscriptions created today and this month so far, each against the same stretch of last month.

    Local wall-clock time: today 00:00 → now against the same day of last month 00:00 → the same
    time; the 1st 00:00 → now against last month's 1st 00:00 → the same day and time. A day last
    month lacks (the 30th in February) compares today with last month's last day, and the month
    so far with the whole of last month.
    """
    local = _local(now)
    today = local.replace(hour=0, minute=0, second=0, microsecond=0)
    month = today.replace(day=1)
    year, mon = _month_back(local.year, local.month, 1)
    days_then = calendar.monthrange(year, mon)[1]
    day_then = today.replace(year=year, month=mon, day=min(local.day, days_then))
    month_then_until = local.replace(year=year, month=mon) if local.day <= days_then else month
    windows = {
        "today": (today, local),
        "today_last_month": (day_then, day_then + (local - today)),
        "month": (month, local),
        "month_last_month": (month.replace(year=year, month=mon), month_then_until),
    }
    counts = Subscription.objects.aggregate(**{
        name: Count("id", filter=Q(created_at__gte=_from_local(start), created_at__lte=_from_local(until)))
        for name, (start, until) in windows.items()})
    counts["today_delta"] = counts["today"] - counts["today_last_month"]
    counts["month_delta"] = counts["month"] - counts["month_last_month"]
    return counts


def ending_soon(now: datetime, days: int = 7) -> dict:
    """Subscriptions ending after ``now`` and within ``days`` days, and how many of them are renewed.

    Renewed: the same reader already has a following subscription, one that starts at or after
    this one's end. Zero-length rows (start = end) neither end nor renew anything.
    """
    until = periods.add_days(now, days)
    following = (Subscription.objects.filter(user_id=OuterRef("user_id"), start_time__gte=OuterRef("end_time"))
                 .exclude(start_time=F("end_time")))
    counts = (Subscription.objects.filter(end_time__gt=now, end_time__lte=until).exclude(start_time=F("end_time"))
              .aggregate(ending=Count("id"), renewed=Count("id", filter=Q(Exists(following)))))
    return {"days": days, "until": until, **counts}


def total_subscriptions() -> dict:
    return Subscription.objects.aggregate(total=Count("id"), paid=Count("id", filter=Q(is_paid=True)))


def new_per_month(now: datetime, months: int = 12) -> list[dict]:
    """New subscriptions (by creation) per local calendar month, the last ``months`` months up to
    this one, oldest first; months without any count 0. One grouped query."""
    local = _local(now)
    keys = [_month_back(local.year, local.month, back) for back in range(months - 1, -1, -1)]
    first = _from_local(datetime(*keys[0], 1))
    tz = timezone.get_current_timezone()
    rows = (Subscription.objects.filter(created_at__gte=first)
            .annotate(month=TruncMonth("created_at", tzinfo=tz)).values("month")
            .annotate(count=Count("id")).order_by())
    counts: dict[tuple[int, int], int] = {}
    for row in rows:  # at most `months` grouped rows
        month = timezone.localtime(row["month"], tz)
        counts[(month.year, month.month)] = counts.get((month.year, month.month), 0) + row["count"]
    return [{"month": _from_local(datetime(y, m, 1)), "count": counts.get((y, m), 0)} for y, m in keys]


def print_without_address(now: datetime, limit: int = 10) -> dict:
    """Readers with running access to one of ``settings.PRINT_ACCESS_NAMES`` and no address of a
    type in ``settings.PRINT_ADDRESS_TYPES``: how many, and the first ``limit`` by e-mail."""
    from masthead.users.models import Address, User

    printed = Subscription.objects.filter(
        _running(now), user_id=OuterRef("pk"),
        subscription_type__content_access__name__in=list(settings.PRINT_ACCESS_NAMES))
    address = Address.objects.filter(user_id=OuterRef("pk"), type__in=list(settings.PRINT_ADDRESS_TYPES))
    users = User.objects.filter(Exists(printed)).filter(~Exists(address))
    return {"count": users.count(), "users": list(users.order_by("email").values("pk", "email")[:limit]),
            "access_names": list(settings.PRINT_ACCESS_NAMES), "address_types": list(settings.PRINT_ADDRESS_TYPES)}


@dataclass
class SubscriptionRow:
    """One subscription as the admin user page and the customer zone show it."""

    subscription: Subscription
    access: list[str]
    is_actual: bool  # running now
    is_future: bool
    is_finished: bool  # ended, or zero-length (stopped before it started)

    @property
    def can_stop(self) -> bool:
        """R-SUB-9: stopping is offered only for rows that have not ended and are not zero-length."""
        return not self.is_finished


def _rows(queryset, now: datetime) -> list[SubscriptionRow]:
    rows = []
    for s in queryset.select_related("subscription_type").prefetch_related("subscription_type__content_access"):
        zero = s.start_time == s.end_time
        rows.append(SubscriptionRow(
            subscription=s, access=[a.name for a in s.subscription_type.content_access.all()],
            is_actual=not zero and s.start_time <= now < s.end_time,
            is_future=not zero and s.start_time > now,
            is_finished=zero or s.end_time <= now))
    return rows


def user_subscriptions(user, now: datetime, limit: int = 50) -> dict:
    """A reader's subscriptions for the admin user page: newest end first (three queries)."""
    mine = Subscription.objects.filter(user=user)
    return {"rows": _rows(mine.order_by("-end_time", "-start_time", "-pk")[:limit], now), "count": mine.count()}


def _finished_q(now: datetime) -> Q:
    return Q(end_time__lte=now) | Q(start_time=F("end_time"))


def customer_subscriptions(user, now: datetime, *, finished: bool = False) -> dict:
    """The reader's running and future subscriptions (by start), and, when asked, the finished ones
    (newest end first); ``finished_count`` either way."""
    mine = Subscription.objects.filter(user=user)
    current = mine.exclude(_finished_q(now)).order_by("start_time", "end_time", "pk")
    done = mine.filter(_finished_q(now)).order_by("-end_time", "-pk")
    return {"current": _rows(current, now), "finished": _rows(done, now) if finished else None,
            "finished_count": done.count()}


def access_now(user, now: datetime) -> list[ContentAccess]:
    """The content access ``user`` holds at ``now``, in catalog order."""
    running = Subscription.objects.filter(_running(now), user=user,
                                          subscription_type__content_access=OuterRef("pk"))
    return list(ContentAccess.objects.filter(Exists(running)).order_by("sorting", "name"))


# --- a reader's subscriptions (the paywall's hot path) ------------------------------------------
# Paywalls and apps ask this on every page view, so it is two plain SQL statements: building the
# ORM queries costs several times more than running them.

_READER_SQL = """
    SELECT s.id, s.start_time, s.end_time, t.id, t.code, t.name, t.user_label, ca.name
    FROM subscriptions_subscription s
    JOIN subscriptions_subscriptiontype t ON t.id = s.subscription_type_id
    LEFT JOIN subscriptions_subscriptiontype_content_access sc ON sc.subscriptiontype_id = t.id
    LEFT JOIN subscriptions_contentaccess ca ON ca.id = sc.contentaccess_id
    WHERE s.user_id = %s{since}
    ORDER BY s.end_time DESC, s.id DESC, ca.sorting, ca.name
"""
_ACCESS_SQL = """
    SELECT sc.subscriptiontype_id, ca.name
    FROM subscriptions_subscriptiontype_content_access sc
    JOIN subscriptions_contentaccess ca ON ca.id = sc.contentaccess_id
    {where}
    ORDER BY ca.sorting, ca.name
"""


@dataclass(frozen=True)
class ReaderSubscription:
    id: int
    start_time: datetime
    end_time: datetime
    type_id: int
    code: str
    name: str
    label: str
    access: list[str]


def access_names(type_ids=None) -> dict[int, list[str]]:
    """Content-access names per subscription type id, in content-access order; one query.
    ``type_ids`` None: every type."""
    params: list = []
    where = ""
    if type_ids is not None:
        type_ids = sorted(type_ids)
        if not type_ids:
            return {}
        where = f"WHERE sc.subscriptiontype_id IN ({', '.join(['%s'] * len(type_ids))})"
        params = type_ids
    names: dict[int, list[str]] = {}
    with connection.cursor() as cursor:
        cursor.execute(_ACCESS_SQL.format(where=where), params)
        for type_id, name in cursor.fetchall():
            names.setdefault(type_id, []).append(name)
    return names


def reader_subscriptions(user_id: int, *, ending_from: datetime | None = None) -> list[ReaderSubscription]:
    """The reader's subscriptions, latest end first; with ``ending_from`` only those ending then or later."""
    params: list = [user_id]
    since = ""
    if ending_from is not None:
        since = " AND s.end_time >= %s"
        params.append(connection.ops.adapt_datetimefield_value(ending_from))
    with connection.cursor() as cursor:
        cursor.execute(_READER_SQL.format(since=since), params)
        rows = cursor.fetchall()
    # one row per (subscription, content access): regroup, keeping the order
    result: dict[int, ReaderSubscription] = {}
    for i, start, end, type_id, code, name, label, access in rows:
        if i not in result:
            result[i] = ReaderSubscription(id=i, start_time=clock.from_db_utc(start),
                                           end_time=clock.from_db_utc(end), type_id=type_id,
                                           code=code, name=name, label=label, access=[])
        if access is not None:
            result[i].access.append(access)
    return list(result.values())

