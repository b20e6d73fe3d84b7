"""Every state change of subscriptions: create, update, stop, move, and the status sweep."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Subquery
from django.utils.translation import gettext as _

from masthead.core import clock
from masthead.core.events import emit
from masthead.subscriptions import events, periods, queries
from masthead.subscriptions.models import Subscription, SubscriptionMeta, SubscriptionType, SubscriptionTypeName
from masthead.users.models import User

S = Subscription


class SubscriptionError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def status_at(start: datetime, end: datetime, now: datetime) -> str:
    """R-SUB-4."""
    if start <= now < end:
        return S.ACTIVE
    if end <= now:
        return S.AFTER_END
    if start > now:
        return S.BEFORE_START
    return S.UNKNOWN


def active_label(code: str | None) -> str | None:
    """``code`` if it is an active subscription label, else None (R-SUB-2)."""
    if code and SubscriptionTypeName.objects.filter(code=code, active=True).exists():
        return code
    return None


def _emit_status_change(subscription: Subscription, old: str | None) -> None:
    new = subscription.internal_status
    if new == old:
        return
    if new == S.ACTIVE:
        emit(events.SubscriptionStarted(subscription_id=subscription.pk, user_id=subscription.user_id))
    elif new == S.AFTER_END:
        emit(events.SubscriptionEnded(subscription_id=subscription.pk, user_id=subscription.user_id))


def _lock_user(user: User) -> None:
    """Serialise timeline changes per reader: two purchases at once must not both extend one end."""
    list(User.objects.select_for_update().filter(pk=user.pk).values_list("pk", flat=True))


@transaction.atomic
def create_subscription(*, user: User, subscription_type: SubscriptionType, type: str = "regular",
                        is_paid: bool | None = False, is_recurrent: bool = False, start: datetime | None = None,
                        end: datetime | None = None, note: str = "", address=None, payment_id: int | None = None,
                        meta: dict[str, str] | None = None, enforce_limit: bool = False) -> Subscription:
    """Place a new subscription on the reader's timeline (R-SUB-3) and announce it (R-SUB-5).

    With ``enforce_limit``, the type's per-user limit (R-SAPI-7) is checked under the reader's lock.
    """
    _lock_user(user)
    if enforce_limit and limit_reached(user=user, subscription_type=subscription_type):
        raise SubscriptionError("limit_reached", _("Limit per user reached"))
    now = clock.now()
    # the reader's timeline matters only to an extension method, i.e. when no start is given
    spec = queries.type_spec(subscription_type)
    needs_timeline = start is None and spec.fixed_start is None
    period = periods.resolve(subscription_type=spec, existing=queries.existing_periods(user) if needs_timeline else (),
                             now=now, start=_seconds(start), end=_seconds(end))
    start_time, end_time = _seconds(period.start), _seconds(period.end)  # R-GEN-4, also for fixed dates
    subscription = Subscription.objects.create(
        user=user, subscription_type=subscription_type, type=type, is_paid=is_paid, is_recurrent=is_recurrent,
        start_time=start_time, end_time=end_time, length=period.length, note=note[:255], address=address,
        internal_status=status_at(start_time, end_time, now))
    for key, value in (meta or {}).items():
        SubscriptionMeta.objects.create(subscription=subscription, key=key, value=value)
    if start_time > now:  # R-SUB-8: the ones ending where this starts now lead to it
        Subscription.objects.filter(user=user, end_time=start_time).exclude(pk=subscription.pk).update(
            next_subscription=subscription)
    emit(events.SubscriptionCreated(subscription_id=subscription.pk, user_id=user.pk,
                                    subscription_type_id=subscription_type.pk, payment_id=payment_id))
    _emit_status_change(subscription, None)
    return subscription


@dataclass(frozen=True)
class Placement:
    """One subscription of :func:`create_subscriptions`: a reader and fixed dates."""

    user: User
    start: datetime
    end: datetime
    is_paid: bool | None = False
    type: str = "regular"
    address: object = None
    note: str = ""


@transaction.atomic
def create_subscriptions(*, subscription_type: SubscriptionType, placements: list[Placement]) -> list[Subscription]:
    """Many subscriptions of one type at given dates (a family renewal): what create_subscription
    does with a start and an end for each, in a fixed number of statements, then each one's events."""
    if not placements:
        return []
    user_ids = sorted({p.user.pk for p in placements})
    list(User.objects.select_for_update().filter(pk__in=user_ids).order_by("pk").values_list("pk", flat=True))
    now = clock.now()
    rows = []
    for p in placements:
        start = _seconds(p.start)
        end = max(_seconds(p.end), start)
        rows.append(Subscription(
            user=p.user, subscription_type=subscription_type, type=p.type, is_paid=p.is_paid, is_recurrent=False,
            start_time=start, end_time=end, length=subscription_type.length, note=p.note[:255], address=p.address,
            internal_status=status_at(start, end, now)))
    created = Subscription.objects.bulk_create(rows)
    new_ids = [s.pk for s in created]
    starts = {s.start_time for s in created if s.start_time > now}
    if starts:  # R-SUB-8, as create_subscription: earlier ones ending where a new one starts lead to it
        following = (Subscription.objects.filter(pk__in=new_ids, user_id=OuterRef("user_id"),
                                                 start_time=OuterRef("end_time")).order_by("pk").values("pk")[:1])
        (Subscription.objects.filter(user_id__in=user_ids, end_time__in=starts).exclude(pk__in=new_ids)
         .filter(Exists(following)).update(next_subscription=Subquery(following)))
    for subscription in created:
        emit(events.SubscriptionCreated(subscription_id=subscription.pk, user_id=subscription.user_id,
                                        subscription_type_id=subscription_type.pk))
        _emit_status_change(subscription, None)
    return created


UPDATABLE = ("subscription_type", "type", "is_paid", "start_time", "end_time", "note", "address")


@transaction.atomic
def update_subscription(*, subscription: Subscription, **changes) -> Subscription:
    """Change fields of a subscription; recompute its status and links; emit what changed (R-SUB-6/8)."""
    unknown = set(changes) - set(UPDATABLE)
    if unknown:
        raise TypeError(f"not updatable: {', '.join(sorted(unknown))}")
    for name in ("start_time", "end_time"):
        if name in changes:
            changes[name] = _seconds(changes[name])
    start = changes.get("start_time", subscription.start_time)
    end = changes.get("end_time", subscription.end_time)
    if end < start:
        raise SubscriptionError("end_before_start", _("The end must not be before the start."))
    # Read the stored status under a row lock: two concurrent updates must not both announce a change.
    old_status = (Subscription.objects.select_for_update().filter(pk=subscription.pk)
                  .values_list("internal_status", flat=True).get())
    changed = tuple(n for n, v in changes.items() if getattr(subscription, n) != v)
    for name, value in changes.items():
        setattr(subscription, name, value)
    subscription.internal_status = status_at(subscription.start_time, subscription.end_time, clock.now())
    subscription.save()
    if "start_time" in changed or "end_time" in changed:
        _relink(subscription, start_changed="start_time" in changed, end_changed="end_time" in changed)
    _emit_status_change(subscription, old_status)
    if set(changed) & {"start_time", "end_time", "subscription_type", "address"}:
        emit(events.SubscriptionUpdated(subscription_id=subscription.pk, user_id=subscription.user_id,
                                        changed=changed))
    return subscription


def _relink(subscription: Subscription, *, start_changed: bool, end_changed: bool) -> None:
    """R-SUB-8: keep next_subscription pointing at the subscription that starts exactly at the end."""
    mine = Subscription.objects.filter(user_id=subscription.user_id).exclude(pk=subscription.pk)
    if start_changed:
        mine.filter(next_subscription=subscription).exclude(end_time=subscription.start_time).update(
            next_subscription=None)
        mine.filter(end_time=subscription.start_time, next_subscription__isnull=True).update(
            next_subscription=subscription)
    if end_changed:
        following = mine.filter(start_time=subscription.end_time).order_by("pk").first()
        Subscription.objects.filter(pk=subscription.pk).update(next_subscription=following)
        subscription.next_subscription = following


@transaction.atomic
def stop_subscription(*, subscription: Subscription, by_admin: bool = False,
                      at: datetime | None = None) -> Subscription:
    """End now (or at ``at``, or at the start if it has not started by then), then close the gap it
    leaves (R-SUB-9/10). Never lengthens."""
    original_end = subscription.end_time
    new_end = max(subscription.start_time, min(_seconds(at) if at else clock.now(), original_end))
    if new_end == original_end:
        return subscription
    if by_admin:
        line = f"[Admin stop] Original end_time {clock.rfc3339(original_end)}"
        note = f"{subscription.note}\n{line}" if subscription.note else line
        SubscriptionMeta.objects.update_or_create(subscription=subscription, key="expired_by_admin",
                                                  defaults={"value": "1"})
        update_subscription(subscription=subscription, end_time=new_end, note=note[-255:])
    else:
        update_subscription(subscription=subscription, end_time=new_end)
    emit(events.SubscriptionShortened(subscription_id=subscription.pk, user_id=subscription.user_id,
                                      original_end=original_end))
    return subscription


@transaction.atomic
def move_subscription(*, subscription: Subscription, start: datetime) -> Subscription:
    """Move to ``start`` keeping the exact duration in seconds (R-SUB-11)."""
    original_start, original_end = subscription.start_time, subscription.end_time
    update_subscription(subscription=subscription, start_time=start, end_time=start + (original_end - original_start))
    emit(events.SubscriptionMoved(subscription_id=subscription.pk, user_id=subscription.user_id,
                                  original_start=original_start, original_end=original_end))
    return subscription


def close_gap(event: events.SubscriptionShortened) -> None:
    """R-SUB-10 (synchronous handler of SubscriptionShortened): pull the chain that followed the
    old end forward to the new one, after whatever already starts there."""
    shortened = Subscription.objects.get(pk=event.subscription_id)
    mine = Subscription.objects.filter(user_id=event.user_id).exclude(pk=shortened.pk)
    aligned: set[int] = set()
    anchor = shortened.end_time
    while (nxt := _chain_member(mine, anchor, aligned)) is not None:
        aligned.add(nxt.pk)
        anchor = nxt.end_time
    cursor = event.original_end
    while (nxt := _chain_member(mine, cursor, aligned)) is not None:
        aligned.add(nxt.pk)
        cursor = nxt.end_time
        move_subscription(subscription=nxt, start=anchor)
        anchor = nxt.end_time


def _chain_member(queryset, start: datetime, exclude: set[int]) -> Subscription | None:
    for candidate in queryset.filter(start_time=start).order_by("pk"):
        if candidate.pk not in exclude and candidate.start_time < candidate.end_time:
            return candidate
    return None


# --- status sweep -----------------------------------------------------------------------------


@dataclass
class SweepResult:
    started: int = 0
    ended: int = 0


def _transition(sql: str, params: list) -> list[tuple[int, int]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def sweep_statuses(*, batch_size: int = 1000) -> SweepResult:
    """R-SUB-7: move due subscriptions between statuses, each transition exactly once.

    Each batch is one conditional ``UPDATE … RETURNING``: a row changes only if it is still in
    the old status, so two sweepers running at once never both announce it. Only due rows are
    read, through the (internal_status, start/end) indexes.
    """
    now = connection.ops.adapt_datetimefield_value(clock.now())
    lock = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    table = Subscription._meta.db_table
    starting = ("start_time", "start_time <= %s AND end_time > %s", [now, now])
    ending = ("end_time", "end_time <= %s", [now])
    # (old status, new status, due rows, what to announce). One old status per statement, claimed in
    # the order of the indexed column, so the (status, start/end) index is used whatever the statistics say.
    transitions = [
        (S.BEFORE_START, S.ACTIVE, starting, ("started",)),
        (S.UNKNOWN, S.ACTIVE, starting, ("started",)),
        (S.BEFORE_START, S.AFTER_END, ending, ("started", "ended")),  # started and ended between two sweeps
        (S.ACTIVE, S.AFTER_END, ending, ("ended",)),
        (S.UNKNOWN, S.AFTER_END, ending, ("ended",)),
    ]
    result = SweepResult()
    for old, new, (column, due, due_params), announce in transitions:
        sql = (f"UPDATE {table} SET internal_status = %s, updated_at = %s WHERE id IN ("
               f"SELECT id FROM {table} WHERE internal_status = %s AND {due} ORDER BY {column} "
               f"LIMIT {int(batch_size)}{lock}) AND internal_status = %s RETURNING id, user_id")
        params = [new, now, old, *due_params, old]
        while True:
            with transaction.atomic():
                rows = _transition(sql, params)
                for subscription_id, user_id in rows:
                    if "started" in announce:
                        emit(events.SubscriptionStarted(subscription_id=subscription_id, user_id=user_id))
                        result.started += 1
                    if "ended" in announce:
                        emit(events.SubscriptionEnded(subscription_id=subscription_id, user_id=user_id))
                        result.ended += 1
            if len(rows) < batch_size:
                break
    return result


def _seconds(value: datetime | None) -> datetime | None:
    """Datetimes are stored to whole seconds (R-GEN-4)."""
    return value.replace(microsecond=0) if value is not None else None


def limit_reached(*, user: User, subscription_type: SubscriptionType) -> bool:
    """R-SAPI-7: the type's per-user limit counts every subscription the reader ever had of it."""
    limit = subscription_type.limit_per_user
    return bool(limit) and Subscription.objects.filter(user=user, subscription_type=subscription_type).count() >= limit


# --- subscription types ----------------------------------------------------------------------


@dataclass
class ItemSpec:
    name: str
    amount: object
    vat: object = 0


@transaction.atomic
def save_subscription_type(*, code: str, fields: dict, content_access: list[str], items: list[ItemSpec],
                           meta: dict[str, str] | None = None) -> tuple[SubscriptionType, str]:
    """Create or update the type ``code``; returns it and "created", "updated" or "unchanged".

    Items must sum to the price; without items the type gets one item for the whole price (R-ST-2).
    """
    from masthead.core.money import to_money
    from masthead.subscriptions.models import ContentAccess, SubscriptionTypeItem, SubscriptionTypeMeta

    fields = dict(fields)
    fields["price"] = to_money(fields["price"])
    for method, registry in (("extension_method", periods.EXTENSION_METHODS),
                             ("length_method", periods.LENGTH_METHODS)):
        if fields.get(method) and fields[method] not in registry:
            raise SubscriptionError("unknown_method", _("Unknown %(kind)s: %(code)s")
                                    % {"kind": method.replace("_", " "), "code": fields[method]})
    if not items:
        label = fields.get("user_label") or fields.get("name") or code
        items = [ItemSpec(name=label, amount=fields["price"], vat=settings.VAT_DEFAULT)]
    items = [ItemSpec(i.name, to_money(i.amount), to_money(i.vat)) for i in items]
    if sum(i.amount for i in items) != fields["price"]:
        raise SubscriptionError("items_price_mismatch", _("Items sum to %(sum)s, the price is %(price)s")
                                % {"sum": sum(i.amount for i in items), "price": fields["price"]})
    accesses = list(ContentAccess.objects.filter(name__in=content_access))
    missing = sorted(set(content_access) - {a.name for a in accesses})
    if missing:
        raise SubscriptionError("unknown_content_access", _("Unknown content access: %(names)s")
                                % {"names": ", ".join(missing)})
    obj = SubscriptionType.objects.filter(code=code).first()
    outcome = "unchanged"
    if obj is None:
        obj = SubscriptionType.objects.create(code=code, **fields)
        outcome = "created"
    else:
        dirty = [name for name, value in fields.items() if getattr(obj, name) != value]
        if dirty:
            for name in dirty:
                setattr(obj, name, fields[name])
            obj.save()
            outcome = "updated"
    if set(obj.content_access.values_list("name", flat=True)) != set(content_access):
        obj.content_access.set(accesses)
        outcome = outcome if outcome == "created" else "updated"
    current = [(i.name, i.amount, i.vat) for i in obj.items.all()]
    wanted = [(i.name, i.amount, i.vat) for i in items]
    if current != wanted:
        obj.items.all().delete()
        SubscriptionTypeItem.objects.bulk_create(
            SubscriptionTypeItem(subscription_type=obj, name=n, amount=a, vat=v, sorting=(k + 1) * 10)
            for k, (n, a, v) in enumerate(wanted))
        outcome = outcome if outcome == "created" else "updated"
    if meta is not None and dict(obj.meta.values_list("key", "value")) != meta:
        obj.meta.all().delete()
        SubscriptionTypeMeta.objects.bulk_create(
            SubscriptionTypeMeta(subscription_type=obj, key=k, value=v) for k, v in meta.items())
        outcome = outcome if outcome == "created" else "updated"
    return obj, outcome
