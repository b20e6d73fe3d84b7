"""Money is Decimal with two places, never float (house rule 7)."""

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")


class InvalidAmount(ValueError):
    pass


def to_money(value) -> Decimal:
    """Parse ``value`` (str, int or Decimal; never float) into a two-place Decimal."""
    if isinstance(value, float):
        raise InvalidAmount("amounts must not be floats")
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError) as exc:
        raise InvalidAmount(f"not an amount: {value!r}") from exc
    if not amount.is_finite():
        raise InvalidAmount(f"not an amount: {value!r}")
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)
