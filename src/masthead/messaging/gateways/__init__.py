"""SMS gateway adapters by code; ``current()`` is the one ``SMS_GATEWAY`` names (one instance per
process). Add one with ``register(MyGateway)``; see ``base.py`` for the port."""

from __future__ import annotations

import threading

from django.conf import settings

from masthead.messaging.gateways.base import ACCEPTED, PERMANENT, TRANSIENT, Gateway, Outgoing, Report, SendResult
from masthead.messaging.gateways.http import HttpGateway
from masthead.messaging.gateways.kannel import KannelGateway
from masthead.messaging.gateways.simulated import SimulatedGateway

__all__ = ["ACCEPTED", "PERMANENT", "TRANSIENT", "Gateway", "Outgoing", "Report", "SendResult", "current", "get",
           "register"]

_classes: dict[str, type] = {}
_instances: dict[str, Gateway] = {}
_lock = threading.Lock()


def register(cls: type) -> type:
    _classes[cls.code] = cls
    _instances.pop(cls.code, None)
    return cls


def get(code: str) -> Gateway:
    with _lock:
        if code not in _instances:
            if code not in _classes:
                raise LookupError(f"no SMS gateway '{code}' (known: {', '.join(sorted(_classes))})")
            _instances[code] = _classes[code]()
        return _instances[code]


def current() -> Gateway:
    return get(settings.SMS_GATEWAY)


register(SimulatedGateway)
register(HttpGateway)
register(KannelGateway)
