"""Family and company subscriptions: which types share seats, and the shareable codes (R-FAM-1/2)."""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class FamilySubscriptionType(models.Model):
    """A master (parent) type whose subscriptions carry codes for child subscriptions of another type."""

    COPY, FIXED_DAYS = "copy", "fixed_days"
    DONATION_METHODS = [(COPY, _("Copy the parent's dates")), (FIXED_DAYS, _("Fixed number of days from activation"))]

    master_subscription_type = models.OneToOneField(
        "subscriptions.SubscriptionType", on_delete=models.CASCADE, related_name="family_master",
        verbose_name=_("parent type"))
    slave_subscription_type = models.ForeignKey(
        "subscriptions.SubscriptionType", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        verbose_name=_("child type"), help_text=_("Empty: the child types come from the payment's items."))
    donation_method = models.CharField(_("donation method"), max_length=20, choices=DONATION_METHODS, default=COPY)
    count = models.PositiveIntegerField(_("codes per parent"), default=0,
                                        help_text=_("0: as many as the payment item's count."))
    is_paid = models.BooleanField(_("children count as paid"), default=True)
    days = models.PositiveIntegerField(_("days (fixed days)"), null=True, blank=True)
    past_parent_end = models.BooleanField(_("may outlast the parent (fixed days)"), default=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("family subscription type")
        verbose_name_plural = _("family subscription types")
        ordering = ["master_subscription_type__code"]

    def __str__(self):
        return self.master_subscription_type.code


class FamilyRequest(models.Model):
    """One seat of a parent subscription: a code a reader activates to get a child subscription."""

    CREATED, ACCEPTED, CANCELED = "created", "accepted", "canceled"
    STATUSES = [(CREATED, _("unused")), (ACCEPTED, _("accepted")), (CANCELED, _("canceled"))]

    code = models.CharField(_("code"), max_length=32, unique=True)
    master_user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                    related_name="family_codes_given", verbose_name=_("parent"))
    master_subscription = models.ForeignKey("subscriptions.Subscription", on_delete=models.CASCADE,
                                            related_name="family_requests", verbose_name=_("parent subscription"))
    slave_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="family_codes_taken", verbose_name=_("child"))
    slave_subscription = models.ForeignKey("subscriptions.Subscription", null=True, blank=True,
                                           on_delete=models.SET_NULL, related_name="family_seat",
                                           verbose_name=_("child subscription"))
    subscription_type = models.ForeignKey("subscriptions.SubscriptionType", on_delete=models.PROTECT,
                                          related_name="+", verbose_name=_("child type"))
    status = models.CharField(_("status"), max_length=20, choices=STATUSES, default=CREATED)
    note = models.CharField(_("note"), max_length=255, blank=True)
    opened_at = models.DateTimeField(_("opened at"), null=True, blank=True)
    accepted_at = models.DateTimeField(_("accepted at"), null=True, blank=True)
    canceled_at = models.DateTimeField(_("canceled at"), null=True, blank=True)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"))
    updated_at = models.DateTimeField(_("updated at"))  # written by family.services (a release keeps it)

    class Meta:
        verbose_name = _("family code")
        verbose_name_plural = _("family codes")
        ordering = ["-updated_at", "-created_at", "id"]
        indexes = [
            models.Index(fields=["master_subscription", "status"], name="family_request_parent_status"),
            models.Index(fields=["master_user", "updated_at"], name="family_request_master_user"),
            models.Index(fields=["slave_user", "status"], name="family_request_child"),
        ]

    def __str__(self):
        return self.code
