"""Background work of premium SMS: sending, inbound handling, the pending-charge timeout."""

from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task

from masthead.mobiletech import services


@db_task()
def send_outbound(outbound_id: int) -> str:
    return services.deliver(outbound_id)


@db_task()
def handle_inbound(inbound_id: int) -> str:
    return services.handle_inbound(inbound_id)


@db_periodic_task(crontab(minute="*"))
def expire_pending_charges() -> int:
    return services.expire_pending_charges()
