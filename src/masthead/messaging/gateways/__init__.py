"""SMS gateway adapters by code; ``current()`` is the one ``SMS_GATEWAY`` names (one instance per
process). Add one with ``register(MyGateway)``; see ``base.py`` for the port."""

from __future__ import annotations

from django.conf import settings

from masthead.core.registry import Registry
from masthead.messaging.gateways.base import (
    ACCEPTED,
    PERMANENT,
    TRANSIENT,
    Gateway,
    Outgoing,
    Report,
    SendResult,
)
from masthead.messaging.gateways.http import HttpGateway
from masthead.messaging.gateways.kannel import KannelGateway
from masthead.messaging.gateways.simulated import SimulatedGateway

__all__ = ["ACCEPTED", "PERMANENT", "TRANSIENT", "Gateway", "Outgoing", "Report", "SendResult", "current", "get",
           "register"]

_registry = Registry("SMS gateway")
register = _registry.register


def get(code: str) -> Gateway:
    return _registry.get(code)


def current() -> Gateway:
    return get(settings.SMS_GATEWAY)


register(SimulatedGateway)
register(HttpGateway)
register(KannelGateway)
