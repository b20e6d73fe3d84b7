"""``fake_card``: a deterministic card processor simulator, enough to run and test every charge path.

Tokens look like ``card_<number>`` (:func:`token_for`). The outcome depends on how the number ends,
through ``settings.FAKE_CARD_DECLINES`` (``"<suffix>:<outcome>:<code>"`` entries separated by commas;
the longest matching suffix wins; any other number is approved). The default::

    0002 → fail_try  insufficient_funds     0069 → fail_stop expired_card
    0119 → error     gateway_unavailable    0077 → pending   processing

``settings.FAKE_CARD_LATENCY_MS`` (default 0) makes every call sleep that long, like a network round
trip. Like a real processor it remembers idempotency keys: a repeated key answers the first result
and charges nothing. It also counts what it charged (:attr:`FakeCardGateway.charges`), so tests and
benchmarks can prove that nothing was charged twice.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from decimal import Decimal

from django.conf import settings

from masthead.payments.gateways.base import FAIL_STOP, OK, OUTCOMES, ChargeResult

TOKEN = re.compile(r"^card_(\d{4,19})$")
DEFAULT_DECLINES = ("0002:fail_try:insufficient_funds,0069:fail_stop:expired_card,"
                    "0119:error:gateway_unavailable,0077:pending:processing")
REMEMBERED_KEYS = 200_000


def token_for(number: str) -> str:
    """The token the simulator issues for a card number (spaces and dashes dropped)."""
    return "card_" + re.sub(r"[\s-]", "", number)


def parse_declines(value: str) -> list[tuple[str, str, str]]:
    """``"0002:fail_try:insufficient_funds, …"`` → [(suffix, outcome, code)], longest suffix first."""
    rules = []
    for entry in (value or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        parts = [p.strip() for p in entry.split(":")]
        if len(parts) != 3 or not parts[0].isdigit() or parts[1] not in OUTCOMES:
            raise ValueError(f"FAKE_CARD_DECLINES: bad entry {entry!r} (want <digits>:<outcome>:<code>)")
        rules.append((parts[0], parts[1], parts[2]))
    return sorted(rules, key=lambda r: -len(r[0]))


def _message(code: str) -> str:
    return code.replace("_", " ").capitalize()


class FakeCardGateway:
    code = "fake_card"
    timeout = 5.0

    def __init__(self):
        self._lock = threading.Lock()
        self._results: OrderedDict[str, ChargeResult] = OrderedDict()
        self.charges: list[tuple[str, str, Decimal]] = []  # (idempotency key, token, amount) actually charged
        self.calls = 0  # every call, replays included

    def reset(self) -> None:
        with self._lock:
            self._results.clear()
            self.charges.clear()
            self.calls = 0

    def decide(self, token: str, amount) -> ChargeResult:
        match = TOKEN.match(token or "")
        if not match:
            return ChargeResult(FAIL_STOP, "invalid_token", "Unknown card token")
        if Decimal(amount) <= 0:
            return ChargeResult(FAIL_STOP, "invalid_amount", "Amount must be positive")
        number = match.group(1)
        declines = getattr(settings, "FAKE_CARD_DECLINES", DEFAULT_DECLINES)
        for suffix, outcome, code in parse_declines(declines):
            if number.endswith(suffix):
                return ChargeResult(outcome, code, _message(code))
        return ChargeResult(OK, "approved", "Approved")

    def charge(self, *, token, amount, idempotency_key, payment) -> ChargeResult:
        latency = int(getattr(settings, "FAKE_CARD_LATENCY_MS", 0) or 0)
        if latency > 0:
            time.sleep(latency / 1000)
        with self._lock:
            self.calls += 1
            known = self._results.get(idempotency_key)
            if known is not None:
                return known
            result = self.decide(token, amount)
            result = ChargeResult(result.outcome, result.code, result.message,
                                  response={"idempotency_key": idempotency_key, "outcome": result.outcome,
                                            "code": result.code, "amount": str(amount)})
            if result.outcome == OK:
                self.charges.append((idempotency_key, token, Decimal(amount)))
            self._results[idempotency_key] = result
            while len(self._results) > REMEMBERED_KEYS:
                self._results.popitem(last=False)
            return result
