"""SMS batches: one text or template to many readers, fanned out in the background in chunks
(each chunk its own transaction, so a batch of 100,000 never holds one huge transaction and its
progress shows as it goes)."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import Count, Exists, OuterRef, QuerySet
from django.utils.translation import gettext as _

from masthead.core import clock
from masthead.messaging import services
from masthead.messaging.models import SmsBatch, SmsMessage
from masthead.subscriptions.models import ContentAccess, Subscription
from masthead.users.models import User

CHUNK = 500
MAX_USER_IDS = 50_000  # PostgreSQL takes at most 65,535 bind parameters


def segment(content_access: str, now: datetime | None = None) -> QuerySet[User]:
    """Active readers with a phone number and a subscription granting ``content_access`` now."""
    now = now or clock.now()
    running = Subscription.objects.filter(user=OuterRef("pk"), start_time__lte=now, end_time__gt=now,
                                          subscription_type__content_access__name=content_access)
    return User.objects.filter(Exists(running), is_active=True).exclude(phone_number="")


def recipients(*, user_ids: list[int] | None = None, content_access: str = "") -> QuerySet[User]:
    if content_access:
        return segment(content_access)
    return User.objects.filter(pk__in=user_ids or [], is_active=True).exclude(phone_number="")


def _validate(*, body, template_code, user_ids, content_access) -> None:
    if bool(body) == bool(template_code):
        raise services.SmsError("text_or_template", _("Give either a text or a template, not both."))
    if bool(user_ids) == bool(content_access):
        raise services.SmsError("users_or_segment",
                                _("Give either a list of readers or a content access, not both."))
    if body:
        services.compose(body=body)
    else:
        services.template_for(template_code)
    if content_access and not ContentAccess.objects.filter(name=content_access).exists():
        raise services.SmsError("unknown_content_access", _("Unknown content access '%(name)s'.")
                                % {"name": content_access}, 404)
    if user_ids:
        if len(user_ids) > MAX_USER_IDS:
            raise services.SmsError("invalid_user_ids", _("Give at most %(max)s reader ids (positive integers).")
                                    % {"max": MAX_USER_IDS})
        unknown = set(user_ids) - set(User.objects.filter(pk__in=user_ids).values_list("pk", flat=True))
        if unknown:
            raise services.SmsError("user_not_found", _("Unknown readers: %(ids)s")
                                    % {"ids": ", ".join(map(str, sorted(unknown)[:20]))}, 404)


def recipient_count(*, user_ids: list[int] | None = None, content_access: str = "") -> int:
    return recipients(user_ids=user_ids, content_access=content_access).count()


@transaction.atomic
def create_batch(*, name: str, body: str | None = None, template_code: str | None = None,
                 params: dict | None = None, user_ids: list[int] | None = None, content_access: str = "",
                 send_at: datetime | None = None, created_by: str = "") -> SmsBatch:
    """Validate and start a batch: the messages are queued by :func:`fan_out` after commit."""
    if not (name or "").strip():
        raise services.SmsError("name_required", _("Give the batch a name."))
    user_ids = user_ids or []
    if not isinstance(user_ids, list) or not all(type(i) is int and 0 < i < 2**63 for i in user_ids):
        raise services.SmsError("invalid_user_ids", _("Give at most %(max)s reader ids (positive integers).")
                                % {"max": MAX_USER_IDS})
    user_ids = sorted(set(user_ids))
    _validate(body=body, template_code=template_code, user_ids=user_ids, content_access=content_access)
    template = services.template_for(template_code) if template_code else None
    batch = SmsBatch.objects.create(
        name=name.strip()[:255], body=body or "", template=template, params=params or {}, user_ids=user_ids,
        content_access=content_access, status=SmsBatch.FANNING_OUT, scheduled_at=send_at,
        created_by=created_by[:255], total=recipient_count(user_ids=user_ids, content_access=content_access))
    from masthead.messaging import tasks

    transaction.on_commit(lambda: tasks.fan_out(batch.pk))
    return batch


def fan_out_chunk(batch_id: int, *, size: int = CHUNK) -> bool:
    """Queue the next ``size`` recipients of a batch in one transaction; True while more remain.
    A reader refused (no number, opted out) is counted as skipped."""
    with transaction.atomic():
        batch = SmsBatch.objects.select_for_update().get(pk=batch_id)
        if batch.status != SmsBatch.FANNING_OUT:
            return False
        chunk = list(recipients(user_ids=batch.user_ids, content_access=batch.content_access)
                     .filter(pk__gt=batch.cursor).order_by("pk")[:size])
        queued = skipped = 0
        for user in chunk:
            try:
                with transaction.atomic():
                    services.queue_sms(
                        user=user, body=batch.body or None,
                        template_code=batch.template.code if batch.template else None,
                        params=batch.params,
                        send_at=batch.scheduled_at, batch=batch, created_by=batch.created_by or "batch",
                        urgent=False)
                queued += 1
            except services.SmsError:
                skipped += 1
        done = len(chunk) < size
        SmsBatch.objects.filter(pk=batch.pk).update(
            cursor=chunk[-1].pk if chunk else batch.cursor, fanned_out=batch.fanned_out + queued,
            skipped=batch.skipped + skipped, status=SmsBatch.QUEUED if done else SmsBatch.FANNING_OUT,
            finished_at=clock.now() if done else None)
    return not done


def fan_out(batch_id: int) -> int:
    """All chunks of a batch; returns how many chunks ran."""
    chunks = 1
    while fan_out_chunk(batch_id):
        chunks += 1
    return chunks


@transaction.atomic
def cancel_batch(*, batch: SmsBatch, by: str = "") -> int:
    """Stop the fan-out and cancel the batch's messages still queued; returns how many."""
    SmsBatch.objects.filter(pk=batch.pk, status__in=(SmsBatch.DRAFT, SmsBatch.FANNING_OUT, SmsBatch.QUEUED)).update(
        status=SmsBatch.CANCELED, finished_at=clock.now())
    queued = SmsMessage.objects.filter(batch=batch, status=SmsMessage.QUEUED).values_list("pk", flat=True)
    return sum(services.transition(pk, SmsMessage.CANCELED, detail=f"batch canceled by {by}".strip())
               for pk in list(queued))


def counts(batch: SmsBatch) -> dict[str, int]:
    """Messages of the batch per status (every status present, zeros included)."""
    found = dict(SmsMessage.objects.filter(batch=batch).order_by().values_list("status").annotate(n=Count("id")))
    return {code: found.get(code, 0) for code, _label in SmsMessage.STATUSES}
