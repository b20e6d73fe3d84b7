from django.contrib import admin

from masthead.core.models import HandledEvent


class ReadOnlyInline(admin.TabularInline):
    """Parts of an object (a payment's items, a message's history), shown to whoever may see or
    change that object; never edited, added or deleted here."""

    extra = 0
    can_delete = False
    show_change_link = False

    def has_view_permission(self, request, obj=None):
        opts = self.parent_model._meta
        return any(request.user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}")
                   for action in ("view", "change"))

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(HandledEvent)
class HandledEventAdmin(admin.ModelAdmin):
    list_display = ["event_type", "handler", "event_id", "emitted_at", "handled_at", "worker"]
    list_filter = ["event_type", "handler"]
    search_fields = ["event_id"]
    date_hierarchy = "handled_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
