"""Gateway adapters by code. ``get(code)`` answers the one adapter instance of that code.

Add an adapter with ``register(MyGateway)`` (see ``base.py`` for how to write one).
"""

from __future__ import annotations

from masthead.core.registry import Registry
from masthead.payments.gateways.base import ChargeResult, Gateway, GatewayError
from masthead.payments.gateways.fake_card import FakeCardGateway
from masthead.payments.gateways.free import FreeGateway

__all__ = ["ChargeResult", "Gateway", "GatewayError", "get", "register", "registered"]

_registry = Registry("gateway adapter", GatewayError)
register, registered = _registry.register, _registry.registered


def get(code: str) -> Gateway:
    """The adapter for ``code`` (one instance per process); GatewayError when none is registered."""
    return _registry.get(code)


register(FreeGateway)
register(FakeCardGateway)
