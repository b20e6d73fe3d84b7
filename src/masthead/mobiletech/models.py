"""Premium SMS on the Mobiletech protocol: readers' phone numbers, inbound (MO) and outbound (MT)
messages with their delivery statuses, templates, billing keys and keyword actions (R-MT-*).
Only mobiletech.services writes them."""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class PhoneNumber(models.Model):
    """R-MT-13: one local number (``09xxxxxxxx``) per reader, one reader per number."""

    phone_number = models.CharField(_("phone number"), max_length=10, unique=True)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mobiletech_phone",
                                verbose_name=_("reader"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("premium SMS phone number")
        verbose_name_plural = _("premium SMS phone numbers")
        ordering = ["phone_number"]

    def __str__(self):
        return self.phone_number


class Template(models.Model):
    """R-MT-18: the text of a billed reply or push (sandboxed Jinja2, Twig-like syntax)."""

    code = models.SlugField(_("code"), max_length=100, unique=True)
    body = models.TextField(_("text"))
    description = models.CharField(_("description"), max_length=255, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("premium SMS template")
        verbose_name_plural = _("premium SMS templates")
        ordering = ["code"]

    def __str__(self):
        return self.code


class BillingKey(models.Model):
    """What a billed SMS costs the reader (the operator's bill key)."""

    code = models.CharField(_("code"), max_length=50, unique=True)
    amount = models.DecimalField(_("amount"), max_digits=10, decimal_places=2)
    description = models.CharField(_("description"), max_length=255, blank=True)
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("billing key")
        verbose_name_plural = _("billing keys")
        ordering = ["code"]

    def __str__(self):
        return f"{self.code} ({self.amount})"


class InboundMessage(models.Model):
    """R-MT-2: a ``receive`` message, stored once per Mobiletech id."""

    mobiletech_id = models.CharField(_("Mobiletech id"), max_length=100, unique=True)
    serv_id = models.CharField(_("service id"), max_length=50, blank=True)
    project_id = models.CharField(_("project id"), max_length=50, blank=True)
    phone_from = models.CharField(_("from"), max_length=20)
    phone_to = models.CharField(_("to (short number)"), max_length=20, blank=True)
    content = models.TextField(_("content"), blank=True)
    content_coding = models.CharField(_("content coding"), max_length=20, blank=True)
    dcs = models.CharField(max_length=20, blank=True)
    esm = models.CharField(max_length=20, blank=True)
    operator_type = models.CharField(_("operator"), max_length=5, blank=True)
    receive_date = models.DateTimeField(_("received at"), null=True, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="mobiletech_inbound", verbose_name=_("reader"))
    processed_at = models.DateTimeField(_("processed at"), null=True, blank=True)
    result = models.CharField(_("result"), max_length=255, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("premium SMS inbound message")
        verbose_name_plural = _("premium SMS inbound messages")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["phone_from", "created_at"], name="mt_inbound_from")]

    def __str__(self):
        return f"{self.phone_from}: {self.content[:40]}"


class OutboundMessage(models.Model):
    """R-MT-5: a billed reply (``rcv_msg_id`` = the MO it answers) or a push (no ``rcv_msg_id``)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="mobiletech_outbound", verbose_name=_("reader"))
    mobiletech_id = models.CharField(_("Mobiletech id"), max_length=100, null=True, blank=True, unique=True)
    payment = models.ForeignKey("payments.Payment", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="mobiletech_outbound", verbose_name=_("payment"))
    template = models.ForeignKey(Template, null=True, on_delete=models.PROTECT, related_name="+",
                                 verbose_name=_("template"))
    content = models.TextField(_("content"), blank=True)
    status = models.CharField(_("status"), max_length=30, blank=True)
    serv_id = models.CharField(_("service id"), max_length=50, blank=True)
    project_id = models.CharField(_("project id"), max_length=50, blank=True)
    rcv_msg_id = models.CharField(_("answers"), max_length=100, blank=True)
    phone_from = models.CharField(_("from (short number)"), max_length=20, blank=True)
    phone_to = models.CharField(_("to"), max_length=20)
    billmsisdn = models.CharField(_("billed number"), max_length=20, blank=True)
    billkey = models.CharField(_("billing key"), max_length=50, blank=True)
    amount = models.DecimalField(_("amount"), max_digits=10, decimal_places=2, default=0)
    content_length = models.PositiveIntegerField(_("content length"), default=0)
    expiration = models.PositiveIntegerField(_("expiration"), default=600)
    dcs = models.CharField(max_length=20, blank=True)
    esm = models.CharField(max_length=20, blank=True)
    operator_type = models.CharField(_("operator"), max_length=5, blank=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    error = models.CharField(_("error"), max_length=500, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("premium SMS outbound message")
        verbose_name_plural = _("premium SMS outbound messages")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["rcv_msg_id"], name="mt_outbound_rcv"),
                   models.Index(fields=["phone_to", "created_at"], name="mt_outbound_to")]

    def __str__(self):
        return f"{self.phone_to} {self.billkey} {self.status}"


class OutboundStatus(models.Model):
    """Every delivery report of an outbound message, in order (the last one wins, R-MT-3)."""

    outbound = models.ForeignKey(OutboundMessage, on_delete=models.CASCADE, related_name="history",
                                 verbose_name=_("outbound message"))
    status = models.CharField(_("status"), max_length=30)
    created_at = models.DateTimeField(_("at"))

    class Meta:
        verbose_name = _("delivery report")
        verbose_name_plural = _("delivery reports")
        ordering = ["created_at", "id"]


class KeywordAction(models.Model):
    """What an inbound keyword does: buy a subscription type with a billing key (one-off or
    recurring), or stop the reader's recurring SMS payments."""

    BUY, STOP = "buy", "stop"
    ACTIONS = [(BUY, _("buy a subscription")), (STOP, _("stop recurring SMS payments"))]

    keyword = models.CharField(_("keyword"), max_length=40, unique=True)
    action = models.CharField(_("action"), max_length=20, choices=ACTIONS, default=BUY)
    subscription_type = models.ForeignKey("subscriptions.SubscriptionType", null=True, blank=True,
                                          on_delete=models.PROTECT, related_name="+",
                                          verbose_name=_("subscription type"))
    billing_key = models.ForeignKey(BillingKey, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                    verbose_name=_("billing key"))
    template_code = models.SlugField(_("reply template"), max_length=100, blank=True)
    recurrent = models.BooleanField(_("recurring"), default=False)
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("keyword action")
        verbose_name_plural = _("keyword actions")
        ordering = ["keyword"]

    def __str__(self):
        return self.keyword
