"""Admin for premium SMS (R-MT-*): phone numbers, inbound and outbound messages with the delivery reports,
templates with a preview, billing keys, keyword actions, and the admin user page widget.

* Phone numbers: added through ``services.link_phone`` (R-MT-13/15: any Slovak format, stored local);
  its refusals (not a Slovak number, the number exists, the reader has a number) are form errors and
  write nothing. The form checks by calling the service in a savepoint that is always rolled back, so
  the form and the service can never disagree. A number is not edited or deleted here (there is no
  service for that). Search: the number in any format, the reader's e-mail.
* Inbound and outbound messages are history, read-only. An outbound message shows its status with its
  meaning (``statuses.meaning`` with the message's operator, R-MT-4) and every delivery report.
* Templates, billing keys and keyword actions are reference data (also loadable from the catalog file):
  their forms refuse what ``mobiletech.catalog`` refuses, with the same checks. A template's page has a
  preview (``template/preview/``, POST, JSON) that renders the body with the sample parameters typed in
  the form (JSON, not stored) and shows its length in characters of 160; the same preview is rendered
  with the page. Codes of templates and billing keys are fixed once saved and neither is deleted
  (messages, payments and keywords name them): deactivate a billing key instead.

:func:`register_widgets` registers the ``admin.user.detail`` widget (the reader's number, latest inbound
and outbound messages and SMS payments); the premium SMS app config calls it from ``ready()``.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import transaction
from django.http import JsonResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator, capfirst
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from masthead.core.admin import ReadOnlyInline
from masthead.messaging.admin import parse_json_object
from masthead.mobiletech import catalog, numbers, services, statuses
from masthead.mobiletech.models import (
    BillingKey,
    InboundMessage,
    KeywordAction,
    OutboundMessage,
    OutboundStatus,
    PhoneNumber,
    Template,
)
from masthead.payments.models import Payment
from masthead.users.models import User

WIDGET_ROWS = 10
NO_STATUS = "__none__"  # the status filter's value for messages without a report yet
MEANINGS = {
    statuses.BILLED: _("billed"),
    statuses.DELIVERED: _("delivered"),
    statuses.NOT_DELIVERED: _("not delivered"),
    statuses.ERROR: _("error"),
    statuses.OPERATOR_CHANGED: _("operator changed"),
}


def meaning_label(code: str, operator: str | None) -> str:
    """A status code with its meaning (R-MT-4), e.g. ``A0 (billed)``; no code yet: "waiting for a report"."""
    if not code:
        return gettext("waiting for a report")
    meaning = statuses.meaning(code, operator or None)
    return gettext("%(code)s (%(meaning)s)") % {"code": code, "meaning": MEANINGS.get(meaning, meaning)}


def operator_label(code: str) -> str:
    return numbers.OPERATOR_NAMES.get(code, code) if code else "—"


def user_link(user: User | None) -> str:
    if user is None:
        return "—"
    return format_html('<a href="{}">{}</a>', reverse("admin:users_user_change", args=[user.pk]), user.email)


def payment_link(payment: Payment | None) -> str:
    if payment is None:
        return "—"
    return format_html('<a href="{}">{}</a>', reverse("admin:payments_payment_change", args=[payment.pk]),
                       payment.variable_symbol)


def local_number(term: str) -> str | None:
    """``term`` as a local number (R-MT-15), or None when it is not a Slovak mobile number."""
    try:
        return numbers.to_local(term)
    except numbers.NotSlovak:
        return None


class ReadOnlyAdmin(admin.ModelAdmin):
    """History: shown, never added, changed or deleted here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class OperatorFilter(admin.SimpleListFilter):
    title = _("operator")
    parameter_name = "operator"

    def lookups(self, request, model_admin):
        return [*numbers.OPERATOR_NAMES.items(), (NO_STATUS, _("unknown"))]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(operator_type="" if value == NO_STATUS else value)


# --- phone numbers (R-MT-13) --------------------------------------------------------------------------------


class _DryRun(Exception):
    """Rolls back the savepoint of a check."""


def link_refusal(user: User, phone_number: str) -> services.MobiletechError | None:
    """What ``services.link_phone`` would refuse, found by calling it in a savepoint that is rolled back."""
    try:
        with transaction.atomic():
            services.link_phone(user=user, phone_number=phone_number)
            raise _DryRun
    except _DryRun:
        return None
    except services.MobiletechError as exc:
        return exc


class PhoneNumberForm(forms.ModelForm):
    phone_number = forms.CharField(label=capfirst(_("phone number")), max_length=20,
                                   help_text=_("Local (0908 123 456) or international (+421 908 123 456)."))

    class Meta:
        model = PhoneNumber
        fields = ("user", "phone_number")

    def validate_unique(self):
        """``services.link_phone`` checks both unique columns (see clean)."""

    def clean(self):
        cleaned = super().clean()
        user, number = cleaned.get("user"), cleaned.get("phone_number")
        if user is not None and number:
            refusal = link_refusal(user, number)
            if refusal is not None:
                self.add_error("user" if refusal.code == "user_has_phone" else "phone_number", refusal.message)
            else:
                cleaned["phone_number"] = numbers.to_local(number)  # as stored (the model's checks see it)
        return cleaned


@admin.register(PhoneNumber)
class PhoneNumberAdmin(admin.ModelAdmin):
    form = PhoneNumberForm
    list_display = ("phone_number", "reader", "created_at")
    list_select_related = ("user",)
    search_fields = ("phone_number", "user__email")
    autocomplete_fields = ("user",)
    readonly_fields = ("reader", "created_at")

    @admin.display(description=_("reader"), ordering="user__email")
    def reader(self, obj):
        return user_link(obj.user)

    def get_fields(self, request, obj=None):
        return ("phone_number", "reader", "created_at") if obj is not None else ("user", "phone_number")

    def get_search_results(self, request, queryset, search_term):
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        local = local_number(search_term)
        if local is not None and local != search_term.strip():
            found = found | queryset.filter(phone_number=local)
        return found, may_have_duplicates

    def has_change_permission(self, request, obj=None):
        return False  # a number is linked by services.link_phone and not edited

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        row = services.link_phone(user=form.cleaned_data["user"], phone_number=form.cleaned_data["phone_number"])
        obj.pk = row.pk
        obj._state.adding = False
        obj.refresh_from_db()


# --- inbound messages (R-MT-2) ------------------------------------------------------------------------------


class ProcessedFilter(admin.SimpleListFilter):
    title = _("processed")
    parameter_name = "processed"

    def lookups(self, request, model_admin):
        return [("yes", _("processed")), ("no", _("not processed yet"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(processed_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(processed_at__isnull=True)
        return queryset


class PhoneSearchMixin:
    """A search term that is a Slovak mobile number also finds its international form (R-MT-15)."""

    phone_field = ""

    def get_search_results(self, request, queryset, search_term):
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        local = local_number(search_term)
        if local is not None:
            found = found | queryset.filter(**{self.phone_field: numbers.to_international(local)})
        return found, may_have_duplicates


@admin.register(InboundMessage)
class InboundMessageAdmin(PhoneSearchMixin, ReadOnlyAdmin):
    phone_field = "phone_from"
    list_display = ("mobiletech_id", "phone_from", "reader", "content_excerpt", "operator", "receive_date",
                    "processed_at", "result")
    list_filter = (OperatorFilter, ProcessedFilter)
    list_select_related = ("user",)
    search_fields = ("phone_from", "content", "=mobiletech_id")
    fields = readonly_fields = ("mobiletech_id", "reader", "phone_from", "phone_to", "content", "content_coding",
                                "operator", "serv_id", "project_id", "dcs", "esm", "receive_date", "created_at",
                                "processed_at", "result", "replies")

    @admin.display(description=_("reader"), ordering="user__email")
    def reader(self, obj):
        return user_link(obj.user)

    @admin.display(description=_("content"))
    def content_excerpt(self, obj):
        return Truncator(obj.content).chars(60)

    @admin.display(description=_("operator"), ordering="operator_type")
    def operator(self, obj):
        return operator_label(obj.operator_type)

    @admin.display(description=_("replies"))
    def replies(self, obj):
        rows = OutboundMessage.objects.filter(rcv_msg_id=obj.mobiletech_id).order_by("pk")
        links = format_html_join(
            ", ", '<a href="{}">#{} {}</a>',
            ((reverse("admin:mobiletech_outboundmessage_change", args=[row.pk]), row.pk,
              meaning_label(row.status, row.operator_type)) for row in rows))
        return links or "—"


# --- outbound messages (R-MT-3/4/5) -----------------------------------------------------------------------------


class StatusFilter(admin.SimpleListFilter):
    """The status codes in use (bare: what ``D0`` means depends on the operator), and "waiting for a report"."""

    title = _("status")
    parameter_name = "status"

    def lookups(self, request, model_admin):
        codes = OutboundMessage.objects.order_by("status").values_list("status", flat=True).distinct()
        return [(code, code) if code else (NO_STATUS, gettext("waiting for a report")) for code in codes]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(status="" if value == NO_STATUS else value)


class StatusHistoryInline(ReadOnlyInline):
    model = OutboundStatus
    fields = readonly_fields = ("created_at", "status", "meaning")
    verbose_name_plural = _("delivery reports")

    @admin.display(description=_("meaning"))
    def meaning(self, obj):
        return meaning_label(obj.status, obj.outbound.operator_type)


@admin.register(OutboundMessage)
class OutboundMessageAdmin(PhoneSearchMixin, ReadOnlyAdmin):
    phone_field = "phone_to"
    list_display = ("id", "phone_to", "reader", "template", "billkey", "amount", "status_display", "operator",
                    "payment_display", "created_at")
    list_filter = (StatusFilter, "billkey", OperatorFilter)
    list_select_related = ("user", "template", "payment")
    search_fields = ("phone_to", "user__email", "=mobiletech_id", "=rcv_msg_id")
    inlines = (StatusHistoryInline,)
    fields = readonly_fields = ("reader", "phone_to", "phone_from", "template", "content", "content_length",
                                "status_display", "billkey", "amount", "billmsisdn", "operator", "payment_display",
                                "answers", "mobiletech_id", "serv_id", "project_id", "expiration", "dcs", "esm",
                                "error", "created_at", "sent_at", "updated_at")

    @admin.display(description=_("reader"), ordering="user__email")
    def reader(self, obj):
        return user_link(obj.user)

    @admin.display(description=_("status"), ordering="status")
    def status_display(self, obj):
        return meaning_label(obj.status, obj.operator_type)

    @admin.display(description=_("operator"), ordering="operator_type")
    def operator(self, obj):
        return operator_label(obj.operator_type)

    @admin.display(description=_("payment"), ordering="payment_id")
    def payment_display(self, obj):
        return payment_link(obj.payment)

    @admin.display(description=_("answers"))
    def answers(self, obj):
        """The inbound message this one answers (empty for a push)."""
        if not obj.rcv_msg_id:
            return gettext("nothing (a push message)")
        inbound = InboundMessage.objects.filter(mobiletech_id=obj.rcv_msg_id).first()
        if inbound is None:
            return obj.rcv_msg_id
        return format_html('<a href="{}">{}</a>', reverse("admin:mobiletech_inboundmessage_change",
                                                          args=[inbound.pk]), obj.rcv_msg_id)


# --- templates (R-MT-18) ------------------------------------------------------------------------------------------




def preview_data(preview: catalog.Preview) -> dict:
    return {"ok": preview.ok, "text": preview.text, "length": preview.length, "limit": preview.limit,
            "summary": gettext("%(length)d/%(limit)d characters") % {"length": preview.length,
                                                                      "limit": preview.limit},
            "error": preview.error}


SAMPLE_HELP = _('A JSON object, e.g. {"subscription_name": "Web month", "price": "4"}: the preview and the length '
                'check use it; it is not saved. A variable without a sample value stands for its name.')


class TemplateForm(forms.ModelForm):
    """The code is a slug (the model's check, as the catalog's pattern)."""

    sample_params = forms.CharField(label=capfirst(_("sample parameters")), required=False, help_text=SAMPLE_HELP,
                                    widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))

    class Meta:
        model = Template
        fields = ("code", "description", "body", "sample_params")

    def clean_sample_params(self):
        return parse_json_object(self.cleaned_data.get("sample_params"))

    def clean(self):
        cleaned = super().clean()
        if "body" in cleaned and "sample_params" in cleaned:
            preview = catalog.template_preview(cleaned["body"], cleaned["sample_params"])
            if not preview.ok:
                self.add_error("body", preview.error)
        return cleaned


class PreviewForm(forms.Form):
    body = forms.CharField()
    sample_params = forms.CharField(required=False)

    def clean_sample_params(self):
        return parse_json_object(self.cleaned_data.get("sample_params"))


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    form = TemplateForm
    change_form_template = "admin/mobiletech/template/change_form.html"
    list_display = ("code", "description", "body_excerpt", "updated_at")
    search_fields = ("code", "description", "body")

    @admin.display(description=_("text"))
    def body_excerpt(self, obj):
        return Truncator(obj.body).chars(80)

    def get_readonly_fields(self, request, obj=None):
        return ("code",) if obj is not None else ()  # keywords, settings and messages name it

    def has_delete_permission(self, request, obj=None):
        return False

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        """The preview of the posted body and sample (a refused form), else of the saved body."""
        form = context["adminform"].form
        preview = None
        if form.is_bound and form.data.get("body"):
            sample = form.cleaned_data.get("sample_params", {}) if hasattr(form, "cleaned_data") else {}
            preview = catalog.template_preview(form.data["body"].strip(), sample)
        elif obj is not None:
            preview = catalog.template_preview(obj.body)
        context["preview"] = preview_data(preview) if preview is not None else None
        context["preview_url"] = reverse("admin:mobiletech_template_preview")
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        return [path("preview/", self.admin_site.admin_view(require_POST(self.preview_view)),
                     name="mobiletech_template_preview")] + super().get_urls()

    def preview_view(self, request):
        """POST (CSRF, add or change permission): body, sample_params → JSON with the text, its length of 160
        and the problem (400 for unreadable input)."""
        if not (self.has_add_permission(request) or self.has_change_permission(request)):
            raise PermissionDenied
        form = PreviewForm(request.POST)
        if not form.is_valid():
            problems = [str(error) for errors in form.errors.values() for error in errors]
            return JsonResponse({"ok": False, "error": " ".join(problems)}, status=400)
        return JsonResponse(preview_data(catalog.template_preview(form.cleaned_data["body"],
                                                                  form.cleaned_data["sample_params"])))


# --- billing keys, keyword actions ----------------------------------------------------------------------------------


class BillingKeyForm(forms.ModelForm):
    class Meta:
        model = BillingKey
        fields = ("code", "amount", "description", "active")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "code" in self.fields:
            self.fields["code"].validators.append(RegexValidator(catalog.BILLING_KEY_CODE))
        if "amount" in self.fields:  # not on a view-only page
            self.fields["amount"].validators.append(MinValueValidator(0))


@admin.register(BillingKey)
class BillingKeyAdmin(admin.ModelAdmin):
    form = BillingKeyForm
    list_display = ("code", "amount", "description", "active")
    list_filter = ("active",)
    search_fields = ("code", "description")

    def get_readonly_fields(self, request, obj=None):
        return ("code",) if obj is not None else ()  # messages and payments name it

    def has_delete_permission(self, request, obj=None):
        return False  # deactivate instead


class KeywordActionForm(forms.ModelForm):
    template_code = forms.ChoiceField(label=capfirst(_("reply template")), required=False,
                                      help_text=_("Required to buy. Empty for a stop: the configured stop "
                                                  "confirmation is sent."))

    class Meta:
        model = KeywordAction
        fields = ("keyword", "action", "subscription_type", "billing_key", "template_code", "recurrent", "active")
        help_texts = {"keyword": _("One word; matched in capitals against the first word of an inbound SMS.")}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "template_code" not in self.fields:  # a view-only page
            return
        self.fields["template_code"].choices = [("", "---------"), *(
            (code, f"{code} — {description}" if description else code)
            for code, description in Template.objects.order_by("code").values_list("code", "description"))]

    def clean_keyword(self):
        try:
            return catalog.normalize_keyword(self.cleaned_data["keyword"])
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc

    def clean(self):
        cleaned = super().clean()
        if "action" not in cleaned:
            return cleaned
        problems = catalog.keyword_problems(
            action=cleaned["action"], subscription_type=cleaned.get("subscription_type"),
            billing_key=cleaned.get("billing_key"), template_code=cleaned.get("template_code") or "",
            recurrent=bool(cleaned.get("recurrent")))
        for name, problem in problems.items():
            if name not in self.errors:
                self.add_error(name, problem)
        return cleaned


@admin.register(KeywordAction)
class KeywordActionAdmin(admin.ModelAdmin):
    form = KeywordActionForm
    list_display = ("keyword", "action", "subscription_type", "billing_key", "template_code", "recurrent", "active")
    list_filter = ("action", "recurrent", "active")
    list_select_related = ("subscription_type", "billing_key")
    search_fields = ("keyword", "template_code")


# --- the admin user page -----------------------------------------------------------------------------------------


def _may(request, app_model: str) -> bool:
    staff = getattr(request, "user", None)
    app, model = app_model.split(".")
    return bool(staff and staff.is_active and staff.is_staff
                and any(staff.has_perm(f"{app}.{action}_{model}") for action in ("view", "change")))


def user_context(request, user_obj=None, **_):
    """``admin.user.detail``: the reader's premium SMS number, latest inbound and outbound messages and SMS
    payments (gateways ``mobiletech*``) with their statuses; each part for staff who may see its table.
    Hidden when the reader has none of them."""
    if user_obj is None or user_obj.pk is None:
        return None
    parts = {name: _may(request, model) for name, model in (
        ("phone", "mobiletech.phonenumber"), ("inbound", "mobiletech.inboundmessage"),
        ("outbound", "mobiletech.outboundmessage"), ("payments", "payments.payment"))}
    if not any(parts.values()):
        return None
    context = {"can": parts, "phone": None, "inbound": [], "inbound_count": 0, "outbound": [], "outbound_count": 0,
               "payments": [], "payment_count": 0}
    if parts["phone"]:
        context["phone"] = PhoneNumber.objects.filter(user=user_obj).first()
    if parts["inbound"]:
        rows = InboundMessage.objects.filter(user=user_obj)
        context["inbound_count"] = rows.count()
        context["inbound"] = [{"row": row, "operator": operator_label(row.operator_type)}
                              for row in rows.order_by("-created_at", "-pk")[:WIDGET_ROWS]]
    if parts["outbound"]:
        rows = OutboundMessage.objects.filter(user=user_obj)
        context["outbound_count"] = rows.count()
        context["outbound"] = [{"row": row, "status": meaning_label(row.status, row.operator_type)}
                               for row in rows.select_related("template").order_by("-created_at", "-pk")[:WIDGET_ROWS]]
    if parts["payments"]:
        rows = Payment.objects.filter(user=user_obj, gateway__code__startswith=services.GATEWAY)
        context["payment_count"] = rows.count()
        payments = list(rows.select_related("gateway", "subscription_type").order_by("-created_at", "-pk")
                        [:WIDGET_ROWS])
        last = {}
        for row in OutboundMessage.objects.filter(payment__in=payments).order_by("pk"):
            last[row.payment_id] = row  # the latest message of each payment wins
        context["payments"] = [{"row": p, "message": last.get(p.pk),
                                "message_status": meaning_label(last[p.pk].status, last[p.pk].operator_type)
                                if p.pk in last else "—"} for p in payments]
    if not (context["phone"] or context["inbound_count"] or context["outbound_count"] or context["payment_count"]):
        return None
    return context


def register_widgets() -> None:
    """Register the ``admin.user.detail`` widget (idempotent). Called from ``MobiletechConfig.ready()``."""
    from masthead.core import widgets

    widgets.register("admin.user.detail", "mobiletech.user", template="mobiletech/widgets/user_premium_sms.html",
                     context=user_context, priority=260)
