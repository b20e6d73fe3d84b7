from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from masthead.core.api import api_token_operations
from masthead.users import services
from masthead.users.models import AccessToken, Address, ApiToken, User, UserMeta


class AddressInline(admin.StackedInline):
    model = Address
    extra = 0
    fields = [("type", "name", "company_name"), ("street", "number"), ("zip", "city", "country"), "phone"]


class UserMetaInline(admin.TabularInline):
    model = UserMeta
    extra = 0


class UserAddForm(forms.ModelForm):
    password1 = forms.CharField(label=_("Password"), widget=forms.PasswordInput, required=False,
                                help_text=_("Leave empty to create an account that cannot log in yet."))

    class Meta:
        model = User
        fields = ["email", "first_name", "last_name", "phone_number", "locale", "is_staff"]


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    change_form_template = "admin/users/user/change_form.html"
    ordering = ["-created_at"]
    list_display = ["email", "first_name", "last_name", "phone_number", "is_active", "is_staff", "created_at"]
    list_filter = ["is_active", "is_staff", "is_superuser", "locale", "source", "groups"]
    search_fields = ["email", "first_name", "last_name", "public_name", "phone_number"]
    readonly_fields = ["uuid", "created_at", "updated_at", "last_login"]
    inlines = [AddressInline, UserMetaInline]
    fieldsets = [
        (None, {"fields": ["email", "password", "uuid"]}),
        (_("Personal"), {"fields": ["first_name", "last_name", "public_name", "phone_number", "locale", "note"]}),
        (_("Permissions"), {"fields": ["is_active", "is_staff", "is_superuser", "groups", "user_permissions"]}),
        (_("Dates"), {"fields": ["confirmed_at", "last_login", "created_at", "updated_at", "source"]}),
    ]
    add_form = UserAddForm
    add_fieldsets = [(None, {"fields": ["email", "password1", "first_name", "last_name", "phone_number",
                                        "locale", "is_staff"]})]

    def get_inlines(self, request, obj):
        return self.inlines if obj else []

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        data = form.cleaned_data
        try:
            user = services.create_user(
                email=data["email"], password=data.get("password1") or None, first_name=data["first_name"],
                last_name=data["last_name"], phone_number=data.get("phone_number") or "", locale=data["locale"],
                is_staff=data["is_staff"], source="admin")
        except services.UserError as exc:
            # Model validation already covered these; a race on the e-mail lands here.
            raise forms.ValidationError(exc.message) from exc
        obj.pk = user.pk
        obj.refresh_from_db()


class ApiTokenForm(forms.ModelForm):
    endpoints = forms.MultipleChoiceField(label=_("Endpoints"), required=False,
                                          widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiToken
        fields = ["name", "active", "ip_restrictions", "all_endpoints", "endpoints"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["endpoints"].choices = [(op, op) for op in api_token_operations()]

    def clean_ip_restrictions(self):
        value = self.cleaned_data["ip_restrictions"].strip() or "*"
        try:
            services.parse_ip_restrictions(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return value


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = ["name", "token_hint", "active", "all_endpoints", "ip_restrictions", "last_used_at", "created_at"]
    list_filter = ["active", "all_endpoints"]
    search_fields = ["name"]
    readonly_fields = ["token_hint", "created_at", "updated_at", "last_used_at"]
    actions = None

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        fields = {"name": data["name"], "endpoints": data["endpoints"], "all_endpoints": data["all_endpoints"],
                  "ip_restrictions": data["ip_restrictions"], "active": data["active"]}
        if change:
            services.update_api_token(api_token=obj, **fields)
            return
        token, created = services.create_api_token(**fields)
        obj.pk = created.pk
        obj.refresh_from_db()
        messages.warning(request, _("Copy the token now, it is not shown again: %(token)s") % {"token": token})

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and (obj is None or not obj.active)

    def delete_model(self, request, obj):
        services.delete_api_token(api_token=obj)


@admin.register(AccessToken)
class AccessTokenAdmin(admin.ModelAdmin):
    list_display = ["token_hint", "user", "source", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["source", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["user__email", "token_hint"]
    list_select_related = ["user"]
    readonly_fields = ["user", "token_hint", "source", "device_token", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    @admin.action(description=_("Revoke selected tokens"), permissions=["change"])
    def revoke(self, request, queryset):
        count = services.revoke_access_tokens(tokens=queryset)
        self.message_user(request, ngettext("%(count)d token revoked.", "%(count)d tokens revoked.", count)
                          % {"count": count}, messages.SUCCESS)
