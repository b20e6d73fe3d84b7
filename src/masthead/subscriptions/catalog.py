"""Catalog sections of the subscriptions app: content access and subscription types."""

from datetime import datetime
from decimal import Decimal

from pydantic import Field

from masthead.core.catalog import CatalogError, Entry, apply_fields, register_section
from masthead.subscriptions import services
from masthead.subscriptions.models import ContentAccess, SubscriptionType


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


class ItemEntry(Entry):
    name: str = Field(max_length=255)
    amount: Decimal = Field(ge=0, max_digits=10, decimal_places=2)
    vat: Decimal = Field(Decimal("0"), ge=0, le=100, max_digits=5, decimal_places=2)


class SubscriptionTypeEntry(Entry):
    code: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=100)
    name: str = Field(min_length=1, max_length=255)
    user_label: str = Field(min_length=1, max_length=255)
    description: str = ""
    price: Decimal = Field(ge=0, max_digits=10, decimal_places=2)
    length: int = Field(ge=0, le=365 * 200)
    extending_length: int | None = Field(None, ge=1, le=365 * 200)
    length_method: str = "fix_days"
    extension_method: str = "extend_actual"
    fixed_start: datetime | None = None
    fixed_end: datetime | None = None
    content_access: list[str] = []
    active: bool = True
    visible: bool = True
    default: bool = False
    sorting: int = Field(100, ge=0)
    limit_per_user: int | None = Field(None, ge=1)
    next_subscription_type: str | None = None
    trial_periods: int | None = Field(None, ge=1)
    recurrent_charge_before: int | None = None
    ask_address: bool = False
    no_subscription: bool = False
    items: list[ItemEntry] = []
    meta: dict[str, str] | None = None


def load_subscription_type(entry: SubscriptionTypeEntry) -> str:
    fields = entry.model_dump(exclude={"code", "content_access", "items", "meta", "next_subscription_type"})
    for name in ("fixed_start", "fixed_end"):
        if fields[name] is not None and fields[name].tzinfo is None:
            raise CatalogError(f"subscription_types: '{name}': give a time zone offset")
    fields["next_subscription_type"] = None
    if entry.next_subscription_type:
        fields["next_subscription_type"] = SubscriptionType.objects.filter(code=entry.next_subscription_type).first()
        if fields["next_subscription_type"] is None:
            raise CatalogError(f"subscription_types: 'next_subscription_type': unknown type "
                               f"'{entry.next_subscription_type}' (define it earlier in the file)")
    try:
        _, outcome = services.save_subscription_type(
            code=entry.code, fields=fields, content_access=entry.content_access, meta=entry.meta,
            items=[services.ItemSpec(i.name, i.amount, i.vat) for i in entry.items])
    except services.SubscriptionError as exc:
        raise CatalogError(f"subscription_types: {exc.message}") from exc
    return outcome


def register():
    register_section("content_access", ContentAccessEntry, load_content_access, order=10)
    register_section("subscription_types", SubscriptionTypeEntry, load_subscription_type, order=20)
