"""Periodic work of subscriptions."""

from django.conf import settings
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, lock_task

from masthead.subscriptions import services


@db_periodic_task(crontab(minute=f"*/{settings.SUBSCRIPTION_SWEEP_MINUTES}"))
@lock_task("subscriptions-status-sweep")
def sweep_statuses() -> dict:
    """R-SUB-7. The lock only saves work: the sweep is safe with several running (conditional updates)."""
    result = services.sweep_statuses()
    return {"started": result.started, "ended": result.ended}
