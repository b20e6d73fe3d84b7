"""Payment and recurrent-payment events. Handlers register in AppConfig.ready() (see core/events.py).

A subscription made from a payment is announced by ``subscriptions.events.SubscriptionCreated`` with
``payment_id`` set; by the time any handler of another app runs, ``Payment.subscription`` already
points at it (R-PAY-6): payments' own synchronous handler, registered first, writes the link.
Handlers should still prefer ``event.payment_id`` to a reverse lookup.
"""

from dataclasses import dataclass

from masthead.core.events import Event


@dataclass(frozen=True, kw_only=True)
class NewPayment(Event):
    payment_id: int
    user_id: int


@dataclass(frozen=True, kw_only=True)
class PaymentStatusChanged(Event):
    """A real status change of a payment (R-PAY-4); a repeated status emits nothing."""

    payment_id: int
    user_id: int
    old_status: str
    new_status: str


@dataclass(frozen=True, kw_only=True)
class PaymentPaid(Event):
    """A payment reached paid/prepaid/authorized; ``subscription_id`` is the subscription it made, if any."""

    payment_id: int
    user_id: int
    status: str
    subscription_id: int | None = None
    recurrent_charge: bool = False


@dataclass(frozen=True, kw_only=True)
class RecurrentPaymentCreated(Event):
    recurrent_payment_id: int
    user_id: int
    parent_payment_id: int | None


@dataclass(frozen=True, kw_only=True)
class RecurrentPaymentStateChanged(Event):
    """Every state change of a recurrent payment row (R-REC-2)."""

    recurrent_payment_id: int
    user_id: int
    old_state: str
    new_state: str


@dataclass(frozen=True, kw_only=True)
class BeforeRecurrentCharge(Event):
    """Synchronous handlers may still change the attempt's payment before the gateway is called."""

    recurrent_payment_id: int
    payment_id: int


@dataclass(frozen=True, kw_only=True)
class RecurrentPaymentRenewed(Event):
    """A charge succeeded (R-REC-9); emitted once per row."""

    recurrent_payment_id: int
    user_id: int
    payment_id: int
    next_recurrent_payment_id: int | None


@dataclass(frozen=True, kw_only=True)
class RecurrentPaymentFailTry(Event):
    """A charge failed and was rescheduled: a retry (R-REC-10) or a gateway error (R-REC-13)."""

    recurrent_payment_id: int
    user_id: int
    payment_id: int
    next_recurrent_payment_id: int
    code: str
    gateway_error: bool = False


@dataclass(frozen=True, kw_only=True)
class RecurrentPaymentFailed(Event):
    """A charge failed for good: retries exhausted or a hard decline (R-REC-12)."""

    recurrent_payment_id: int
    user_id: int
    payment_id: int | None
    code: str


@dataclass(frozen=True, kw_only=True)
class RecurrentPaymentStoppedByUser(Event):
    recurrent_payment_id: int
    user_id: int


@dataclass(frozen=True, kw_only=True)
class RecurrentPaymentStoppedByAdmin(Event):
    recurrent_payment_id: int
    user_id: int


@dataclass(frozen=True, kw_only=True)
class RecurrentPaymentReactivated(Event):
    recurrent_payment_id: int
    user_id: int
    by_admin: bool = False
