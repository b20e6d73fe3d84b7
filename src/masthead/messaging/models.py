"""SMS messaging: outbound messages and their history, batches, inbound messages, opt-outs,
templates and notification rules. Only messaging.services and messaging.dispatcher write them."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class SmsTemplate(models.Model):
    """A text with parameters, rendered once when a message is queued (sandboxed Jinja2)."""

    code = models.SlugField(_("code"), max_length=100)
    locale = models.CharField(_("language"), max_length=10, blank=True,
                              help_text=_("Empty: any language (used when no template of the reader's language exists)."))
    body = models.TextField(_("text"))
    description = models.CharField(_("description"), max_length=255, blank=True)
    parameters = models.JSONField(_("parameters"), default=list, blank=True,
                                  help_text=_("The names the text may use, e.g. [\"first_name\", \"end_date\"]."))
    sample_params = models.JSONField(_("sample parameters"), default=dict, blank=True)
    max_segments = models.PositiveSmallIntegerField(_("maximum segments"), default=3)
    transactional = models.BooleanField(_("transactional"), default=False,
                                        help_text=_("Sent even to numbers that opted out (receipts, codes)."))
    active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("SMS template")
        verbose_name_plural = _("SMS templates")
        ordering = ["code", "locale"]
        constraints = [models.UniqueConstraint(fields=["code", "locale"], name="sms_template_code_locale")]

    def __str__(self):
        return f"{self.code} ({self.locale})" if self.locale else self.code


class SmsBatch(models.Model):
    """One text (or template) to many readers: a list of users or a segment, fanned out in chunks."""

    DRAFT, FANNING_OUT, QUEUED, CANCELED = "draft", "fanning_out", "queued", "canceled"
    STATUSES = [(DRAFT, _("draft")), (FANNING_OUT, _("fanning out")), (QUEUED, _("queued")),
                (CANCELED, _("canceled"))]

    name = models.CharField(_("name"), max_length=255)
    body = models.TextField(_("text"), blank=True)
    template = models.ForeignKey(SmsTemplate, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                 verbose_name=_("template"))
    params = models.JSONField(_("parameters"), default=dict, blank=True)
    user_ids = models.JSONField(_("readers"), default=list, blank=True)
    content_access = models.CharField(_("readers with access to"), max_length=100, blank=True)
    status = models.CharField(_("status"), max_length=20, choices=STATUSES, default=DRAFT)
    total = models.PositiveIntegerField(_("recipients"), default=0)
    fanned_out = models.PositiveIntegerField(_("messages queued"), default=0)
    skipped = models.PositiveIntegerField(_("skipped"), default=0)
    cursor = models.BigIntegerField(default=0)  # the last user id fanned out
    scheduled_at = models.DateTimeField(_("send at"), null=True, blank=True)
    created_by = models.CharField(_("created by"), max_length=255, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    finished_at = models.DateTimeField(_("fanned out at"), null=True, blank=True)

    class Meta:
        verbose_name = _("SMS batch")
        verbose_name_plural = _("SMS batches")
        ordering = ["-created_at"]

    def __str__(self):
        return self.name


class SmsMessage(models.Model):
    """One outbound SMS, from queued to its final state. The number and the text are copied at
    queue time: what was sent stays on record whatever happens to the reader or the template."""

    QUEUED, SENDING, SENT, DELIVERED = "queued", "sending", "sent", "delivered"
    FAILED, REJECTED, EXPIRED, CANCELED = "failed", "rejected", "expired", "canceled"
    STATUSES = [(QUEUED, _("queued")), (SENDING, _("sending")), (SENT, _("sent")), (DELIVERED, _("delivered")),
                (FAILED, _("failed")), (REJECTED, _("rejected")), (EXPIRED, _("expired")),
                (CANCELED, _("canceled"))]
    GSM7, UCS2 = "gsm7", "ucs2"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                             related_name="sms_messages", verbose_name=_("reader"))
    staff = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                              related_name="staff_sms_messages", verbose_name=_("staff member"))
    phone_number = models.CharField(_("phone number"), max_length=20)
    body = models.TextField(_("text"))
    template = models.ForeignKey(SmsTemplate, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                 verbose_name=_("template"))
    params = models.JSONField(_("parameters"), default=dict, blank=True)
    batch = models.ForeignKey(SmsBatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="messages",
                              verbose_name=_("batch"))
    status = models.CharField(_("status"), max_length=20, choices=STATUSES, default=QUEUED)
    transactional = models.BooleanField(_("transactional"), default=False)
    urgent = models.BooleanField(_("urgent"), default=True, help_text=_("Not delayed by quiet hours."))
    scheduled_at = models.DateTimeField(_("send at"), null=True, blank=True)
    next_attempt_at = models.DateTimeField(_("next attempt"))
    claimed_at = models.DateTimeField(_("claimed at"), null=True, blank=True)
    valid_until = models.DateTimeField(_("valid until"), null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)
    gateway = models.CharField(_("gateway"), max_length=40, blank=True)
    gateway_message_id = models.CharField(_("gateway message id"), max_length=100, null=True, blank=True)
    error_message = models.CharField(_("error"), max_length=500, blank=True)
    encoding = models.CharField(_("encoding"), max_length=10, default=GSM7)
    segments = models.PositiveSmallIntegerField(_("segments"), default=1)
    created_by = models.CharField(_("created by"), max_length=255, default="system")
    notification = models.CharField(_("notification rule"), max_length=100, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("SMS message")
        verbose_name_plural = _("SMS messages")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=~Q(user__isnull=False, staff__isnull=False), name="sms_one_recipient"),
            models.UniqueConstraint(fields=["gateway", "gateway_message_id"], name="sms_gateway_message_id",
                                    condition=Q(gateway_message_id__isnull=False)),
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="sms_due"),
            models.Index(fields=["status", "claimed_at"], name="sms_claimed"),
            models.Index(fields=["phone_number", "sent_at"], name="sms_phone_sent"),
            models.Index(fields=["batch", "status"], name="sms_batch_status"),
        ]

    def __str__(self):
        return f"SMS {self.pk} to {self.phone_number} ({self.status})"


class SmsStatusChange(models.Model):
    """The history of a message: every status it went through, when and why."""

    message = models.ForeignKey(SmsMessage, on_delete=models.CASCADE, related_name="history",
                                verbose_name=_("message"))
    old_status = models.CharField(_("from"), max_length=20, blank=True)
    new_status = models.CharField(_("to"), max_length=20)
    detail = models.CharField(_("detail"), max_length=500, blank=True)
    created_at = models.DateTimeField(_("at"))

    class Meta:
        verbose_name = _("status change")
        verbose_name_plural = _("status changes")
        ordering = ["created_at", "id"]

    def __str__(self):
        return f"{self.old_status or '∅'} → {self.new_status}"


class InboundSms(models.Model):
    """A message a phone sent us; linked to the reader with that number and to the message it answers."""

    phone_from = models.CharField(_("from"), max_length=20)
    phone_to = models.CharField(_("to"), max_length=20, blank=True)
    text = models.TextField(_("text"), blank=True)
    received_at = models.DateTimeField(_("received at"))
    gateway = models.CharField(_("gateway"), max_length=40)
    gateway_message_id = models.CharField(_("gateway message id"), max_length=100)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="inbound_sms", verbose_name=_("reader"))
    reply_to = models.ForeignKey(SmsMessage, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="replies", verbose_name=_("answers"))
    keyword = models.CharField(_("keyword"), max_length=20, blank=True)
    processed_at = models.DateTimeField(_("processed at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("inbound SMS")
        verbose_name_plural = _("inbound SMS")
        ordering = ["-received_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["gateway", "gateway_message_id"], name="inbound_gateway_id")]

    def __str__(self):
        return f"{self.phone_from}: {self.text[:40]}"


class OptOut(models.Model):
    """A number that asked for no more (non-transactional) messages."""

    phone_number = models.CharField(_("phone number"), max_length=20, unique=True)
    source = models.CharField(_("source"), max_length=255, blank=True)
    created_at = models.DateTimeField(_("opted out at"))

    class Meta:
        verbose_name = _("opt-out")
        verbose_name_plural = _("opt-outs")
        ordering = ["-created_at"]

    def __str__(self):
        return self.phone_number


class NotificationRule(models.Model):
    """An event that sends a template to the reader concerned, at most once per subject and period."""

    SUBSCRIPTION_ENDING, SUBSCRIPTION_STARTED = "subscription_ending", "subscription_started"
    CHARGE_FAILED, FAMILY_CODE_ACTIVATED = "recurrent_charge_failed", "family_code_activated"
    EVENTS = [(SUBSCRIPTION_ENDING, _("a subscription ends in N days")),
              (SUBSCRIPTION_STARTED, _("a subscription started")),
              (CHARGE_FAILED, _("a recurring charge failed")),
              (FAMILY_CODE_ACTIVATED, _("a family code was activated (to the parent)"))]

    code = models.SlugField(_("code"), max_length=100, unique=True)
    event = models.CharField(_("event"), max_length=40, choices=EVENTS)
    days = models.PositiveSmallIntegerField(_("days before the end"), null=True, blank=True)
    template_code = models.SlugField(_("template"), max_length=100)
    transactional = models.BooleanField(_("transactional"), default=False)
    urgent = models.BooleanField(_("urgent"), default=False, help_text=_("Not delayed by quiet hours."))
    active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("notification rule")
        verbose_name_plural = _("notification rules")
        ordering = ["code"]

    def __str__(self):
        return self.code


class NotificationSent(models.Model):
    """At most one notification per (rule, subject, period): the unique row is the guard."""

    rule = models.ForeignKey(NotificationRule, on_delete=models.CASCADE, related_name="sent")
    subject = models.CharField(max_length=100)
    period = models.CharField(max_length=100, blank=True)
    message = models.ForeignKey(SmsMessage, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rule", "subject", "period"], name="notification_once")]


class DispatcherLease(models.Model):
    """Who runs the dispatcher of a gateway now: one at a time keeps the rate limit global; a lease
    left by a killed worker expires."""

    gateway = models.CharField(max_length=40, unique=True)
    owner = models.CharField(max_length=100, blank=True)
    expires_at = models.DateTimeField()
