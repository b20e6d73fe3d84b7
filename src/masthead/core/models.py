from django.db import models
from django.utils.translation import gettext_lazy as _


class HandledEvent(models.Model):
    """One asynchronous handler run for one event; the unique pair makes redelivery harmless."""

    event_id = models.CharField(_("event id"), max_length=32)
    handler = models.CharField(_("handler"), max_length=200)
    event_type = models.CharField(_("event type"), max_length=200)
    emitted_at = models.DateTimeField(_("emitted at"))
    handled_at = models.DateTimeField(_("handled at"), db_index=True)
    worker = models.CharField(_("worker"), max_length=120)

    class Meta:
        verbose_name = _("handled event")
        verbose_name_plural = _("handled events")
        constraints = [models.UniqueConstraint(fields=["event_id", "handler"], name="handled_event_once")]
        indexes = [models.Index(fields=["event_type", "-handled_at"], name="handled_event_type_time")]

    def __str__(self):
        return f"{self.event_type} {self.event_id} → {self.handler}"


class ApiIdempotencyKey(models.Model):
    """An ``Idempotency-Key`` a non-GET API call succeeded with (R-SAPI-6). Recorded in the same
    transaction as the call's own writes, so it exists only if they do; the unique pair makes a
    concurrent repeat of the call fail instead of writing twice."""

    path = models.CharField(_("path"), max_length=255)
    key = models.CharField(_("key"), max_length=255)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("API idempotency key")
        verbose_name_plural = _("API idempotency keys")
        constraints = [models.UniqueConstraint(fields=["path", "key"], name="api_idempotency_key_once")]

    def __str__(self):
        return f"{self.path} {self.key}"
