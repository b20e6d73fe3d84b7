"""Payments, their items and meta, payment gateways and recurrent payment profiles (R-PAY-*, R-REC-*).

Only ``payments.services`` writes these tables.
"""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class PaymentGateway(models.Model):
    """A way to pay. ``code`` names the adapter in ``payments.gateways``; ``meta`` holds flags such as
    ``unstoppable`` / ``user_unstoppable`` (R-REC-15) and ``recurrent_authorization`` (R-PAY-5)."""

    code = models.SlugField(_("code"), max_length=100, unique=True)
    name = models.CharField(_("name"), max_length=255)
    is_recurrent = models.BooleanField(_("recurrent"), default=False)
    active = models.BooleanField(_("active"), default=True)
    sorting = models.PositiveIntegerField(_("sorting"), default=100)
    meta = models.JSONField(_("meta"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("payment gateway")
        verbose_name_plural = _("payment gateways")
        ordering = ["sorting", "code"]

    def __str__(self):
        return self.code

    def flag(self, name: str) -> bool:
        """A meta flag: true for 1, "1", true, "true", "yes"."""
        value = (self.meta or {}).get(name)
        if isinstance(value, str):
            return value.strip().lower() in {"1", "true", "yes", "on"}
        return bool(value)


class Payment(models.Model):
    """One payment of a reader (R-PAY-2). ``subscription`` is set once, when the payment makes one."""

    FORM, PAID, FAIL, TIMEOUT, REFUND, IMPORTED, PREPAID, AUTHORIZED = (
        "form", "paid", "fail", "timeout", "refund", "imported", "prepaid", "authorized")
    STATUSES = [(FORM, _("form")), (PAID, _("paid")), (FAIL, _("fail")), (TIMEOUT, _("timeout")),
                (REFUND, _("refund")), (IMPORTED, _("imported")), (PREPAID, _("prepaid")),
                (AUTHORIZED, _("authorized"))]
    #: statuses that count as "money received" (R-PAY-4, R-REC-3)
    PAID_STATUSES = (PAID, PREPAID, AUTHORIZED)
    SINGLE, RECURRENT = "single", "recurrent"
    ADDITIONAL_TYPES = [(SINGLE, _("single")), (RECURRENT, _("recurrent"))]

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payments",
                             verbose_name=_("user"))
    gateway = models.ForeignKey(PaymentGateway, on_delete=models.PROTECT, related_name="payments",
                                verbose_name=_("payment gateway"))
    subscription_type = models.ForeignKey("subscriptions.SubscriptionType", null=True, blank=True,
                                          on_delete=models.PROTECT, related_name="payments",
                                          verbose_name=_("subscription type"))
    subscription = models.ForeignKey("subscriptions.Subscription", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="payments", verbose_name=_("subscription"))
    amount = models.DecimalField(_("amount"), max_digits=10, decimal_places=2)
    additional_amount = models.DecimalField(_("additional amount"), max_digits=10, decimal_places=2, default=0)
    additional_type = models.CharField(_("additional type"), max_length=20, choices=ADDITIONAL_TYPES, blank=True)
    variable_symbol = models.CharField(_("variable symbol"), max_length=10, unique=True)
    status = models.CharField(_("status"), max_length=20, choices=STATUSES, default=FORM)
    paid_at = models.DateTimeField(_("paid at"), null=True, blank=True)
    subscription_start_at = models.DateTimeField(_("subscription start"), null=True, blank=True)
    subscription_end_at = models.DateTimeField(_("subscription end"), null=True, blank=True)
    address = models.ForeignKey("users.Address", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="payments", verbose_name=_("address"))
    note = models.TextField(_("note"), blank=True)
    error_message = models.TextField(_("error message"), blank=True)
    ip = models.CharField(_("IP address"), max_length=45, blank=True)
    user_agent = models.CharField(_("user agent"), max_length=512, blank=True)
    referer = models.CharField(_("referer"), max_length=1024, blank=True)
    recurrent_charge = models.BooleanField(_("made by the charge run"), default=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    modified_at = models.DateTimeField(_("modified at"), auto_now=True)

    class Meta:
        verbose_name = _("payment")
        verbose_name_plural = _("payments")
        indexes = [
            models.Index(fields=["user", "-created_at"], name="payment_user_created"),
            models.Index(fields=["status", "-paid_at"], name="payment_status_paid"),
        ]

    def __str__(self):
        return f"{self.variable_symbol} {self.amount} ({self.status})"


class PaymentItem(models.Model):
    """A line of a payment: ``amount`` is the unit price with VAT, ``count`` the quantity."""

    SUBSCRIPTION_TYPE, DONATION = "subscription_type", "donation"

    payment = models.ForeignKey(Payment, on_delete=models.CASCADE, related_name="items", verbose_name=_("payment"))
    type = models.CharField(_("type"), max_length=40, default=SUBSCRIPTION_TYPE)
    name = models.CharField(_("name"), max_length=255)
    count = models.PositiveIntegerField(_("count"), default=1)
    amount = models.DecimalField(_("amount"), max_digits=10, decimal_places=2)
    vat = models.DecimalField(_("VAT %"), max_digits=5, decimal_places=2, default=0)
    subscription_type = models.ForeignKey("subscriptions.SubscriptionType", null=True, blank=True,
                                          on_delete=models.PROTECT, related_name="+",
                                          verbose_name=_("subscription type"))
    meta = models.JSONField(_("meta"), default=dict, blank=True)

    class Meta:
        verbose_name = _("payment item")
        verbose_name_plural = _("payment items")
        ordering = ["id"]

    def __str__(self):
        return f"{self.count}× {self.name} {self.amount}"


class PaymentMeta(models.Model):
    payment = models.ForeignKey(Payment, on_delete=models.CASCADE, related_name="meta", verbose_name=_("payment"))
    key = models.CharField(_("key"), max_length=100)
    value = models.TextField(_("value"), blank=True)

    class Meta:
        verbose_name = _("payment meta")
        verbose_name_plural = _("payment meta")
        constraints = [models.UniqueConstraint(fields=["payment", "key"], name="payment_meta_key")]


class PaymentLog(models.Model):
    """One gateway call about a payment (R-REC-8: one row per charge attempt)."""

    payment = models.ForeignKey(Payment, on_delete=models.CASCADE, related_name="logs", verbose_name=_("payment"))
    status = models.CharField(_("status"), max_length=10)  # OK | ERROR
    source = models.CharField(_("source"), max_length=40, blank=True)
    message = models.TextField(_("message"), blank=True)
    response = models.JSONField(_("response"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("payment log")
        verbose_name_plural = _("payment logs")
        ordering = ["id"]


class RecurrentPayment(models.Model):
    """One scheduled charge attempt of a card (R-REC-1); the history of a card is a chain of rows.

    ``payment`` is the attempt's payment, ``parent_payment`` the payment that scheduled the row (the
    first payment, the last successful charge, or the failed attempt a retry follows). A payment
    schedules at most one row (unique), so a period can never be scheduled, nor charged, twice.
    """

    ACTIVE, PENDING, CHARGED, CHARGE_FAILED = "active", "pending", "charged", "charge_failed"
    USER_STOP, ADMIN_STOP, SYSTEM_STOP = "user_stop", "admin_stop", "system_stop"
    STATES = [(ACTIVE, _("active")), (PENDING, _("pending")), (CHARGED, _("charged")),
              (CHARGE_FAILED, _("charge failed")), (USER_STOP, _("stopped by user")),
              (ADMIN_STOP, _("stopped by admin")), (SYSTEM_STOP, _("stopped by system"))]
    STATE_CODES = tuple(code for code, _label in STATES)
    STOP_STATES = (USER_STOP, ADMIN_STOP, SYSTEM_STOP)

    cid = models.CharField(_("card token"), max_length=255)
    gateway = models.ForeignKey(PaymentGateway, on_delete=models.PROTECT, related_name="recurrent_payments",
                                verbose_name=_("payment gateway"))
    charge_at = models.DateTimeField(_("charge at"))
    expires_at = models.DateTimeField(_("card expires at"), null=True, blank=True)
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                verbose_name=_("payment"))
    parent_payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.PROTECT,
                                       related_name="recurrent_children", verbose_name=_("parent payment"))
    retries = models.IntegerField(_("retries left"), default=0)
    status = models.CharField(_("gateway status"), max_length=100, null=True, blank=True)
    approval = models.CharField(_("gateway message"), max_length=250, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="recurrent_payments",
                             verbose_name=_("user"))
    subscription_type = models.ForeignKey("subscriptions.SubscriptionType", on_delete=models.PROTECT,
                                          related_name="+", verbose_name=_("subscription type"))
    next_subscription_type = models.ForeignKey("subscriptions.SubscriptionType", null=True, blank=True,
                                               on_delete=models.PROTECT, related_name="+",
                                               verbose_name=_("next subscription type"))
    state = models.CharField(_("state"), max_length=20, choices=STATES, default=ACTIVE)
    note = models.TextField(_("note"), blank=True)
    custom_amount = models.DecimalField(_("custom amount"), max_digits=10, decimal_places=2, null=True, blank=True)
    #: when the charge run claimed the row (state pending, status empty); also its claim token
    claimed_at = models.DateTimeField(_("claimed at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("recurrent payment")
        verbose_name_plural = _("recurrent payments")
        constraints = [models.UniqueConstraint(fields=["parent_payment"], name="recurrent_one_per_parent")]
        indexes = [
            # the charge run: state = active AND status IS NULL AND charge_at <= …
            models.Index(fields=["state", "charge_at"], name="recurrent_state_charge_at"),
            # the fast-charge guard and "the same card" lookups
            models.Index(fields=["user", "cid", "state"], name="recurrent_user_card_state"),
        ]

    def __str__(self):
        return f"#{self.pk} {self.state} {self.charge_at:%Y-%m-%d %H:%M}"
