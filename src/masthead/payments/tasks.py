"""Periodic work of payments: the recurring charge run."""

from django.conf import settings
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, lock_task

from masthead.payments import services


@db_periodic_task(crontab(minute=f"*/{settings.CHARGE_RUN_MINUTES}"))
@lock_task("payments-charge-run")
def charge_run() -> dict:
    """R-REC-6, every CHARGE_RUN_MINUTES (default 15). The lock only saves work: runs claim rows with
    conditional updates, so several at once never charge one row twice. CHARGE_RUN_WORKERS gateway
    calls run at once."""
    result = services.charge_due(workers=settings.CHARGE_RUN_WORKERS)
    return {"claimed": result.claimed, **result.outcomes}
