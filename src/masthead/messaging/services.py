"""Every state change of SMS messages outside the dispatcher's send loop: queueing (now or
scheduled), cancel and retry, delivery reports, inbound messages, opt-out and opt-in, templates.

Status changes go through :func:`transition` only: a compare-and-set on the current status,
checked against ``messaging.status``, with a history row for each change that happened.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils.translation import gettext as _

from masthead.core import clock
from masthead.messaging import segments, status, templates
from masthead.messaging.models import InboundSms, OptOut, SmsMessage, SmsStatusChange, SmsTemplate
from masthead.users.models import User
from masthead.users.phones import InvalidPhoneNumber, normalize_phone

logger = logging.getLogger(__name__)
M = SmsMessage
STOP_WORDS = frozenset({"STOP", "STOP ALL", "STOPALL", "UNSUBSCRIBE", "KONIEC", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "UNSTOP", "YES"})


class SmsError(Exception):
    """A refused request: ``code`` and ``message`` for the API body, ``status`` the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


# --- composing ----------------------------------------------------------------------------------


def template_for(code: str, locale: str = "") -> SmsTemplate:
    """The active template ``code`` in ``locale``, else its language-neutral version."""
    found = {t.locale: t for t in SmsTemplate.objects.filter(code=code, active=True, locale__in=(locale or "", ""))}
    template = found.get(locale or "") or found.get("")
    if template is None:
        raise SmsError("template_not_found", _("No active SMS template '%(code)s'.") % {"code": code}, 404)
    return template


def compose(*, body: str | None = None, template: SmsTemplate | None = None, params: dict | None = None
            ) -> tuple[str, segments.Segmentation]:
    """The text as it will be sent, and its segmentation; empty, too long or unrenderable → SmsError."""
    if template is not None:
        try:
            body = templates.render(template.body, params or {})
        except templates.TemplateProblem as exc:
            raise SmsError("template_error", _("The template could not be rendered: %(error)s")
                           % {"error": exc}) from exc
    text = (body or "").strip()
    if not text:
        raise SmsError("empty_message", _("The message is empty."))
    if "\x00" in text:
        raise SmsError("invalid_message", _("The message contains a NUL character."))
    result = segments.segment(text)
    if result.segments > segments.MAX_SEGMENTS:
        raise SmsError("message_too_long", _("The message takes %(n)s SMS segments; at most %(max)s are allowed.")
                       % {"n": result.segments, "max": segments.MAX_SEGMENTS})
    return text, result


def phone_of(user: User) -> str:
    if not user.phone_number:
        raise SmsError("no_phone_number", _("User [%(email)s] has no phone number.") % {"email": user.email})
    return user.phone_number


def is_opted_out(phone_number: str) -> bool:
    return OptOut.objects.filter(phone_number=phone_number).exists()


# --- queueing -------------------------------------------------------------------------------------


@transaction.atomic
def queue_sms(*, user: User | None = None, staff: User | None = None, phone_number: str | None = None,
              body: str | None = None, template_code: str | None = None, params: dict | None = None,
              send_at: datetime | None = None, created_by: str = "system", batch=None,
              transactional: bool | None = None, urgent: bool = True, notification: str = "") -> SmsMessage:
    """Queue one SMS for a reader (``user``) or a colleague (``staff``), exactly one of them; a bare
    ``phone_number`` only for the system's own answers (opt-out confirmations). The text is rendered
    now and stored; a non-transactional message to an opted-out number is refused."""
    recipients = [r for r in (user, staff) if r is not None]
    if len(recipients) + (phone_number is not None) != 1:
        raise SmsError("one_recipient", _("Give exactly one recipient: a reader or a staff member."))
    if staff is not None and not staff.is_staff:
        raise SmsError("not_staff", _("User [%(email)s] is not a staff member.") % {"email": staff.email})
    if recipients and not recipients[0].is_active:
        raise SmsError("user_inactive", _("User [%(email)s] is not active.") % {"email": recipients[0].email})
    number = phone_of(recipients[0]) if recipients else phone_number
    template = None
    if template_code:
        locale = recipients[0].locale if recipients else ""
        template = template_for(template_code, locale)
    # a template may greet the recipient by name without the caller passing it
    names = {"first_name": recipients[0].first_name, "last_name": recipients[0].last_name} if recipients else {}
    text, seg = compose(body=body, template=template, params={**names, **(params or {})})
    if transactional is None:
        transactional = bool(template and template.transactional)
    if not transactional and is_opted_out(number):
        raise SmsError("opted_out", _("The number %(number)s opted out of SMS.") % {"number": number})
    now = clock.now()
    due = max(send_at, now) if send_at else now
    message = M.objects.create(
        user=user, staff=staff, phone_number=number, body=text, template=template, params=params or {},
        batch=batch, status=M.QUEUED, transactional=transactional, urgent=urgent, scheduled_at=send_at,
        next_attempt_at=due, valid_until=due + timedelta(hours=settings.SMS_VALIDITY_HOURS),
        encoding=seg.encoding, segments=seg.segments, created_by=created_by[:255], notification=notification)
    SmsStatusChange.objects.create(message=message, old_status="", new_status=M.QUEUED, created_at=now,
                                   detail=f"scheduled for {clock.rfc3339(send_at)}" if send_at else "")
    if due <= now:
        wake_dispatcher()
    return message


def wake_dispatcher() -> None:
    """Ask a worker to run the dispatcher after this transaction commits, once per transaction (the
    periodic run picks up anything this misses)."""
    from masthead.messaging import tasks

    tasks.dispatch_now()


# --- status changes ----------------------------------------------------------------------------------


def transition(message_id: int, new: str, *, detail: str = "", known: str | None = None, **fields) -> bool:
    """Move a message to ``new`` if the machine allows it from its current status (compare-and-set,
    so concurrent writers cannot make an illegal move); record it in the history. ``known``: the
    status the caller just read (saves reading it again; a stale one only costs a retry). False: not moved."""
    for attempt in range(3):
        old = known if attempt == 0 and known is not None else (
            M.objects.filter(pk=message_id).values_list("status", flat=True).first())
        if old is None or not status.can(old, new):
            return False
        now = clock.now()
        # the status and its history row together, a killed worker leaves neither; inside a caller's
        # transaction no savepoint is needed: an error here fails the caller's transaction as a whole
        with transaction.atomic(savepoint=False):
            if M.objects.filter(pk=message_id, status=old).update(status=new, updated_at=now, **fields):
                SmsStatusChange.objects.create(message_id=message_id, old_status=old, new_status=new,
                                               detail=detail[:500], created_at=now)
                return True
    return False


@transaction.atomic
def cancel(*, message: SmsMessage, by: str = "") -> SmsMessage:
    if not transition(message.pk, M.CANCELED, detail=f"canceled by {by}" if by else "canceled"):
        message.refresh_from_db()
        raise SmsError("not_queued", _("Only a queued message can be canceled; this one is %(status)s.")
                       % {"status": message.status}, 409)
    message.refresh_from_db()
    return message


@transaction.atomic
def retry(*, message: SmsMessage, by: str = "") -> SmsMessage:
    """Staff put a failed message back in the queue, due now, with a fresh validity."""
    now = clock.now()
    if not transition(message.pk, M.QUEUED, detail=f"retried by {by}" if by else "retried", next_attempt_at=now,
                      claimed_at=None, valid_until=now + timedelta(hours=settings.SMS_VALIDITY_HOURS),
                      error_message=""):
        message.refresh_from_db()
        raise SmsError("not_failed", _("Only a failed message can be retried; this one is %(status)s.")
                       % {"status": message.status}, 409)
    wake_dispatcher()
    message.refresh_from_db()
    return message


def status_of(message_id: int, *, gateway: str) -> tuple[int, str] | None:
    """(id, status) of a message sent through ``gateway``, or None (the report webhooks' look-up)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, status FROM {M._meta.db_table} WHERE id = %s AND gateway = %s",
                       [message_id, gateway])
        return cursor.fetchone()


REPORT_STATUSES = {"sent": M.SENT, "delivered": M.DELIVERED, "failed": M.FAILED, "rejected": M.REJECTED,
                   "expired": M.EXPIRED}


def record_report(*, message_id: int, report: str, detail: str = "", at: datetime | None = None,
                  known: str | None = None) -> bool:
    """A delivery report (webhook or the simulated gateway). Duplicates and late reports are no-ops:
    the machine never moves back (a "sent" after "delivered" changes nothing). True: it moved.
    ``known``: the message's status as the caller just read it.

    The webhooks' hot path: the same compare-and-set as :func:`transition`, in plain SQL (an UPDATE
    and its history INSERT in one transaction), since building the ORM statements costs more than
    running them."""
    new = REPORT_STATUSES.get(report)
    if new is None:
        return False
    at = at or clock.now()
    detail = (detail or f"report: {report}")[:500]
    ops = connection.ops
    when = ops.adapt_datetimefield_value(at)
    sets, values = ["status = %s", "updated_at = %s"], [new, None]
    if new == M.DELIVERED:
        sets += ["delivered_at = %s"]
        values += [when]
    elif new == M.SENT:
        sets += ["sent_at = %s"]
        values += [when]
    else:
        sets += ["error_message = %s"]
        values += [detail]
    if new in (M.DELIVERED, M.FAILED):  # a report that overtook the gateway's answer also dates the sending
        sets += ["sent_at = COALESCE(sent_at, %s)"]
        values += [when]
    update = f"UPDATE {M._meta.db_table} SET {', '.join(sets)} WHERE id = %s AND status = %s"
    insert = (f"INSERT INTO {SmsStatusChange._meta.db_table} (message_id, old_status, new_status, detail, created_at) "
              "VALUES (%s, %s, %s, %s, %s)")
    for attempt in range(3):
        old = known if attempt == 0 and known is not None else (
            M.objects.filter(pk=message_id).values_list("status", flat=True).first())
        if old is None or not status.can(old, new):
            return False
        now = ops.adapt_datetimefield_value(clock.now())
        values[1] = now
        with transaction.atomic(savepoint=False), connection.cursor() as cursor:
            cursor.execute(update, [*values, message_id, old])
            if cursor.rowcount:
                cursor.execute(insert, [message_id, old, new, detail, now])
                return True
    return False


# --- inbound messages and opt-out ----------------------------------------------------------------------


def keyword(text: str) -> str:
    """The normalised text if it is a STOP or START word (case and surrounding spaces ignored)."""
    word = re.sub(r"\s+", " ", (text or "").strip()).upper()
    return word if word in STOP_WORDS or word in START_WORDS else ""


def _number(raw: str) -> str:
    try:
        return normalize_phone(raw)
    except InvalidPhoneNumber:
        return (raw or "").strip()[:20]


def record_inbound(*, gateway: str, gateway_message_id: str, phone_from: str, phone_to: str = "", text: str = "",
                   received_at: datetime | None = None) -> tuple[InboundSms, bool]:
    """Store an inbound SMS once per gateway id (a repeated webhook changes nothing), matched to the
    reader with that number and to the last message we sent it within the reply window. The keyword
    handling runs in the background. Returns (row, created)."""
    received_at = received_at or clock.now()
    number = _number(phone_from)
    existing = InboundSms.objects.filter(gateway=gateway, gateway_message_id=gateway_message_id).first()
    if existing is not None:
        return existing, False
    window = received_at - timedelta(hours=settings.SMS_REPLY_WINDOW_HOURS)
    # gateways stamp inbound messages in whole seconds: a reply may carry a time just before our send
    latest = received_at + timedelta(seconds=5)
    answered = (M.objects.filter(phone_number=number, sent_at__gte=window, sent_at__lte=latest)
                .order_by("-sent_at", "-pk").first())
    try:
        with transaction.atomic():
            row = InboundSms.objects.create(
                gateway=gateway, gateway_message_id=gateway_message_id[:100], phone_from=number,
                phone_to=(phone_to or "")[:20], text=text, received_at=received_at,
                user=User.objects.filter(phone_number=number).order_by("pk").first(), reply_to=answered,
                keyword=keyword(text))
    except IntegrityError:  # the same report, concurrently
        return InboundSms.objects.get(gateway=gateway, gateway_message_id=gateway_message_id), False
    from masthead.messaging import tasks

    transaction.on_commit(lambda: tasks.process_inbound(row.pk))
    return row, True


STOP_CONFIRMATION = "You will receive no more messages from us. Send START to subscribe again."
START_CONFIRMATION = "You will receive our messages again. Send STOP to stop them."


@transaction.atomic
def process_inbound(inbound_id: int) -> str:
    """STOP words record an opt-out and confirm it once; START removes it. Returns what was done."""
    row = InboundSms.objects.select_for_update().get(pk=inbound_id)
    if row.processed_at is not None:
        return "already processed"
    InboundSms.objects.filter(pk=row.pk).update(processed_at=clock.now())
    if row.keyword in STOP_WORDS:
        return "opted out" if opt_out(phone_number=row.phone_from, source=f"inbound {row.pk}") else "already out"
    if row.keyword in START_WORDS:
        return "opted in" if opt_in(phone_number=row.phone_from) else "was not out"
    return "reply"


def _confirm(phone_number: str, code: str, fallback: str) -> None:
    # a bare number has no language: only the language-neutral template can answer it
    has_template = SmsTemplate.objects.filter(code=code, locale="", active=True).exists()
    queue_sms(phone_number=phone_number, template_code=code if has_template else None,
              body=None if has_template else fallback, transactional=True, created_by="system")


@transaction.atomic
def opt_out(*, phone_number: str, source: str = "", confirm: bool = True) -> bool:
    """Record the opt-out and send its confirmation (unless staff record it: ``confirm=False``),
    once. False: the number was already out."""
    try:
        with transaction.atomic():
            OptOut.objects.create(phone_number=phone_number, source=source[:255], created_at=clock.now())
    except IntegrityError:
        return False
    if confirm:
        _confirm(phone_number, "sms_stop_confirmation", STOP_CONFIRMATION)
    return True


@transaction.atomic
def opt_in(*, phone_number: str, confirm: bool = True) -> bool:
    deleted, _rows = OptOut.objects.filter(phone_number=phone_number).delete()
    if deleted and confirm:
        _confirm(phone_number, "sms_start_confirmation", START_CONFIRMATION)
    return bool(deleted)


# --- templates --------------------------------------------------------------------------------------------


@transaction.atomic
def save_template(*, code: str, locale: str = "", body: str, parameters: list[str] | None = None,
                  sample_params: dict | None = None, max_segments: int = 3, description: str = "",
                  transactional: bool = False, active: bool = True) -> tuple[SmsTemplate, str]:
    """Create or update a template after validating it (syntax, declared names, segments of the
    sample rendering). Returns (template, "created" | "updated" | "unchanged")."""
    parameters = list(parameters or [])
    sample_params = dict(sample_params or {})
    if not 1 <= max_segments <= segments.MAX_SEGMENTS:
        raise SmsError("invalid_template", _("The maximum segments must be between 1 and %(max)s.")
                       % {"max": segments.MAX_SEGMENTS})
    try:
        templates.validate(body, parameters, sample_params, max_segments)
    except templates.TemplateProblem as exc:
        raise SmsError("invalid_template", str(exc)) from exc
    values = {"body": body, "parameters": parameters, "sample_params": sample_params, "max_segments": max_segments,
              "description": description, "transactional": transactional, "active": active}
    template = SmsTemplate.objects.filter(code=code, locale=locale).first()
    if template is None:
        return SmsTemplate.objects.create(code=code, locale=locale, **values), "created"
    changed = {k: v for k, v in values.items() if getattr(template, k) != v}
    if not changed:
        return template, "unchanged"
    for name, value in changed.items():
        setattr(template, name, value)
    template.save()
    return template, "updated"
