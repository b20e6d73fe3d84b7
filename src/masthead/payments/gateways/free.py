"""``free``: payments staff create and confirm by hand (gifts, corrections). It holds no cards."""

from __future__ import annotations

from masthead.payments.gateways.base import FAIL_STOP, ChargeResult


class FreeGateway:
    code = "free"
    timeout = 0.0

    def charge(self, *, token, amount, idempotency_key, payment) -> ChargeResult:
        return ChargeResult(FAIL_STOP, "not_recurrent", "The free gateway cannot charge cards")
