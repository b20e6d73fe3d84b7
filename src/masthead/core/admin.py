from django.contrib import admin

from masthead.core.models import HandledEvent


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
