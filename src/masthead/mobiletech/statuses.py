"""Mobiletech status codes (R-MT-4), pure."""

from __future__ import annotations

import re

OPERATOR_CHANGED, BILLED, ERROR, NOT_DELIVERED, DELIVERED = (
    "operator_changed", "billed", "error", "not_delivered", "delivered")
CODE = re.compile(r"^([A-Z])(\d{1,5})$")
SUCCESSFUL_FOR_OPERATOR = frozenset({"A0", "D0", "D1"})  # R-MT-8's operator history


def meaning(code: str, operator: str | None = None) -> str:
    """What a status code means; ``D0`` counts as delivered on O2 (operator ``2``) only."""
    if code == "_OPERATOR_CHANGE":
        return OPERATOR_CHANGED
    match = CODE.match(code or "")
    if match is None:
        return ERROR
    letter, number = match.group(1), int(match.group(2))
    if letter == "A":
        if number == 0:
            return BILLED
        return ERROR if number <= 1023 else NOT_DELIVERED
    if letter == "D":
        if number == 1:
            return DELIVERED
        if number == 0:
            return DELIVERED if operator == "2" else NOT_DELIVERED
    return ERROR


def is_success(code: str, operator: str | None = None) -> bool:
    """A charge succeeds iff the status means billed or delivered (R-MT-4; O2's D0 included)."""
    return meaning(code, operator) in (BILLED, DELIVERED)
