"""Admin for family types and family codes (R-FAM-1/2/33).

Codes change only through ``family.services`` (house rule 1): a code's page is read-only and nothing
adds or deletes codes here. The codes list has two actions, "Release selected seats"
(``release(by_admin=True)``, R-FAM-16) and "Cancel unused codes" (``cancel_unused`` of the selected
codes' parents, R-FAM-4, after a confirmation page). The parent view
(``/admin/family/familyrequest/parent/<subscription id>/``) shows one parent subscription with all its
codes and posts its forms to the services: activate a code for a reader (R-FAM-11, as admin), release a
seat, edit a note (R-FAM-23), change the seat count. A refused input is a form error and writes nothing.
The dashboard and user page widgets (registered in ``FamilyConfig.ready``) read ``family.queries``.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import Count, Q
from django.http import Http404, HttpResponseBadRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.text import capfirst
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from masthead.core import clock
from masthead.family import queries, services
from masthead.family.models import FamilyRequest, FamilySubscriptionType
from masthead.subscriptions.models import Subscription
from masthead.users.models import User
from masthead.users.services import find_user_by_email

R = FamilyRequest
MAX_SEATS = 10_000  # as the catalog's ``count``


# --- family types (R-FAM-1) --------------------------------------------------------------------------


class FamilyTypeForm(forms.ModelForm):
    class Meta:
        model = FamilySubscriptionType
        fields = ("master_subscription_type", "slave_subscription_type", "donation_method", "count", "is_paid",
                  "days", "past_parent_end")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["count"].validators.append(MaxValueValidator(MAX_SEATS))
        self.fields["days"].validators += [MinValueValidator(1), MaxValueValidator(365 * 100)]  # as the catalog

    def clean(self):
        cleaned = super().clean()
        master = cleaned.get("master_subscription_type")
        master_id = master.pk if master else self.instance.master_subscription_type_id
        child = cleaned.get("slave_subscription_type")
        if child is not None and child.pk == master_id:
            self.add_error("slave_subscription_type", gettext("The child type must differ from the parent type."))
        if (cleaned.get("donation_method") == FamilySubscriptionType.FIXED_DAYS and not cleaned.get("days")
                and child is None and not {"days", "slave_subscription_type"} & set(self.errors)):
            self.add_error("days", gettext("Fixed days need a number of days or a child type (its length is used)."))
        return cleaned


@admin.register(FamilySubscriptionType)
class FamilySubscriptionTypeAdmin(admin.ModelAdmin):
    form = FamilyTypeForm
    list_display = ("master_subscription_type", "child_type", "donation_method", "count", "is_paid")
    list_filter = ("donation_method", "is_paid")
    list_select_related = ("master_subscription_type", "slave_subscription_type")
    search_fields = ("master_subscription_type__code", "master_subscription_type__name",
                     "slave_subscription_type__code")

    @admin.display(description=_("child type"), ordering="slave_subscription_type__code")
    def child_type(self, obj):
        return obj.slave_subscription_type or gettext("from the payment's items")

    def get_readonly_fields(self, request, obj=None):
        # Parents of the type carry codes: a row moves to another parent type only by a new row.
        return ("master_subscription_type",) if obj is not None else ()

    def has_delete_permission(self, request, obj=None):
        return False  # parents of the type carry codes; the type is changed, never deleted


# --- the codes list (R-FAM-2) ----------------------------------------------------------------------


class ChosenFilter(admin.SimpleListFilter):
    """A filter set by a link (the parent view, the widgets): it shows the chosen row and "All"."""

    field = ""

    def label_of(self, pk: int) -> str | None:
        """The chosen row's label (subclasses); None: no such row."""
        return None

    def lookups(self, request, model_admin):
        value = self.value()
        if value is None:
            return []  # no output: the filter shows only once chosen
        if not value.isdigit():
            raise IncorrectLookupParameters(value)
        return [(value, self.label_of(int(value)) or f"#{value}")]

    def queryset(self, request, queryset):
        return queryset if self.value() is None else queryset.filter(**{self.field: int(self.value())})


class ParentFilter(ChosenFilter):
    title = _("parent subscription")
    parameter_name, field = "master_subscription__id__exact", "master_subscription_id"

    def label_of(self, pk):
        parent = Subscription.objects.select_related("user", "subscription_type").filter(pk=pk).first()
        return parent and parent_label(parent)


class UserFilter(ChosenFilter):
    def label_of(self, pk):
        return User.objects.filter(pk=pk).values_list("email", flat=True).first()


class ParentUserFilter(UserFilter):
    title = _("parent")
    parameter_name, field = "master_user__id__exact", "master_user_id"


class ChildUserFilter(UserFilter):
    title = _("child")
    parameter_name, field = "slave_user__id__exact", "slave_user_id"


def parent_label(parent: Subscription) -> str:
    return f"#{parent.pk} {parent.subscription_type.code} ({parent.user.email})"


def parent_url(subscription_id: int) -> str:
    return reverse("admin:family_familyrequest_parent", args=[subscription_id])


@admin.register(FamilyRequest)
class FamilyRequestAdmin(admin.ModelAdmin):
    list_display = ("code", "status", "parent_email", "parent_link", "subscription_type", "child_email",
                    "accepted_at", "updated_at")
    list_filter = ("status", ("subscription_type", admin.RelatedOnlyFieldListFilter), ParentFilter,
                   ParentUserFilter, ChildUserFilter)
    list_select_related = ("master_user", "slave_user", "subscription_type", "master_subscription__subscription_type")
    search_fields = ("code", "master_user__email", "slave_user__email")
    actions = ("release_seats", "cancel_unused_codes")
    fieldsets = (
        (None, {"fields": ("code", "status", "note")}),
        (capfirst(_("parent")), {"fields": ("master_user", "parent_link", "subscription_type")}),
        (capfirst(_("child")), {"fields": ("slave_user", "slave_subscription")}),
        (_("Dates"), {"fields": ("created_at", "updated_at", "opened_at", "accepted_at", "canceled_at",
                                 "expires_at")}),
    )
    readonly_fields = ("code", "status", "note", "master_user", "parent_link", "subscription_type", "slave_user",
                       "slave_subscription", "created_at", "updated_at", "opened_at", "accepted_at", "canceled_at",
                       "expires_at")

    @admin.display(description=_("parent e-mail"), ordering="master_user__email")
    def parent_email(self, obj):
        return obj.master_user.email

    @admin.display(description=_("child e-mail"), ordering="slave_user__email")
    def child_email(self, obj):
        return obj.slave_user.email if obj.slave_user_id else None

    @admin.display(description=_("parent subscription"), ordering="master_subscription_id")
    def parent_link(self, obj):
        return format_html('<a href="{}" data-testid="parent-link">#{} {}</a>', parent_url(obj.master_subscription_id),
                           obj.master_subscription_id, obj.master_subscription.subscription_type.code)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        """The change permission allows the actions and the parent view's forms; a code's own page is
        read-only (only the services change codes)."""
        return obj is None and super().has_change_permission(request)

    def may_change(self, request) -> bool:
        return super().has_change_permission(request)

    # --- actions ---

    @admin.action(description=_("Release selected seats"), permissions=["change"])
    def release_seats(self, request, queryset):
        """R-FAM-16 with the admin flag: every selected code in use is released; the others are left alone."""
        selected = list(queryset.order_by("pk"))
        released = failed = 0
        for seat in selected:
            if seat.status != R.ACCEPTED:
                continue
            try:
                replacement = services.release(request=seat, by_admin=True)
            except services.FamilyError as exc:
                self.message_user(request, f"{seat.code}: {exc.message}", messages.ERROR)
                failed += 1
                continue
            released += replacement is not None  # None: released meanwhile (down a parent's chain)
        if released:
            self.message_user(request, ngettext("%(count)d seat released.", "%(count)d seats released.", released)
                              % {"count": released}, messages.SUCCESS)
        if skipped := len(selected) - released - failed:
            self.message_user(request, ngettext("%(count)d selected code was not in use: nothing changed.",
                                                "%(count)d selected codes were not in use: nothing changed.",
                                                skipped) % {"count": skipped}, messages.WARNING)

    @admin.action(description=_("Cancel unused codes"), permissions=["change"])
    def cancel_unused_codes(self, request, queryset):
        """R-FAM-4: ``cancel_unused`` cancels every unused code of a parent reader, so this asks first,
        naming the readers (those of the selected unused codes) and how many codes each loses."""
        unused = Q(family_codes_given__status=R.CREATED)
        owners = list(User.objects.filter(pk__in=queryset.filter(status=R.CREATED).values("master_user_id"))
                      .annotate(unused=Count("family_codes_given", filter=unused)).order_by("email"))
        if not owners:
            self.message_user(request, gettext("None of the selected codes is unused: nothing changed."),
                              messages.WARNING)
            return None
        if request.POST.get("post") != "yes":
            context = {**self.admin_site.each_context(request), "title": gettext("Cancel unused codes"),
                       "opts": self.opts, "owners": owners, "media": self.media,
                       "selected": queryset.values_list("pk", flat=True),
                       "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME}
            return TemplateResponse(request, "admin/family/familyrequest/cancel_unused_confirmation.html", context)
        canceled = sum(services.cancel_unused(master_user=owner) for owner in owners)
        self.message_user(request, ngettext("%(count)d unused code canceled.", "%(count)d unused codes canceled.",
                                            canceled) % {"count": canceled}, messages.SUCCESS)
        return None

    # --- the parent view ---

    def get_urls(self):
        return [path("parent/<int:subscription_id>/", self.admin_site.admin_view(self.parent_view),
                     name="family_familyrequest_parent")] + super().get_urls()

    def parent_view(self, request, subscription_id):
        """GET: the parent and all its codes. POST (CSRF-checked by admin_view, change permission): one
        form of ``PARENT_FORMS`` by its ``action``; success → a message and back here, a refusal → the
        page again with the errors, nothing written."""
        parent = Subscription.objects.select_related("user", "subscription_type").filter(pk=subscription_id).first()
        if parent is None or not queries.is_parent(parent):
            raise Http404
        if not self.has_view_permission(request):
            raise PermissionDenied
        failed = None
        if request.method == "POST":
            if not self.may_change(request):
                raise PermissionDenied
            form_class = PARENT_FORMS.get(request.POST.get("action"))
            if form_class is None:
                return HttpResponseBadRequest(gettext("Unknown action."))
            form = form_class(request.POST, parent=parent)
            if form.is_valid():
                try:
                    messages.success(request, form.apply())
                except services.FamilyError as exc:
                    form.add_error(None, exc.message)
                else:
                    return HttpResponseRedirect(request.path)
            failed = form
        ftype = services.family_type(parent.subscription_type_id)
        codes_url = reverse("admin:family_familyrequest_changelist")
        context = {
            **self.admin_site.each_context(request), **queries.parent_codes(parent),
            "title": gettext("Family subscription %(parent)s") % {"parent": parent_label(parent)},
            "opts": self.opts, "parent": parent, "family_type": ftype, "now": clock.now(),
            "can_change": self.may_change(request), "has_seats": bool(ftype and ftype.slave_subscription_type_id),
            "failed": failed, "errors": failed and error_lines(failed),
            "codes_url": f"{codes_url}?{ParentFilter.parameter_name}={parent.pk}",
        }
        return TemplateResponse(request, "admin/family/familyrequest/parent.html", context)


# --- the parent view's forms ------------------------------------------------------------------------


def error_lines(form: forms.Form) -> list[str]:
    """Every error of ``form``, a visible field's prefixed with its label."""
    lines = []
    for name, errors in form.errors.items():
        field = form.fields.get(name)
        label = f"{capfirst(field.label)}: " if field is not None and not field.widget.is_hidden else ""
        lines += [f"{label}{error}" for error in errors]
    return lines


class ParentForm(forms.Form):
    action = ""

    def __init__(self, *args, parent: Subscription, **kwargs):
        super().__init__(*args, **kwargs)
        self.parent = parent

    def apply(self) -> str:
        """Call the service; the success message. A ``FamilyError`` becomes the form's error."""
        raise TypeError(f"{type(self).__name__} does not say what it does")


class CodeForm(ParentForm):
    """A form about one code of the parent."""

    code = forms.CharField(max_length=32, widget=forms.HiddenInput)

    def clean_code(self):
        code = self.cleaned_data["code"]
        self.seat = R.objects.filter(master_subscription=self.parent, code=code).first()
        if self.seat is None:
            raise forms.ValidationError(gettext("Code %(code)s is not a code of this parent subscription.")
                                        % {"code": code})
        return code


class ActivateForm(CodeForm):
    """R-FAM-11 as admin: a code activated for the reader with this e-mail."""

    action = "activate"
    email = forms.EmailField(label=_("reader's e-mail"))

    def clean_email(self):
        email = self.cleaned_data["email"]
        self.reader = find_user_by_email(email)
        if self.reader is None:
            raise forms.ValidationError(gettext("No reader has the e-mail %(email)s.") % {"email": email})
        return email

    def apply(self):
        services.activate(user=self.reader, code=self.seat.code, by_admin=True)
        return gettext("Code %(code)s activated for %(email)s.") % {"code": self.seat.code, "email": self.reader.email}


class ReleaseForm(CodeForm):
    """R-FAM-16 as admin: the holder's child subscription ends now, a new code takes the seat."""

    action = "release"

    def not_in_use(self) -> str:
        return gettext("Code %(code)s is not in use: there is no seat to release.") % {"code": self.seat.code}

    def clean(self):
        cleaned = super().clean()
        if "code" in cleaned and self.seat.status != R.ACCEPTED:
            raise forms.ValidationError(self.not_in_use())
        return cleaned

    def apply(self):
        replacement = services.release(request=self.seat, by_admin=True)
        if replacement is None:  # released meanwhile
            raise services.FamilyError("family_request_wrong_status", self.not_in_use())
        return gettext("Code %(code)s released; the new code %(new)s takes the seat.") % {
            "code": self.seat.code, "new": replacement.code}


class NoteForm(CodeForm):
    """R-FAM-23: the note, also on the matching code of the parent's renewal."""

    action = "note"
    note = forms.CharField(label=_("note"), max_length=255, required=False)

    def apply(self):
        services.set_note(request=self.seat, note=self.cleaned_data["note"])
        return gettext("Note of code %(code)s saved.") % {"code": self.seat.code}


class SeatsForm(ParentForm):
    action = "seats"
    seats = forms.IntegerField(label=_("seats"), min_value=0, max_value=MAX_SEATS)

    def apply(self):
        seats = services.set_seats(parent=self.parent, seats=self.cleaned_data["seats"])
        return ngettext("The parent subscription has %(seats)d seat now.",
                        "The parent subscription has %(seats)d seats now.", seats) % {"seats": seats}


PARENT_FORMS = {form.action: form for form in (ActivateForm, ReleaseForm, NoteForm, SeatsForm)}


# --- widgets (registered in FamilyConfig.ready) -------------------------------------------------------


def _may_see(request) -> bool:
    staff = getattr(request, "user", None)
    return bool(staff and any(staff.has_perm(f"family.{action}_familyrequest") for action in ("view", "change")))


def dashboard_context(request, **_):
    """``admin.dashboard``: the family figures of R-FAM-33."""
    return {"family": queries.dashboard(clock.now())} if _may_see(request) else None


def abusive_context(request, **_):
    """``admin.dashboard``: readers over the abuse threshold, as parents and as children."""
    return {"abuse": queries.abusive(clock.now())} if _may_see(request) else None


def user_context(request, user_obj=None, **_):
    """``admin.user.detail``: the reader's parents and seats; hidden when there are none."""
    if user_obj is None or user_obj.pk is None or not _may_see(request):
        return None
    family = queries.user_family(user_obj, clock.now())
    return family if family["parents"] or family["seats"] else None
