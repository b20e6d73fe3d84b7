"""Adapter classes by their ``code``, one instance of each per process, made on first use (the
payment gateways and the SMS gateways are such registries)."""

from __future__ import annotations

import threading


class Registry:
    def __init__(self, kind: str, error: type[Exception] = LookupError):
        self.kind, self.error = kind, error
        self._classes: dict[str, type] = {}
        self._instances: dict[str, object] = {}
        self._lock = threading.Lock()

    def register(self, cls: type) -> type:
        """Register an adapter class under its ``code`` (replacing an earlier one of that code)."""
        self._classes[cls.code] = cls
        self._instances.pop(cls.code, None)
        return cls

    def registered(self) -> list[str]:
        return sorted(self._classes)

    def get(self, code: str):
        """The adapter for ``code``; ``error`` when none is registered."""
        instance = self._instances.get(code)
        if instance is not None:
            return instance
        with self._lock:
            if code not in self._instances:
                cls = self._classes.get(code)
                if cls is None:
                    raise self.error(f"no {self.kind} registered for {code!r} (known: {', '.join(self.registered())})")
                self._instances[code] = cls()
            return self._instances[code]
