"""The in-process event bus (house rule 3: no Django signals for domain logic).

An event is a frozen, keyword-only dataclass deriving from :class:`Event`. Apps register
handlers in ``AppConfig.ready()``:

* a **synchronous** handler runs inside the emitter's transaction: if it raises, the whole
  operation rolls back;
* an **asynchronous** handler runs later in a Huey worker. ``emit`` schedules it with
  ``transaction.on_commit``, so a rolled-back transaction never runs it. The event travels as
  JSON, also when Huey runs tasks inline, so a handler never sees anything a worker would not.
  Each (event, handler) pair runs at most once: the worker records it in ``HandledEvent`` in the
  same transaction as the handler's own writes, so a redelivered task is skipped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from functools import cache, partial

from django.db import IntegrityError, transaction
from django.utils.module_loading import import_string
from pydantic import TypeAdapter

from masthead.core import clock

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    event_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: datetime = dataclasses.field(default_factory=clock.now)


Handler = Callable[[Event], None]

_sync_handlers: dict[type[Event], list[Handler]] = defaultdict(list)
_async_handlers: dict[type[Event], list[str]] = defaultdict(list)


def dotted_name(obj) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def subscribe(event_type: type[Event], handler: Handler, *, asynchronous: bool = False) -> None:
    """Register ``handler`` for ``event_type``. Registering the same pair twice is a no-op."""
    if not (isinstance(event_type, type) and issubclass(event_type, Event)):
        raise TypeError(f"{event_type!r} is not an Event class")
    if asynchronous:
        name = dotted_name(handler)
        if "<" in name or import_string(name) is not handler:
            raise ValueError(f"asynchronous handler {name} must be a module-level function")
        if name not in _async_handlers[event_type]:
            _async_handlers[event_type].append(name)
    elif handler not in _sync_handlers[event_type]:
        _sync_handlers[event_type].append(handler)


def unsubscribe(event_type: type[Event], handler: Handler) -> None:
    if handler in _sync_handlers[event_type]:
        _sync_handlers[event_type].remove(handler)
    name = dotted_name(handler)
    if name in _async_handlers[event_type]:
        _async_handlers[event_type].remove(name)


@cache
def _adapter(event_type: type[Event]) -> TypeAdapter:
    return TypeAdapter(event_type)


def serialize(event: Event) -> str:
    return _adapter(type(event)).dump_json(event).decode()


def deserialize(event_path: str, payload: str) -> Event:
    event_type = import_string(event_path)
    return _adapter(event_type).validate_json(payload)


def emit(event: Event) -> None:
    """Run the synchronous handlers now; schedule the asynchronous ones for after commit."""
    for handler in list(_sync_handlers[type(event)]):
        handler(event)
    async_names = _async_handlers[type(event)]
    if async_names:
        payload = serialize(event)
        event_path = dotted_name(type(event))
        for name in async_names:
            transaction.on_commit(partial(_enqueue, name, event_path, payload))


def _enqueue(handler_path: str, event_path: str, payload: str) -> None:
    from masthead.core.tasks import handle_event

    handle_event(handler_path, event_path, payload)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_async_handler(handler_path: str, event_path: str, payload: str) -> bool:
    """Run one asynchronous handler once; returns False when it had already run."""
    from masthead.core.models import HandledEvent

    event = deserialize(event_path, payload)
    handler = import_string(handler_path)
    with transaction.atomic():
        try:
            with transaction.atomic():
                HandledEvent.objects.create(
                    event_id=event.event_id,
                    handler=handler_path,
                    event_type=event_path,
                    emitted_at=event.occurred_at,
                    handled_at=clock.now(),
                    worker=worker_name(),
                )
        except IntegrityError:
            log.info("event %s already handled by %s; skipped", event.event_id, handler_path)
            return False
        handler(event)
    return True


# --- core's own event: worker heartbeat --------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerHeartbeat(Event):
    """Emitted every minute by a periodic task; proves the queue and a worker are alive."""


def record_heartbeat(event: WorkerHeartbeat) -> None:
    # Handling it is the record: HandledEvent holds the worker and the queue delay.
    log.debug("heartbeat %s handled", event.event_id)
