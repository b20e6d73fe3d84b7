"""The payment gateway port (house rule 8): what the charge run needs from a card processor.

A gateway adapter is a class with a ``code`` (the ``PaymentGateway.code`` it serves) and one method,
:meth:`Gateway.charge`, which charges a stored card token once and answers a :class:`ChargeResult`.
The charge run (``payments.services.charge_due``) never holds a database transaction while it waits
for the gateway, and it maps the outcome onto the recurrent-payment state machine (R-REC-8):

=============  ===============================================================================
``ok``         the money was taken: payment paid, subscription made, next row scheduled (R-REC-9)
``pending``    the processor answers later: the row stays ``pending`` with ``status`` = code
``fail_try``   a soft decline (insufficient funds...): the retry ladder (R-REC-10)
``fail_stop``  a hard decline (expired or stolen card...): ``system_stop``, no retry (R-REC-12)
``error``      the gateway could not be reached or answered nonsense: try again later without
               using a retry (R-REC-13)
=============  ===============================================================================

Adding a real card processor
----------------------------
1. Create ``payments/gateways/<code>.py`` with a class implementing :class:`Gateway`. Do the HTTP call
   with an explicit ``timeout`` (connect and read, a few seconds; read it from a setting) and send
   ``idempotency_key`` as the processor's idempotency key (Stripe: ``Idempotency-Key`` header; most
   processors have one). The charge run passes the same key again when it retries an attempt whose
   outcome it never recorded (a crash after the call), so a processor that honours the key never
   charges one attempt twice.
2. Map every processor answer onto an outcome: a timeout, a connection error, a 5xx or a 429 is
   ``error`` (the attempt is rescheduled, retries untouched); a decline the card holder can fix
   (insufficient funds, do-not-honour) is ``fail_try``; a final decline (expired, lost, stolen,
   invalid token) is ``fail_stop``. Put the processor's code in ``code`` (stored as the row's
   ``status``) and its human message in ``message`` (stored as ``approval``, cut to 250 chars).
   Never raise for an answer you understood; an exception is treated like ``error``.
3. Register the class in ``payments/gateways/__init__.py`` (``register(MyGateway)``), and add a
   ``PaymentGateway`` row (data migration or admin) with the same ``code`` and ``is_recurrent=True``.
   Gateway meta ``unstoppable`` / ``user_unstoppable`` decide who may stop its profiles (R-REC-15).
4. The first payment and the card token come from the processor's checkout flow: when it reports
   success, call ``payments.services.confirm(payment=..., cid=<token>, expires_at=...)``.
5. Credentials come from environment variables read in ``settings.py``; never log card data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from masthead.payments.models import Payment

Outcome = Literal["ok", "pending", "fail_try", "fail_stop", "error"]
OK, PENDING, FAIL_TRY, FAIL_STOP, ERROR = "ok", "pending", "fail_try", "fail_stop", "error"
OUTCOMES: tuple[str, ...] = (OK, PENDING, FAIL_TRY, FAIL_STOP, ERROR)


@dataclass(frozen=True)
class ChargeResult:
    """What a gateway answered. ``charge_at``: the next charge time when the processor decides it
    (externally charged subscriptions, R-REC-9); ``response``: raw answer for the payment log."""

    outcome: Outcome
    code: str = ""
    message: str = ""
    charge_at: datetime | None = None
    response: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}")


@runtime_checkable
class Gateway(Protocol):
    """A payment gateway adapter."""

    code: ClassVar[str]
    #: seconds an outbound call may take (connect + read); adapters without network ignore it
    timeout: float

    def charge(self, *, token: str, amount, idempotency_key: str, payment: Payment) -> ChargeResult:
        """Charge ``amount`` (Decimal, two places) to the card ``token`` once per ``idempotency_key``."""
        ...


class GatewayError(Exception):
    """A gateway could not be used at all (unknown code, not able to charge)."""
