"""Notifications on events (issue 6): a :class:`NotificationRule` sends its template to the reader
concerned when something happens, at most once per (rule, subject, period).

* ``subscription_started``: the reader of a subscription that started (not a renewal: a reader whose
  earlier subscriptions already gave the same access the moment before gets nothing);
* ``recurrent_charge_failed``: the reader whose recurring charge failed for good (R-REC-12: retries
  exhausted or a hard decline, ``RecurrentPaymentFailed``). A retried attempt (``FailTry``) sends
  nothing: the ladder may still succeed, and a gateway error is ours, not the reader's;
* ``family_code_activated``: the parent whose family code a reader activated (not a seat carried
  over by a renewal, not the parent's own activation);
* ``subscription_ending``: a periodic scan (:func:`scan_ending`, hourly) over running subscriptions
  that end within the rule's ``days``, whose access does not go on (no later subscription of the
  reader covering it, no active recurring charge) — once per subscription and end date.

The handlers run asynchronously (a Huey task after the emitter commits), so a failing SMS never
touches a payment or a subscription. The once-only guard is the unique ``NotificationSent`` row,
inserted before the message in the same transaction: a duplicate or concurrent event finds it and
sends nothing. A reader without a phone number, or whose number opted out (for a
non-transactional rule), is skipped and logged; the guard stays, so the decision is not retried.
Any other refusal (a missing or broken template) is logged as an error and leaves no guard.
Subscription types with ``disable_notifications`` send none of these.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import formats, translation

from masthead.core import clock
from masthead.family.events import FamilyRequestAccepted
from masthead.family.models import FamilyRequest
from masthead.messaging import services
from masthead.messaging.models import NotificationRule, NotificationSent, SmsMessage
from masthead.payments.events import RecurrentPaymentFailed
from masthead.payments.models import RecurrentPayment
from masthead.subscriptions import periods, queries
from masthead.subscriptions.events import SubscriptionStarted
from masthead.subscriptions.models import Subscription, SubscriptionType
from masthead.users.models import User

log = logging.getLogger(__name__)
Rule = NotificationRule

#: refusals about the reader, final for the period: the guard row stays, nothing is retried
READER_REFUSALS = frozenset({"no_phone_number", "opted_out"})

_PERSON = ("first_name", "last_name")
#: the parameters each event gives its template (the catalog checks templates against them)
PARAMETERS: dict[str, tuple[str, ...]] = {
    Rule.SUBSCRIPTION_ENDING: (*_PERSON, "subscription_type", "start_date", "end_date", "days_left"),
    Rule.SUBSCRIPTION_STARTED: (*_PERSON, "subscription_type", "start_date", "end_date"),
    Rule.CHARGE_FAILED: (*_PERSON, "subscription_type", "amount"),
    Rule.FAMILY_CODE_ACTIVATED: (*_PERSON, "child_name", "code", "subscription_type", "end_date"),
}


# --- sending once ---------------------------------------------------------------------------------


def active_rules(event: str) -> list[NotificationRule]:
    return list(Rule.objects.filter(event=event, active=True).order_by("pk"))


def notify(*, rule: NotificationRule, user: User, subject: str, period: str = "", params: dict
           ) -> SmsMessage | None:
    """Queue ``rule``'s template for ``user`` unless (rule, subject, period) was handled already.

    Returns the message, or None: already handled, refused for this reader (no phone number,
    opted out) or refused for another reason (logged as an error). Never raises an SmsError.
    """
    try:
        with transaction.atomic():
            guard = NotificationSent.objects.create(rule=rule, subject=subject[:100], period=period[:100])
            try:
                message = services.queue_sms(
                    user=user, template_code=rule.template_code, params=params, transactional=rule.transactional,
                    urgent=rule.urgent, notification=rule.code, created_by="system")
            except services.SmsError as exc:
                if exc.code not in READER_REFUSALS:
                    raise
                log.info("notification %s for %s (%s) skipped: %s", rule.code, subject, period or "-", exc.code)
                return None
            guard.message = message
            guard.save(update_fields=["message"])
            return message
    except IntegrityError:
        log.info("notification %s for %s (%s) already handled", rule.code, subject, period or "-")
    except services.SmsError as exc:
        log.error("notification %s for %s (%s) not sent: %s: %s", rule.code, subject, period or "-", exc.code,
                  exc.message)
    return None


def _notify_all(rules: Iterable[NotificationRule], *, user: User, subject: str, period: str = "",
                params: dict) -> list[SmsMessage]:
    sent = [notify(rule=rule, user=user, subject=subject, period=period, params=params) for rule in rules]
    return [message for message in sent if message is not None]


# --- parameters, in the reader's language and the installation's time zone --------------------------


def _language(user: User) -> str:
    return user.locale or settings.LANGUAGE_CODE


def local_date(value: datetime, user: User) -> str:
    """``value``'s local date in the reader's short date format (``13.05.2024`` in Slovak)."""
    with translation.override(_language(user)):
        return formats.date_format(clock.localtime(value), "SHORT_DATE_FORMAT")


def local_amount(value: Decimal, user: User) -> str:
    """Two decimal places with the reader's decimal separator (``9,90`` in Slovak)."""
    with translation.override(_language(user)):
        return formats.number_format(value, 2)


def person_params(user: User) -> dict:
    return {"first_name": user.first_name or user.public_name, "last_name": user.last_name}


def subscription_params(subscription: Subscription) -> dict:
    user = subscription.user
    return {**person_params(user), "subscription_type": subscription.subscription_type.user_label,
            "start_date": local_date(subscription.start_time, user),
            "end_date": local_date(subscription.end_time, user)}


def _wanted(user: User | None, subscription_type: SubscriptionType | None) -> bool:
    """An active reader, and a type (if any) that does not disable notifications."""
    return (user is not None and user.is_active
            and not (subscription_type is not None and subscription_type.disable_notifications))


# --- access going on ----------------------------------------------------------------------------------


def covered(items: list[tuple[int, int, int, datetime]]) -> set[int]:
    """For (subscription id, user id, type id, instant) items: the ids whose reader holds, at
    ``instant``, through other subscriptions, at least the content access of that subscription's
    type. One query for the subscriptions, one for their access."""
    if not items:
        return set()
    instants = [item[3] for item in items]
    others = list(Subscription.objects.filter(user_id__in={item[1] for item in items}, end_time__gt=min(instants),
                                              start_time__lte=max(instants))
                  .values_list("pk", "user_id", "subscription_type_id", "start_time", "end_time"))
    access = queries.access_names({item[2] for item in items} | {other[2] for other in others})
    by_user = defaultdict(list)
    for other in others:
        by_user[other[1]].append(other)
    result = set()
    for pk, user_id, type_id, instant in items:
        holding = [o for o in by_user[user_id] if o[0] != pk and o[3] <= instant < o[4]]
        if holding and set(access.get(type_id, ())) <= {name for o in holding for name in access.get(o[2], ())}:
            result.add(pk)
    return result


# --- event handlers (asynchronous, registered in MessagingConfig.ready) ------------------------------


def on_subscription_started(event: SubscriptionStarted) -> None:
    rules = active_rules(Rule.SUBSCRIPTION_STARTED)
    if not rules:
        return
    subscription = (Subscription.objects.select_related("user", "subscription_type")
                    .filter(pk=event.subscription_id).first())
    if subscription is None or not _wanted(subscription.user, subscription.subscription_type):
        return
    if subscription.end_time <= clock.now():  # started and ended between two sweeps, or handled late
        return
    before = subscription.start_time - timedelta(seconds=1)
    if covered([(subscription.pk, subscription.user_id, subscription.subscription_type_id, before)]):
        log.info("subscription %s continues the reader's access: no start notification", subscription.pk)
        return
    _notify_all(rules, user=subscription.user, subject=f"subscription:{subscription.pk}",
                params=subscription_params(subscription))


def on_recurrent_charge_failed(event: RecurrentPaymentFailed) -> None:
    rules = active_rules(Rule.CHARGE_FAILED)
    if not rules:
        return
    row = (RecurrentPayment.objects.select_related("user", "payment", "payment__subscription_type",
                                                   "subscription_type")
           .filter(pk=event.recurrent_payment_id).first())
    if row is None:
        return
    payment = row.payment
    subscription_type = (payment.subscription_type if payment is not None and payment.subscription_type_id
                         else row.subscription_type)
    if not _wanted(row.user, subscription_type):
        return
    amount = payment.amount if payment is not None else (row.custom_amount or subscription_type.price)
    params = {**person_params(row.user), "subscription_type": subscription_type.user_label,
              "amount": local_amount(amount, row.user)}
    _notify_all(rules, user=row.user, subject=f"recurrent_payment:{row.pk}", params=params)


def on_family_code_activated(event: FamilyRequestAccepted) -> None:
    """To the parent: a reader activated one of his codes (a seat carried over by a renewal is not news)."""
    if event.renewal:
        return
    rules = active_rules(Rule.FAMILY_CODE_ACTIVATED)
    if not rules:
        return
    request = (FamilyRequest.objects.select_related("master_subscription__user",
                                                    "master_subscription__subscription_type", "slave_user",
                                                    "slave_subscription__subscription_type")
               .filter(pk=event.request_id).first())
    if request is None or request.slave_user is None or request.slave_subscription is None:
        return
    parent = request.master_subscription.user
    if parent.pk == request.slave_user_id:
        return
    if not _wanted(parent, request.master_subscription.subscription_type):
        return
    child, seat = request.slave_user, request.slave_subscription
    params = {**person_params(parent), "child_name": child.get_full_name(), "code": request.code,
              "subscription_type": seat.subscription_type.user_label, "end_date": local_date(seat.end_time, parent)}
    _notify_all(rules, user=parent, subject=f"family_request:{request.pk}", period=str(seat.pk), params=params)


# --- the ending reminder: a periodic scan ------------------------------------------------------------------


def ending_candidates(now: datetime, until: datetime):
    """Running subscriptions of active readers with a phone number that end in (now, until], of types
    that allow notifications, not renewed by an active recurring charge; by id."""
    renewing = RecurrentPayment.objects.filter(
        parent_payment__subscription_id=OuterRef("pk"),
        state__in=(RecurrentPayment.ACTIVE, RecurrentPayment.PENDING))
    return (Subscription.objects
            .filter(start_time__lte=now, end_time__gt=now, end_time__lte=until, user__is_active=True,
                    subscription_type__disable_notifications=False)
            .exclude(user__phone_number="")
            .exclude(Exists(renewing))
            .select_related("user", "subscription_type")
            .order_by("pk"))


def ending_period(subscription: Subscription) -> str:
    """A reminder is per subscription and end date: a subscription extended later is reminded again."""
    return clock.localtime(subscription.end_time).date().isoformat()


def _remind(rule: NotificationRule, chunk: list[Subscription], now: datetime) -> int:
    subjects = {s.pk: f"subscription:{s.pk}" for s in chunk}
    done = set(NotificationSent.objects.filter(rule=rule, subject__in=subjects.values())
               .values_list("subject", "period"))
    todo = [s for s in chunk if (subjects[s.pk], ending_period(s)) not in done]
    going_on = covered([(s.pk, s.user_id, s.subscription_type_id, s.end_time) for s in todo])
    today = clock.localtime(now).date()
    sent = 0
    for subscription in todo:
        if subscription.pk in going_on:
            continue
        days_left = (clock.localtime(subscription.end_time).date() - today).days
        params = {**subscription_params(subscription), "days_left": days_left}
        if notify(rule=rule, user=subscription.user, subject=subjects[subscription.pk],
                  period=ending_period(subscription), params=params) is not None:
            sent += 1
    return sent


def scan_ending(*, now: datetime | None = None, chunk_size: int = 500) -> int:
    """Send the due "subscription ends in N days" reminders; returns how many were queued. Safe to
    run concurrently (the guard rows) and as often as wanted; each chunk is one transaction."""
    now = now or clock.now()
    queued = 0
    for rule in Rule.objects.filter(event=Rule.SUBSCRIPTION_ENDING, active=True, days__isnull=False).order_by("pk"):
        candidates = ending_candidates(now, periods.add_days(now, rule.days))
        last = 0
        while True:
            chunk = list(candidates.filter(pk__gt=last)[:chunk_size])
            if not chunk:
                break
            last = chunk[-1].pk
            with transaction.atomic():
                queued += _remind(rule, chunk, now)
    return queued
