"""Premium SMS (R-MT-*): phone numbers, inbound messages and their keyword actions, billed replies
and pushes through the configured client, delivery reports settling payments, recurring SMS
charges with their pending timeout, carrier-billing caps and receipts."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils.translation import gettext as _

from masthead.core import clock
from masthead.core.events import emit
from masthead.messaging import templates as sandbox
from masthead.mobiletech import clients, events, numbers, statuses
from masthead.mobiletech.models import (
    BillingKey,
    InboundMessage,
    KeywordAction,
    OutboundMessage,
    OutboundStatus,
    PhoneNumber,
    Template,
)
from masthead.payments import services as payment_services
from masthead.payments.gateways.base import FAIL_TRY, OK, ChargeResult
from masthead.payments.models import Payment, RecurrentPayment
from masthead.users import services as user_services
from masthead.users.models import User

logger = logging.getLogger(__name__)
GATEWAY, RECURRENT_GATEWAY = "mobiletech", "mobiletech_recurrent"
PAYMENT_META = ("mobiletech_billkey", "mobiletech_inbound_message_id", "mobiletech_template_code")
MAX_CONTENT = 160


class MobiletechError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


# --- phone numbers (R-MT-13/15) ----------------------------------------------------------------------


@transaction.atomic
def link_phone(*, user: User, phone_number: str) -> PhoneNumber:
    try:
        local = numbers.to_local(phone_number)
    except numbers.NotSlovak as exc:
        raise MobiletechError("not_slovak", _("Not a Slovak mobile number: %(number)s") % {"number": phone_number}) \
            from exc
    if PhoneNumber.objects.filter(phone_number=local).exists():
        raise MobiletechError("phone_exists", _("The phone number %(number)s already exists.") % {"number": local})
    if PhoneNumber.objects.filter(user=user).exists():
        raise MobiletechError("user_has_phone", _("The reader already has a premium SMS phone number."))
    try:
        with transaction.atomic():
            return PhoneNumber.objects.create(user=user, phone_number=local)
    except IntegrityError as exc:
        raise MobiletechError("phone_exists", _("The phone number %(number)s already exists.")
                              % {"number": local}) from exc


def user_by_phone(phone_number: str) -> User | None:
    """R-MT-13: a number with ``+`` is looked up as ``0`` + its last 9 digits."""
    raw = (phone_number or "").strip()
    local = "0" + raw[-9:] if raw.startswith("+") else raw
    row = PhoneNumber.objects.select_related("user").filter(phone_number=local).first()
    if row is not None:
        return row.user
    # a reader whose account number (E.164) is this one, not linked for premium SMS yet
    return User.objects.filter(phone_number=numbers.to_international(local)).order_by("pk").first() \
        if local.startswith("0") else None


def login_resolver(identifier: str) -> User | None:
    """R-MT-14: a phone number (``09…``, ``+421…``, ``00421…``, spaces ignored) names its reader."""
    try:
        local = numbers.to_local(identifier)
    except numbers.NotSlovak:
        return None
    return user_by_phone(local)


# --- operator (R-MT-8) ---------------------------------------------------------------------------------


def resolve_operator(phone_international: str) -> str | None:
    """The more recent of the last successful outbound and the last inbound from this number, else
    the prefix."""
    outbound = (OutboundMessage.objects.filter(phone_to=phone_international,
                                               status__in=statuses.SUCCESSFUL_FOR_OPERATOR)
                .exclude(operator_type="").order_by("-updated_at").values_list("operator_type", "updated_at").first())
    inbound = (InboundMessage.objects.filter(phone_from=phone_international).exclude(operator_type="")
               .order_by("-created_at").values_list("operator_type", "created_at").first())
    known = [k for k in (outbound, inbound) if k]
    if known:
        return max(known, key=lambda k: k[1])[0]
    return numbers.operator_by_prefix(phone_international)


# --- sending (R-MT-6/7) -----------------------------------------------------------------------------------


def _cap_check(phone_international: str, key: BillingKey) -> None:
    """Carrier billing limits: one charge ≤ MOBILETECH_CHARGE_CAP, a number's month ≤ MOBILETECH_MONTHLY_CAP
    (billed or still pending messages of this calendar month count)."""
    if key.amount <= 0:
        return
    if key.amount > Decimal(settings.MOBILETECH_CHARGE_CAP):
        raise MobiletechError("charge_cap", _("A charge of %(amount)s exceeds the limit of %(cap)s per charge.")
                              % {"amount": key.amount, "cap": settings.MOBILETECH_CHARGE_CAP})
    month = clock.localtime().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    billed_or_pending = Q(status__in=("", "A0", "D1")) | Q(status="D0", operator_type="2")
    spent = (OutboundMessage.objects.filter(billed_or_pending, phone_to=phone_international, created_at__gte=month,
                                            amount__gt=0).aggregate(total=Sum("amount"))["total"]) or Decimal(0)
    if spent + key.amount > Decimal(settings.MOBILETECH_MONTHLY_CAP):
        raise MobiletechError("monthly_cap", _("This number would exceed the monthly limit of %(cap)s.")
                              % {"cap": settings.MOBILETECH_MONTHLY_CAP})


@dataclass(frozen=True)
class Envelope:
    """Where a message goes and on which terms (R-MT-6)."""

    phone: str
    serv_id: str
    short_number: str
    rcv_msg_id: str = ""
    project_id: str = ""


def _envelope(*, inbound: InboundMessage | None, user: User | None, phone: str | None, billkey: str,
              push: bool) -> Envelope | None:
    number = inbound.phone_from if inbound is not None else phone
    if not number and user is not None:
        linked = PhoneNumber.objects.filter(user=user).values_list("phone_number", flat=True).first()
        number = linked
    if not number:
        return None
    number = numbers.to_international(number)
    serv_id, short = (inbound.serv_id, inbound.phone_to) if inbound is not None else ("", "")
    if not serv_id or not short:  # the last message with this key, else the last one this number sent us
        last = OutboundMessage.objects.filter(billkey=billkey).exclude(serv_id="").order_by("-pk").first()
        wrote = InboundMessage.objects.filter(phone_from=number).exclude(serv_id="").order_by("-pk").first()
        serv_id = serv_id or (last.serv_id if last else wrote.serv_id if wrote else settings.MOBILETECH_SERV_ID)
        short = short or (last.phone_from if last else wrote.phone_to if wrote else settings.MOBILETECH_SHORT_NUMBER)
    if not serv_id or not short:
        return None
    return Envelope(phone=number, serv_id=serv_id, short_number=short,
                    rcv_msg_id="" if push or inbound is None else inbound.mobiletech_id,
                    project_id="" if push or inbound is None else inbound.project_id)


@transaction.atomic
def send(*, template_code: str, params: dict | None = None, billkey: str | None = None,
         inbound: InboundMessage | None = None, user: User | None = None, phone: str | None = None,
         payment: Payment | None = None, push: bool = False) -> OutboundMessage | None:
    """R-MT-6: a billed reply to ``inbound`` (or a push with ``push``), for a user or a number that
    wrote in. None when the template, the number, the route or the operator is unknown (logged);
    MobiletechError when the billing key is unknown or a carrier cap refuses the charge."""
    template = Template.objects.filter(code=template_code).first()
    if template is None:
        logger.warning("mobiletech: no template %s, nothing sent", template_code)
        return None
    code = billkey or settings.MOBILETECH_BILLKEY_FREE
    key = BillingKey.objects.filter(code=code, active=True).first() if code else None
    if key is None:
        raise MobiletechError("unknown_billkey", _("Unknown billing key '%(code)s'.") % {"code": code or ""})
    envelope = _envelope(inbound=inbound, user=user, phone=phone, billkey=key.code, push=push)
    if envelope is None:
        logger.warning("mobiletech: no number or route for template %s, nothing sent", template_code)
        return None
    operator = resolve_operator(envelope.phone)
    if operator is None:
        logger.warning("mobiletech: unknown operator of %s, nothing sent", envelope.phone)
        return None
    _cap_check(envelope.phone, key)
    try:
        content = sandbox.render(template.body, params or {})[:MAX_CONTENT]
    except sandbox.TemplateProblem as exc:
        raise MobiletechError("template_error", str(exc)) from exc
    row = OutboundMessage.objects.create(
        user=user or (inbound.user if inbound else None) or user_by_phone(envelope.phone), payment=payment,
        template=template, content=content, serv_id=envelope.serv_id, project_id=envelope.project_id,
        rcv_msg_id=envelope.rcv_msg_id, phone_from=envelope.short_number, phone_to=envelope.phone,
        billkey=key.code, amount=key.amount, content_length=len(content.encode()),
        expiration=100 if envelope.rcv_msg_id else 600, operator_type=operator)
    from masthead.mobiletech import tasks

    transaction.on_commit(lambda: tasks.send_outbound(row.pk))
    return row


def deliver(outbound_id: int) -> str:
    """The send job (R-MT-7): hand the message to the client, store the provider's id."""
    row = OutboundMessage.objects.filter(pk=outbound_id).first()
    if row is None or not row.content:
        logger.error("mobiletech send job: outbound %s missing or empty, dropped", outbound_id)
        return "dropped"
    if row.mobiletech_id:
        return "already sent"
    try:
        answer = clients.current().send(row)
    except clients.ClientError as exc:
        OutboundMessage.objects.filter(pk=row.pk).update(error=str(exc)[:500])
        logger.warning("mobiletech send of outbound %s failed: %s", row.pk, exc)
        return "error"
    OutboundMessage.objects.filter(pk=row.pk).update(mobiletech_id=answer.mobiletech_id, dcs=answer.dcs,
                                                     esm=answer.esm, sent_at=clock.now(), error="")
    if answer.status:  # the mock client reports at once (R-MT-17)
        record_status(mobiletech_id=answer.mobiletech_id, status=answer.status)
    return "sent"


# --- delivery reports (R-MT-3/9) ------------------------------------------------------------------------------


class UnknownOutbound(LookupError):
    pass


@transaction.atomic
def record_status(*, mobiletech_id: str, status: str) -> OutboundMessage:
    """Store a delivery report (the last one wins) and settle the payment it concerns."""
    row = OutboundMessage.objects.select_for_update().filter(mobiletech_id=mobiletech_id).first()
    if row is None:
        raise UnknownOutbound(mobiletech_id)
    now = clock.now()
    OutboundMessage.objects.filter(pk=row.pk).update(status=status[:30], updated_at=now)
    OutboundStatus.objects.create(outbound=row, status=status[:30], created_at=now)
    row.status = status[:30]
    emit(events.OutboundStatusUpdated(outbound_id=row.pk, status=row.status, payment_id=row.payment_id))
    return row


def settle_payment(event: events.OutboundStatusUpdated) -> None:
    """R-MT-9 (synchronous handler): a report on a billed message completes its payment once."""
    if event.payment_id is None:
        return
    row = OutboundMessage.objects.select_related("payment__gateway").get(pk=event.outbound_id)
    payment = Payment.objects.select_for_update().select_related("gateway").get(pk=event.payment_id)
    success = statuses.is_success(event.status, row.operator_type)
    if payment.recurrent_charge:
        attempt = RecurrentPayment.objects.select_for_update().filter(payment=payment,
                                                                      state=RecurrentPayment.PENDING).first()
        if attempt is not None:  # reports for attempts already settled change nothing
            payment_services.apply_result(row=attempt, result=ChargeResult(OK if success else FAIL_TRY, event.status,
                                                                           statuses.meaning(event.status,
                                                                                            row.operator_type)))
        return
    if payment.status != Payment.FORM:
        return
    if success:
        payment_services.confirm(payment=payment, cid=row.rcv_msg_id or None)
    else:
        payment_services.change_status(payment=payment, status=Payment.FAIL,
                                       error_message=f"Mobiletech status {event.status}")


def expire_pending_charges(now: datetime | None = None) -> int:
    """R-MT-12: a recurring SMS charge still pending after the timeout fails with the message's status."""
    now = now or clock.now()
    cutoff = now - timedelta(minutes=settings.MOBILETECH_PENDING_TIMEOUT_MINUTES)
    stale = list(RecurrentPayment.objects.filter(state=RecurrentPayment.PENDING, gateway__code=RECURRENT_GATEWAY,
                                                 status="charge_pending", updated_at__lte=cutoff)
                 .values_list("pk", flat=True))
    failed = 0
    for pk in stale:
        with transaction.atomic():
            attempt = RecurrentPayment.objects.select_for_update().filter(pk=pk, state=RecurrentPayment.PENDING).first()
            if attempt is None:
                continue
            last = (OutboundMessage.objects.filter(payment_id=attempt.payment_id).order_by("-pk")
                    .values_list("status", flat=True).first())
            payment_services.apply_result(row=attempt, result=ChargeResult(
                FAIL_TRY, last or "timeout", _("No success report within %(minutes)s minutes")
                % {"minutes": settings.MOBILETECH_PENDING_TIMEOUT_MINUTES}))
            failed += 1
    return failed


# --- inbound messages (R-MT-2, R-MT-16) -------------------------------------------------------------------


def parse_receive_date(raw: str) -> datetime | None:
    """``yyMMddHHmmss`` + one digit of tenths (``1108191645251`` = 2011-08-19 16:45:25.1), local time."""
    raw = (raw or "").strip()
    if len(raw) not in (12, 13) or not raw.isdigit():
        return None
    try:
        naive = datetime.strptime(raw[:12], "%y%m%d%H%M%S")
    except ValueError:
        return None
    if len(raw) == 13:
        naive = naive.replace(microsecond=int(raw[12]) * 100_000)
    from django.utils import timezone

    return timezone.make_aware(naive)


@transaction.atomic
def receive(*, mobiletech_id: str, phone_from: str, phone_to: str = "", content: str = "", serv_id: str = "",
            project_id: str = "", content_coding: str = "", dcs: str = "", esm: str = "", operator_type: str = "",
            receive_date: datetime | None = None) -> tuple[InboundMessage, bool]:
    """Store a ``receive`` once per Mobiletech id (R-MT-2); the handling runs in the background either way."""
    existing = InboundMessage.objects.filter(mobiletech_id=mobiletech_id).first()
    created = False
    if existing is None:
        try:
            with transaction.atomic():
                existing = InboundMessage.objects.create(
                    mobiletech_id=mobiletech_id, phone_from=phone_from, phone_to=phone_to, content=content,
                    serv_id=serv_id, project_id=project_id, content_coding=content_coding, dcs=dcs, esm=esm,
                    operator_type=operator_type, receive_date=receive_date, user=user_by_phone(phone_from))
            created = True
        except IntegrityError:
            existing = InboundMessage.objects.get(mobiletech_id=mobiletech_id)
    from masthead.mobiletech import tasks

    inbound_id = existing.pk
    transaction.on_commit(lambda: tasks.handle_inbound(inbound_id))
    return existing, created


def _reader_for(inbound: InboundMessage) -> User:
    """The reader who wrote in, linked to the number for premium SMS; a number nobody owns gets an
    account named by it."""
    local = numbers.to_local(inbound.phone_from)
    user = inbound.user or user_by_phone(local)  # linked since the message came in (an import, staff)
    if user is None:
        user = user_services.create_user(email=f"{local}@sms.invalid", password=None, public_name=local,
                                         source="mobiletech")
    if not PhoneNumber.objects.filter(Q(user=user) | Q(phone_number=local)).exists():
        PhoneNumber.objects.create(user=user, phone_number=local)
    if inbound.user_id != user.pk:
        InboundMessage.objects.filter(pk=inbound.pk).update(user=user)
        inbound.user = user
    return user


@transaction.atomic
def handle_inbound(inbound_id: int) -> str:
    """R-MT-16 and the keyword actions: confirm the reader, then buy, stop or answer. Once per message."""
    inbound = InboundMessage.objects.select_for_update(of=("self",)).select_related("user").get(pk=inbound_id)
    if inbound.processed_at is not None:
        return inbound.result or "already processed"
    InboundMessage.objects.filter(pk=inbound.pk).update(processed_at=clock.now())
    if inbound.user is not None and inbound.user.confirmed_at is None:
        User.objects.filter(pk=inbound.user_id).update(confirmed_at=clock.now())
    word = (inbound.content or "").strip().split(maxsplit=1)
    action = KeywordAction.objects.filter(keyword=word[0].upper(), active=True).select_related(
        "subscription_type", "billing_key").first() if word else None
    try:
        if action is not None and action.action == KeywordAction.BUY:
            result = _buy(inbound, action)
        elif action is not None and action.action == KeywordAction.STOP:
            result = _stop(inbound, action)
        elif settings.MOBILETECH_TEST_TEMPLATE:
            sent = send(template_code=settings.MOBILETECH_TEST_TEMPLATE, billkey=settings.MOBILETECH_TEST_BILLKEY or None,
                        inbound=inbound, params={"original_message": inbound.content})
            result = "test reply" if sent else "test reply not sent"
        else:
            result = "no action"
    except (MobiletechError, numbers.NotSlovak) as exc:
        result = f"refused: {getattr(exc, 'code', 'not_slovak')}"
        logger.warning("mobiletech inbound %s: %s", inbound.pk, exc)
    InboundMessage.objects.filter(pk=inbound.pk).update(result=result[:255])
    return result


def _buy(inbound: InboundMessage, action: KeywordAction) -> str:
    """A keyword buys a subscription type: a payment with the R-MT-10 meta and the billed reply."""
    reader = _reader_for(inbound)
    payment = payment_services.create_payment(
        user=reader, gateway=RECURRENT_GATEWAY if action.recurrent else GATEWAY,
        subscription_type=action.subscription_type, amount=action.billing_key.amount, allow_zero_amount=True,
        meta={"mobiletech_billkey": action.billing_key.code, "mobiletech_inbound_message_id": str(inbound.pk),
              "mobiletech_template_code": action.template_code,
              "mobiletech_template_params": json.dumps(type_params(action.subscription_type))})
    return "payment started" if start_payment(payment=payment) else "payment failed"


def start_payment(*, payment: Payment) -> bool:
    """R-MT-10: send the billed reply the payment asks for and link it; without it the payment fails."""
    meta = dict(payment.meta.values_list("key", "value"))
    missing = [key for key in PAYMENT_META if not meta.get(key)]
    if missing:
        raise MobiletechError("payment_meta_missing", _("Payment meta missing: %(keys)s") % {"keys": ", ".join(missing)})
    try:
        params = json.loads(meta.get("mobiletech_template_params") or "{}")
    except ValueError:
        params = {}
    inbound_id = meta["mobiletech_inbound_message_id"]
    inbound = InboundMessage.objects.filter(pk=int(inbound_id)).first() if inbound_id.isdigit() else None
    row = None
    try:
        row = send(template_code=meta["mobiletech_template_code"], billkey=meta["mobiletech_billkey"], inbound=inbound,
                   params=params if isinstance(params, dict) else {}, payment=payment, user=payment.user)
    except MobiletechError as exc:
        payment_services.change_status(payment=payment, status=Payment.FAIL, error_message=exc.message)
        return False
    if row is None:
        payment_services.change_status(payment=payment, status=Payment.FAIL,
                                       error_message="Mobiletech message to charge user was not sent")
        return False
    return True


def _stop(inbound: InboundMessage, action: KeywordAction) -> str:
    """STOP: the reader's recurring SMS payments end as user_stop, confirmed by a free SMS."""
    reader = inbound.user
    stopped = 0
    if reader is not None:
        for row in RecurrentPayment.objects.filter(user=reader, state=RecurrentPayment.ACTIVE,
                                                   gateway__code=RECURRENT_GATEWAY):
            payment_services.stop_by_user(recurrent_payment=row)
            stopped += 1
    template = action.template_code or settings.MOBILETECH_STOP_TEMPLATE
    if template:
        send(template_code=template, inbound=inbound, params={"stopped": stopped})
    return f"stopped {stopped}"


def send_receipt(event) -> None:
    """After every successful SMS charge, a free receipt (MOBILETECH_RECEIPT_TEMPLATE)."""
    payment = Payment.objects.select_related("gateway", "subscription_type").get(pk=event.payment_id)
    if payment.gateway.code not in (GATEWAY, RECURRENT_GATEWAY) or not settings.MOBILETECH_RECEIPT_TEMPLATE:
        return
    try:
        send(template_code=settings.MOBILETECH_RECEIPT_TEMPLATE, user=payment.user, push=True,
             params={"amount": str(payment.amount), "subscription_name": short_name(payment.subscription_type)})
    except MobiletechError as exc:
        logger.warning("mobiletech receipt for payment %s not sent: %s", payment.pk, exc)


def type_params(subscription_type) -> dict:
    """What SMS texts about a subscription type may say (R-MT-11)."""
    if subscription_type is None:
        return {}
    return {"subscription_name": short_name(subscription_type), "price": str(int(subscription_type.price))}


def short_name(subscription_type) -> str:
    """R-MT-11/18: the type's ASCII ``short_name`` meta, else its label (ASCII only)."""
    if subscription_type is None:
        return ""
    short = subscription_type.meta.filter(key="short_name").values_list("value", flat=True).first()
    text = short or subscription_type.user_label
    return text.encode("ascii", "ignore").decode()[:40]
