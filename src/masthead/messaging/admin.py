"""Admin for SMS messaging: messages, batches, templates, inbound messages, opt-outs, notification rules,
the "Send SMS" page and the dashboard and user page widgets.

Every write goes through ``messaging.services`` or ``messaging.batches`` (house rule 1); a refused input
is a form error and writes nothing. Custom views are wrapped by ``admin_view`` (staff login and CSRF)
and check their own permission:

* messages (read-only): actions "Retry failed messages" (``services.retry``, change permission) and
  "Cancel queued messages" (``services.cancel``); the page shows the status history and the replies.
* ``smsmessage/send/`` (add permission on SMS messages): a text, or a template with parameters, and an
  optional send time for chosen readers. It is the page of the "Send SMS" action of the users list and
  the target of the form on the user page. A reader without a phone number or whose number opted out
  is skipped and reported; when nobody could be reached nothing is written and the page says why.
* batches: the add page counts the recipients first ("Count recipients"), then creates the batch
  with ``batches.create_batch``; a batch's page shows its progress and a cancel button
  (``batches.cancel_batch``, change permission).
* templates: saved by ``services.save_template`` after the same validation (errors on the form);
  ``smstemplate/preview/`` renders a text with the sample parameters (JSON: text, encoding, segments).
* inbound messages: read-only. Opt-outs: added by phone number (``services.opt_out``), deleted = opted
  back in (``services.opt_in``); staff changes send no confirmation SMS (never a bare number from the admin).

:func:`register_widgets` registers the widgets and adds "Send SMS" to the users list; the messaging
app config calls it from ``ready()``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import transaction
from django.db.models import OuterRef, Q, Subquery
from django.http import (
    Http404,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
)
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.text import Truncator, capfirst
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from masthead.core.admin import ReadOnlyInline
from masthead.core import clock
from masthead.messaging import batches, queries, segments, services, templates
from masthead.messaging.models import (
    InboundSms,
    NotificationRule,
    OptOut,
    SmsBatch,
    SmsMessage,
    SmsStatusChange,
    SmsTemplate,
)
from masthead.subscriptions.models import ContentAccess
from masthead.users.models import User
from masthead.users.phones import InvalidPhoneNumber, normalize_phone

M = SmsMessage
#: at most this many readers per "Send SMS" (more: a batch fans out in the background)
MAX_RECIPIENTS = 1000
WIDGET_ROWS = 10
#: refusals of ``queue_sms`` that concern one reader (skipped and reported); any other is an input error
RECIPIENT_REFUSALS = frozenset({"no_phone_number", "opted_out", "user_inactive"})
STATUS_COLOURS = {
    M.QUEUED: "#5a6a7a", M.SENDING: "#1565c0", M.SENT: "#00838f", M.DELIVERED: "#2e7d32",
    M.FAILED: "#b00020", M.REJECTED: "#b00020", M.EXPIRED: "#e65100", M.CANCELED: "#757575",
}
ENCODINGS = {M.GSM7: _("GSM-7"), M.UCS2: _("UCS-2 (Unicode)")}
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def may_send(request) -> bool:
    """Sending an SMS from the admin needs the add permission on SMS messages."""
    user = getattr(request, "user", None)
    return bool(user and user.is_active and user.is_staff and user.has_perm("messaging.add_smsmessage"))


def may_see_messages(request) -> bool:
    user = getattr(request, "user", None)
    return bool(user and user.is_active and user.is_staff
                and any(user.has_perm(f"messaging.{action}_smsmessage") for action in ("view", "change")))


def error_lines(form: forms.Form) -> list[str]:
    """Every error of ``form``, a visible field's prefixed with its label."""
    lines = []
    for name, errors in form.errors.items():
        field_ = form.fields.get(name)
        label = f"{capfirst(field_.label)}: " if field_ is not None and not field_.widget.is_hidden else ""
        lines += [f"{label}{error}" for error in errors]
    return lines


def status_badge(status: str, label: str) -> str:
    return format_html('<strong class="mh-sms-status" data-status="{}" style="color: {}">{}</strong>', status,
                       STATUS_COLOURS.get(status, "inherit"), label)


def safe_next(request, candidate: str, fallback: str) -> str:
    if candidate and url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()},
                                                     require_https=request.is_secure()):
        return candidate
    return fallback


def user_link(user: User | None) -> str | None:
    """A link to the user's admin page; None (shown as the admin's empty value) without a user."""
    if user is None:
        return None
    return format_html('<a href="{}">{}</a>', reverse("admin:users_user_change", args=[user.pk]), user.email)


# --- the text of a message: shared by "Send SMS" and batches -------------------------------------------


def template_choices() -> list[tuple[str, str]]:
    """Active template codes (one entry per code, whatever its languages), with a description."""
    seen: dict[str, str] = {}
    for code, description in SmsTemplate.objects.filter(active=True).order_by("code", "locale").values_list(
            "code", "description"):
        if code not in seen or (description and not seen[code]):
            seen[code] = description
    return [(code, f"{code} — {description}" if description else code) for code, description in seen.items()]


def parse_json_object(raw: str) -> dict:
    raw = (raw or "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValidationError(gettext("This is not valid JSON: %(error)s") % {"error": exc}) from exc
    if not isinstance(value, dict):
        raise ValidationError(gettext('Give a JSON object, e.g. {"code": "1234"}.'))
    return value


class DateTimeLocalInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, attrs=None):
        super().__init__(attrs, format="%Y-%m-%dT%H:%M")


class MessageForm(forms.Form):
    """A text, or a template with parameters, and an optional send time."""

    body = forms.CharField(label=_("text"), required=False, widget=forms.Textarea(attrs={"rows": 4, "cols": 60}))
    template = forms.ChoiceField(label=_("template"), required=False)
    params = forms.CharField(
        label=_("template parameters"), required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text=_('A JSON object, e.g. {"code": "1234"}. first_name and last_name are filled in from each reader.'))
    send_at = forms.DateTimeField(label=_("send at"), required=False, widget=DateTimeLocalInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["template"].choices = [("", "—"), *template_choices()]
        self.fields["send_at"].help_text = gettext("Empty: now. Local time (%(zone)s).") % {"zone": settings.TIME_ZONE}

    def clean_params(self):
        return parse_json_object(self.cleaned_data["params"])

    def clean_send_at(self):
        value = self.cleaned_data["send_at"]
        if value is not None and value < clock.now():
            raise ValidationError(gettext("This time has passed: choose a later one, or leave it empty to send now."))
        return value

    def clean(self):
        cleaned = super().clean()
        if {"body", "template"} & set(self.errors):
            return cleaned
        body, template = cleaned.get("body"), cleaned.get("template")
        if not body and not template:
            raise ValidationError(gettext("Write a text or choose a template."))
        if body and template:
            raise ValidationError(gettext("Write a text or choose a template, not both."))
        if body:
            if cleaned.get("params"):
                self.add_error("params", gettext("Parameters are used with a template only."))
            try:
                services.compose(body=body)
            except services.SmsError as exc:
                self.add_error("body", exc.message)
        return cleaned


# --- "Send SMS" to chosen readers -------------------------------------------------------------------------


class SendForm(MessageForm):
    users = forms.ModelMultipleChoiceField(
        queryset=User.objects.all(), widget=forms.MultipleHiddenInput,
        error_messages={"required": _("Choose at least one reader."),
                        "invalid_choice": _("A chosen reader does not exist any more."),
                        "invalid_pk_value": _("A chosen reader does not exist any more.")})
    next = forms.CharField(required=False, widget=forms.HiddenInput)

    def clean_users(self):
        users = self.cleaned_data["users"]
        if users.count() > MAX_RECIPIENTS:
            raise ValidationError(too_many_message())
        return users


def too_many_message() -> str:
    return gettext("Send to at most %(max)s readers at once; for more, create an SMS batch.") % {
        "max": MAX_RECIPIENTS}


@dataclass
class SendOutcome:
    queued: list[SmsMessage] = field(default_factory=list)
    skipped: list[tuple[User, str]] = field(default_factory=list)


@transaction.atomic
def send_to(users: list[User], *, body: str = "", template_code: str = "", params: dict | None = None,
            send_at=None, by: str) -> SendOutcome:
    """Queue one SMS per reader (a staff member as a colleague; ``queue_sms`` gives a template the
    recipient's first_name and last_name). A reader without a phone number, inactive or opted out is
    skipped; any other refusal (the text or the template) is the input's: SmsError, nothing written."""
    outcome = SendOutcome()
    for user in users:
        recipient = {"staff": user} if user.is_staff else {"user": user}
        try:
            with transaction.atomic():
                message = services.queue_sms(**recipient, body=body or None, template_code=template_code or None,
                                             params=(params or None) if template_code else None, send_at=send_at,
                                             created_by=by)
        except services.SmsError as exc:
            if exc.code not in RECIPIENT_REFUSALS:
                raise
            outcome.skipped.append((user, exc.message))
        else:
            outcome.queued.append(message)
    return outcome


def chosen_users(raw_ids) -> list[User]:
    ids = [int(v) for v in raw_ids if str(v).isdigit() and int(v) < 2**63][: MAX_RECIPIENTS + 1]
    return list(User.objects.filter(pk__in=ids).order_by("pk"))


def send_page(request, form: SendForm, users: list[User]) -> TemplateResponse:
    audience = queries.audience(users)
    context = {
        **admin.site.each_context(request),
        "title": gettext("Send SMS"), "opts": M._meta, "form": form, "audience": audience,
        "errors": error_lines(form) if form.is_bound else [],
        "shown": 50, "visible_fields": [f for f in form if not f.is_hidden],
        "hidden_fields": [f for f in form if f.is_hidden],
        "send_url": reverse("admin:messaging_smsmessage_send"),
    }
    return TemplateResponse(request, "admin/messaging/smsmessage/send.html", context)


def send_view(request):
    """GET ``?user=<id>`` (repeatable): the form for those readers. POST: queue, then back to ``next``
    with the counts; refused input → the page again with the errors, nothing written."""
    if not may_send(request):
        raise PermissionDenied
    if request.method != "POST":
        users = chosen_users(request.GET.getlist("user"))
        if len(users) > MAX_RECIPIENTS:
            messages.error(request, too_many_message())
            users = users[:MAX_RECIPIENTS]
        form = SendForm(initial={"users": [u.pk for u in users], "next": request.GET.get("next", "")})
        return send_page(request, form, users)
    form = SendForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        users = list(data["users"].order_by("pk"))
        try:
            outcome = send_to(users, body=data["body"], template_code=data["template"], params=data["params"],
                              send_at=data["send_at"], by=request.user.email)
        except services.SmsError as exc:
            form.add_error(None, exc.message)
        else:
            if outcome.queued:
                report_sent(request, outcome, data["send_at"])
                return HttpResponseRedirect(safe_next(request, data["next"],
                                                      reverse("admin:messaging_smsmessage_changelist")))
            for _user, reason in outcome.skipped:
                form.add_error(None, reason)
    return send_page(request, form, chosen_users(request.POST.getlist("users")))


def report_sent(request, outcome: SendOutcome, send_at) -> None:
    count = len(outcome.queued)
    if send_at:
        text = ngettext("%(count)d SMS queued to be sent at %(when)s", "%(count)d SMS queued to be sent at %(when)s",
                        count) % {
            "count": count, "when": date_format(clock.localtime(send_at), "DATETIME_FORMAT")}
    else:
        text = ngettext("%(count)d SMS queued.", "%(count)d SMS queued.", count) % {"count": count}
    messages.success(request, text)
    if outcome.skipped:
        skipped = len(outcome.skipped)
        reasons = "; ".join(reason for _user, reason in outcome.skipped[:20])
        messages.warning(request, ngettext("%(count)d reader skipped: %(reasons)s",
                                           "%(count)d readers skipped: %(reasons)s", skipped)
                         % {"count": skipped, "reasons": reasons})


@admin.action(description=_("Send SMS"), permissions=["send_sms"])
def send_sms(modeladmin, request, queryset):
    """The users list's action: the "Send SMS" page for the selected readers (it posts to ``send/``)."""
    users = list(queryset.order_by("pk")[: MAX_RECIPIENTS + 1])
    if len(users) > MAX_RECIPIENTS:
        modeladmin.message_user(request, too_many_message(), messages.ERROR)
        return None
    form = SendForm(initial={"users": [u.pk for u in users], "next": request.get_full_path()})
    return send_page(request, form, users)


def install_user_action() -> None:
    """Add "Send SMS" to the users list without touching the users admin: the action joins the
    registered ``UserAdmin``'s actions, shown to staff who may send (``has_send_sms_permission``)."""
    from masthead.users import admin as _users_admin  # noqa: F401 (registers UserAdmin)

    user_admin = admin.site.get_model_admin(User)
    actions = list(user_admin.actions or ())
    if send_sms not in actions:
        user_admin.actions = [*actions, send_sms]
    user_admin.has_send_sms_permission = may_send


# --- messages -----------------------------------------------------------------------------------------------


class StatusHistoryInline(ReadOnlyInline):
    model = SmsStatusChange
    fields = readonly_fields = ("created_at", "old_status", "new_status", "detail")
    verbose_name_plural = _("status history")


class RepliesInline(ReadOnlyInline):
    model = InboundSms
    fk_name = "reply_to"
    fields = readonly_fields = ("received_at", "phone_from", "text", "keyword", "inbound_link")
    verbose_name = _("reply")
    verbose_name_plural = _("replies")

    @admin.display(description=_("inbound SMS"))
    def inbound_link(self, obj):
        return format_html('<a href="{}">#{}</a>', reverse("admin:messaging_inboundsms_change", args=[obj.pk]),
                           obj.pk)


class BatchFilter(admin.SimpleListFilter):
    """The latest batches, and the chosen one (a batch's page links here)."""

    title = _("batch")
    parameter_name = "batch__id__exact"
    LATEST = 15

    def lookups(self, request, model_admin):
        value = self.value()
        rows = list(SmsBatch.objects.order_by("-created_at", "-pk").values_list("pk", "name")[: self.LATEST])
        if value is not None:
            if not value.isdigit():
                raise IncorrectLookupParameters(value)
            if int(value) not in {pk for pk, _name in rows}:
                rows += list(SmsBatch.objects.filter(pk=int(value)).values_list("pk", "name"))
        return [(str(pk), f"#{pk} {name}") for pk, name in rows]

    def queryset(self, request, queryset):
        return queryset if self.value() is None else queryset.filter(batch_id=int(self.value()))


class RecipientFilter(admin.SimpleListFilter):
    """Messages to one user, as reader or as staff member; set by the user page's link."""

    title = _("recipient")
    parameter_name = "recipient"

    def lookups(self, request, model_admin):
        value = self.value()
        if value is None:
            return []
        if not value.isdigit():
            raise IncorrectLookupParameters(value)
        email = User.objects.filter(pk=int(value)).values_list("email", flat=True).first()
        return [(value, email or f"#{value}")]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        pk = int(self.value())
        return queryset.filter(Q(user_id=pk) | Q(staff_id=pk))


class PhoneSearchMixin:
    """A search term that is a phone number also finds its E.164 form (0908 123 456 → +421908123456)."""

    phone_field = "phone_number"

    def get_search_results(self, request, queryset, search_term):
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        try:
            number = normalize_phone(search_term)
        except InvalidPhoneNumber:
            return found, may_have_duplicates
        if number != search_term.strip():
            found = found | queryset.filter(**{self.phone_field: number})
        return found, may_have_duplicates


@admin.register(SmsMessage)
class SmsMessageAdmin(PhoneSearchMixin, admin.ModelAdmin):
    list_display = ("id", "recipient_email", "phone_number", "status_display", "segments", "created_at", "sent_at",
                    "delivered_at", "gateway", "batch_link", "created_by")
    list_display_links = ("id",)
    list_filter = ("status", "gateway", BatchFilter, ("created_at", admin.DateFieldListFilter), RecipientFilter)
    list_select_related = ("user", "staff", "batch")
    search_fields = ("phone_number", "user__email", "staff__email", "=gateway_message_id")
    actions = ("retry_failed", "cancel_queued")
    inlines = (StatusHistoryInline, RepliesInline)
    change_form_template = "admin/messaging/smsmessage/change_form.html"
    fieldsets = (
        (None, {"fields": ("recipient_link", "phone_number", "status_display", "body", "encoding_display",
                           "segments", "template", "params", "batch_link", "created_by", "notification",
                           "transactional", "urgent")}),
        (_("Dates"), {"fields": ("created_at", "scheduled_at", "next_attempt_at", "valid_until", "sent_at",
                                 "delivered_at", "updated_at")}),
        (_("Gateway"), {"fields": ("gateway", "gateway_message_id", "attempts", "error_message")}),
    )
    readonly_fields = tuple(name for _title, options in fieldsets for name in options["fields"])

    @admin.display(description=_("recipient"), ordering="user__email")
    def recipient_email(self, obj):
        if obj.user_id:
            return obj.user.email
        if obj.staff_id:
            return format_html("{} <small>({})</small>", obj.staff.email, gettext("staff"))
        return None  # the system's own answers to a number (opt-out confirmations)

    @admin.display(description=_("recipient"))
    def recipient_link(self, obj):
        if obj.staff_id:
            return format_html("{} ({})", user_link(obj.staff), gettext("staff member"))
        return user_link(obj.user)

    @admin.display(description=_("status"), ordering="status")
    def status_display(self, obj):
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description=_("encoding"))
    def encoding_display(self, obj):
        return ENCODINGS.get(obj.encoding, obj.encoding)

    @admin.display(description=_("batch"), ordering="batch")
    def batch_link(self, obj):
        if not obj.batch_id:
            return None
        return format_html('<a href="{}">{}</a>', reverse("admin:messaging_smsbatch_change", args=[obj.batch_id]),
                           obj.batch.name)

    def has_add_permission(self, request):
        return False  # messages are queued by "Send SMS", batches, notifications and the API

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        """The change permission allows the actions; a message's own page is read-only."""
        return obj is None and super().has_change_permission(request)

    # --- actions ---

    def _each(self, request, queryset, wanted: str, service, done_text, skipped_text) -> None:
        done = skipped = 0
        for message in queryset.order_by("pk"):
            if message.status != wanted:
                skipped += 1
                continue
            try:
                service(message=message, by=request.user.email)
            except services.SmsError:  # it moved meanwhile
                skipped += 1
                continue
            done += 1
        if done:
            self.message_user(request, done_text(done), messages.SUCCESS)
        if skipped:
            self.message_user(request, skipped_text(skipped), messages.WARNING)

    @admin.action(description=_("Retry failed messages"), permissions=["change"])
    def retry_failed(self, request, queryset):
        self._each(request, queryset, M.FAILED, services.retry,
                   lambda n: ngettext("%(count)d message queued again.", "%(count)d messages queued again.", n)
                   % {"count": n},
                   lambda n: ngettext("%(count)d selected message had not failed: nothing changed.",
                                      "%(count)d selected messages had not failed: nothing changed.", n)
                   % {"count": n})

    @admin.action(description=_("Cancel queued messages"), permissions=["change"])
    def cancel_queued(self, request, queryset):
        self._each(request, queryset, M.QUEUED, services.cancel,
                   lambda n: ngettext("%(count)d message canceled.", "%(count)d messages canceled.", n)
                   % {"count": n},
                   lambda n: ngettext("%(count)d selected message was not queued: nothing changed.",
                                      "%(count)d selected messages were not queued: nothing changed.", n)
                   % {"count": n})

    # --- "Send SMS" ---

    def get_urls(self):
        return [path("send/", self.admin_site.admin_view(send_view), name="messaging_smsmessage_send")] + \
            super().get_urls()


# --- batches -------------------------------------------------------------------------------------------------


def parse_readers(raw: str) -> list[int]:
    """Reader ids or e-mails separated by commas, semicolons, spaces or new lines → their ids."""
    ids, emails, wrong = set(), set(), []
    for token in re.split(r"[\s,;]+", raw or ""):
        if not token:
            continue
        if token.isdigit() and 0 < int(token) < 2**63:
            ids.add(int(token))
        elif "@" in token:
            emails.add(User.objects.normalize_email(token))
        else:
            wrong.append(token)
    if wrong:
        raise ValidationError(gettext("Not a reader id or e-mail: %(values)s") % {"values": ", ".join(wrong[:20])})
    if len(ids) + len(emails) > batches.MAX_USER_IDS:
        raise ValidationError(gettext("Give at most %(max)s readers.") % {"max": batches.MAX_USER_IDS})
    found = list(User.objects.filter(Q(pk__in=ids) | Q(email__in=emails)).values_list("pk", "email"))
    unknown = sorted(map(str, ids - {pk for pk, _email in found})) + sorted(emails - {email for _pk, email in found})
    if unknown:
        raise ValidationError(gettext("Unknown readers: %(values)s") % {"values": ", ".join(unknown[:20])})
    return sorted({pk for pk, _email in found})


class BatchForm(MessageForm):
    name = forms.CharField(label=_("name"), max_length=255)
    readers = forms.CharField(label=_("readers"), required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
                              help_text=_("Reader ids or e-mails, separated by commas, spaces or new lines."))
    content_access = forms.ChoiceField(label=_("or readers with access to"), required=False,
                                       help_text=_("Readers with a running subscription that grants it."))
    count = forms.IntegerField(required=False, widget=forms.HiddenInput)
    field_order = ("name", "readers", "content_access", "body", "template", "params", "send_at")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["content_access"].choices = [
            ("", "—"), *((name, name) for name in ContentAccess.objects.order_by("sorting", "name")
                         .values_list("name", flat=True))]

    def clean_readers(self):
        return parse_readers(self.cleaned_data["readers"])

    def clean(self):
        cleaned = super().clean()
        if not {"readers", "content_access"} & set(self.errors):
            readers, access = cleaned.get("readers"), cleaned.get("content_access")
            if readers and access:
                self.add_error("content_access", gettext("Choose readers or a content access, not both."))
            elif not readers and not access:
                self.add_error("readers", gettext("Choose the readers: their ids or e-mails, or a content access."))
        template_code = cleaned.get("template")
        if template_code and not self.errors:
            # The batch renders the text per reader: try it once so a missing parameter is an error here.
            try:
                services.compose(template=services.template_for(template_code),
                                 params={"first_name": "", "last_name": "", **cleaned.get("params", {})})
            except services.SmsError as exc:
                self.add_error("template", exc.message)
        return cleaned


@admin.register(SmsBatch)
class SmsBatchAdmin(admin.ModelAdmin):
    list_display = ("name", "status", "total", "fanned_out", "skipped", "progress", "scheduled_at", "created_by",
                    "created_at", "messages_link")
    list_filter = ("status", ("created_at", admin.DateFieldListFilter))
    search_fields = ("name", "created_by")

    @admin.display(description=_("progress"))
    def progress(self, obj):
        return f"{progress_percent(obj)} %"

    @admin.display(description=_("messages"))
    def messages_link(self, obj):
        return format_html('<a href="{}?{}={}">{}</a>', reverse("admin:messaging_smsmessage_changelist"),
                           BatchFilter.parameter_name, obj.pk, gettext("messages"))

    def has_delete_permission(self, request, obj=None):
        return False  # a batch is canceled, never deleted: its messages are history

    def may_change(self, request) -> bool:
        return super().has_change_permission(request)

    def get_urls(self):
        return [path("<path:object_id>/cancel/", self.admin_site.admin_view(require_POST(self.cancel_view)),
                     name="messaging_smsbatch_cancel")] + super().get_urls()

    def add_view(self, request, form_url="", extra_context=None):
        """GET: the form. POST "Count recipients": the form again with the number of recipients and a
        "Send" button; POST "Send" (after a count): ``batches.create_batch``, then the batch's page. A
        changed number of recipients shows the new count first; a refusal is a form error."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        audience = None
        notice = ""
        form = BatchForm(request.POST if request.method == "POST" else None)
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            audience = queries.batch_audience(user_ids=data["readers"], content_access=data["content_access"])
            if "_send" in request.POST and data["count"] is not None:
                if audience["count"] != data["count"]:
                    notice = gettext("The number of recipients has changed: check it and send again.")
                elif audience["count"] == 0:
                    form.add_error(None, gettext("No reader would receive this batch."))
                    audience = None
                else:
                    try:
                        batch = batches.create_batch(
                            name=data["name"], body=data["body"] or None, template_code=data["template"] or None,
                            params=data["params"], user_ids=data["readers"], content_access=data["content_access"],
                            send_at=data["send_at"], created_by=request.user.email)
                    except services.SmsError as exc:
                        form.add_error(None, exc.message)
                        audience = None
                    else:
                        self.log_addition(request, batch, [{"added": {}}])
                        messages.success(request, ngettext(
                            "Batch “%(name)s” created for %(count)d reader.",
                            "Batch “%(name)s” created for %(count)d readers.", batch.total)
                            % {"name": batch.name, "count": batch.total})
                        return HttpResponseRedirect(reverse("admin:messaging_smsbatch_change", args=[batch.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Add SMS batch"), "opts": self.opts, "form": form, "audience": audience,
            "notice": notice, "errors": error_lines(form) if form.is_bound else [],
            "visible_fields": [f for f in form if not f.is_hidden],
        }
        return TemplateResponse(request, "admin/messaging/smsbatch/add.html", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """A batch's progress: recipients, fanned out, skipped, messages per status; cancel button."""
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        batch = self.get_object(request, unquote(object_id))
        if batch is None:
            raise Http404
        if not self.has_view_or_change_permission(request, batch):
            raise PermissionDenied
        counts = batches.counts(batch)
        labels = dict(M.STATUSES)
        can_cancel = self.may_change(request) and (
            batch.status in (SmsBatch.DRAFT, SmsBatch.FANNING_OUT) or counts[M.QUEUED] > 0)
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("SMS batch %(name)s") % {"name": batch.name}, "opts": self.opts, "batch": batch,
            "original": batch, "counts": [(code, labels[code], n) for code, n in counts.items()],
            "progress": progress_percent(batch), "can_cancel": can_cancel,
            "messages_url": f"{reverse('admin:messaging_smsmessage_changelist')}?{BatchFilter.parameter_name}={batch.pk}",
        }
        return TemplateResponse(request, "admin/messaging/smsbatch/progress.html", context)

    def cancel_view(self, request, object_id):
        batch = self.get_object(request, unquote(object_id))
        if batch is None:
            raise Http404
        if not self.may_change(request):
            raise PermissionDenied
        canceled = batches.cancel_batch(batch=batch, by=request.user.email)
        self.log_change(request, batch, gettext("Canceled"))
        messages.success(request, ngettext("Batch canceled: %(count)d queued message canceled.",
                                           "Batch canceled: %(count)d queued messages canceled.", canceled)
                         % {"count": canceled})
        return HttpResponseRedirect(reverse("admin:messaging_smsbatch_change", args=[batch.pk]))


def progress_percent(batch: SmsBatch) -> int:
    """How much of the fan-out is done (recipients queued or skipped), in percent."""
    if batch.status == SmsBatch.QUEUED:
        return 100
    if not batch.total:
        return 0
    return min(100, (batch.fanned_out + batch.skipped) * 100 // batch.total)


# --- templates ----------------------------------------------------------------------------------------------


def parse_names(raw) -> list[str]:
    names = []
    for token in re.split(r"[\s,;]+", raw or ""):
        if not token:
            continue
        if not NAME.match(token):
            raise ValidationError(gettext("Not a parameter name: %(name)s") % {"name": token})
        if token not in names:
            names.append(token)
    return names


def template_problem(exc: Exception) -> str:
    return gettext("The template is not valid: %(problem)s") % {"problem": exc}


def template_preview(*, body: str, parameters: list[str], sample: dict, max_segments: int) -> dict:
    """The text rendered with the sample parameters (a declared name without a sample value stands
    for itself, as in the validation), its encoding and segments, and the validation's problem."""
    error = ""
    try:
        templates.validate(body, parameters, sample, max_segments)
    except templates.TemplateProblem as exc:
        error = template_problem(exc)
    try:
        text = templates.render(body, {**{name: name for name in parameters if name not in sample}, **sample})
    except templates.TemplateProblem:
        return {"ok": False, "error": error, "text": "", "encoding": "", "encoding_label": "", "units": 0,
                "segments": 0, "max_segments": max_segments, "summary": ""}
    seg = segments.segment(text)
    label = str(ENCODINGS.get(seg.encoding, seg.encoding))
    summary = ngettext("%(encoding)s, %(units)d characters, %(segments)d segment",
                       "%(encoding)s, %(units)d characters, %(segments)d segments", seg.segments) % {
        "encoding": label, "units": seg.units, "segments": seg.segments}
    return {"ok": not error, "error": error, "text": text, "encoding": seg.encoding, "encoding_label": label,
            "units": seg.units, "segments": seg.segments, "max_segments": max_segments, "summary": summary}


class TemplateFieldsMixin:
    """The parsed fields of a template, shared by the template form and the preview."""

    def clean_parameters(self):
        return parse_names(self.cleaned_data.get("parameters"))

    def clean_sample_params(self):
        return parse_json_object(self.cleaned_data.get("sample_params"))


SEGMENT_LIMITS = [MinValueValidator(1), MaxValueValidator(segments.MAX_SEGMENTS)]


class TemplateForm(TemplateFieldsMixin, forms.ModelForm):
    locale = forms.ChoiceField(label=capfirst(_("language")), required=False,
                               help_text=_("Empty: any language (used when no template of the reader's language exists)."))
    parameters = forms.CharField(label=capfirst(_("parameters")), required=False,
                                 help_text=_("The names the text may use, separated by commas, e.g. first_name, end_date."))
    sample_params = forms.CharField(
        label=capfirst(_("sample parameters")), required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_('A JSON object, e.g. {"first_name": "Jana"}: the preview and the length check use it.'))
    max_segments = forms.IntegerField(label=capfirst(_("maximum segments")), initial=3, validators=SEGMENT_LIMITS)

    class Meta:
        model = SmsTemplate
        fields = ("code", "locale", "body", "description", "parameters", "sample_params", "max_segments",
                  "transactional", "active")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "locale" in self.fields:
            self.fields["locale"].choices = [("", gettext("any language")), *settings.LANGUAGES]
        if self.instance.pk is not None:
            self.initial["parameters"] = ", ".join(self.instance.parameters or [])
            self.initial["sample_params"] = json.dumps(self.instance.sample_params or {}, ensure_ascii=False)

    def clean(self):
        cleaned = super().clean()
        if not {"body", "parameters", "sample_params", "max_segments"} & set(self.errors) and "body" in cleaned:
            try:  # the validation of services.save_template, as a form error
                templates.validate(cleaned["body"], cleaned["parameters"], cleaned["sample_params"],
                                   cleaned["max_segments"])
            except templates.TemplateProblem as exc:
                self.add_error("body", template_problem(exc))
        return cleaned


class PreviewForm(TemplateFieldsMixin, forms.Form):
    body = forms.CharField(strip=False)
    parameters = forms.CharField(required=False)
    sample_params = forms.CharField(required=False)
    max_segments = forms.IntegerField(required=False, validators=SEGMENT_LIMITS)


@admin.register(SmsTemplate)
class SmsTemplateAdmin(admin.ModelAdmin):
    form = TemplateForm
    change_form_template = "admin/messaging/smstemplate/change_form.html"
    list_display = ("code", "locale", "description", "max_segments", "transactional", "active", "updated_at")
    list_filter = ("active", "transactional", "locale")
    search_fields = ("code", "description", "body")

    def get_readonly_fields(self, request, obj=None):
        # save_template finds the template by code and language: renaming them would make another one.
        return ("code", "locale") if obj is not None else ()

    def has_delete_permission(self, request, obj=None):
        return False  # messages and batches point at templates: deactivate instead

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        template, _outcome = services.save_template(
            code=obj.code if change else data["code"], locale=obj.locale if change else data["locale"],
            body=data["body"], parameters=data["parameters"], sample_params=data["sample_params"],
            max_segments=data["max_segments"], description=data["description"],
            transactional=data["transactional"], active=data["active"])
        obj.pk = template.pk
        obj._state.adding = False
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        """No related rows."""

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["preview"] = (template_preview(body=obj.body, parameters=obj.parameters or [],
                                               sample=obj.sample_params or {}, max_segments=obj.max_segments)
                              if obj is not None else None)
        context["preview_url"] = reverse("admin:messaging_smstemplate_preview")
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        return [path("preview/", self.admin_site.admin_view(require_POST(self.preview_view)),
                     name="messaging_smstemplate_preview")] + super().get_urls()

    def preview_view(self, request):
        """POST (CSRF, add or change permission): body, parameters, sample_params, max_segments → JSON
        with the rendered text, encoding, segments and the validation's problem (400 for unreadable input)."""
        if not (self.has_add_permission(request) or self.has_change_permission(request)):
            raise PermissionDenied
        form = PreviewForm(request.POST)
        if not form.is_valid():
            return JsonResponse({"ok": False, "error": " ".join(error_lines(form))}, status=400)
        data = form.cleaned_data
        return JsonResponse(template_preview(body=data["body"], parameters=data["parameters"],
                                             sample=data["sample_params"], max_segments=data["max_segments"] or 3))


# --- inbound messages, opt-outs, notification rules -----------------------------------------------------------


class KeywordFilter(admin.SimpleListFilter):
    title = _("keyword")
    parameter_name = "keyword"

    def lookups(self, request, model_admin):
        return [("stop", _("stop (opt-out)")), ("start", _("start (opt back in)")), ("none", _("none (a reply)"))]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "stop":
            return queryset.filter(keyword__in=services.STOP_WORDS)
        if value == "start":
            return queryset.filter(keyword__in=services.START_WORDS)
        if value == "none":
            return queryset.filter(keyword="")
        return queryset


@admin.register(InboundSms)
class InboundSmsAdmin(PhoneSearchMixin, admin.ModelAdmin):
    phone_field = "phone_from"
    list_display = ("phone_from", "reader", "text_excerpt", "received_at", "reply_to_link", "keyword", "gateway")
    list_filter = (KeywordFilter, "gateway", ("received_at", admin.DateFieldListFilter))
    list_select_related = ("user", "reply_to")
    search_fields = ("phone_from", "text", "user__email")
    fields = readonly_fields = ("phone_from", "phone_to", "reader", "text", "received_at", "reply_to_link", "keyword",
                                "gateway", "gateway_message_id", "processed_at", "created_at")

    @admin.display(description=_("reader"), ordering="user__email")
    def reader(self, obj):
        return user_link(obj.user) if obj.user_id else None

    @admin.display(description=_("text"))
    def text_excerpt(self, obj):
        return Truncator(obj.text).chars(60)

    @admin.display(description=_("answers"))
    def reply_to_link(self, obj):
        if not obj.reply_to_id:
            return None
        return format_html('<a href="{}">#{} {}</a>', reverse("admin:messaging_smsmessage_change",
                                                              args=[obj.reply_to_id]),
                           obj.reply_to_id, Truncator(obj.reply_to.body).chars(40))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class OptOutForm(forms.ModelForm):
    class Meta:
        model = OptOut
        fields = ("phone_number",)

    def clean_phone_number(self):
        try:
            number = normalize_phone(self.cleaned_data["phone_number"])
        except InvalidPhoneNumber as exc:
            raise ValidationError(str(exc)) from exc
        if OptOut.objects.filter(phone_number=number).exists():
            raise ValidationError(gettext("The number %(number)s has already opted out.") % {"number": number})
        return number


@admin.register(OptOut)
class OptOutAdmin(PhoneSearchMixin, admin.ModelAdmin):
    """Add = ``services.opt_out`` (no confirmation SMS); delete = ``services.opt_in``
    (the number gets its confirmation too)."""

    form = OptOutForm
    list_display = ("phone_number", "reader", "source", "created_at")
    search_fields = ("phone_number", "source")
    fields = ("phone_number",)

    def get_queryset(self, request):
        email = User.objects.filter(phone_number=OuterRef("phone_number")).order_by("pk").values("email")[:1]
        return super().get_queryset(request).annotate(reader_email=Subquery(email))

    @admin.display(description=_("reader"))
    def reader(self, obj):
        return getattr(obj, "reader_email", None)

    def get_fields(self, request, obj=None):
        return ("phone_number", "reader", "source", "created_at") if obj is not None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return ("phone_number", "reader", "source", "created_at") if obj is not None else ()

    def has_change_permission(self, request, obj=None):
        return False  # a number is out or not: add or delete

    def save_model(self, request, obj, form, change):
        number = form.cleaned_data["phone_number"]
        if not services.opt_out(phone_number=number, source=f"admin {request.user.email}", confirm=False):
            messages.warning(request, gettext("The number %(number)s had already opted out.") % {"number": number})
        obj.pk = OptOut.objects.get(phone_number=number).pk
        obj._state.adding = False
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        services.opt_in(phone_number=obj.phone_number, confirm=False)

    def delete_queryset(self, request, queryset):
        for number in queryset.values_list("phone_number", flat=True):
            services.opt_in(phone_number=number, confirm=False)


@admin.register(NotificationRule)
class NotificationRuleAdmin(admin.ModelAdmin):
    list_display = ("code", "event", "days", "template_code", "transactional", "urgent", "active")
    list_filter = ("event", "active", "transactional", "urgent")
    search_fields = ("code", "template_code")


# --- widgets --------------------------------------------------------------------------------------------------


def dashboard_context(request, **_):
    """``admin.dashboard``: today's sent, delivered and failed messages, the queue, the delivery rate."""
    if not may_see_messages(request):
        return None
    now = clock.now()
    start, end = queries.day_bounds(now)
    changelist = reverse("admin:messaging_smsmessage_changelist")
    return {"sms": queries.today(now),
            "today_url": f"{changelist}?{urlencode({'created_at__gte': str(start), 'created_at__lt': str(end)})}",
            "queue_url": f"{changelist}?status__in={M.QUEUED},{M.SENDING}"}


def user_context(request, user_obj=None, **_):
    """``admin.user.detail``: the user's latest messages and a form to send one (posted to ``send/``)."""
    if user_obj is None or user_obj.pk is None:
        return None
    can_see, can_send = may_see_messages(request), may_send(request)
    if not (can_see or can_send):
        return None
    context = {"can_see": can_see, "can_send": can_send, "rows": [], "count": 0,
               "changelist_url": reverse("admin:messaging_smsmessage_changelist")}
    if can_see:
        found = queries.user_messages(user_obj, limit=WIDGET_ROWS)
        context.update(count=found["count"],
                       rows=[(m, STATUS_COLOURS.get(m.status, "inherit")) for m in found["messages"]])
    if can_send:
        context.update({
            "form": SendForm(), "send_url": reverse("admin:messaging_smsmessage_send"),
            "back": request.get_full_path() if request is not None else "",
            "opted_out": bool(user_obj.phone_number) and services.is_opted_out(user_obj.phone_number),
        })
    return context


def register_widgets() -> None:
    """Register the dashboard and user page widgets and add "Send SMS" to the users list (idempotent:
    a second call changes nothing). Called from ``MessagingConfig.ready()``."""
    from masthead.core import widgets

    widgets.register("admin.dashboard", "messaging.today", template="messaging/widgets/today.html",
                     context=dashboard_context, priority=40)
    widgets.register("admin.user.detail", "messaging.user", template="messaging/widgets/user_sms.html",
                     context=user_context, priority=250)
    install_user_action()
