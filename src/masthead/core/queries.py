from masthead.core import clock, events
from masthead.core.models import HandledEvent


def last_heartbeat() -> dict | None:
    """The newest handled heartbeat: which worker, when, and how long it waited in the queue."""
    row = (
        HandledEvent.objects.filter(event_type=events.dotted_name(events.WorkerHeartbeat))
        .order_by("-handled_at")
        .first()
    )
    if row is None:
        return None
    return {
        "worker": row.worker,
        "handled_at": row.handled_at,
        "age_seconds": int((clock.now() - row.handled_at).total_seconds()),
        "queue_delay_seconds": max(0, int((row.handled_at - row.emitted_at).total_seconds())),
    }
