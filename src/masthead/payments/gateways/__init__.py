"""Gateway adapters by code. ``get(code)`` answers the one adapter instance of that code.

Add an adapter with ``register(MyGateway)`` (see ``base.py`` for how to write one).
"""

from __future__ import annotations

import threading

from masthead.payments.gateways.base import ChargeResult, Gateway, GatewayError
from masthead.payments.gateways.fake_card import FakeCardGateway
from masthead.payments.gateways.free import FreeGateway

__all__ = ["ChargeResult", "Gateway", "GatewayError", "get", "register", "registered"]

_classes: dict[str, type] = {}
_instances: dict[str, Gateway] = {}
_lock = threading.Lock()


def register(cls: type) -> type:
    """Register an adapter class under its ``code`` (replacing an earlier one of that code)."""
    _classes[cls.code] = cls
    _instances.pop(cls.code, None)
    return cls


def registered() -> list[str]:
    return sorted(_classes)


def get(code: str) -> Gateway:
    """The adapter for ``code`` (one instance per process); GatewayError when none is registered."""
    instance = _instances.get(code)
    if instance is not None:
        return instance
    with _lock:
        if code not in _instances:
            cls = _classes.get(code)
            if cls is None:
                raise GatewayError(f"no gateway adapter registered for {code!r}")
            _instances[code] = cls()
        return _instances[code]


register(FreeGateway)
register(FakeCardGateway)
