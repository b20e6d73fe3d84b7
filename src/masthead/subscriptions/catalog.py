"""Catalog sections of the subscriptions app."""

from pydantic import Field

from masthead.core.catalog import Entry, apply_fields, register_section
from masthead.subscriptions.models import ContentAccess


class ContentAccessEntry(Entry):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=100)
    description: str = Field("", max_length=255)
    class_name: str = Field("", max_length=100)
    sorting: int = Field(100, ge=0, le=1_000_000)


def load_content_access(entry: ContentAccessEntry) -> str:
    values = entry.model_dump(exclude={"name"})
    obj = ContentAccess.objects.filter(name=entry.name).first()
    if obj is None:
        ContentAccess.objects.create(name=entry.name, **values)
        return "created"
    if apply_fields(obj, values):
        obj.save()
        return "updated"
    return "unchanged"


def register():
    register_section("content_access", ContentAccessEntry, load_content_access, order=10)
