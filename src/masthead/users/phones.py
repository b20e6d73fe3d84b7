"""Phone numbers: parsed with ``phonenumbers``, stored in E.164."""

import phonenumbers
from django.conf import settings
from django.utils.translation import gettext as _


class InvalidPhoneNumber(ValueError):
    pass


def normalize_phone(raw: str, region: str | None = None) -> str:
    """``raw`` (local or international) as E.164, e.g. ``0908 123 456`` → ``+421908123456``."""
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 40:
        raise InvalidPhoneNumber(_("Enter a phone number."))
    try:
        number = phonenumbers.parse(raw, region or settings.PHONE_DEFAULT_REGION)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(_("Not a phone number: %(raw)s") % {"raw": raw}) from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneNumber(_("Not a valid phone number: %(raw)s") % {"raw": raw})
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
