"""The status machine of an outbound SMS (pure). Every write goes through ``allowed_from``: a
conditional UPDATE ``WHERE status IN allowed_from(new)``, so no illegal transition can happen even
between concurrent writers (a late "sent" report never overwrites "delivered")."""

from __future__ import annotations

QUEUED, SENDING, SENT, DELIVERED = "queued", "sending", "sent", "delivered"
FAILED, REJECTED, EXPIRED, CANCELED = "failed", "rejected", "expired", "canceled"
ALL = (QUEUED, SENDING, SENT, DELIVERED, FAILED, REJECTED, EXPIRED, CANCELED)
FINAL = frozenset({DELIVERED, REJECTED, EXPIRED, CANCELED})

TRANSITIONS: dict[str, frozenset[str]] = {
    # queued: claimed by the dispatcher, canceled by staff, refused before sending, past validity
    QUEUED: frozenset({SENDING, CANCELED, REJECTED, EXPIRED}),
    # sending: the gateway's answer; a transient error or a reclaimed lease puts it back in the queue;
    # a delivery report may overtake the answer
    SENDING: frozenset({QUEUED, SENT, DELIVERED, FAILED, REJECTED, EXPIRED}),
    # sent: the delivery report
    SENT: frozenset({DELIVERED, FAILED, EXPIRED, REJECTED}),
    # failed: staff may retry it
    FAILED: frozenset({QUEUED}),
}


def can(old: str, new: str) -> bool:
    return new in TRANSITIONS.get(old, frozenset())


def allowed_from(new: str) -> tuple[str, ...]:
    """The statuses a message may be in to move to ``new``."""
    return tuple(old for old in ALL if can(old, new))
