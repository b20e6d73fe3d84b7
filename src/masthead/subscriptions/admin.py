from django.contrib import admin

from masthead.subscriptions.models import ContentAccess


@admin.register(ContentAccess)
class ContentAccessAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "sorting"]
    search_fields = ["name", "description"]
