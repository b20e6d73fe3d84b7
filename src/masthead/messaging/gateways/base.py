"""The port every SMS gateway adapter implements.

``send`` hands one message to the gateway and answers at once with what the gateway said:
``accepted`` (it took the message; delivery reports follow), ``transient`` (try again later:
timeouts, 5xx, no connection) or ``permanent`` (never retry: bad number, refused). It must not
raise for gateway trouble. ``message_id`` is ours: adapters pass it on so a gateway that can
deduplicate never sends a repeated attempt twice. Adapters are shared by the dispatcher's threads.

A gateway may also offer ``pump(work, concurrency)``: send everything ``work.take(block)`` gives,
up to ``concurrency`` requests at once from the calling thread, handing each answer to
``work.give(item, result)`` (see ``KannelGateway.pump``). The dispatcher then uses one thread
instead of ``concurrency`` threads each sending one message at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

ACCEPTED, TRANSIENT, PERMANENT = "accepted", "transient", "permanent"


@dataclass(frozen=True)
class Outgoing:
    message_id: int
    to: str  # E.164
    text: str
    encoding: str  # "gsm7" or "ucs2"


@dataclass(frozen=True)
class SendResult:
    outcome: str
    gateway_message_id: str | None = None
    error: str = ""


@dataclass(frozen=True)
class Report:
    """A delivery report: ``status`` is one of sent, delivered, failed, rejected, expired."""

    message_id: int
    status: str
    detail: str = ""
    at: datetime | None = None


class Gateway(Protocol):
    code: str
    reports_itself: bool  # True: due_reports() yields its delivery reports; False: they come by webhook

    def send(self, message: Outgoing) -> SendResult: ...

    def due_reports(self, sent: list[tuple[int, str, datetime]], now: datetime) -> list[Report]:
        """Reports a gateway without callbacks produces itself (the simulated one); others: []."""
        ...
