"""Huey tasks of the core: event dispatch, heartbeat, retention."""

from datetime import timedelta

from django.conf import settings
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task

from masthead.core import clock, events

HANDLED_EVENT_RETENTION_DAYS = 7


@db_task(retries=5, retry_delay=10)
def handle_event(handler_path: str, event_path: str, payload: str) -> bool:
    return events.run_async_handler(handler_path, event_path, payload)


@db_periodic_task(crontab(minute=f"*/{settings.HEARTBEAT_MINUTES}"))
def heartbeat() -> None:
    events.emit(events.WorkerHeartbeat())


@db_periodic_task(crontab(minute="17", hour="3"))
def prune_handled_events() -> int:
    from masthead.core.models import HandledEvent

    cutoff = clock.now() - timedelta(days=HANDLED_EVENT_RETENTION_DAYS)
    deleted, _ = HandledEvent.objects.filter(handled_at__lt=cutoff).delete()
    return deleted
