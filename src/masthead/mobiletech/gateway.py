"""Payment gateways of premium SMS (R-MT-10/11): ``mobiletech`` (one-off: the billed reply is the
charge, settled by its delivery report) and ``mobiletech_recurrent`` (each period a billed push on
the original inbound message; the delivery report settles the attempt, or the pending timeout
fails it)."""

from __future__ import annotations

from django.conf import settings

from masthead.payments.gateways.base import FAIL_STOP, FAIL_TRY, PENDING, ChargeResult


class MobiletechGateway:
    code = "mobiletech"
    timeout = 0.0

    def charge(self, *, token, amount, idempotency_key, payment) -> ChargeResult:
        return ChargeResult(FAIL_STOP, "not_recurrent", "One-off premium SMS payments are not charged again")


class MobiletechRecurrentGateway:
    code = "mobiletech_recurrent"

    @property
    def timeout(self) -> float:
        return settings.MOBILETECH_TIMEOUT_SECONDS

    def charge(self, *, token, amount, idempotency_key, payment) -> ChargeResult:
        from masthead.mobiletech import services
        from masthead.mobiletech.models import InboundMessage, OutboundMessage

        if OutboundMessage.objects.filter(payment=payment).exists():  # this attempt's push went out already
            return ChargeResult(PENDING, "charge_pending", "Waiting for the delivery report")
        inbound = InboundMessage.objects.filter(mobiletech_id=token).first()
        original = (OutboundMessage.objects.select_related("template")
                    .filter(rcv_msg_id=token, payment__isnull=False).order_by("pk").first())
        if inbound is None or original is None or original.template is None:
            return ChargeResult(FAIL_STOP, "no_initial_message",
                                f"No inbound message {token} with a paid billed reply to charge on")
        params = services.type_params(payment.subscription_type) or {"price": str(int(amount))}
        try:
            pushed = services.send(template_code=original.template.code, billkey=original.billkey, inbound=inbound,
                                   push=True, payment=payment, user=payment.user, params=params)
        except services.MobiletechError as exc:
            return ChargeResult(FAIL_TRY, exc.code, exc.message)
        if pushed is None:
            return ChargeResult(FAIL_TRY, "not_sent", "Mobiletech message to charge user was not sent")
        return ChargeResult(PENDING, "charge_pending", "Waiting for the delivery report")
