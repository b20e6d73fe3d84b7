from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class ContentAccess(models.Model):
    """A kind of access a subscription grants: web, mobile, print, or any the publisher defines."""

    name = models.SlugField(_("name"), max_length=100, unique=True)
    description = models.CharField(_("description"), max_length=255, blank=True)
    class_name = models.CharField(_("CSS class"), max_length=100, blank=True)
    sorting = models.PositiveIntegerField(_("sorting"), default=100)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("content access")
        verbose_name_plural = _("content access")
        ordering = ["sorting", "name"]

    def __str__(self):
        return self.name


class SubscriptionType(models.Model):
    """What a reader can buy: its access, length, price and how it lands on the timeline (R-ST-1)."""

    EXTENSION_METHODS = [
        ("extend_actual", _("Extend the current subscription")),
        ("extend_same_actual", _("Extend the current subscription of the same type")),
        ("extend_same_type", _("Extend the last subscription of the same type")),
        ("extend_same_content_access", _("Extend the last subscription with the same access")),
        ("extend_last_subscription", _("Extend the last subscription")),
        ("start_now", _("Start now")),
    ]
    LENGTH_METHODS = [("fix_days", _("Fixed number of days")), ("calendar_days", _("Days of the calendar month"))]

    code = models.SlugField(_("code"), max_length=100, unique=True)
    name = models.CharField(_("name"), max_length=255)
    user_label = models.CharField(_("label for readers"), max_length=255)
    description = models.TextField(_("description"), blank=True)
    price = models.DecimalField(_("price"), max_digits=10, decimal_places=2)
    length = models.PositiveIntegerField(_("length (days)"))
    extending_length = models.PositiveIntegerField(_("length when extending (days)"), null=True, blank=True)
    length_method = models.CharField(_("length method"), max_length=40, default="fix_days")
    extension_method = models.CharField(_("extension method"), max_length=40, default="extend_actual")
    fixed_start = models.DateTimeField(_("fixed start"), null=True, blank=True)
    fixed_end = models.DateTimeField(_("fixed end"), null=True, blank=True)
    content_access = models.ManyToManyField(ContentAccess, related_name="subscription_types", blank=True,
                                            verbose_name=_("content access"))
    active = models.BooleanField(_("active"), default=True)
    visible = models.BooleanField(_("visible"), default=True)
    default = models.BooleanField(_("default"), default=False)
    sorting = models.PositiveIntegerField(_("sorting"), default=100)
    limit_per_user = models.PositiveIntegerField(_("limit per user"), null=True, blank=True)
    next_subscription_type = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                               related_name="+", verbose_name=_("renews as"))
    trial_periods = models.PositiveIntegerField(_("trial periods"), null=True, blank=True)
    recurrent_charge_before = models.IntegerField(_("charge before end (hours)"), null=True, blank=True)
    ask_address = models.BooleanField(_("ask for address"), default=False)
    no_subscription = models.BooleanField(_("payment creates no subscription"), default=False)
    disable_notifications = models.BooleanField(_("no notifications"), default=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("subscription type")
        verbose_name_plural = _("subscription types")
        ordering = ["sorting", "code"]

    def __str__(self):
        return f"{self.name} ({self.code})"


class SubscriptionTypeItem(models.Model):
    """A line of the type's price (R-ST-1): the items sum to the price."""

    subscription_type = models.ForeignKey(SubscriptionType, on_delete=models.CASCADE, related_name="items",
                                          verbose_name=_("subscription type"))
    name = models.CharField(_("name"), max_length=255)
    amount = models.DecimalField(_("amount"), max_digits=10, decimal_places=2)
    vat = models.DecimalField(_("VAT %"), max_digits=5, decimal_places=2, default=0)
    sorting = models.PositiveIntegerField(_("sorting"), default=100)
    meta = models.JSONField(_("meta"), default=dict, blank=True)

    class Meta:
        verbose_name = _("item")
        verbose_name_plural = _("items")
        ordering = ["sorting", "id"]

    def __str__(self):
        return f"{self.name} {self.amount}"


class SubscriptionTypeMeta(models.Model):
    subscription_type = models.ForeignKey(SubscriptionType, on_delete=models.CASCADE, related_name="meta",
                                          verbose_name=_("subscription type"))
    key = models.CharField(_("key"), max_length=100)
    value = models.TextField(_("value"), blank=True)

    class Meta:
        verbose_name = _("meta")
        verbose_name_plural = _("meta")
        constraints = [models.UniqueConstraint(fields=["subscription_type", "key"], name="sub_type_meta_key")]

    def __str__(self):
        return self.key


class SubscriptionTypeName(models.Model):
    """Labels of subscriptions (R-SUB-2): regular, free, donation, gift, prepaid, upgrade, special, family."""

    code = models.SlugField(_("code"), max_length=50, unique=True)
    sorting = models.PositiveIntegerField(_("sorting"), default=100)
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("subscription label")
        verbose_name_plural = _("subscription labels")
        ordering = ["sorting"]

    def __str__(self):
        return self.code


class Subscription(models.Model):
    """A reader's access over [start_time, end_time). Only subscriptions.services writes it."""

    BEFORE_START, ACTIVE, AFTER_END, UNKNOWN = "before_start", "active", "after_end", "unknown"
    STATUSES = [(BEFORE_START, _("before start")), (ACTIVE, _("active")), (AFTER_END, _("after end")),
                (UNKNOWN, _("unknown"))]

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="subscriptions",
                             verbose_name=_("user"))
    subscription_type = models.ForeignKey(SubscriptionType, on_delete=models.PROTECT, related_name="subscriptions",
                                          verbose_name=_("subscription type"))
    type = models.CharField(_("label"), max_length=50, default="regular")
    is_paid = models.BooleanField(_("paid"), null=True, default=False)
    is_recurrent = models.BooleanField(_("recurrent"), default=False)
    start_time = models.DateTimeField(_("start"))
    end_time = models.DateTimeField(_("end"))
    length = models.PositiveIntegerField(_("length (days)"), default=0)
    internal_status = models.CharField(_("status"), max_length=20, choices=STATUSES, default=UNKNOWN)
    next_subscription = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                          related_name="+", verbose_name=_("next subscription"))
    note = models.CharField(_("note"), max_length=255, blank=True)
    address = models.ForeignKey("users.Address", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="subscriptions", verbose_name=_("address"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("subscription")
        verbose_name_plural = _("subscriptions")
        indexes = [
            models.Index(fields=["user", "end_time"], name="subscription_user_end"),
            # the status sweep reads only due rows through these two
            models.Index(fields=["internal_status", "end_time"], name="subscription_status_end"),
            models.Index(fields=["internal_status", "start_time"], name="subscription_status_start"),
        ]

    def __str__(self):
        return f"{self.subscription_type.code} {self.start_time:%Y-%m-%d}–{self.end_time:%Y-%m-%d}"


class SubscriptionMeta(models.Model):
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="meta",
                                     verbose_name=_("subscription"))
    key = models.CharField(_("key"), max_length=100)
    value = models.TextField(_("value"), blank=True)

    class Meta:
        verbose_name = _("meta")
        verbose_name_plural = _("meta")
        constraints = [models.UniqueConstraint(fields=["subscription", "key"], name="subscription_meta_key")]
