"""Mobiletech events."""

from dataclasses import dataclass

from masthead.core.events import Event


@dataclass(frozen=True, kw_only=True)
class OutboundStatusUpdated(Event):
    """A delivery report was stored for an outbound message (R-MT-3)."""

    outbound_id: int
    status: str
    payment_id: int | None = None
