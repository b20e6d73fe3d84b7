"""Where a new subscription starts and ends: pure date math, no database.

Extension methods decide the start (R-EXT-*), length methods the end (R-LEN-*), and
:func:`resolve` applies the order of R-SUB-3. Both kinds live in registries so other apps add
their own (family registers ``extend_family``). Day arithmetic is wall-clock arithmetic in
``settings.TIME_ZONE`` (R-GEN-2): +31 days keeps the local time of day across DST changes.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings



@dataclass(frozen=True)
class TypeSpec:
    """What the date math needs to know about a subscription type."""

    id: int
    length: int
    extension_method: str = "extend_actual"
    length_method: str = "fix_days"
    extending_length: int | None = None
    fixed_start: datetime | None = None
    fixed_end: datetime | None = None
    content_access: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Existing:
    """One of the user's existing subscriptions."""

    type_id: int
    start: datetime
    end: datetime
    content_access: frozenset[str] = frozenset()
    is_family: bool = False  # a family parent or child type (extend_family, R-EXT-7)

    @property
    def is_mobile(self) -> bool:
        return "mobile" in self.content_access

    def is_current(self, now: datetime) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    length: int
    is_extending: bool


ExtensionMethod = Callable[..., tuple[datetime, bool]]
LengthMethod = Callable[..., int]

EXTENSION_METHODS: dict[str, ExtensionMethod] = {}
LENGTH_METHODS: dict[str, LengthMethod] = {}


class UnknownMethod(ValueError):
    """A type names a method nobody registered (R-EXT-8): a configuration error."""


def extension_method(code: str):
    def register(fn: ExtensionMethod) -> ExtensionMethod:
        EXTENSION_METHODS[code] = fn
        return fn
    return register


def length_method(code: str):
    def register(fn: LengthMethod) -> LengthMethod:
        LENGTH_METHODS[code] = fn
        return fn
    return register


def _tz() -> ZoneInfo:
    return ZoneInfo(settings.TIME_ZONE)


def add_days(value: datetime, days: int) -> datetime:
    """``value`` + ``days`` calendar days at the same local wall-clock time, in UTC, whole seconds."""
    tz = _tz()
    local = value.astimezone(tz).replace(tzinfo=None) + timedelta(days=days)
    # A wall-clock time skipped by DST (02:30 on a spring-forward night) resolves to the later offset.
    return local.replace(tzinfo=tz).astimezone(UTC).replace(microsecond=0)


def _horizon(now: datetime) -> datetime:
    """now + 30 calendar years at the same local wall-clock time (R-EXT-4/5 "lifetime" limit)."""
    tz = _tz()
    local = now.astimezone(tz).replace(tzinfo=None)
    try:
        later = local.replace(year=local.year + 30)
    except ValueError:  # 29 February → 1 March, as PHP's "+30 years"
        later = local.replace(year=local.year + 30, month=3, day=1)
    return later.replace(tzinfo=tz).astimezone(UTC)


def _current_by_priority(existing: Sequence[Existing], now: datetime) -> list[Existing]:
    """Current subscriptions, mobile ones first, then latest end first (R-EXT-2 order)."""
    return sorted((s for s in existing if s.is_current(now)), key=lambda s: (not s.is_mobile, -s.end.timestamp()))


@extension_method("start_now")
def start_now(*, new_type: TypeSpec, existing: Sequence[Existing], now: datetime) -> tuple[datetime, bool]:
    return now, False


@extension_method("extend_actual")
def extend_actual(*, new_type, existing, now):
    current = _current_by_priority(existing, now)
    if current:
        return current[0].end, current[0].type_id == new_type.id
    return now, False


@extension_method("extend_same_actual")
def extend_same_actual(*, new_type, existing, now):
    current = [s for s in _current_by_priority(existing, now) if s.type_id == new_type.id]
    if current:
        return current[0].end, True
    return now, False


@extension_method("extend_same_type")
def extend_same_type(*, new_type, existing, now):
    horizon = _horizon(now)
    same = [s for s in existing if s.type_id == new_type.id and now < s.end < horizon]
    if same:
        return max(s.end for s in same), True
    current = _current_by_priority(existing, now)
    if current and current[0].end < horizon:
        return current[0].end, current[0].type_id == new_type.id
    return now, False


@extension_method("extend_same_content_access")
def extend_same_content_access(*, new_type, existing, now):
    horizon = _horizon(now)
    for s in sorted((s for s in existing if now < s.end < horizon), key=lambda s: s.end, reverse=True):
        if s.content_access == new_type.content_access:
            return s.end, True
    return now, False


@extension_method("extend_last_subscription")
def extend_last_subscription(*, new_type, existing, now):
    ignored = frozenset(getattr(settings, "EXTEND_LAST_IGNORED_ACCESS", ()))
    candidates = [s for s in existing if s.end > now and s.end != s.start
                  and not (ignored and s.content_access and s.content_access <= ignored)]
    if candidates:
        return max(s.end for s in candidates), True
    return now, False


@length_method("fix_days")
def fix_days(*, subscription_type: TypeSpec, start: datetime, is_extending: bool) -> int:
    if is_extending and subscription_type.extending_length:
        return subscription_type.extending_length
    return subscription_type.length


@length_method("calendar_days")
def calendar_days(*, subscription_type: TypeSpec, start: datetime, is_extending: bool) -> int:
    local = start.astimezone(_tz())
    return calendar.monthrange(local.year, local.month)[1]


def _method(registry: dict, code: str, kind: str):
    try:
        return registry[code]
    except KeyError:
        raise UnknownMethod(f"unknown {kind} method '{code}'") from None


def resolve(*, subscription_type: TypeSpec, existing: Sequence[Existing], now: datetime,
            start: datetime | None = None, end: datetime | None = None) -> Period:
    """R-SUB-3: the start and end of a new subscription of ``subscription_type``."""
    is_extending = False
    if start is None and subscription_type.fixed_start is not None:
        start = max(subscription_type.fixed_start, now)
    elif start is None:
        method = _method(EXTENSION_METHODS, subscription_type.extension_method, "extension")
        start, is_extending = method(new_type=subscription_type, existing=existing, now=now)
    length_of = _method(LENGTH_METHODS, subscription_type.length_method, "length")
    if end is None and subscription_type.fixed_end is None:
        days = length_of(subscription_type=subscription_type, start=start, is_extending=is_extending)
        end = add_days(start, days)
    else:  # end from step 4/5: store the type's length, not the real interval (R-SUB-3)
        days = (subscription_type.extending_length if is_extending and subscription_type.extending_length
                else subscription_type.length)
        if end is None:
            end = max(subscription_type.fixed_end, start)
    return Period(start=start, end=max(end, start), length=days, is_extending=is_extending)
