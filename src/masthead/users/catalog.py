"""Catalog section ``users``: accounts for demos and staff seeding.

A user is created when missing (with its password or legacy hash) and its names, language and
flags are updated otherwise; an existing password is never overwritten by the catalog.
"""

from pydantic import Field, field_validator

from masthead.core.catalog import CatalogError, Entry, apply_fields, register_section
from masthead.users import services
from masthead.users.phones import InvalidPhoneNumber, normalize_phone


class UserEntry(Entry):
    email: str = Field(max_length=254)
    password: str | None = Field(None, min_length=8, max_length=4096)
    password_hash: str | None = Field(None, pattern=r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
    first_name: str = Field("", max_length=150)
    last_name: str = Field("", max_length=150)
    public_name: str = Field("", max_length=255)
    phone_number: str = ""
    locale: str = "en"
    staff: bool = False
    superuser: bool = False

    @field_validator("phone_number")
    @classmethod
    def _phone(cls, value):
        if not value:
            return ""
        try:
            return normalize_phone(value)
        except InvalidPhoneNumber as exc:
            raise ValueError(str(exc)) from exc


def load_user(entry: UserEntry) -> str:
    user = services.find_user_by_email(entry.email)
    if user is None:
        try:
            services.create_user(
                email=entry.email, password=entry.password, legacy_password_hash=entry.password_hash or "",
                first_name=entry.first_name, last_name=entry.last_name, public_name=entry.public_name,
                phone_number=entry.phone_number, locale=entry.locale, is_staff=entry.staff,
                is_superuser=entry.superuser, source="catalog", confirmed=True)
        except services.UserError as exc:
            raise CatalogError(f"users: '{exc.field or 'email'}': {exc.message}") from exc
        return "created"
    values = {"first_name": entry.first_name, "last_name": entry.last_name, "public_name": entry.public_name,
              "phone_number": entry.phone_number, "locale": entry.locale,
              "is_staff": entry.staff or entry.superuser, "is_superuser": entry.superuser}
    if apply_fields(user, values):
        user.save()
        return "updated"
    return "unchanged"


def register():
    register_section("users", UserEntry, load_user, order=1000)
