"""Catalog section ``family_types``: which subscription types are family parents (R-FAM-1)."""

from pydantic import Field

from masthead.core.catalog import CatalogError, Entry, apply_fields, register_section
from masthead.family.models import FamilySubscriptionType
from masthead.subscriptions.models import SubscriptionType


class FamilyTypeEntry(Entry):
    master: str = Field(max_length=100)
    slave: str | None = Field(None, max_length=100)
    donation_method: str = Field("copy", pattern=r"^(copy|fixed_days)$")
    count: int = Field(0, ge=0, le=10_000)
    is_paid: bool = True
    days: int | None = Field(None, ge=1, le=365 * 100)
    past_parent_end: bool = False


def _type(code: str, name: str) -> SubscriptionType:
    found = SubscriptionType.objects.filter(code=code).first()
    if found is None:
        raise CatalogError(f"family_types: '{name}': unknown subscription type '{code}'")
    return found


def load_family_type(entry: FamilyTypeEntry) -> str:
    master = _type(entry.master, "master")
    slave = _type(entry.slave, "slave") if entry.slave else None
    if slave is not None and slave.pk == master.pk:
        raise CatalogError("family_types: 'slave': the child type must differ from the parent type")
    if entry.donation_method == FamilySubscriptionType.FIXED_DAYS and entry.days is None and slave is None:
        raise CatalogError("family_types: 'days': fixed_days needs days or a child type")
    values = {"slave_subscription_type": slave, **entry.model_dump(exclude={"master", "slave"})}
    row = FamilySubscriptionType.objects.filter(master_subscription_type=master).first()
    if row is None:
        FamilySubscriptionType.objects.create(master_subscription_type=master, **values)
        return "created"
    if apply_fields(row, values):
        row.save()
        return "updated"
    return "unchanged"


def register():
    register_section("family_types", FamilyTypeEntry, load_family_type, order=30)
