"""Slovak phone numbers as Mobiletech uses them (pure): local ``09xxxxxxxx`` (R-MT-13/15),
international ``+421…`` (R-MT-6), and the operator by prefix (R-MT-8)."""

from __future__ import annotations

import re

LOCAL = re.compile(r"^09\d{8}$")
OPERATORS = {  # R-MT-8: prefix after +421 → operator type
    **{p: "T" for p in ("901", "902", "903", "904", "909", "910", "911", "912", "914")},
    **{p: "O" for p in ("905", "906", "907", "908", "915", "916", "917", "918", "919", "945")},
    **{p: "2" for p in ("940", "944", "947", "948", "949")},
    **{p: "S" for p in ("950", "951")},
}
OPERATOR_NAMES = {"O": "Orange", "T": "Telekom", "2": "O2", "S": "4ka"}


class NotSlovak(ValueError):
    pass


def to_local(raw: str) -> str:
    """R-MT-15: ``09…`` unchanged; ``+421…`` / ``00421…`` → ``0`` + the rest; spaces ignored."""
    number = re.sub(r"[\s/-]", "", raw or "")
    if number.startswith("+421"):
        number = "0" + number[4:]
    elif number.startswith("00421"):
        number = "0" + number[5:]
    if not LOCAL.match(number):
        raise NotSlovak(f"not a Slovak mobile number: {raw!r}")
    return number


def to_international(raw: str) -> str:
    """R-MT-6 step 5: a number without ``+`` becomes ``+421`` + the number without its first digit."""
    number = re.sub(r"\s", "", raw or "")
    return number if number.startswith("+") else "+421" + number[1:]


def operator_by_prefix(number: str) -> str | None:
    """R-MT-8: the operator type of ``+421 9nn…`` by its three-digit prefix, else None."""
    international = to_international(number)
    if not international.startswith("+421"):
        return None
    return OPERATORS.get(international[4:7])
