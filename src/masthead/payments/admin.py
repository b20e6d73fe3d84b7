"""Admin for payment gateways, payments and recurrent payments.

Payments and recurrent payments are history: nothing is added or deleted here and every field is
read-only except the note. State changes go through ``payments.services`` (house rule 1):

* "Mark as paid" → ``confirm`` (the payment's subscription is made once, R-PAY-5);
* "Stop (admin)" → ``stop_by_admin`` (R-REC-15/16), "Reactivate (admin)" → ``reactivate_by_admin``
  (R-REC-18), "Charge now" → ``charge_now`` of each selected row, after a confirmation page.

A refusal (``PaymentError``) becomes an error message and writes nothing. The note is written with an
update of that one column, so saving it never writes back a status the form read before a concurrent
change. The ``admin.user.detail`` widget (:func:`user_widget_context`) lists the reader's latest payments
and recurrent payment profiles.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import construct_change_message
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from masthead.core.admin import ReadOnlyInline
from masthead.payments import services
from masthead.payments.models import Payment, PaymentGateway, PaymentItem, PaymentLog, PaymentMeta, RecurrentPayment
from masthead.subscriptions.services import SubscriptionError

RP = RecurrentPayment
#: states that end a chain of attempts: what is left when a card's history is read newest first
PROFILE_STATES = (RP.ACTIVE, RP.PENDING, RP.USER_STOP, RP.ADMIN_STOP, RP.SYSTEM_STOP)
WIDGET_ROWS = 10


def _when(value) -> str:
    return date_format(timezone.localtime(value), "DATETIME_FORMAT") if value else "—"


def _state_label(state: str) -> str:
    return str(dict(RP.STATES).get(state, state))


class NoteOnlyAdmin(admin.ModelAdmin):
    """History rows: no add, no delete, every field read-only but the note, which is saved alone."""

    editable_fields = ("note",)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        fields = [name for fieldset in self.get_fieldsets(request, obj) for line in fieldset[1]["fields"]
                  for name in (line if isinstance(line, (list, tuple)) else [line])]
        return [name for name in fields if name not in self.editable_fields]

    def save_model(self, request, obj, form, change):
        changed = {name: form.cleaned_data[name] for name in form.changed_data if name in self.editable_fields}
        if changed:
            # Only the note: the other columns belong to payments.services (a plain save() would write
            # back every value the form read, e.g. a status changed meanwhile).
            stamp = "modified_at" if hasattr(obj, "modified_at") else "updated_at"
            type(obj).objects.filter(pk=obj.pk).update(**changed, **{stamp: timezone.now()})
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        """The inlines are read-only."""

    def construct_change_message(self, request, form, formsets, add=False):
        return construct_change_message(form, [], add)  # the read-only inlines were never saved


class PaymentItemInline(ReadOnlyInline):
    model = PaymentItem
    fields = ["type", "name", "count", "amount", "vat", "subscription_type"]
    readonly_fields = fields


class PaymentMetaInline(ReadOnlyInline):
    model = PaymentMeta
    fields = ["key", "value"]
    readonly_fields = fields


class PaymentLogInline(ReadOnlyInline):
    model = PaymentLog
    fields = ["created_at", "status", "source", "message"]
    readonly_fields = fields


# --- gateways ------------------------------------------------------------------------------------------


@admin.register(PaymentGateway)
class PaymentGatewayAdmin(admin.ModelAdmin):
    """Configuration: name, flags and meta (``unstoppable``, ``user_unstoppable``, R-REC-15). The code
    names the adapter and is fixed once the gateway exists; payments point at gateways, so none is deleted."""

    list_display = ["code", "name", "is_recurrent", "active", "sorting", "meta"]
    list_filter = ["is_recurrent", "active"]
    search_fields = ["code", "name"]
    fields = ["code", "name", "is_recurrent", "active", "sorting", "meta", "created_at", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        return ["code", "created_at", "updated_at"] if obj is not None else ["created_at", "updated_at"]

    def has_delete_permission(self, request, obj=None):
        return False


# --- payments ------------------------------------------------------------------------------------------


@admin.register(Payment)
class PaymentAdmin(NoteOnlyAdmin):
    list_display = ["variable_symbol", "user_email", "amount", "status", "gateway", "subscription_type", "paid_at",
                    "created_at"]
    list_filter = ["status", "gateway", "recurrent_charge", "created_at", "paid_at"]
    list_select_related = ["user", "gateway", "subscription_type"]
    search_fields = ["=variable_symbol", "user__email"]
    date_hierarchy = "created_at"
    ordering = ["-created_at", "-pk"]
    actions = ["mark_as_paid"]
    inlines = [PaymentItemInline, PaymentMetaInline, PaymentLogInline]
    fieldsets = [
        (None, {"fields": ["variable_symbol", "user", "status", "amount", ("additional_amount", "additional_type"),
                           "gateway", "note"]}),
        (_("Subscription"), {"fields": ["subscription_type", "subscription",
                                        ("subscription_start_at", "subscription_end_at"), "address"]}),
        (_("Dates"), {"fields": ["paid_at", "created_at", "modified_at"]}),
        (_("Details"), {"fields": ["recurrent_charge", "error_message", "ip", "user_agent", "referer"]}),
    ]

    @admin.display(description=_("e-mail"), ordering="user__email")
    def user_email(self, obj):
        return obj.user.email

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        found = services.find_by_variable_symbol(search_term)  # R-PAY-8: 6789465 also finds 0006789465
        if found is not None:
            results = results | queryset.filter(pk=found.pk)
        return results, may_have_duplicates

    @admin.action(description=_("Mark as paid"), permissions=["change"])
    def mark_as_paid(self, request, queryset):
        paid = already = 0
        for payment in queryset.order_by("pk"):
            was = payment.status
            try:
                services.confirm(payment=payment)
            except (services.PaymentError, SubscriptionError) as exc:
                self.message_user(request, gettext("Payment %(symbol)s was not marked as paid: %(reason)s")
                                  % {"symbol": payment.variable_symbol, "reason": exc.message}, messages.ERROR)
                continue
            if was in Payment.PAID_STATUSES:
                already += 1
            else:
                paid += 1
        if paid:
            self.message_user(request, ngettext("%(count)d payment marked as paid.",
                                                "%(count)d payments marked as paid.", paid) % {"count": paid},
                              messages.SUCCESS)
        if already:
            self.message_user(request, ngettext("%(count)d payment was already paid: nothing changed.",
                                                "%(count)d payments were already paid: nothing changed.",
                                                already) % {"count": already}, messages.WARNING)


# --- recurrent payments ------------------------------------------------------------------------------


def refusal(row: RecurrentPayment, exc: services.PaymentError) -> str:
    """A refused stop, reactivation or charge of ``row``, for staff."""
    state = _state_label(exc.params.get("state", row.state))
    reasons = {
        "recurrent_payment_not_active": gettext("it is %(state)s") % {"state": state},
        "unstoppable_recurrent_payment": (
            gettext("it was paid as prepaid") if row.parent_payment_id and row.parent_payment.status == Payment.PREPAID
            else gettext("its gateway %(gateway)s is unstoppable") % {"gateway": row.gateway.code}),
        "recurrent_payment_not_reactivatable": ngettext(
            "only a recurrent payment stopped by the system with no retries left can be reactivated; "
            "this one is %(state)s with %(retries)d retry left",
            "only a recurrent payment stopped by the system with no retries left can be reactivated; "
            "this one is %(state)s with %(retries)d retries left", row.retries) % {"state": state,
                                                                                  "retries": row.retries},
        "recurrent_payment_too_old": gettext("it stopped more than 14 days ago"),
        "recurrent_payment_already_reactivated": gettext("it was already reactivated"),
    }
    return gettext("Recurrent payment #%(id)s: refused, %(reason)s.") % {
        "id": row.pk, "reason": reasons.get(exc.code, exc.message)}


@admin.register(RecurrentPayment)
class RecurrentPaymentAdmin(NoteOnlyAdmin):
    list_display = ["id", "user_email", "subscription_type", "gateway", "charge_at", "state", "retries",
                    "gateway_result", "parent_payment"]
    list_display_links = ["id", "user_email"]
    list_filter = ["state", "gateway"]
    list_select_related = ["user", "subscription_type", "gateway", "parent_payment"]
    search_fields = ["user__email", "=parent_payment__variable_symbol"]
    date_hierarchy = "charge_at"
    ordering = ["-charge_at", "-pk"]
    actions = ["stop_by_admin", "reactivate_by_admin", "charge_now"]
    fieldsets = [
        (None, {"fields": ["user", "state", "charge_at", "retries", ("status", "approval"), "note"]}),
        (_("Card"), {"fields": ["gateway", "cid", "expires_at"]}),
        (_("Payments"), {"fields": ["parent_payment", "payment", "subscription_type", "next_subscription_type",
                                    "custom_amount"]}),
        (_("Dates"), {"fields": ["claimed_at", "created_at", "updated_at"]}),
    ]

    @admin.display(description=_("e-mail"), ordering="user__email")
    def user_email(self, obj):
        return obj.user.email

    @admin.display(description=_("gateway status / message"))
    def gateway_result(self, obj):
        return " / ".join(part for part in (obj.status or "", obj.approval) if part) or "—"

    @admin.action(description=_("Stop (admin)"), permissions=["change"])
    def stop_by_admin(self, request, queryset):
        stopped = 0
        for row in queryset.select_related("gateway", "parent_payment").order_by("pk"):
            try:
                services.stop_by_admin(recurrent_payment=row)
            except services.PaymentError as exc:
                self.message_user(request, refusal(row, exc), messages.ERROR)
            else:
                stopped += 1
        if stopped:
            self.message_user(request, ngettext("%(count)d recurrent payment stopped.",
                                                "%(count)d recurrent payments stopped.", stopped) % {"count": stopped},
                              messages.SUCCESS)

    @admin.action(description=_("Reactivate (admin)"), permissions=["change"])
    def reactivate_by_admin(self, request, queryset):
        for row in queryset.select_related("gateway", "parent_payment").order_by("pk"):
            try:
                new_row = services.reactivate_by_admin(recurrent_payment=row)
            except services.PaymentError as exc:
                self.message_user(request, refusal(row, exc), messages.ERROR)
            else:
                self.message_user(request, gettext(
                    "Recurrent payment #%(id)s reactivated as #%(new)s, charged at %(charge_at)s.")
                    % {"id": row.pk, "new": new_row.pk, "charge_at": _when(new_row.charge_at)}, messages.SUCCESS)

    @admin.action(description=_("Charge now"), permissions=["change"])
    def charge_now(self, request, queryset):
        """Asks first (it takes money); then charges each selected row on its own (not the charge run)."""
        rows = list(queryset.select_related("user", "gateway", "subscription_type", "parent_payment").order_by("pk"))
        if request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": gettext("Charge now"),
                "opts": self.opts,
                "rows": [{"row": row, "state": _state_label(row.state), "chargeable": row.state == RP.ACTIVE}
                         for row in rows],
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "media": self.media,
            }
            return TemplateResponse(request, "admin/payments/recurrentpayment/charge_confirmation.html", context)
        for row in rows:
            try:
                outcome = services.charge_now(recurrent_payment=row)
            except services.PaymentError as exc:
                self.message_user(request, refusal(row, exc), messages.ERROR)
                continue
            row.refresh_from_db()
            self.message_user(request, *charge_message(row, outcome))


def charge_message(row: RecurrentPayment, outcome: str) -> tuple[str, int]:
    """What "Charge now" tells staff about one row's outcome (see services.apply_result)."""
    code = row.status or ""
    params = {"id": row.pk, "code": code}
    if outcome == "charged":
        symbol = row.payment.variable_symbol if row.payment_id else ""
        return (gettext("Recurrent payment #%(id)s charged: payment %(symbol)s is paid.")
                % {**params, "symbol": symbol}, messages.SUCCESS)
    if outcome == "pending":
        return (gettext("Recurrent payment #%(id)s: the gateway answers later (%(code)s).") % params,
                messages.WARNING)
    if outcome == "retry":
        return (gettext("Recurrent payment #%(id)s declined (%(code)s); a retry is scheduled.") % params,
                messages.WARNING)
    if outcome == "gateway_error":
        return (gettext("Recurrent payment #%(id)s: gateway error (%(code)s); it is tried again later.") % params,
                messages.WARNING)
    if outcome == "failed":
        return gettext("Recurrent payment #%(id)s declined (%(code)s) and stopped.") % params, messages.ERROR
    if outcome == "fast_charge":
        return (gettext("Recurrent payment #%(id)s stopped: the same card was charged only recently "
                        "(fast-charge guard).") % params, messages.ERROR)
    return (gettext("Recurrent payment #%(id)s: the charge did not finish (%(outcome)s); see the log.")
            % {**params, "outcome": outcome}, messages.ERROR)


# --- the admin user page -----------------------------------------------------------------------------


def user_widget_context(request, user_obj=None, **_):
    """``admin.user.detail``: the reader's latest payments and their recurrent payment profiles (the last
    row of each card's chain: active, pending or stopped), newest first."""
    if user_obj is None or user_obj.pk is None:
        return None
    staff = getattr(request, "user", None)
    if staff is None or not any(staff.has_perm(f"payments.{action}_payment") for action in ("view", "change")):
        return None
    payments = Payment.objects.filter(user=user_obj)
    profiles = RP.objects.filter(user=user_obj, state__in=PROFILE_STATES)
    return {
        "payments": list(payments.select_related("gateway", "subscription_type").order_by("-created_at", "-pk")
                         [:WIDGET_ROWS]),
        "payment_count": payments.count(),
        "profiles": [{"row": row, "state": _state_label(row.state),
                      "next_charge": row.charge_at if row.state in (RP.ACTIVE, RP.PENDING) else None}
                     for row in profiles.select_related("gateway", "subscription_type").order_by("-charge_at", "-pk")
                     [:WIDGET_ROWS]],
        "profile_count": profiles.count(),
    }
