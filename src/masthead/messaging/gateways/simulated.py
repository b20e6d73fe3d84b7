"""The simulated gateway (default): in-process, accepts at once, delivers after a delay.

Numbers matching ``SMS_SIMULATED_REJECT`` are refused (permanent), ``SMS_SIMULATED_TRANSIENT``
answer "try later", ``SMS_SIMULATED_FAIL`` are accepted and then fail; the rest are delivered
``SMS_SIMULATED_DELIVERY_SECONDS`` after sending. The gateway id is derived from our id, so a
repeated attempt is recognised (deduplicated) like a real gateway given our id would.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta

from django.conf import settings

from masthead.messaging.gateways.base import ACCEPTED, PERMANENT, TRANSIENT, Outgoing, Report, SendResult


def _matches(pattern: str, number: str) -> bool:
    return bool(pattern) and re.search(pattern, number) is not None


class SimulatedGateway:
    code = "simulated"
    reports_itself = True  # the dispatcher asks due_reports() for its delivery reports

    def __init__(self):
        self._lock = threading.Lock()
        self.sent: dict[int, int] = {}  # our id → times it really went out (tests count it)

    def reset(self) -> None:
        with self._lock:
            self.sent.clear()

    def send(self, message: Outgoing) -> SendResult:
        if _matches(settings.SMS_SIMULATED_REJECT, message.to):
            return SendResult(PERMANENT, error="number refused by the simulated operator")
        if _matches(settings.SMS_SIMULATED_TRANSIENT, message.to):
            return SendResult(TRANSIENT, error="simulated operator busy, try later")
        with self._lock:  # deduplicated on our id: a repeat is acknowledged, not sent again
            self.sent.setdefault(message.message_id, 0)
            self.sent[message.message_id] = 1
        return SendResult(ACCEPTED, gateway_message_id=f"sim-{message.message_id}")

    def due_reports(self, sent: list[tuple[int, str, datetime]], now: datetime) -> list[Report]:
        delay = timedelta(seconds=settings.SMS_SIMULATED_DELIVERY_SECONDS)
        reports = []
        for message_id, number, sent_at in sent:
            if sent_at + delay <= now:
                failed = _matches(settings.SMS_SIMULATED_FAIL, number)
                reports.append(Report(message_id, "failed" if failed else "delivered",
                                      "simulated: not delivered" if failed else "", sent_at + delay))
        return reports
