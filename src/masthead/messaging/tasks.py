"""Background work of messaging: the dispatcher (periodic and woken when a message is due now),
inbound processing."""

from django.db import transaction
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task

from masthead.messaging import dispatcher, services

@db_task()
def dispatch() -> dict:
    result = dispatcher.run()
    return {"claimed": result.claimed, **result.outcomes, "skipped": result.skipped}


@db_periodic_task(crontab(minute="*"))
def dispatch_periodically() -> dict:
    """Scheduled messages, retries, reclaimed leases and simulated reports, every minute."""
    return dispatch.call_local()


def dispatch_now() -> None:
    """Enqueue one dispatcher run when the current transaction commits, however many messages it
    queued (a rolled-back transaction enqueues nothing)."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        _fire()
    elif not any(entry[1] is _fire for entry in connection.run_on_commit):
        transaction.on_commit(_fire)


def _fire() -> None:
    dispatch()


@db_task()
def process_inbound(inbound_id: int) -> str:
    return services.process_inbound(inbound_id)


@db_task()
def fan_out(batch_id: int) -> int:
    from masthead.messaging import batches

    return batches.fan_out(batch_id)


@db_periodic_task(crontab(minute="7"))
def remind_ending_subscriptions() -> int:
    """The "subscription ends in N days" notification rules, hourly; each reminder once per
    subscription and end date (safe to run twice at once: the guard rows)."""
    from masthead.messaging import notifications

    return notifications.scan_ending()
