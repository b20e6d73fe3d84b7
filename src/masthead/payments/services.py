"""Every state change of payments and recurrent payments (R-PAY-*, R-REC-*).

Payments: :func:`create_payment`, :func:`change_status` (and :func:`confirm`, :func:`refund`), which
makes the subscription of a paid payment exactly once. Recurrent payments: :func:`create_recurrent_payment`
from a paid payment, the charge run :func:`charge_due` and the stop/reactivate operations.

Concurrency (house rule 5): a payment's status changes under a row lock (``select_for_update``; SQLite
serialises writers with ``BEGIN IMMEDIATE``). The charge run *claims* due rows with one conditional
``UPDATE … RETURNING`` (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) that moves them from ``active`` to
``pending`` and stamps ``claimed_at``; only the run holding that stamp may record the row's outcome,
so two runs never charge one row. The gateway is called outside any transaction, with an idempotency
key per attempt, and a payment that is already paid is never sent to the gateway again.
"""

from __future__ import annotations

import logging
import queue
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, close_old_connections, connection, connections, transaction
from django.db.models import Max, Q
from django.utils import timezone
from django.utils.dateparse import parse_duration

from masthead.core import clock
from masthead.core.events import emit
from masthead.core.money import CENT, InvalidAmount, to_money
from masthead.payments import charge_worker, events, gateways
from masthead.payments.gateways.base import ERROR, FAIL_TRY, OK, PENDING, ChargeResult
from masthead.payments.models import Payment, PaymentGateway, PaymentItem, PaymentLog, PaymentMeta, RecurrentPayment
from masthead.subscriptions import periods
from masthead.subscriptions.models import Subscription, SubscriptionType, SubscriptionTypeItem

log = logging.getLogger(__name__)

P = Payment
RP = RecurrentPayment
VARIABLE_SYMBOL_ATTEMPTS = 10
CLAIM_TIMEOUT = timedelta(hours=1)  # a claimed row without an outcome this long: its run died; claim again
REACTIVATION_WINDOW = timedelta(days=14)  # R-REC-18
ADMIN_REACTIVATION_DELAY = timedelta(hours=24)  # R-REC-18


class PaymentError(Exception):
    """A refused operation; nothing was written. ``code`` is machine-readable, ``params`` feed messages."""

    def __init__(self, code: str, message: str = "", **params):
        super().__init__(message or code)
        self.code, self.message, self.params = code, message or code, params


@dataclass
class ItemSpec:
    """A payment line: ``amount`` is the unit price with VAT."""

    name: str
    amount: Decimal
    vat: Decimal = Decimal(0)
    count: int = 1
    type: str = PaymentItem.SUBSCRIPTION_TYPE
    subscription_type_id: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def total(self) -> Decimal:
        return self.amount * self.count

    @property
    def total_without_vat(self) -> Decimal:
        return (self.amount * self.count * 100 / (100 + self.vat)).quantize(CENT)


def _gateway(gateway: PaymentGateway | str) -> PaymentGateway:
    if isinstance(gateway, PaymentGateway):
        return gateway
    try:
        return PaymentGateway.objects.get(code=gateway)
    except PaymentGateway.DoesNotExist as exc:
        raise PaymentError("unknown_gateway", f"Unknown payment gateway: {gateway}") from exc


def type_items(subscription_type: SubscriptionType) -> list[ItemSpec]:
    """The subscription type's current items as payment lines."""
    return [ItemSpec(name=i.name, amount=i.amount, vat=i.vat, subscription_type_id=subscription_type.pk)
            for i in subscription_type.items.all()]


def _service(fn):
    """A writing service: ``fn`` runs in ``transaction.atomic()``. ``fn.inner`` is the same function without
    its own atomic block, for the charge run's hot path, which is already inside one (a savepoint less)."""
    wrapped = transaction.atomic(fn)
    wrapped.inner = fn
    return wrapped


def _new_variable_symbol() -> str:
    return f"{secrets.randbelow(10**10):010d}"


# --- payments ---------------------------------------------------------------------------------------


@_service
def create_payment(*, user, gateway: PaymentGateway | str, subscription_type: SubscriptionType | None = None,
                   amount=None, items: list[ItemSpec] | None = None, allow_zero_amount: bool = False,
                   additional_amount=None, additional_type: str = "", address=None, note: str = "",
                   ip: str = "", user_agent: str = "", referer: str = "", recurrent_charge: bool = False,
                   subscription_start_at: datetime | None = None, subscription_end_at: datetime | None = None,
                   meta: dict[str, str] | None = None) -> Payment:
    """R-PAY-3: a new payment in status ``form``.

    ``items`` default to the subscription type's current items. The amount is ``amount`` when given,
    else the sum of the items; a negative amount is refused, zero only with ``allow_zero_amount``.
    The variable symbol is 10 random digits, unique by a database constraint (a collision draws again).
    """
    fields, items = _payment_fields(
        user=user, gateway=gateway, subscription_type=subscription_type, amount=amount, items=items,
        allow_zero_amount=allow_zero_amount, additional_amount=additional_amount, additional_type=additional_type,
        address=address, note=note, ip=ip, user_agent=user_agent, referer=referer, recurrent_charge=recurrent_charge,
        subscription_start_at=subscription_start_at, subscription_end_at=subscription_end_at)
    for _attempt in range(VARIABLE_SYMBOL_ATTEMPTS):
        symbol = _new_variable_symbol()
        try:
            with transaction.atomic():
                payment = Payment.objects.create(variable_symbol=symbol, **fields)
            break
        except IntegrityError:
            if not Payment.objects.filter(variable_symbol=symbol).exists():
                raise
            log.info("variable symbol %s taken; drawing another", symbol)
    else:
        raise PaymentError("variable_symbol_exhausted", "Could not draw a free variable symbol")
    PaymentItem.objects.bulk_create(_item_rows(payment, items))
    for key, value in (meta or {}).items():
        PaymentMeta.objects.create(payment=payment, key=key, value=value)
    emit(events.NewPayment(payment_id=payment.pk, user_id=payment.user_id))
    return payment


def _payment_fields(*, user, gateway, subscription_type, amount, items, allow_zero_amount, additional_amount,
                    additional_type, address, note, ip, user_agent, referer, recurrent_charge,
                    subscription_start_at, subscription_end_at) -> tuple[dict, list[ItemSpec]]:
    """R-PAY-3 checks; the new payment's fields (without variable symbol) and its items."""
    gateway = _gateway(gateway)
    if items is None:
        items = type_items(subscription_type) if subscription_type is not None else []
    try:
        items = [ItemSpec(name=i.name, amount=to_money(i.amount), vat=to_money(i.vat), count=int(i.count),
                          type=i.type, subscription_type_id=i.subscription_type_id, meta=dict(i.meta))
                 for i in items]
        total = to_money(amount) if amount is not None else to_money(sum((i.total for i in items), Decimal(0)))
        additional = to_money(additional_amount) if additional_amount is not None else Decimal("0.00")
    except InvalidAmount as exc:
        raise PaymentError("invalid_amount", str(exc)) from exc
    if any(i.count < 1 for i in items):
        raise PaymentError("invalid_item_count", "Item count must be at least 1")
    if total < 0:
        raise PaymentError("invalid_amount", f"Amount must not be negative: {total}")
    if total == 0 and not allow_zero_amount:
        raise PaymentError("zero_amount", "Amount must be positive")
    if additional_type not in ("", P.SINGLE, P.RECURRENT):
        raise PaymentError("invalid_additional_type", f"Unknown additional type: {additional_type}")
    fields = dict(user=user, gateway=gateway, subscription_type=subscription_type, amount=total,
                  additional_amount=additional, additional_type=additional_type, address=address, note=note,
                  ip=ip[:45], user_agent=user_agent[:512], referer=referer[:1024], recurrent_charge=recurrent_charge,
                  subscription_start_at=_seconds(subscription_start_at),
                  subscription_end_at=_seconds(subscription_end_at), status=P.FORM)
    return fields, items


def _item_rows(payment: Payment, items: list[ItemSpec]) -> list[PaymentItem]:
    return [PaymentItem(payment=payment, type=i.type, name=i.name[:255], count=i.count, amount=i.amount, vat=i.vat,
                        subscription_type_id=i.subscription_type_id, meta=i.meta) for i in items]


def _create_payments(specs: list[dict]) -> list[Payment]:
    """:func:`create_payment` for several payments with one insert each for payments and items (the charge
    run's preparation). A variable-symbol collision falls back to creating them one by one."""
    prepared = [_payment_fields(**{"allow_zero_amount": False, "additional_amount": None, "additional_type": "",
                                   "address": None, "note": "", "ip": "", "user_agent": "", "referer": "",
                                   "recurrent_charge": False, "subscription_start_at": None,
                                   "subscription_end_at": None, "amount": None, **spec}) for spec in specs]
    payments = [Payment(variable_symbol=_new_variable_symbol(), **fields) for fields, _items in prepared]
    try:
        with transaction.atomic():
            Payment.objects.bulk_create(payments)
    except IntegrityError:
        return [create_payment.inner(**spec) for spec in specs]
    PaymentItem.objects.bulk_create([row for payment, (_fields, items) in zip(payments, prepared, strict=True)
                                     for row in _item_rows(payment, items)])
    for payment in payments:
        emit(events.NewPayment(payment_id=payment.pk, user_id=payment.user_id))
    return payments


def set_meta(*, payment: Payment, key: str, value: str) -> None:
    PaymentMeta.objects.update_or_create(payment=payment, key=key, defaults={"value": value})


@_service
def change_status(*, payment: Payment, status: str, error_message: str | None = None,
                  note: str | None = None, _reuse: bool = False) -> Payment:
    """R-PAY-4: move ``payment`` to ``status``, serialised per payment (row lock).

    The same status again changes nothing and emits nothing. The first move to paid/prepaid/authorized
    stamps ``paid_at``. A paid payment never becomes ``fail`` (refused: logged, unchanged). A real change
    first makes the subscription (R-PAY-5, once) and stops the profile on refund (R-PAY-7), then emits
    PaymentStatusChanged and, for paid statuses, PaymentPaid. Returns the updated payment (the given
    instance is refreshed too).
    """
    if status not in dict(P.STATUSES):
        raise PaymentError("invalid_status", f"Unknown payment status: {status}")
    locked = (_relock(payment) if _reuse else None) or (
        Payment.objects.select_for_update(of=("self",)).select_related("gateway", "subscription_type", "user")
        .get(pk=payment.pk))
    old = locked.status
    locked._old_status = None  # for callers in this module: the status this call changed it from
    if old == status:
        _copy_state(locked, payment)
        return locked
    if old in P.PAID_STATUSES and status == P.FAIL:
        log.warning("payment %s: refused to move from %s to fail", locked.pk, old)
        _copy_state(locked, payment)
        return locked
    locked.status, locked._old_status = status, old
    if status in P.PAID_STATUSES and locked.paid_at is None:
        locked.paid_at = clock.now()
    if error_message is not None:
        locked.error_message = error_message
    if note is not None:
        locked.note = note
    locked.modified_at = timezone.now()
    Payment.objects.filter(pk=locked.pk).update(status=locked.status, paid_at=locked.paid_at, note=locked.note,
                                                error_message=locked.error_message, modified_at=locked.modified_at)
    _subscription_from_payment(locked)
    if status == P.REFUND:
        _stop_profiles_after_refund(locked)
    emit(events.PaymentStatusChanged(payment_id=locked.pk, user_id=locked.user_id, old_status=old,
                                     new_status=status))
    if status in P.PAID_STATUSES:
        emit(events.PaymentPaid(payment_id=locked.pk, user_id=locked.user_id, status=status,
                                subscription_id=locked.subscription_id, recurrent_charge=locked.recurrent_charge))
    _copy_state(locked, payment)
    return locked


_MUTABLE = ("status", "paid_at", "subscription_id", "error_message", "note", "modified_at")
_RELATIONS = ("user_id", "gateway_id", "subscription_type_id", "address_id", "subscription_start_at",
              "subscription_end_at", "recurrent_charge")


def _relock(payment: Payment) -> Payment | None:
    """The charge run's cheaper lock of its own attempt payment: lock and re-read the fields that change,
    keep the loaded relations if none of them changed meanwhile (else None: load it all again)."""
    if not all(payment._state.fields_cache.get(name) is not None for name in ("gateway", "user")):
        return None
    values = dict(zip(_MUTABLE + _RELATIONS, Payment.objects.select_for_update().filter(pk=payment.pk)
                      .values_list(*_MUTABLE, *_RELATIONS).get(), strict=True))
    if any(values[name] != getattr(payment, name) for name in _RELATIONS):
        return None
    for name in _MUTABLE:
        setattr(payment, name, values[name])
    return payment


def _copy_state(source: Payment, target: Payment) -> None:
    if source is target:
        return
    for name in ("status", "paid_at", "error_message", "note", "subscription_id", "modified_at"):
        setattr(target, name, getattr(source, name))


def _subscription_from_payment(payment: Payment) -> Subscription | None:
    """R-PAY-5/6: make the payment's subscription once. Runs under the payment's row lock."""
    from masthead.subscriptions import services as subscription_services

    if payment.subscription_id is not None or payment.subscription_type_id is None:
        return None
    authorized = payment.status == P.AUTHORIZED and payment.gateway.flag("recurrent_authorization")
    if payment.status not in (P.PAID, P.PREPAID) and not authorized:
        return None
    subscription_type = payment.subscription_type
    if subscription_type.no_subscription:
        return None
    _linked.__dict__.pop(payment.pk, None)
    start = None
    if payment.subscription_start_at is not None:
        start = max(payment.subscription_start_at, payment.paid_at) if payment.paid_at else payment.subscription_start_at
    subscription = subscription_services.create_subscription(
        user=payment.user, subscription_type=subscription_type,
        type="prepaid" if payment.status == P.PREPAID else "regular", is_paid=True,
        is_recurrent=payment.gateway.is_recurrent, start=start, end=payment.subscription_end_at,
        address=payment.address, payment_id=payment.pk)
    # link_subscription (a synchronous SubscriptionCreated handler) has normally written the link
    # already, before any other app's handler ran; if it did not (unsubscribed), write it here.
    if _linked.__dict__.pop(payment.pk, None) != subscription.pk:
        linked = Payment.objects.filter(Q(subscription__isnull=True) | Q(subscription=subscription),
                                        pk=payment.pk).update(subscription=subscription)
        if not linked:
            raise PaymentError("already_has_subscription", f"Payment {payment.pk} already has a subscription")
    payment.subscription = subscription
    return subscription


_linked = threading.local()  # payment id → subscription id linked by link_subscription in this thread


def link_subscription(event) -> None:
    """Synchronous handler of SubscriptionCreated (R-PAY-6): point the payment at its new subscription
    before the handlers of later apps (family) look for it."""
    if event.payment_id and Payment.objects.filter(pk=event.payment_id, subscription__isnull=True).update(
            subscription_id=event.subscription_id):
        _linked.__dict__[event.payment_id] = event.subscription_id


@transaction.atomic
def confirm(*, payment: Payment, status: str = P.PAID, cid: str | None = None, expires_at: datetime | None = None,
            custom_amount=None) -> Payment:
    """A gateway (or staff) reports the payment paid: subscription once (R-PAY-5), and with a card token
    on a recurrent gateway, the recurrent profile (R-REC-3). Confirming again changes nothing."""
    if status not in P.PAID_STATUSES:
        raise PaymentError("invalid_status", f"Not a paid status: {status}")
    payment = change_status(payment=payment, status=status)
    if cid and payment.gateway.is_recurrent and payment.status in P.PAID_STATUSES:
        try:
            create_recurrent_payment(payment=payment, cid=cid, expires_at=expires_at, custom_amount=custom_amount)
        except PaymentError as exc:
            log.warning("payment %s: no recurrent profile: %s", payment.pk, exc.message)
    return payment


def refund(*, payment: Payment) -> Payment:
    """R-PAY-7: the payment becomes ``refund``; its active recurrent profile stops (system_stop)."""
    return change_status(payment=payment, status=P.REFUND)


def _stop_profiles_after_refund(payment: Payment) -> None:
    for row in RP.objects.select_for_update().filter(parent_payment=payment, state=RP.ACTIVE):
        _set_state(row, RP.SYSTEM_STOP, from_states=(RP.ACTIVE,), note=_append(row.note, "Payment refunded"))


def _items_of(payment: Payment) -> list[ItemSpec]:
    return [ItemSpec(name=i.name, amount=i.amount, vat=i.vat, count=i.count, type=i.type,
                     subscription_type_id=i.subscription_type_id, meta=dict(i.meta)) for i in payment.items.all()]


def _renewed_type_items(old: list[ItemSpec], current: list[ItemSpec]) -> list[ItemSpec]:
    """R-PAY-9: the old subscription-type items, unless the type's current items cost the same in total
    but differ without VAT or in count (a VAT change): then the current ones. A different total (a
    legacy price) keeps the old items."""
    if not old:
        return current
    same_total = sum((i.total for i in old), Decimal(0)) == sum((i.total for i in current), Decimal(0))
    differs = (sum((i.total_without_vat for i in old), Decimal(0))
               != sum((i.total_without_vat for i in current), Decimal(0))) or len(old) != len(current)
    return current if (current and same_total and differs) else old


@_service
def copy_payment(*, payment: Payment, gateway: PaymentGateway | str | None = None) -> Payment:
    """R-PAY-9: a new ``form`` payment repeating ``payment`` (renewal, manual repeat): same reader, type,
    address and donation; subscription-type items per R-PAY-9, other items copied unchanged."""
    items = _items_of(payment)
    type_lines = [i for i in items if i.type == PaymentItem.SUBSCRIPTION_TYPE]
    others = [i for i in items if i.type != PaymentItem.SUBSCRIPTION_TYPE]
    if payment.subscription_type is not None:
        type_lines = _renewed_type_items(type_lines, type_items(payment.subscription_type))
    return create_payment.inner(
        user=payment.user, gateway=gateway or payment.gateway, subscription_type=payment.subscription_type,
        items=type_lines + others, allow_zero_amount=True, additional_amount=payment.additional_amount,
        additional_type=payment.additional_type, address=payment.address)


def find_by_variable_symbol(symbol: str) -> Payment | None:
    """R-PAY-8: a numeric symbol shorter than 10 digits also matches its left-zero-padded forms."""
    symbol = (symbol or "").strip()
    if not symbol or len(symbol) > 10:
        return None
    candidates = [symbol]
    if symbol.isascii() and symbol.isdigit():
        candidates += [symbol.zfill(n) for n in range(len(symbol) + 1, 11)]
    found = {p.variable_symbol: p for p in Payment.objects.filter(variable_symbol__in=candidates)}
    for candidate in candidates:
        if candidate in found:
            return found[candidate]
    return None


# --- recurrent payments: configuration ---------------------------------------------------------------


def parse_durations(value: str) -> list[timedelta]:
    """ISO-8601 durations separated by commas and/or spaces (``PT15M, PT6H`` or ``PT15M,PT6H``)."""
    result = []
    for part in re.split(r"[\s,]+", (value or "").strip()):
        if not part:
            continue
        duration = parse_duration(part.upper()) if part.upper().startswith("P") else None
        if duration is None or duration < timedelta(0):
            raise ImproperlyConfigured(f"not an ISO-8601 duration: {part!r}")
        result.append(duration)
    return result


def retry_ladder() -> list[timedelta]:
    """R-REC-10: ``settings.RECURRENT_PAYMENT_CHARGES``."""
    return parse_durations(settings.RECURRENT_PAYMENT_CHARGES)


def initial_retries() -> int:
    """R-REC-3: entries of the ladder minus one (0 when unset)."""
    return max(len(retry_ladder()) - 1, 0)


def retry_delay(retries_left: int) -> timedelta:
    """R-REC-10: the wait after a failed try of a row with ``retries_left`` (> 0)."""
    ladder = retry_ladder()
    if not ladder:
        raise ImproperlyConfigured("RECURRENT_PAYMENT_CHARGES is empty")
    n = len(ladder)
    return ladder[0] if retries_left >= n else ladder[n - 1 - retries_left]


def gateway_fail_delay() -> timedelta:
    """R-REC-13: ``settings.RECURRENT_GATEWAY_FAIL_DELAY`` (default PT1H)."""
    delays = parse_durations(settings.RECURRENT_GATEWAY_FAIL_DELAY)
    return delays[0] if delays else timedelta(hours=1)


def charge_before_hours(subscription_type: SubscriptionType) -> int:
    """R-REC-5: the type's hours, else the global setting when it is a non-negative integer, else 0."""
    if subscription_type.recurrent_charge_before is not None:
        return subscription_type.recurrent_charge_before
    raw = str(settings.RECURRENT_CHARGE_BEFORE_HOURS or "").strip()
    return int(raw) if raw.isdigit() else 0


def charge_at_for(*, payment: Payment, now: datetime | None = None) -> datetime:
    """R-REC-4/5: when to charge the card next after ``payment``; PaymentError when it cannot be computed."""
    now = now or clock.now()
    subscription = payment.subscription
    if subscription is not None:
        end = subscription.end_time
    elif payment.paid_at is not None and payment.subscription_type is not None:
        end = periods.add_days(payment.paid_at, payment.subscription_type.length)
    else:
        raise PaymentError("charge_at_unknown", "Payment has neither a subscription nor a paid time and type")
    if end <= now:
        raise PaymentError("charge_at_in_past", f"Base charge time {end} is not in the future")
    if payment.subscription_type is None:
        raise PaymentError("no_subscription_type", "Payment has no subscription type")
    hours = charge_before_hours(payment.subscription_type)
    if hours != 0 and subscription is None:
        raise PaymentError("charge_before_needs_subscription", "Charging before the end needs a subscription")
    charge_at = end - timedelta(hours=hours)
    if subscription is not None and charge_at < subscription.start_time:
        raise PaymentError("charge_at_before_start", f"Charge time {charge_at} is before the subscription start")
    if payment.paid_at is not None and charge_at < payment.paid_at:
        raise PaymentError("charge_at_before_paid", f"Charge time {charge_at} is before the payment")
    if charge_at <= now:
        raise PaymentError("charge_at_in_past", f"Charge time {charge_at} is not in the future")
    return charge_at


# --- recurrent payments: profiles ----------------------------------------------------------------------


@_service
def create_recurrent_payment(*, payment: Payment, cid: str, expires_at: datetime | None = None,
                             charge_at: datetime | None = None, custom_amount=None,
                             next_subscription_type: SubscriptionType | None = None,
                             note: str = "", _fresh: bool = False) -> RecurrentPayment:
    """R-REC-3: the profile (first charge row) after a paid payment on a recurrent gateway.

    Idempotent: the row this payment already scheduled is returned. ``charge_at`` may come from the
    gateway; else R-REC-4/5. PaymentError (nothing written) when the payment does not qualify or the
    charge time cannot be computed.
    """
    # (``_fresh``: the charge run's own new payment under its lock can have scheduled nothing yet)
    existing = None if _fresh else RP.objects.filter(parent_payment=payment).first()
    if existing is not None:
        return existing
    if payment.status not in P.PAID_STATUSES:
        raise PaymentError("payment_not_paid", f"Payment {payment.pk} is {payment.status}, not paid")
    if not payment.gateway.is_recurrent:
        raise PaymentError("gateway_not_recurrent", f"Gateway {payment.gateway.code} is not recurrent")
    if not cid:
        raise PaymentError("no_card_token", "A card token is required")
    if payment.subscription_type is None:
        raise PaymentError("no_subscription_type", "Payment has no subscription type")
    if charge_at is None:
        charge_at = charge_at_for(payment=payment)
    if custom_amount is not None:
        custom_amount = to_money(custom_amount)
    fields = dict(cid=cid[:255], gateway=payment.gateway, charge_at=_seconds(charge_at), expires_at=expires_at,
                  parent_payment=payment, retries=initial_retries(), user_id=payment.user_id,
                  subscription_type=payment.subscription_type, next_subscription_type=next_subscription_type,
                  state=RP.ACTIVE, note=note, custom_amount=custom_amount)
    try:
        if _fresh:
            row = RP.objects.create(**fields)
        else:
            with transaction.atomic():
                row = RP.objects.create(**fields)
    except IntegrityError:  # created concurrently for the same payment
        existing = RP.objects.filter(parent_payment=payment).first()
        if existing is None:
            raise
        return existing
    emit(events.RecurrentPaymentCreated(recurrent_payment_id=row.pk, user_id=row.user_id,
                                        parent_payment_id=payment.pk))
    return row


def _set_state(row: RecurrentPayment, new_state: str, *, from_states: tuple[str, ...], **fields) -> bool:
    """Move ``row`` to ``new_state`` if it is still in one of ``from_states`` (a conditional update);
    emits RecurrentPaymentStateChanged. False when another process got there first."""
    old_state = row.state if row.state in from_states else from_states[0]
    updated = RP.objects.filter(pk=row.pk, state__in=from_states).update(state=new_state, updated_at=timezone.now(),
                                                                         **fields)
    if not updated:
        return False
    row.state = new_state
    for name, value in fields.items():
        setattr(row, name, value)
    if old_state != new_state:
        emit(events.RecurrentPaymentStateChanged(recurrent_payment_id=row.pk, user_id=row.user_id,
                                                 old_state=old_state, new_state=new_state))
    return True


def _append(note: str, line: str) -> str:
    return f"{note}\n{line}" if note else line


def _lock(row: RecurrentPayment) -> RecurrentPayment:
    return RP.objects.select_for_update(of=("self",)).select_related("gateway", "parent_payment").get(pk=row.pk)


def can_stop(row: RecurrentPayment, *, by_user: bool) -> bool:
    """R-REC-15: nobody stops a profile of an ``unstoppable`` gateway or one paid ``prepaid``; users
    also not one of a ``user_unstoppable`` gateway."""
    gateway = row.gateway
    if gateway.flag("unstoppable"):
        return False
    if row.parent_payment_id is not None and row.parent_payment.status == P.PREPAID:
        return False
    return not (by_user and gateway.flag("user_unstoppable"))


@transaction.atomic
def stop_by_user(*, recurrent_payment: RecurrentPayment) -> RecurrentPayment:
    """R-REC-16: only an active row; refused when not user-stoppable (R-REC-15)."""
    row = _lock(recurrent_payment)
    if row.state != RP.ACTIVE:
        raise PaymentError("recurrent_payment_not_active", "Only an active recurrent payment can be stopped",
                           state=row.state)
    if not can_stop(row, by_user=True):
        raise PaymentError("user_unstoppable_recurrent_payment_gateway", "The gateway is unstoppable by user",
                           gateway=row.gateway.code)
    if not _set_state(row, RP.USER_STOP, from_states=(RP.ACTIVE,)):
        raise PaymentError("recurrent_payment_not_active", "Only an active recurrent payment can be stopped",
                           state=RP.objects.get(pk=row.pk).state)
    emit(events.RecurrentPaymentStoppedByUser(recurrent_payment_id=row.pk, user_id=row.user_id))
    return row


@transaction.atomic
def stop_by_admin(*, recurrent_payment: RecurrentPayment, note: str = "") -> RecurrentPayment:
    """R-REC-16: an active (or user-stopped) row → ``admin_stop``, if stoppable (R-REC-15)."""
    row = _lock(recurrent_payment)
    if row.state not in (RP.ACTIVE, RP.USER_STOP):
        raise PaymentError("recurrent_payment_not_active", "Only an active recurrent payment can be stopped",
                           state=row.state)
    if not can_stop(row, by_user=False):
        raise PaymentError("unstoppable_recurrent_payment", "This recurrent payment cannot be stopped",
                           gateway=row.gateway.code)
    extra = {"note": _append(row.note, note)} if note else {}
    _set_state(row, RP.ADMIN_STOP, from_states=(row.state,), **extra)
    emit(events.RecurrentPaymentStoppedByAdmin(recurrent_payment_id=row.pk, user_id=row.user_id))
    return row


@transaction.atomic
def stop_all_for_user(*, user) -> int:
    """R-REC-16 (GDPR / anonymisation): every active row of ``user`` → ``user_stop``."""
    stopped = 0
    for row in RP.objects.select_for_update().filter(user=user, state=RP.ACTIVE):
        if _set_state(row, RP.USER_STOP, from_states=(RP.ACTIVE,)):
            emit(events.RecurrentPaymentStoppedByUser(recurrent_payment_id=row.pk, user_id=row.user_id))
            stopped += 1
    return stopped


@transaction.atomic
def reactivate_by_user(*, recurrent_payment: RecurrentPayment) -> RecurrentPayment:
    """R-REC-17: ``user_stop`` → ``active`` when the charge time is not past; payment/status/approval cleared."""
    row = _lock(recurrent_payment)
    if row.state != RP.USER_STOP:
        raise PaymentError("recurrent_payment_not_active", "Only a user-stopped recurrent payment can be reactivated",
                           state=row.state)
    if row.charge_at < clock.now():
        raise PaymentError("recurrent_payment_next_charge_in_past", "Next charge is in past")
    _set_state(row, RP.ACTIVE, from_states=(RP.USER_STOP,), payment=None, status=None, approval="")
    emit(events.RecurrentPaymentReactivated(recurrent_payment_id=row.pk, user_id=row.user_id))
    return row


@transaction.atomic
def reactivate_by_admin(*, recurrent_payment: RecurrentPayment) -> RecurrentPayment:
    """R-REC-18: after a system stop with no retries left, within 14 days: a new row charged in 24 hours."""
    row = _lock(recurrent_payment)
    now = clock.now()
    if not can_stop(row, by_user=False):
        raise PaymentError("unstoppable_recurrent_payment", "This recurrent payment cannot be changed")
    if row.state != RP.SYSTEM_STOP or row.retries != 0:
        raise PaymentError("recurrent_payment_not_reactivatable",
                           "Only a system-stopped recurrent payment without retries left can be reactivated",
                           state=row.state)
    if row.charge_at < now - REACTIVATION_WINDOW:
        raise PaymentError("recurrent_payment_too_old", "The recurrent payment stopped more than 14 days ago")
    payment = row.payment
    try:
        with transaction.atomic():
            new_row = RP.objects.create(
                cid=row.cid, gateway=row.gateway, charge_at=now + ADMIN_REACTIVATION_DELAY, expires_at=row.expires_at,
                parent_payment=payment, retries=initial_retries(), user_id=row.user_id,
                subscription_type=(payment.subscription_type if payment and payment.subscription_type_id
                                   else row.subscription_type),
                next_subscription_type=row.next_subscription_type, state=RP.ACTIVE,
                note=f"Reactivated by admin from recurrent payment #{row.pk}", custom_amount=row.custom_amount)
    except IntegrityError as exc:
        raise PaymentError("recurrent_payment_already_reactivated",
                           "This recurrent payment was already reactivated") from exc
    emit(events.RecurrentPaymentCreated(recurrent_payment_id=new_row.pk, user_id=new_row.user_id,
                                        parent_payment_id=new_row.parent_payment_id))
    emit(events.RecurrentPaymentReactivated(recurrent_payment_id=new_row.pk, user_id=new_row.user_id,
                                            by_admin=True))
    return new_row


def is_stopped(*, subscription: Subscription) -> bool:
    """R-REC-19: whether the recurring payment behind ``subscription`` is stopped."""
    payment_ids = list(Payment.objects.filter(subscription=subscription).values_list("pk", flat=True))
    row = RP.objects.filter(parent_payment_id__in=payment_ids).order_by("-pk").first() if payment_ids else None
    if row is None:
        return True
    if row.state in RP.STOP_STATES:
        return True
    if row.state == RP.CHARGE_FAILED:
        newest = (RP.objects.filter(user_id=row.user_id, cid=row.cid, gateway_id=row.gateway_id, pk__gt=row.pk)
                  .order_by("-pk").first())
        return newest is not None and newest.state in RP.STOP_STATES
    return False


def shift_charge_on_move(event) -> None:
    """R-REC-14 (synchronous handler of SubscriptionMoved): the active profile scheduled by the moved
    subscription's payment moves by as much as the subscription's end did."""
    subscription = Subscription.objects.filter(pk=event.subscription_id).first()
    if subscription is None:
        return
    delta = subscription.end_time - event.original_end
    if not delta:
        return
    payment_ids = Payment.objects.filter(subscription=subscription).values_list("pk", flat=True)
    for row in RP.objects.select_for_update().filter(parent_payment_id__in=list(payment_ids), state=RP.ACTIVE):
        RP.objects.filter(pk=row.pk, state=RP.ACTIVE).update(charge_at=row.charge_at + delta, updated_at=timezone.now())


# --- recurrent payments: what the next charge is -------------------------------------------------------


def successful_predecessors(row: RecurrentPayment) -> int:
    """Charged rows before ``row`` in its chain, following parent payments and skipping failed attempts."""
    count, parent_id, seen = 0, row.parent_payment_id, set()
    while parent_id is not None and parent_id not in seen:
        seen.add(parent_id)
        previous = RP.objects.filter(payment_id=parent_id).order_by("-pk").values("state", "parent_payment_id").first()
        if previous is None:
            break
        if previous["state"] == RP.CHARGED:
            count += 1
        parent_id = previous["parent_payment_id"]
    return count


def next_subscription_type(row: RecurrentPayment) -> SubscriptionType:
    """R-REC-20: the type the next charge buys (trials switch to the type's next one)."""
    base = row.next_subscription_type or row.subscription_type
    following = base.next_subscription_type
    trials = base.trial_periods or 0
    if following is None or trials == 0:
        return base
    if trials == 1:
        return following
    used = 1 + successful_predecessors(row)
    return following if used >= trials else base


#: modules may supply the items of a charge (family does, R-FAM-30): ``fn(row=, subscription_type=)``
#: returns a list of ItemSpec or None to pass.
ITEM_PROVIDERS: list = []


def register_item_provider(provider) -> None:
    if provider not in ITEM_PROVIDERS:
        ITEM_PROVIDERS.append(provider)


def split_amount(amount: Decimal, items: list[ItemSpec]) -> list[ItemSpec]:
    """R-REC-21: ``amount`` over ``items`` by price ratio, floored to cents; the remainder goes to the
    (first) item with the highest VAT."""
    total = sum((i.total for i in items), Decimal(0))
    shares = []
    for item in items:
        share = (amount * item.total / total).quantize(CENT, rounding=ROUND_FLOOR) if total else Decimal("0.00")
        shares.append(share)
    top = max(range(len(items)), key=lambda k: (items[k].vat, -k))
    shares[top] += amount - sum(shares)
    return [ItemSpec(name=i.name, amount=s, vat=i.vat, count=1, type=i.type, subscription_type_id=i.subscription_type_id,
                     meta=dict(i.meta)) for i, s in zip(items, shares, strict=True)]


def donation_vat() -> Decimal:
    raw = str(settings.DONATION_VAT_RATE or "").strip()
    if not raw:
        raise PaymentError("donation_vat_rate_missing", "DONATION_VAT_RATE is not configured")
    return to_money(raw)


def charge_items(row: RecurrentPayment, subscription_type: SubscriptionType, *,
                 type_lines: list[ItemSpec] | None = None,
                 parent_lines: list[ItemSpec] | None = None) -> tuple[list[ItemSpec], Decimal, str]:
    """R-REC-21: the items of the charge payment, and its additional amount and type. ``type_lines`` (the
    type's items) and ``parent_lines`` (the parent payment's) may come prefetched."""
    for provider in ITEM_PROVIDERS:
        provided = provider(row=row, subscription_type=subscription_type)
        if provided is not None:
            return list(provided), Decimal("0.00"), ""
    parent = row.parent_payment
    current = type_items(subscription_type) if type_lines is None else type_lines
    if parent is not None and parent_lines is None:
        parent_lines = _items_of(parent)
    if row.custom_amount is not None:
        if not current:
            raise PaymentError("no_type_items", f"Type {subscription_type.code} has no items")
        items = split_amount(row.custom_amount, current)
    elif parent is not None and parent.subscription_type_id == subscription_type.pk and \
            parent.amount - (parent.additional_amount if parent.additional_type else 0) == subscription_type.price:
        items = _renewed_type_items([i for i in parent_lines if i.type == PaymentItem.SUBSCRIPTION_TYPE], current)
    else:
        items = current
    additional, additional_type = Decimal("0.00"), ""
    if parent is not None and parent.additional_type == P.RECURRENT and parent.additional_amount > 0:
        previous = next((i for i in parent_lines if i.type == PaymentItem.DONATION), None)
        items = [*items, ItemSpec(name=previous.name if previous else "Donation", amount=parent.additional_amount,
                                  vat=donation_vat(), type=PaymentItem.DONATION)]
        additional, additional_type = parent.additional_amount, P.RECURRENT
    return items, additional, additional_type


def _charge_payment_spec(row: RecurrentPayment, subscription_type: SubscriptionType | None = None,
                         **prefetched) -> dict:
    """R-REC-6: the arguments of create_payment for the attempt's payment (R-REC-20/21), ``recurrent_charge``."""
    subscription_type = subscription_type or next_subscription_type(row)
    items, additional, additional_type = charge_items(row, subscription_type, **prefetched)
    parent = row.parent_payment
    return dict(user=row.user, gateway=row.gateway, subscription_type=subscription_type, items=items,
                additional_amount=additional, additional_type=additional_type,
                address=parent.address if parent is not None else None, recurrent_charge=True)


def _build_charge_payment(row: RecurrentPayment) -> Payment:
    return create_payment.inner(**_charge_payment_spec(row))


# --- the charge run ---------------------------------------------------------------------------------------


@dataclass
class ChargeRunResult:
    claimed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def __getitem__(self, outcome: str) -> int:
        return self.outcomes.get(outcome, 0)


def lookahead() -> timedelta:
    """R-REC-6: rows due within the next run period are charged now (REMP: 15 minutes)."""
    return timedelta(minutes=settings.CHARGE_RUN_MINUTES)


def _db_time(value: datetime):
    return connection.ops.adapt_datetimefield_value(value)


def claim_due(*, limit: int, due_before: datetime, max_id: int | None = None,
              exclude: frozenset[int] | set[int] = frozenset()) -> list[tuple[int, datetime]]:
    """Claim up to ``limit`` due rows for this run: ``active`` → ``pending`` with ``claimed_at`` set, in
    one conditional update. Also re-claims rows whose run died (pending, no status, claim older than
    CLAIM_TIMEOUT). Returns (row id, claim stamp) pairs; each row is claimed by one run only."""
    table = RP._meta.db_table
    claimed_at = timezone.now()
    stale = claimed_at - CLAIM_TIMEOUT
    lock = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    id_limit = " AND id <= %s" if max_id is not None else ""
    id_param = [max_id] if max_id is not None else []
    if exclude:
        id_limit += f" AND id NOT IN ({', '.join(['%s'] * len(exclude))})"
        id_param += sorted(exclude)
    due = "state = %s AND status IS NULL AND retries >= 0 AND charge_at <= %s" + id_limit
    dead = "state = %s AND status IS NULL AND claimed_at < %s"
    claims: list[tuple[int, datetime]] = []
    with transaction.atomic():
        for condition, params, was_active in (
            (due, [RP.ACTIVE, _db_time(due_before), *id_param], True),
            (dead, [RP.PENDING, _db_time(stale)], False),
        ):
            room = limit - len(claims)
            if room <= 0:
                break
            sql = (f"UPDATE {table} SET state = %s, claimed_at = %s, updated_at = %s "
                   f"WHERE id IN (SELECT id FROM {table} WHERE {condition} ORDER BY charge_at, id "
                   f"LIMIT {int(room)}{lock}) AND {condition} RETURNING id, user_id")
            with connection.cursor() as cursor:
                cursor.execute(sql, [RP.PENDING, _db_time(claimed_at), _db_time(claimed_at), *params, *params])
                rows = cursor.fetchall()
            for row_id, user_id in sorted(rows):
                claims.append((row_id, claimed_at))
                if was_active:
                    emit(events.RecurrentPaymentStateChanged(recurrent_payment_id=row_id, user_id=user_id,
                                                             old_state=RP.ACTIVE, new_state=RP.PENDING))
                else:
                    log.warning("recurrent payment %s: claim of a dead charge run taken over", row_id)
    return claims


def _claimed_row(row_id: int, claimed_at: datetime, *related: str) -> RecurrentPayment | None:
    """The row if this claim still owns it, locked. (Few joins: a wide join costs more to plan than the
    lazy loads it saves.)"""
    return (RP.objects.select_for_update(of=("self",)).select_related("gateway", *related)
            .filter(pk=row_id, state=RP.PENDING, status__isnull=True, claimed_at=claimed_at).first())


def _still_claimed(row_id: int, claimed_at: datetime) -> bool:
    """Whether this claim still owns the row; the conditional update also locks it until commit."""
    return bool(RP.objects.filter(pk=row_id, state=RP.PENDING, status__isnull=True, claimed_at=claimed_at)
                .update(updated_at=timezone.now()))


def _same_card(row: RecurrentPayment) -> list[tuple[int, str, datetime]]:
    """(id, state, charge_at) of the other charged or in-flight rows of the row's card, user and gateway."""
    return list(RP.objects.filter(user_id=row.user_id, cid=row.cid, gateway_id=row.gateway_id,
                                  state__in=(RP.CHARGED, RP.PENDING)).exclude(pk=row.pk)
                .values_list("pk", "state", "charge_at"))


def _guard(row: RecurrentPayment, now: datetime, same_card: list[tuple[int, str, datetime]]) -> str | None:
    """R-REC-7, and one charge of a card at a time: "fast_charge" when the card was charged less than the
    threshold ago (or for this very time); "deferred" while an older row of the card is in flight (the
    guard then decides in a later run, once that one has an outcome); else None."""
    hours = settings.FASTCHARGE_THRESHOLD_HOURS
    charged = [charge_at for _pk, state, charge_at in same_card if state == RP.CHARGED]
    if hours and hours > 0 and charged:
        last = max(charged)
        if now - last < timedelta(hours=hours) or last == row.charge_at:
            return "fast_charge"
    if any(state == RP.PENDING and pk < row.pk for pk, state, _charge_at in same_card):
        return "deferred"
    return None


def _hold_back(row: RecurrentPayment, verdict: str) -> str:
    if verdict == "fast_charge":
        _set_state(row, RP.SYSTEM_STOP, from_states=(RP.PENDING,), claimed_at=None,
                   note=_append(row.note, "Fast charge"))
        log.warning("recurrent payment %s: stopped by the fast-charge guard", row.pk)
    else:  # back to active, untouched; this run claims it no more
        _set_state(row, RP.ACTIVE, from_states=(RP.PENDING,), claimed_at=None)
    return verdict


def idempotency_key(row: RecurrentPayment, payment: Payment) -> str:
    """One key per attempt (row and its payment): a retried call of the same attempt reuses it."""
    return f"masthead-rp-{row.pk}-{payment.variable_symbol}"


def charge_claimed(row_id: int, claimed_at: datetime) -> str:
    """Charge one claimed row (R-REC-6..13); returns the outcome. Never holds a transaction while the
    gateway works. On an unexpected error everything of the failed step rolls back and the row stays
    claimed: a run after CLAIM_TIMEOUT takes it over (with the same payment and idempotency key, if the
    payment was made), so a persistent error is retried hourly, not in a loop."""
    try:
        return _charge_claimed(row_id, claimed_at)
    except Exception:
        log.exception("recurrent payment %s: charge failed unexpectedly; a run after %s retries it", row_id,
                      CLAIM_TIMEOUT)
        return "exception"


def _charge_claimed(row_id: int, claimed_at: datetime) -> str:
    with transaction.atomic():
        row = _claimed_row(row_id, claimed_at, "parent_payment", "user", "subscription_type")
        if row is None:
            return "skipped"
        verdict = _guard(row, clock.now(), _same_card(row))
        if verdict:
            return _hold_back(row, verdict)
        payment = row.payment
        if payment is None:
            payment = _build_charge_payment(row)
            RP.objects.filter(pk=row.pk, payment__isnull=True).update(payment=payment)
            row.payment = payment
        emit(events.BeforeRecurrentCharge(recurrent_payment_id=row.pk, payment_id=payment.pk))
        # handlers may have changed it
        payment.status, payment.amount = Payment.objects.filter(pk=payment.pk).values_list("status", "amount").get()
    return _call_and_record(row, claimed_at, payment)


def _call(row: RecurrentPayment, payment: Payment) -> ChargeResult:
    """The gateway call, with no transaction open."""
    if payment.status in P.PAID_STATUSES:
        return ChargeResult(OK, "already_paid", "The payment was already paid")
    try:
        return gateways.get(row.gateway.code).charge(token=row.cid, amount=payment.amount,
                                                     idempotency_key=idempotency_key(row, payment), payment=payment)
    except Exception as exc:  # an adapter must not raise; if it does, it is a gateway error
        log.exception("recurrent payment %s: gateway %s raised", row.pk, row.gateway.code)
        return ChargeResult(ERROR, "gateway_exception", str(exc)[:250])


def _record(row: RecurrentPayment, payment: Payment, result: ChargeResult) -> str:
    row.payment = payment
    return apply_result.inner(row=row, result=result)


def _call_and_record(row: RecurrentPayment, claimed_at: datetime, payment: Payment) -> str:
    """The gateway call (no transaction open) and its outcome (one transaction, if the claim still holds)."""
    result = _call(row, payment)
    with transaction.atomic():
        if not _still_claimed(row.pk, claimed_at):  # a later run took the claim over: it records the outcome
            return "skipped"                        # (it calls the gateway with the same idempotency key)
        return _record(row, payment, result)


def charge_chunk(claims: list[tuple[int, datetime]]) -> list[tuple[int, str]]:
    """Charge claimed rows one after another (one worker's share); returns (row id, outcome) pairs.

    The rows are prepared together — locks, guards, charge payments — in one transaction with a few
    set-wise queries; then the gateway is called for each in turn, with no transaction open; then the
    answers are recorded in one transaction. If preparing fails, every row goes the single-row way
    (:func:`charge_claimed`); if recording fails, each answer is recorded in a transaction of its own
    — so one bad row does not hold the others back.
    """
    try:
        outcomes, attempts = _prepare_chunk(claims)
    except Exception:
        log.exception("preparing %d claimed rows together failed; charging them one by one", len(claims))
        return [(row_id, charge_claimed(row_id, claimed_at)) for row_id, claimed_at in claims]
    answered = [(row, claimed_at, payment, _call(row, payment)) for row, claimed_at, payment in attempts]
    try:
        with transaction.atomic():
            owned = _owned([(row.pk, claimed_at) for row, claimed_at, _payment, _result in answered])
            for row, _claimed_at, payment, result in answered:
                outcomes[row.pk] = _record(row, payment, result) if row.pk in owned else "skipped"
    except Exception:
        log.exception("recording %d charges together failed; recording them one by one", len(answered))
        for row, claimed_at, payment, result in answered:
            try:
                with transaction.atomic():
                    outcomes[row.pk] = (_record(row, payment, result) if _still_claimed(row.pk, claimed_at)
                                        else "skipped")
            except Exception:
                log.exception("recurrent payment %s: recording its charge failed; a run after %s retries it",
                              row.pk, CLAIM_TIMEOUT)
                outcomes[row.pk] = "exception"
    return [(row_id, outcomes.get(row_id, "skipped")) for row_id, _claimed_at in claims]


def _owned(claims: list[tuple[int, datetime]]) -> set[int]:
    """The rows of ``claims`` whose claim still holds, locked until commit."""
    by_stamp: dict[datetime, list[int]] = {}
    for row_id, claimed_at in claims:
        by_stamp.setdefault(claimed_at, []).append(row_id)
    owned: set[int] = set()
    for claimed_at, ids in by_stamp.items():
        owned.update(RP.objects.select_for_update().filter(pk__in=ids, state=RP.PENDING, status__isnull=True,
                                                           claimed_at=claimed_at).values_list("pk", flat=True))
    return owned


def _prepare_chunk(claims: list[tuple[int, datetime]]) -> tuple[dict[int, str], list[tuple]]:
    """Phase one of :func:`charge_chunk` for all its rows: what :func:`_charge_claimed` does before the
    gateway call, with set-wise reads."""
    stamps = dict(claims)
    outcomes: dict[int, str] = {}
    attempts = []
    with transaction.atomic():
        rows = [row for row in RP.objects.select_for_update(of=("self",))
                .select_related("gateway", "parent_payment", "user", "subscription_type")
                .filter(pk__in=list(stamps), state=RP.PENDING, status__isnull=True).order_by("pk")
                if row.claimed_at == stamps[row.pk]]
        cards: dict[tuple, list] = {}
        for pk, user_id, cid, gateway_id, state, charge_at in RP.objects.filter(
                user_id__in={row.user_id for row in rows}, state__in=(RP.CHARGED, RP.PENDING)).values_list(
                "pk", "user_id", "cid", "gateway_id", "state", "charge_at"):
            cards.setdefault((user_id, cid, gateway_id), []).append((pk, state, charge_at))
        now = clock.now()
        ready = []
        for row in rows:
            same_card = [c for c in cards.get((row.user_id, row.cid, row.gateway_id), []) if c[0] != row.pk]
            verdict = _guard(row, now, same_card)
            if verdict:
                outcomes[row.pk] = _hold_back(row, verdict)
            else:
                ready.append(row)
        fresh = [row for row in ready if row.payment_id is None]
        kinds = {row.pk: next_subscription_type(row) for row in fresh}
        type_lines: dict[int, list[ItemSpec]] = {kind.pk: [] for kind in kinds.values()}
        for item in SubscriptionTypeItem.objects.filter(subscription_type_id__in=list(type_lines)):
            type_lines[item.subscription_type_id].append(
                ItemSpec(name=item.name, amount=item.amount, vat=item.vat, subscription_type_id=item.subscription_type_id))
        parent_lines: dict[int, list[ItemSpec]] = {row.parent_payment_id: [] for row in fresh if row.parent_payment_id}
        for item in PaymentItem.objects.filter(payment_id__in=list(parent_lines)).order_by("pk"):
            parent_lines[item.payment_id].append(
                ItemSpec(name=item.name, amount=item.amount, vat=item.vat, count=item.count, type=item.type,
                         subscription_type_id=item.subscription_type_id, meta=dict(item.meta)))
        specs = [_charge_payment_spec(row, kinds[row.pk], type_lines=list(type_lines[kinds[row.pk].pk]),
                                      parent_lines=parent_lines.get(row.parent_payment_id)) for row in fresh]
        for row, payment in zip(fresh, _create_payments(specs), strict=True):
            row.payment = payment
        if fresh:
            RP.objects.bulk_update(fresh, ["payment"])
        for row in ready:
            emit(events.BeforeRecurrentCharge(recurrent_payment_id=row.pk, payment_id=row.payment_id))
        # handlers may have changed them
        current = {pk: (status, amount) for pk, status, amount in Payment.objects.filter(
            pk__in=[row.payment_id for row in ready]).values_list("pk", "status", "amount")}
        for row in ready:
            payment = row.payment
            payment.status, payment.amount = current[payment.pk]
            attempts.append((row, stamps[row.pk], payment))
    return outcomes, attempts


@_service
def apply_result(*, row: RecurrentPayment, result: ChargeResult) -> str:
    """R-REC-8: record what the gateway answered for ``row`` (locked, state pending, payment set)."""
    now = clock.now()
    payment = row.payment
    code = (result.code or result.outcome)[:100]
    approval = (result.message or "")[:250]
    PaymentLog.objects.create(payment=payment, status="OK" if result.outcome in (OK, PENDING) else "ERROR",
                              source="recurrent_charge", message=f"{result.outcome}: {code} {approval}".strip(),
                              response=result.response or {"outcome": result.outcome, "code": code})
    if result.outcome == OK:
        return _charged(row, payment, result, code, approval)
    if result.outcome == PENDING:
        RP.objects.filter(pk=row.pk).update(status=code, approval=approval, updated_at=timezone.now())
        return "pending"
    if result.outcome == FAIL_TRY and row.retries > 0:
        change_status.inner(payment=payment, status=P.FAIL, error_message=approval or code, _reuse=True)
        successor = _successor(row, payment, charge_at=now + retry_delay(row.retries), retries=row.retries - 1)
        _set_state(row, RP.CHARGE_FAILED, from_states=(RP.PENDING,), status=code, approval=approval, claimed_at=None)
        emit(events.RecurrentPaymentFailTry(recurrent_payment_id=row.pk, user_id=row.user_id, payment_id=payment.pk,
                                            next_recurrent_payment_id=successor.pk, code=code))
        return "retry"
    if result.outcome == ERROR:
        change_status.inner(payment=payment, status=P.FAIL, error_message=approval or code, _reuse=True)
        successor = _successor(row, payment, charge_at=now + gateway_fail_delay(), retries=row.retries)
        _set_state(row, RP.CHARGE_FAILED, from_states=(RP.PENDING,), status=code, approval=approval, claimed_at=None)
        emit(events.RecurrentPaymentFailTry(recurrent_payment_id=row.pk, user_id=row.user_id, payment_id=payment.pk,
                                            next_recurrent_payment_id=successor.pk, code=code, gateway_error=True))
        return "gateway_error"
    # FAIL_STOP, or FAIL_TRY with no retries left (R-REC-12)
    change_status.inner(payment=payment, status=P.FAIL, error_message=approval or code, _reuse=True)
    _set_state(row, RP.SYSTEM_STOP, from_states=(RP.PENDING,), status=code, approval=approval, claimed_at=None)
    emit(events.RecurrentPaymentFailed(recurrent_payment_id=row.pk, user_id=row.user_id, payment_id=payment.pk,
                                       code=code))
    return "failed"


def _charged(row: RecurrentPayment, payment: Payment, result: ChargeResult, code: str, approval: str) -> str:
    """R-REC-9: payment paid → subscription → next row; the row ``charged``; Renewed once."""
    payment = change_status.inner(payment=payment, status=P.PAID, _reuse=True)
    next_row = None
    try:
        next_row = create_recurrent_payment.inner(payment=payment, cid=row.cid, expires_at=row.expires_at,
                                                  charge_at=result.charge_at, custom_amount=row.custom_amount,
                                                  # this call paid the attempt's own payment (it was a form):
                                                  # nothing can have scheduled a row after it yet
                                                  _fresh=payment._old_status == P.FORM)
    except PaymentError as exc:
        log.warning("recurrent payment %s: charged, but no next charge scheduled: %s", row.pk, exc.message)
    if _set_state(row, RP.CHARGED, from_states=(RP.PENDING,), status=code, approval=approval, claimed_at=None):
        emit(events.RecurrentPaymentRenewed(recurrent_payment_id=row.pk, user_id=row.user_id, payment_id=payment.pk,
                                            next_recurrent_payment_id=next_row.pk if next_row else None))
    return "charged"


def _successor(row: RecurrentPayment, failed: Payment, *, charge_at: datetime, retries: int) -> RecurrentPayment:
    """R-REC-10/11/13: the next attempt with the same card; its payment is built at charge time."""
    return RP.objects.create(
        cid=row.cid, gateway_id=row.gateway_id, charge_at=_seconds(charge_at), expires_at=row.expires_at,
        parent_payment=failed, retries=retries, user_id=row.user_id,
        subscription_type_id=failed.subscription_type_id or row.subscription_type_id, state=RP.ACTIVE,
        custom_amount=row.custom_amount)


CHUNK = 10  # claimed rows a worker prepares together (and a process gets per task)


def charge_due(*, workers: int = 1, worker_type: str | None = None, batch_size: int | None = None) -> ChargeRunResult:
    """R-REC-6: claim every due row and charge it. Safe with any number of runs at once.

    A worker charges rows one after another (:func:`charge_chunk`). ``workers`` > 1 runs that many at
    once (``settings.CHARGE_RUN_WORKERS``): threads by default, which overlap the gateway calls, or,
    with ``worker_type`` "process" (``settings.CHARGE_RUN_WORKER_TYPE``), spawned processes, which also
    run the Python side of a charge in parallel (worth it only when that, not the gateway, is the
    bottleneck). Processes start only for a run with at least a full batch of due rows and not on
    SQLite (one writer at a time; an in-memory test database is not shared); otherwise threads.
    """
    started = clock.now()
    due_before = started + lookahead()
    # rows created by this run (retries, next periods) wait for a later run
    max_id = RP.objects.aggregate(top=Max("id"))["top"] or 0
    workers = max(1, int(workers))
    worker_type = worker_type or settings.CHARGE_RUN_WORKER_TYPE
    if worker_type not in ("thread", "process"):
        raise ImproperlyConfigured(f"CHARGE_RUN_WORKER_TYPE must be thread or process, not {worker_type!r}")
    batch = batch_size or max(50, workers * 25)
    result = ChargeRunResult()
    deferred: set[int] = set()

    def claim_more() -> list[tuple[int, datetime]]:
        # until none is left, not until a short batch: SKIP LOCKED passes rows another run is claiming
        claims = claim_due(limit=batch, due_before=due_before, max_id=max_id, exclude=deferred)
        result.claimed += len(claims)
        return claims

    def record(outcomes: list[tuple[int, str]]) -> None:
        for row_id, outcome in outcomes:
            result.add(outcome)
            if outcome == "deferred":
                deferred.add(row_id)

    claims = claim_more()
    if workers == 1 or len(claims) <= 1:
        while claims:
            for chunk in _chunks(claims):
                record(charge_chunk(chunk))
            claims = claim_more()
        return result
    if worker_type == "process" and len(claims) >= batch and connection.vendor != "sqlite":
        _charge_in_processes(first=claims, claim_more=claim_more, workers=workers, record=record)
    else:
        _charge_in_threads(first=claims, claim_more=claim_more, workers=workers, record=record)
    return result


def _chunks(claims: list) -> list[list]:
    return [claims[k:k + CHUNK] for k in range(0, len(claims), CHUNK)]


def _charge_in_threads(*, first, claim_more, workers: int, record) -> None:
    work: queue.Queue = queue.Queue(maxsize=workers * 2)
    lock = threading.Lock()
    stop = object()

    def worker():
        try:
            while True:
                chunk = work.get()
                if chunk is stop:
                    return
                outcomes = charge_chunk(chunk)
                with lock:
                    record(outcomes)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, name=f"charge-run-{k}", daemon=True) for k in range(workers)]
    for thread in threads:
        thread.start()
    try:
        claims = first
        while claims:
            for chunk in _chunks(claims):
                work.put(chunk)
            with lock:  # ``record`` may add to the deferred set the claim reads
                claims = claim_more()
    finally:
        for _thread in threads:
            work.put(stop)
        for thread in threads:
            thread.join()
        close_old_connections()


#: settings a charge process takes over from the run that starts it (tests and benchmarks change them)
PROCESS_SETTINGS = ("RECURRENT_PAYMENT_CHARGES", "RECURRENT_GATEWAY_FAIL_DELAY", "RECURRENT_CHARGE_BEFORE_HOURS",
                    "FASTCHARGE_THRESHOLD_HOURS", "CHARGE_RUN_MINUTES", "DONATION_VAT_RATE", "FAKE_CARD_LATENCY_MS",
                    "FAKE_CARD_DECLINES")


def _charge_in_processes(*, first, claim_more, workers: int, record) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    database = {key: value for key, value in connection.settings_dict.items()
                if key in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS")}
    overrides = {name: getattr(settings, name) for name in PROCESS_SETTINGS if hasattr(settings, name)}
    pending: dict = {}
    unfinished: list[tuple[int, datetime]] = []

    def collect(done) -> None:
        for future in done:
            chunk = pending.pop(future)
            try:
                record(future.result())
            except Exception as exc:  # a process died: its claims are charged again below (safe, see below)
                if not unfinished:
                    log.error("charge process failed (%s: %s); its claims are charged in this process",
                              type(exc).__name__, exc, exc_info=not isinstance(exc, BrokenProcessPool))
                unfinished.extend(chunk)

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=charge_worker.start, initargs=(database, overrides))
    try:
        claims = first
        while claims:
            for chunk in _chunks(claims):
                try:
                    pending[pool.submit(charge_worker.charge, chunk)] = chunk
                except BrokenProcessPool:
                    unfinished.extend(chunk)
            while len(pending) > workers * 2:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                collect(done)
            if unfinished:
                break
            claims = claim_more()
        if pending:
            collect(wait(pending).done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    # Charging a claim again is safe: rows already recorded are skipped (the claim no longer matches),
    # an attempt cut off after the gateway call reuses its payment and idempotency key.
    record([(row_id, charge_claimed(row_id, claimed_at)) for row_id, claimed_at in unfinished])


def charge_now(*, recurrent_payment: RecurrentPayment) -> str:
    """Charge one active row at once (admin "charge now"), whatever its charge time; returns the outcome."""
    claimed_at = timezone.now()
    with transaction.atomic():
        updated = RP.objects.filter(pk=recurrent_payment.pk, state=RP.ACTIVE, status__isnull=True).update(
            state=RP.PENDING, claimed_at=claimed_at, updated_at=claimed_at)
        if not updated:
            raise PaymentError("recurrent_payment_not_active", "Only an active recurrent payment can be charged",
                               state=RP.objects.get(pk=recurrent_payment.pk).state)
        emit(events.RecurrentPaymentStateChanged(recurrent_payment_id=recurrent_payment.pk,
                                                 user_id=recurrent_payment.user_id, old_state=RP.ACTIVE,
                                                 new_state=RP.PENDING))
    return charge_claimed(recurrent_payment.pk, claimed_at)


def _seconds(value: datetime | None) -> datetime | None:
    """Datetimes are stored to whole seconds (R-GEN-4)."""
    return value.replace(microsecond=0) if value is not None else None
