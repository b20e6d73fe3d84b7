"""Admin for content access, subscription types and subscriptions.

Every write goes through ``subscriptions.services`` (house rule 1): a type with its items and meta
through ``save_subscription_type``, a new subscription through ``create_subscription`` (so it lands
where the type's extension method puts it), date edits through ``update_subscription`` and the
stop action and button through ``stop_subscription(by_admin=True)``. Nothing here deletes.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import construct_change_message, unquote
from django.contrib.admin.widgets import AdminSplitDateTime
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.text import capfirst
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from masthead.core import clock
from masthead.core.money import InvalidAmount, to_money
from masthead.subscriptions import periods, services
from masthead.subscriptions.models import (
    ContentAccess,
    Subscription,
    SubscriptionType,
    SubscriptionTypeItem,
    SubscriptionTypeMeta,
    SubscriptionTypeName,
)
from masthead.users.models import Address


@admin.register(ContentAccess)
class ContentAccessAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "sorting"]
    search_fields = ["name", "description"]


# --- subscription types ------------------------------------------------------------------------


def _method_choices(registry: dict, labelled: list) -> list[tuple[str, str]]:
    """Every registered method (other apps add theirs), with the model's label where it has one."""
    labels = dict(labelled)
    return [(code, labels.get(code, code)) for code in registry]


class SubscriptionTypeForm(forms.ModelForm):
    content_access = forms.ModelMultipleChoiceField(
        label=capfirst(_("content access")), queryset=ContentAccess.objects.all(), required=False,
        widget=forms.CheckboxSelectMultiple)
    extension_method = forms.ChoiceField(label=capfirst(_("extension method")))
    length_method = forms.ChoiceField(label=capfirst(_("length method")))

    class Meta:
        model = SubscriptionType
        exclude: list[str] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["extension_method"].choices = _method_choices(periods.EXTENSION_METHODS,
                                                                  SubscriptionType.EXTENSION_METHODS)
        self.fields["length_method"].choices = _method_choices(periods.LENGTH_METHODS,
                                                               SubscriptionType.LENGTH_METHODS)

    def clean(self):
        cleaned = super().clean()
        # The items formset is validated after this form and compares its sum with this price;
        # None (an invalid price) skips that comparison, the price field shows its own error.
        self.instance._admin_price = cleaned.get("price")
        return cleaned


class ItemFormSet(forms.BaseInlineFormSet):
    def live_forms(self) -> list[forms.Form]:
        """Filled-in forms not marked for deletion, in their "sorting" order."""
        live = [f for f in self.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        return sorted(live, key=lambda f: f.cleaned_data.get("sorting") or 0)

    def clean(self):
        super().clean()
        if any(self.errors):
            return
        price = getattr(self.instance, "_admin_price", None)
        amounts = [f.cleaned_data.get("amount") for f in self.live_forms()]
        if price is None or not amounts or None in amounts:
            return  # no items: the service gives the type one item for the whole price (R-ST-2)
        try:
            total, price = sum(to_money(a) for a in amounts), to_money(price)
        except InvalidAmount:
            return
        if total != price:  # the rule of services.save_subscription_type, as a form error
            raise forms.ValidationError(gettext("Items sum to %(sum)s, the price is %(price)s")
                                        % {"sum": total, "price": price}, code="items_price_mismatch")


class MetaFormSet(forms.BaseInlineFormSet):
    """Duplicate keys are refused by the formset's unique check (the model's constraint)."""


class TypePartInline(admin.TabularInline):
    """Items and meta are parts of the type: whoever may add or change types edits them too."""

    def _may_edit(self, request) -> bool:
        return any(request.user.has_perm(f"subscriptions.{action}_subscriptiontype") for action in ("add", "change"))

    def has_view_permission(self, request, obj=None):
        return self._may_edit(request) or request.user.has_perm("subscriptions.view_subscriptiontype")

    def has_add_permission(self, request, obj=None):
        return self._may_edit(request)

    def has_change_permission(self, request, obj=None):
        return self._may_edit(request)

    def has_delete_permission(self, request, obj=None):
        return self._may_edit(request)


class SubscriptionTypeItemInline(TypePartInline):
    model = SubscriptionTypeItem
    formset = ItemFormSet
    fields = ["name", "amount", "vat", "sorting"]
    extra = 1


class SubscriptionTypeMetaInline(TypePartInline):
    model = SubscriptionTypeMeta
    formset = MetaFormSet
    fields = ["key", "value"]
    extra = 0


@admin.register(SubscriptionType)
class SubscriptionTypeAdmin(admin.ModelAdmin):
    form = SubscriptionTypeForm
    inlines = [SubscriptionTypeItemInline, SubscriptionTypeMetaInline]
    list_display = ["code", "name", "user_label", "price", "length", "extension_method", "access_list",
                    "active", "visible", "default", "sorting"]
    list_filter = ["active", "visible", "default", "extension_method", "length_method", "content_access"]
    search_fields = ["code", "name", "user_label"]
    ordering = ["sorting", "code"]
    fieldsets = [
        (None, {"fields": ["code", "name", "user_label", "description"]}),
        (_("Price and length"), {"fields": [
            "price", ("length", "extending_length"), ("length_method", "extension_method"),
            ("fixed_start", "fixed_end")]}),
        (_("Access and flags"), {"fields": [
            "content_access", ("active", "visible", "default"), "sorting", "limit_per_user",
            ("ask_address", "no_subscription", "disable_notifications")]}),
        (_("Renewal"), {"fields": ["next_subscription_type", "trial_periods", "recurrent_charge_before"]}),
    ]
    TYPE_FIELDS = ("name", "user_label", "description", "price", "length", "extending_length", "length_method",
                   "extension_method", "fixed_start", "fixed_end", "active", "visible", "default", "sorting",
                   "limit_per_user", "next_subscription_type", "trial_periods", "recurrent_charge_before",
                   "ask_address", "no_subscription", "disable_notifications")

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("content_access")

    @admin.display(description=_("content access"))
    def access_list(self, obj):
        return ", ".join(a.name for a in obj.content_access.all())

    def get_readonly_fields(self, request, obj=None):
        # The service finds the type by its code: renaming the code would create another type.
        return ["code"] if obj is not None else []

    def has_delete_permission(self, request, obj=None):
        return False  # types are deactivated, never deleted (subscriptions and payments point at them)

    def save_model(self, request, obj, form, change):
        """Nothing here: save_related writes the type, its access, items and meta in one service call."""

    def save_related(self, request, form, formsets, change):
        data = form.cleaned_data
        code = form.instance.code
        fields = {name: data[name] for name in self.TYPE_FIELDS if name in data}
        items, meta = None, None  # meta None: left as it is
        for formset in formsets:
            if isinstance(formset, ItemFormSet):
                items = [services.ItemSpec(f.cleaned_data["name"], f.cleaned_data["amount"], f.cleaned_data["vat"])
                         for f in formset.live_forms()]
            elif isinstance(formset, MetaFormSet):
                meta = {f.cleaned_data["key"]: f.cleaned_data.get("value", "") for f in formset.forms
                        if f.cleaned_data and not f.cleaned_data.get("DELETE") and f.cleaned_data.get("key")}
        if items is None:  # no items formset on the page: keep the stored items
            items = [services.ItemSpec(i.name, i.amount, i.vat)
                     for i in SubscriptionTypeItem.objects.filter(subscription_type__code=code)]
        obj, _outcome = services.save_subscription_type(
            code=code, fields=fields, content_access=[a.name for a in data.get("content_access", [])],
            items=items, meta=meta)
        form.instance.pk = obj.pk
        form.instance._state.adding = False
        form.instance.refresh_from_db()

    def construct_change_message(self, request, form, formsets, add=False):
        # The formsets were never saved themselves (the service wrote their rows).
        return construct_change_message(form, [], add)


# --- subscriptions -----------------------------------------------------------------------------


def _label_choices() -> list[tuple[str, str]]:
    return [(code, code) for code in SubscriptionTypeName.objects.filter(active=True).values_list("code", flat=True)]


class SubscriptionAddForm(forms.ModelForm):
    """A new subscription: the service places it; start and end only when given."""

    type = forms.ChoiceField(label=capfirst(_("label")), initial="regular")
    start = forms.SplitDateTimeField(
        label=capfirst(_("start")), required=False, widget=AdminSplitDateTime,
        help_text=_("Leave empty to start where the type's extension method puts it."))
    end = forms.SplitDateTimeField(label=capfirst(_("end")), required=False, widget=AdminSplitDateTime,
                                   help_text=_("Leave empty to end after the type's length."))

    class Meta:
        model = Subscription
        fields = ["user", "subscription_type", "type", "is_paid", "note"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["type"].choices = _label_choices()

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end and end < start:
            self.add_error("end", gettext("The end must not be before the start."))
        return cleaned


class SubscriptionChangeForm(forms.ModelForm):
    type = forms.ChoiceField(label=capfirst(_("label")))

    class Meta:
        model = Subscription
        fields = ["subscription_type", "type", "is_paid", "start_time", "end_time", "note", "address"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        choices = _label_choices()
        if self.instance.type and self.instance.type not in dict(choices):
            choices.append((self.instance.type, self.instance.type))  # a label since deactivated stays
        self.fields["type"].choices = choices
        if "address" in self.fields:
            self.fields["address"].queryset = Address.objects.filter(user_id=self.instance.user_id)

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("start_time"), cleaned.get("end_time")
        if start and end and end < start:
            self.add_error("end_time", gettext("The end must not be before the start."))
        return cleaned


def _stoppable(subscription: Subscription, now) -> bool:
    """R-SUB-9: stop is offered for rows that have not ended and are not zero-length."""
    return subscription.end_time > now and subscription.start_time != subscription.end_time


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["user_email", "subscription_type", "start_time", "end_time", "internal_status", "type",
                    "is_paid"]
    list_display_links = ["user_email", "subscription_type"]
    list_filter = ["internal_status", "type", "is_paid", "is_recurrent", "subscription_type",
                   "subscription_type__content_access"]
    list_select_related = ["user", "subscription_type"]
    search_fields = ["user__email"]
    date_hierarchy = "start_time"
    ordering = ["-end_time", "-pk"]
    autocomplete_fields = ["user"]
    actions = ["stop_now", "extend_one_period"]
    add_fieldsets = [(None, {"fields": ["user", "subscription_type", "type", "is_paid", "start", "end", "note"]})]
    fieldsets = [
        (None, {"fields": ["user_link", "subscription_type", "type", "is_paid", "note", "address"]}),
        (_("Dates"), {"fields": ["start_time", "end_time", "length", "internal_status", "next_subscription"]}),
        (None, {"fields": ["is_recurrent", "created_at", "updated_at"]}),
    ]
    change_readonly_fields = ["user_link", "length", "internal_status", "next_subscription", "is_recurrent",
                              "created_at", "updated_at"]

    @admin.display(description=_("e-mail"), ordering="user__email")
    def user_email(self, obj):
        return obj.user.email

    @admin.display(description=_("user"))
    def user_link(self, obj):
        url = reverse("admin:users_user_change", args=[obj.user_id])
        return format_html('<a href="{}">{}</a>', url, obj.user.email)

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        return self.change_readonly_fields if obj is not None else []

    def get_form(self, request, obj=None, **kwargs):
        kwargs["form"] = SubscriptionAddForm if obj is None else SubscriptionChangeForm
        return super().get_form(request, obj, **kwargs)

    def has_delete_permission(self, request, obj=None):
        return False  # a subscription is stopped (it ends now), never deleted

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if not change:
            created = services.create_subscription(
                user=data["user"], subscription_type=data["subscription_type"], type=data["type"],
                is_paid=data.get("is_paid"), start=data.get("start"), end=data.get("end"),
                note=data.get("note") or "")
            obj.pk = created.pk
            obj._state.adding = False
        else:
            changes = {name: data[name] for name in form.changed_data if name in services.UPDATABLE}
            if changes:
                # The form already wrote its values onto ``obj``; the service compares with the stored row.
                services.update_subscription(subscription=Subscription.objects.get(pk=obj.pk), **changes)
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        """No related rows are edited here (meta is written by services only)."""

    def response_add(self, request, obj, post_url_continue=None):
        response = super().response_add(request, obj, post_url_continue)
        # Opened from a user's page ("Add subscription"): go back there after a plain save.
        if (request.GET.get("user") and isinstance(response, HttpResponseRedirect)
                and not {"_addanother", "_continue", "_popup"} & set(request.POST)):
            return HttpResponseRedirect(reverse("admin:users_user_change", args=[obj.user_id]))
        return response

    # --- actions ---

    @admin.action(description=_("Stop now"), permissions=["change"])
    def stop_now(self, request, queryset):
        stopped = refused = 0
        for pk in queryset.order_by("start_time", "pk").values_list("pk", flat=True):
            # Re-read each row: stopping one may have moved the next one of the same reader (R-SUB-10).
            subscription = Subscription.objects.get(pk=pk)
            if not _stoppable(subscription, clock.now()):
                refused += 1
                continue
            services.stop_subscription(subscription=subscription, by_admin=True)
            stopped += 1
        if stopped:
            self.message_user(request, ngettext("%(count)d subscription stopped.",
                                                "%(count)d subscriptions stopped.", stopped) % {"count": stopped},
                              messages.SUCCESS)
        if refused:
            self.message_user(request, ngettext(
                "%(count)d subscription was not stopped: it has already ended or has no length.",
                "%(count)d subscriptions were not stopped: they have already ended or have no length.",
                refused) % {"count": refused}, messages.WARNING)

    @admin.action(description=_("Extend by one period"), permissions=["add"])
    def extend_one_period(self, request, queryset):
        created = []
        for subscription in queryset.select_related("user", "subscription_type").order_by("pk"):
            created.append(services.create_subscription(
                user=subscription.user, subscription_type=subscription.subscription_type, type=subscription.type,
                is_paid=False, note=f"[Admin extend] of subscription {subscription.pk}"))
        self.message_user(request, ngettext("%(count)d subscription added.", "%(count)d subscriptions added.",
                                            len(created)) % {"count": len(created)}, messages.SUCCESS)

    # --- the stop button of the user page ---

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [path("<path:object_id>/stop/", self.admin_site.admin_view(self.stop_view),
                     name="{}_{}_stop".format(*info))] + super().get_urls()

    def stop_view(self, request, object_id):
        """GET: confirm; POST (CSRF-checked by admin_view): stop through the service, then go back."""
        subscription = self.get_object(request, unquote(object_id))
        if subscription is None:
            raise Http404
        if not self.has_change_permission(request, subscription):
            raise PermissionDenied
        back = request.POST.get("next") or request.GET.get("next") or ""
        if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()},
                                               require_https=request.is_secure()):
            back = reverse("admin:users_user_change", args=[subscription.user_id])
        if not _stoppable(subscription, clock.now()):
            messages.error(request, gettext("This subscription has already ended or has no length: "
                                            "there is nothing to stop."))
            return HttpResponseRedirect(back)
        if request.method == "POST":
            services.stop_subscription(subscription=subscription, by_admin=True)
            messages.success(request, gettext("Subscription %(subscription)s of %(email)s stopped.")
                             % {"subscription": subscription.subscription_type.name,
                                "email": subscription.user.email})
            return HttpResponseRedirect(back)
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Stop subscription"),
            "subscription": subscription,
            "opts": self.opts,
            "next": back,
            "now": clock.now(),
        }
        return TemplateResponse(request, "admin/subscriptions/subscription/stop_confirmation.html", context)
