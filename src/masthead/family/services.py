"""Every state change of family codes: generation, activation, release and revoke, renewal, and
the cascades from parent to children (R-FAM-*). Views, the API, the admin and the CLI call these."""

from __future__ import annotations

import logging
import secrets
import string
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from masthead.core import clock
from masthead.core.events import emit
from masthead.family import events
from masthead.family.models import FamilyRequest, FamilySubscriptionType
from masthead.payments.models import Payment, PaymentItem, RecurrentPayment
from masthead.payments.services import ItemSpec
from masthead.subscriptions import events as subscription_events
from masthead.subscriptions import periods
from masthead.subscriptions import queries as subscription_queries
from masthead.subscriptions import services as subscription_services
from masthead.subscriptions.models import Subscription, SubscriptionMeta, SubscriptionType
from masthead.users.models import User

logger = logging.getLogger(__name__)
R = FamilyRequest
CODE_ALPHABET = string.digits + string.ascii_lowercase  # R-FAM-3: URL-safe as it is
CODE_LENGTH = 32
NEXT_PARENT_META = "next_family_subscription_id"
SEATS_META = "family_seats"


class FamilyError(Exception):
    """A refused family action: ``code`` and ``message`` are the API body, ``status`` its HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class FamilyConfigError(Exception):
    """A parent whose codes cannot be worked out (R-FAM-8/9): no codes, a logged warning."""


def _not_found(code: str) -> FamilyError:
    return FamilyError("family_request_not_found", _("Family request code [%(code)s] not found") % {"code": code}, 404)


def _internal() -> FamilyError:
    return FamilyError("internal_server_error", _("Internal server error"), 500)


# --- reading --------------------------------------------------------------------------------------


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def family_type(subscription_type_id: int) -> FamilySubscriptionType | None:
    return (FamilySubscriptionType.objects.select_related("master_subscription_type", "slave_subscription_type")
            .filter(master_subscription_type_id=subscription_type_id).first())


def family_type_ids() -> set[int]:
    """Every master and child type (extend_family, R-EXT-7)."""
    ids: set[int] = set()
    for master, slave in FamilySubscriptionType.objects.values_list("master_subscription_type_id",
                                                                    "slave_subscription_type_id"):
        ids.add(master)
        if slave:
            ids.add(slave)
    return ids


def _meta(subscription: Subscription) -> dict[str, str]:
    return dict(SubscriptionMeta.objects.filter(subscription=subscription).values_list("key", "value"))


def _payment_of(parent: Subscription, payment: Payment | None = None) -> Payment | None:
    if payment is not None:
        return payment
    return Payment.objects.filter(subscription=parent).order_by("pk").first()


# --- generation (R-FAM-5..10) -----------------------------------------------------------------------


def targets(parent: Subscription, ftype: FamilySubscriptionType, payment: Payment | None) -> Counter:
    """How many codes of which child type the parent carries: {child type id: count}."""
    seats = _meta(parent).get(SEATS_META)
    if seats is not None and ftype.slave_subscription_type_id:
        return Counter({ftype.slave_subscription_type_id: int(seats)})
    if ftype.slave_subscription_type_id is None:  # R-FAM-9: the mix comes from the payment's items
        if payment is None:
            raise FamilyConfigError(f"customizable parent {parent.pk} has no payment")
        mix: Counter = Counter()
        for item in payment.items.filter(type=PaymentItem.SUBSCRIPTION_TYPE):
            child = item.meta.get("slave_subscription_type_id") or item.subscription_type_id
            if child is None:
                continue
            if int(child) == payment.subscription_type_id:
                raise FamilyConfigError(f"payment {payment.pk}: child type equals the parent's type")
            mix[int(child)] += item.count
        if not +mix:
            raise FamilyConfigError(f"payment {payment.pk} has no items naming child types")
        return +mix
    if ftype.count:  # R-FAM-7
        return Counter({ftype.slave_subscription_type_id: ftype.count})
    if payment is None:  # R-FAM-8
        raise FamilyConfigError(f"parent {parent.pk} with a dynamic count has no payment")
    declared = payment.meta.filter(key="family_subscriptions_count").values_list("value", flat=True).first()
    if declared is not None:
        count = int(declared) if declared.strip().isdigit() else 0
    else:
        count = sum(payment.items.filter(type=PaymentItem.SUBSCRIPTION_TYPE,
                                         subscription_type__code=ftype.master_subscription_type.code)
                    .values_list("count", flat=True))
    if count <= 0:
        raise FamilyConfigError(f"payment {payment.pk} gives no code count")
    return Counter({ftype.slave_subscription_type_id: count})


def _create_requests(parent: Subscription, child_type_id: int, count: int, *, note: str = "") -> list[FamilyRequest]:
    """``count`` new codes; a code that already exists (the unique constraint) is drawn again."""
    if count <= 0:
        return []
    now = clock.now()
    for _attempt in range(5):
        rows = [R(code=new_code(), master_user_id=parent.user_id, master_subscription=parent,
                  subscription_type_id=child_type_id, note=note, created_at=now, updated_at=now)
                for _ in range(count)]
        try:
            with transaction.atomic():
                created = R.objects.bulk_create(rows)
            break
        except IntegrityError:
            logger.warning("family code collision on parent %s, drawing again", parent.pk)
    else:
        raise _internal()
    if created and created[0].pk is None:  # backends that do not return ids on bulk inserts
        created = list(R.objects.filter(code__in=[r.code for r in rows]))
    for row in created:
        emit(events.FamilyRequestCreated(request_id=row.pk, master_subscription_id=parent.pk))
    return created


def _count_by_type(queryset) -> Counter:
    return Counter(dict(queryset.order_by().values_list("subscription_type_id").annotate(n=Count("id"))))


@transaction.atomic
def generate_requests(*, parent: Subscription, payment: Payment | None = None) -> list[FamilyRequest]:
    """Bring the parent's codes up to its targets (counting codes of every status, R-FAM-7); with
    parent meta ``on_demand_family_requests`` at most one unused code exists at a time (R-FAM-10).
    Raises FamilyError if the parent is not of a family type, FamilyConfigError on a bad payment."""
    ftype = family_type(parent.subscription_type_id)
    if ftype is None:
        raise FamilyError("not_family_parent", _("Subscription %(id)s is not a family subscription")
                          % {"id": parent.pk}, 404)
    Subscription.objects.select_for_update().filter(pk=parent.pk).values_list("pk").get()  # one generator at once
    want = targets(parent, ftype, _payment_of(parent, payment))
    on_demand = "on_demand_family_requests" in _meta(parent)
    have = _count_by_type(R.objects.filter(master_subscription=parent))
    unused = _count_by_type(R.objects.filter(master_subscription=parent, status=R.CREATED))
    created: list[FamilyRequest] = []
    for child_type_id, target in sorted(want.items()):
        missing = target - have[child_type_id]
        if on_demand:
            missing = min(missing, 1 - unused[child_type_id])
        created += _create_requests(parent, child_type_id, missing)
    return created


# --- activation (R-FAM-11/12) ------------------------------------------------------------------------


@dataclass
class ParentContext:
    """What activations on one parent share: its family type, meta and donation method (read once,
    so a renewal of 1,000 children reads them once)."""

    subscription: Subscription
    ftype: FamilySubscriptionType | None
    meta: dict[str, str]
    method: str | None
    paid: dict[int, bool] = field(default_factory=dict)  # child type id → is_paid

    @classmethod
    def of(cls, parent: Subscription) -> ParentContext:
        ftype = family_type(parent.subscription_type_id)
        meta = _meta(parent)
        return cls(parent, ftype, meta, ftype.donation_method if ftype else meta.get("family_subscription_type"))

    def is_paid(self, child_type: SubscriptionType) -> bool:
        """R-FAM-12: the family type's flag, overridden by the child type's meta; meta-driven parents
        pass on their own (``fixed``: the child type's ``is_paid`` meta first)."""
        if child_type.pk not in self.paid:
            type_meta = dict(child_type.meta.values_list("key", "value"))
            if self.ftype is not None:
                override = type_meta.get("family_subscription_type_is_paid")
                paid = self.ftype.is_paid if override is None else _truthy(override)
            elif self.method == "fixed" and "is_paid" in type_meta:
                paid = _truthy(type_meta["is_paid"])
            else:
                paid = bool(self.subscription.is_paid)
            self.paid[child_type.pk] = paid
        return self.paid[child_type.pk]

    def child_period(self, user: User, child_type: SubscriptionType, now: datetime) -> tuple[datetime, datetime]:
        """The child's start and end by donation method (R-FAM-12); anything else is R-FAM-17's ``internal``."""
        parent, ftype, meta = self.subscription, self.ftype, self.meta
        if self.method == FamilySubscriptionType.COPY:
            return parent.start_time, parent.end_time
        if self.method == FamilySubscriptionType.FIXED_DAYS and ftype is not None:
            end = periods.add_days(now, ftype.days or child_type.length)
            return now, end if ftype.past_parent_end else min(end, parent.end_time)
        if self.method == "days" and ftype is None and meta.get("family_subscription_days", "").isdigit():
            start = periods.resolve(subscription_type=subscription_queries.type_spec(child_type),
                                    existing=subscription_queries.existing_periods(user), now=now).start
            return start, periods.add_days(start, int(meta["family_subscription_days"]))
        if self.method == "fixed" and ftype is None:
            end = parse_datetime(meta.get("family_subscription_fixed_expiration", "")) or child_type.fixed_end
            if end is not None:
                return now, max(now, end)
        raise _internal()


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes")


def _connect(user: User, request: FamilyRequest, *, by_admin: bool = False) -> FamilyRequest:
    """R-FAM-11 on a request locked by the caller: every check in order, then the child subscription."""
    parent = ParentContext.of(request.master_subscription)
    method = parent.method
    if not user.is_active:
        raise FamilyError("family_request_user_inactive",
                          _("User [%(email)s] is not active") % {"email": user.email}, 403)
    if not by_admin:
        if method == FamilySubscriptionType.COPY and R.objects.filter(
                master_subscription=parent.subscription, slave_user=user,
                subscription_type_id=request.subscription_type_id, status=R.ACCEPTED).exists():
            raise FamilyError("family_request_one_per_user",
                              _("User [%(email)s] already used company code from this company subscription.")
                              % {"email": user.email})
        self_forbidden = method != FamilySubscriptionType.COPY or not settings.FAMILY_ALLOW_SELF_ACTIVATION
        if user.pk == parent.subscription.user_id and self_forbidden:
            raise FamilyError("family_request_self_use_forbidden",
                              _("Cannot activate family request code [%(code)s] on parent's account")
                              % {"code": request.code})
    now = clock.now()
    if parent.subscription.end_time <= now or (request.expires_at is not None and request.expires_at <= now):
        raise FamilyError("family_request_expired", _("Family request code [%(code)s] expired") % {"code": request.code})
    if request.status != R.CREATED:
        raise FamilyError("family_request_wrong_status",
                          _("Family request code [%(code)s] has wrong status: %(status)s")
                          % {"code": request.code, "status": request.status}, 409)
    child_type = request.subscription_type
    start, end = parent.child_period(user, child_type, now)
    child = subscription_services.create_subscription(
        user=user, subscription_type=child_type, type="family", is_paid=parent.is_paid(child_type),
        is_recurrent=False, start=start, end=end)
    request.status, request.slave_user, request.slave_subscription = R.ACCEPTED, user, child
    request.accepted_at = request.updated_at = now
    request.save(update_fields=["status", "slave_user", "slave_subscription", "accepted_at", "updated_at", "note"])
    emit(events.FamilyRequestAccepted(request_id=request.pk, master_subscription_id=parent.subscription.pk,
                                      slave_user_id=user.pk, slave_subscription_id=child.pk,
                                      subscription_type_id=request.subscription_type_id))
    return request


def _locked(code: str) -> FamilyRequest:
    request = (R.objects.select_for_update(of=("self",)).select_related("master_subscription", "subscription_type")
               .filter(code=code).first())
    if request is None:
        raise _not_found(code)
    return request


@transaction.atomic
def activate(*, user: User, code: str, by_admin: bool = False) -> FamilyRequest:
    """A reader activates a code (API, customer zone) or staff activate it for him (``by_admin``
    skips the one-per-user and self-use checks). Concurrent activations of one code queue on the
    request's row lock: the first wins, the others see ``accepted`` (409) and write nothing."""
    return _connect(user, _locked(code), by_admin=by_admin)


@transaction.atomic
def mark_opened(*, request: FamilyRequest) -> None:
    """R-FAM-4: ``opened_at`` is set the first time the landing page is opened, never again."""
    if request.opened_at is None:
        now = clock.now()
        R.objects.filter(pk=request.pk, opened_at__isnull=True).update(opened_at=now)
        request.opened_at = now


# --- release and revoke (R-FAM-16) -----------------------------------------------------------------


@transaction.atomic
def release(*, request: FamilyRequest, by_admin: bool = False) -> FamilyRequest | None:
    """Free an accepted seat: the code is canceled, the child's subscription ends now, a fresh code
    takes the seat (returned). A request that is not accepted is left alone (None)."""
    request = _locked(request.code)
    if request.status != R.ACCEPTED:
        return None
    now = clock.now()
    R.objects.filter(pk=request.pk).update(status=R.CANCELED, canceled_at=now)  # first: no recursion
    request.status, request.canceled_at = R.CANCELED, now
    child = request.slave_subscription
    if child is not None and child.end_time >= now:
        subscription_services.stop_subscription(subscription=child, by_admin=by_admin)
    replacement = _create_requests(request.master_subscription, request.subscription_type_id, 1)[0]
    emit(events.FamilyRequestCanceled(request_id=request.pk, master_subscription_id=request.master_subscription_id,
                                      slave_user_id=request.slave_user_id,
                                      subscription_type_id=request.subscription_type_id))
    return replacement


@transaction.atomic
def revoke(*, parent_user: User, code: str) -> FamilyRequest:
    """The parent takes a seat back: the holder's access ends now and a new code replaces it."""
    request = _locked(code)
    if request.master_user_id != parent_user.pk:
        raise _not_found(code)
    if request.status != R.ACCEPTED:
        raise FamilyError("family_request_wrong_status",
                          _("Family request code [%(code)s] has wrong status: %(status)s")
                          % {"code": code, "status": request.status}, 409)
    return release(request=request)


@transaction.atomic
def cancel_unused(*, master_user: User) -> int:
    """R-FAM-4: cancel every unused code of a parent user (created → canceled)."""
    return R.objects.filter(master_user=master_user, status=R.CREATED).update(status=R.CANCELED,
                                                                              canceled_at=clock.now())


# --- seats and notes -------------------------------------------------------------------------------------


@transaction.atomic
def set_seats(*, parent: Subscription, seats: int) -> int:
    """Change how many seats a parent of a fixed child type has. More seats → new codes now; fewer →
    surplus unused codes canceled; never below the seats in use. Returns the usable seats."""
    ftype = family_type(parent.subscription_type_id)
    if ftype is None or ftype.slave_subscription_type_id is None:
        raise FamilyError("family_seats_fixed_type_only", _("Only a parent with one child type has a seat count."))
    Subscription.objects.select_for_update().filter(pk=parent.pk).values_list("pk").get()
    in_use = R.objects.filter(master_subscription=parent, status=R.ACCEPTED).count()
    if seats < in_use:
        raise FamilyError("family_seats_in_use", ngettext(
            "%(in_use)s seat is in use: the count cannot go below that.",
            "%(in_use)s seats are in use: the count cannot go below that.", in_use) % {"in_use": in_use})
    unused = list(R.objects.filter(master_subscription=parent, status=R.CREATED).order_by("-pk")
                  .values_list("pk", flat=True))
    usable = in_use + len(unused)
    if seats > usable:
        _create_requests(parent, ftype.slave_subscription_type_id, seats - usable)
    elif seats < usable:
        R.objects.filter(pk__in=unused[:usable - seats]).update(status=R.CANCELED, canceled_at=clock.now())
    SubscriptionMeta.objects.update_or_create(subscription=parent, key=SEATS_META, defaults={"value": str(seats)})
    return seats


@transaction.atomic
def set_note(*, request: FamilyRequest, note: str) -> None:
    """R-FAM-23: the note (cut to 255 characters) follows the seat down the parent's chain. Like a
    release, it leaves ``updated_at`` alone (R-FAM-4: only an activation moves it)."""
    note = note[:255]
    R.objects.filter(pk=request.pk).update(note=note)
    nxt = next_parent(request.master_subscription)
    if nxt is None:
        return
    same = R.objects.filter(master_subscription=nxt, subscription_type_id=request.subscription_type_id)
    if request.status == R.ACCEPTED:
        follower = same.filter(status=R.ACCEPTED, slave_user_id=request.slave_user_id).first()
    else:
        follower = same.filter(status=R.CREATED).order_by("pk").first()
    if follower is not None:
        set_note(request=follower, note=note)


# --- the chain of parents (R-FAM-21/22) ------------------------------------------------------------------


def next_parent(parent: Subscription) -> Subscription | None:
    """The parent's renewal: the link written by a renewal, else the subscription that follows it
    exactly (R-SUB-8) if that one carries codes."""
    linked = SubscriptionMeta.objects.filter(subscription=parent, key=NEXT_PARENT_META).values_list(
        "value", flat=True).first()
    if linked and linked.isdigit():
        return Subscription.objects.filter(pk=int(linked)).first()
    if parent.next_subscription_id and R.objects.filter(master_subscription_id=parent.next_subscription_id).exists():
        return parent.next_subscription
    return None


def previous_parent(parent: Subscription, payment: Payment | None) -> Subscription | None:
    """R-FAM-22 step 1: through the recurrent chain, else the one master subscription of the reader
    that ended within the gap before this one starts and has not been renewed yet (a second parent
    bought in advance, which lands on the same start, does not take the children again)."""
    if payment is not None:
        row = (RecurrentPayment.objects.select_related("parent_payment").filter(payment=payment)
               .exclude(parent_payment__subscription__isnull=True).first())
        if row is not None and row.parent_payment.subscription_id != parent.pk:
            return row.parent_payment.subscription
    gap = timedelta(days=settings.FAMILY_RENEWAL_GAP_DAYS)
    renewed = SubscriptionMeta.objects.filter(key=NEXT_PARENT_META).values("subscription_id")
    candidates = list(Subscription.objects.filter(
        user_id=parent.user_id, subscription_type__family_master__isnull=False,
        end_time__gte=parent.start_time - gap, end_time__lte=parent.start_time)
        .exclude(pk=parent.pk).exclude(pk__in=renewed)[:2])  # a parent is renewed once
    return candidates[0] if len(candidates) == 1 else None


def renew_children(*, parent: Subscription, payment: Payment | None) -> int:
    """R-FAM-22: move every child of the previous parent onto this one. Returns how many moved."""
    previous = previous_parent(parent, payment)
    if previous is None:
        return 0
    accepted = list(R.objects.select_related("slave_user", "slave_subscription__address")
                    .filter(master_subscription=previous, status=R.ACCEPTED).order_by("accepted_at", "pk"))
    free: dict[int, list[FamilyRequest]] = {}
    for request in (R.objects.select_related("master_subscription", "subscription_type")
                    .filter(master_subscription=parent, status=R.CREATED).order_by("pk")):
        free.setdefault(request.subscription_type_id, []).append(request)
    needed = Counter(r.subscription_type_id for r in accepted)
    if any(len(free.get(t, ())) < n for t, n in needed.items()):
        logger.warning("family renewal %s → %s: not enough codes", previous.pk, parent.pk)
        return 0
    if payment is not None and payment.meta.filter(key="keep_requests_unactivated").exclude(
            value__in=("", "0", "false")).exists():
        return 0
    SubscriptionMeta.objects.update_or_create(subscription=previous, key=NEXT_PARENT_META,
                                              defaults={"value": str(parent.pk)})
    context = ParentContext.of(parent)
    try:
        with transaction.atomic():
            moved = _renew_seats(context, [(old, free[old.subscription_type_id].pop(0)) for old in accepted])
    except FamilyError as exc:
        logger.warning("family renewal %s → %s aborted: %s", previous.pk, parent.pk, exc.code)
        return 0
    return moved


def _renew_seats(parent: ParentContext, pairs: list[tuple[FamilyRequest, FamilyRequest]]) -> int:
    """Each (old seat, new code): the old seat's reader gets the new code, with its note and the
    child's address, as an activation would; all seats of one child type in one batch. A reader
    who is no longer active is left out. Staff may have given a reader two seats: both carry over."""
    now = clock.now()
    if parent.subscription.end_time <= now:
        raise FamilyError("family_request_expired", "the new parent has ended")
    pairs = [(old, new) for old, new in pairs if old.slave_user.is_active]
    by_type: dict[int, list[tuple[FamilyRequest, FamilyRequest]]] = {}
    for old, new in pairs:
        by_type.setdefault(new.subscription_type_id, []).append((old, new))
    for group in by_type.values():
        child_type = group[0][1].subscription_type
        paid = parent.is_paid(child_type)
        placements = []
        for old, _new in group:
            start, end = parent.child_period(old.slave_user, child_type, now)
            placements.append(subscription_services.Placement(
                user=old.slave_user, start=start, end=end, is_paid=paid, type="family",
                address=old.slave_subscription.address if old.slave_subscription else None))
        children = subscription_services.create_subscriptions(subscription_type=child_type, placements=placements)
        seats = []
        for (old, new), child in zip(group, children, strict=True):
            new.status, new.slave_user, new.slave_subscription, new.note = R.ACCEPTED, old.slave_user, child, old.note
            new.accepted_at = new.updated_at = now
            seats.append(new)
        _accept_all(seats, now)
        for seat in seats:
            emit(events.FamilyRequestAccepted(
                request_id=seat.pk, master_subscription_id=parent.subscription.pk, slave_user_id=seat.slave_user_id,
                slave_subscription_id=seat.slave_subscription_id, subscription_type_id=seat.subscription_type_id,
                renewal=True))
    return len(pairs)




def _accept_all(seats: list[FamilyRequest], now: datetime) -> None:
    """Write the accepted seats with one prepared UPDATE run for every row (bulk_update's CASE
    expressions cost more Python than the database work for a thousand seats)."""
    when = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {R._meta.db_table} SET status = %s, slave_user_id = %s, slave_subscription_id = %s, "
            "note = %s, accepted_at = %s, updated_at = %s WHERE id = %s",
            [(R.ACCEPTED, seat.slave_user_id, seat.slave_subscription_id, seat.note, when, when, seat.pk)
             for seat in seats])


# --- event handlers (synchronous, registered in FamilyConfig.ready) ----------------------------------------


def on_subscription_created(event: subscription_events.SubscriptionCreated) -> None:
    """R-FAM-5/22: a new master subscription gets its codes, then its predecessor's children."""
    if not FamilySubscriptionType.objects.filter(master_subscription_type_id=event.subscription_type_id).exists():
        return
    parent = Subscription.objects.get(pk=event.subscription_id)
    payment = Payment.objects.filter(pk=event.payment_id).first() if event.payment_id else None
    try:
        generate_requests(parent=parent, payment=payment)
    except FamilyConfigError as exc:
        logger.warning("family codes of subscription %s not generated: %s", parent.pk, exc)
        return
    renew_children(parent=parent, payment=payment)


def on_subscription_updated(event: subscription_events.SubscriptionUpdated) -> None:
    """R-FAM-18: with ``copy``, children take the parent's new dates."""
    if "start_time" not in event.changed and "end_time" not in event.changed:
        return
    seats = list(R.objects.select_related("slave_subscription").filter(
        master_subscription_id=event.subscription_id, slave_subscription__isnull=False).exclude(status=R.CANCELED))
    if not seats:
        return
    parent = Subscription.objects.get(pk=event.subscription_id)
    if ParentContext.of(parent).method != FamilySubscriptionType.COPY:
        return
    for seat in seats:
        child = seat.slave_subscription
        if (child.start_time, child.end_time) != (parent.start_time, parent.end_time):
            subscription_services.update_subscription(subscription=child, start_time=parent.start_time,
                                                      end_time=parent.end_time)


def on_subscription_shortened(event: subscription_events.SubscriptionShortened) -> None:
    """R-FAM-19: a parent stopped or shortened ends its children at the same moment. R-FAM-20: a child
    stopped early while its parent runs frees its code."""
    shortened = Subscription.objects.get(pk=event.subscription_id)
    for seat in R.objects.select_related("slave_subscription").filter(master_subscription=shortened,
                                                                      status=R.ACCEPTED):
        if seat.slave_subscription is not None:
            subscription_services.stop_subscription(subscription=seat.slave_subscription, at=shortened.end_time)
    seat = R.objects.select_related("master_subscription").filter(slave_subscription=shortened,
                                                                  status=R.ACCEPTED).first()
    if seat is not None:
        parent = seat.master_subscription
        if parent.end_time > clock.now() and shortened.end_time < parent.end_time:
            release(request=seat)


def on_request_accepted(event: events.FamilyRequestAccepted) -> None:
    """R-FAM-21: the child also takes a seat on the parent's renewal. R-FAM-10: on-demand parents get
    their next code. A seat carried over by a renewal needs neither: its parent is brand new."""
    if event.renewal:
        return
    accepted = R.objects.select_related("master_subscription", "slave_user").get(pk=event.request_id)
    parent = accepted.master_subscription
    if "on_demand_family_requests" in _meta(parent):
        generate_requests(parent=parent)
    nxt = next_parent(parent)
    if nxt is None or R.objects.filter(master_subscription=nxt, slave_user_id=event.slave_user_id,
                                       subscription_type_id=event.subscription_type_id, status=R.ACCEPTED).exists():
        return
    free = (R.objects.select_for_update(of=("self",)).select_related("master_subscription", "subscription_type")
            .filter(master_subscription=nxt, subscription_type_id=event.subscription_type_id, status=R.CREATED)
            .order_by("pk").first())
    if free is None:
        logger.warning("family: no free code on renewal %s for user %s", nxt.pk, event.slave_user_id)
        return
    free.note = accepted.note
    try:
        with transaction.atomic():
            _connect(accepted.slave_user, free)
    except FamilyError as exc:
        logger.warning("family: seat on renewal %s for user %s refused: %s", nxt.pk, event.slave_user_id, exc.code)


def on_request_canceled(event: events.FamilyRequestCanceled) -> None:
    """R-FAM-21: a released seat is released on the parent's renewal too (down the chain only)."""
    if event.slave_user_id is None:
        return
    nxt = next_parent(Subscription.objects.get(pk=event.master_subscription_id))
    if nxt is None:
        return
    for seat in R.objects.filter(master_subscription=nxt, slave_user_id=event.slave_user_id,
                                 subscription_type_id=event.subscription_type_id, status=R.ACCEPTED):
        release(request=seat)


# --- recurrent charges of a parent (R-FAM-30) ---------------------------------------------------------------


def charge_items(*, row: RecurrentPayment, subscription_type: SubscriptionType) -> list[ItemSpec] | None:
    """Item provider of the charge run: a master type renews with the parent payment's seats (count
    and unit price as bought), each at its type item's current VAT. Other types: None (pass)."""
    parent = row.parent_payment
    if parent is None or parent.subscription_type_id != subscription_type.pk or family_type(subscription_type.pk) is None:
        return None
    current = list(subscription_type.items.all())
    by_child = {str(i.meta.get("family_slave_subscription_type_id")): i for i in current
                if i.meta.get("family_slave_subscription_type_id")}
    by_name = {i.name: i for i in current}
    items = []
    for item in parent.items.filter(type=PaymentItem.SUBSCRIPTION_TYPE).order_by("pk"):
        source = by_child.get(str(item.meta.get("slave_subscription_type_id"))) or by_name.get(item.name)
        if source is None and len(current) == 1:
            source = current[0]
        items.append(ItemSpec(name=item.name, amount=item.amount, vat=source.vat if source else item.vat,
                              count=item.count, subscription_type_id=item.subscription_type_id, meta=dict(item.meta)))
    return items or None


# --- extension method (R-EXT-7) ------------------------------------------------------------------------------


@periods.extension_method("extend_family")
def extend_family(*, new_type, existing, now):
    """After the latest-ending running family subscription (parent or child type), else now."""
    ends = [s.end for s in existing if s.is_family and s.end > now]
    if ends:
        return max(ends), True
    return now, False
