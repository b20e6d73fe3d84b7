"""Read side of SMS messaging for the admin: the dashboard's figures of today, a reader's latest
messages, who of a chosen set of readers an SMS would reach, and a batch's audience.

Each function runs a fixed number of queries whatever the table size: the database counts, no loop
over rows queries again.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from django.db.models import Count, Q

from masthead.core import clock
from masthead.messaging import batches
from masthead.messaging.models import OptOut, SmsMessage
from masthead.users.models import User

M = SmsMessage
#: statuses counted as "failed" on the dashboard: the message will not reach the phone
NOT_DELIVERED = (M.FAILED, M.REJECTED, M.EXPIRED)
IN_QUEUE = (M.QUEUED, M.SENDING)


def day_bounds(now: datetime) -> tuple[datetime, datetime]:
    """Local midnight of ``now``'s day and of the next day (aware, DST-safe)."""
    local = clock.localtime(now)
    start = datetime.combine(local.date(), time.min, tzinfo=local.tzinfo)
    end = datetime.combine(local.date() + timedelta(days=1), time.min, tzinfo=local.tzinfo)
    return start, end


def today(now: datetime) -> dict:
    """The dashboard (one query): ``sent`` (sent_at today), ``delivered`` (delivered today),
    ``failed`` (failed, rejected or expired today: the last change of such a message happened
    today), ``queue`` (queued + sending now, whatever their date) and ``rate`` (delivered /
    (delivered + failed) today, in percent, None when both are zero)."""
    start, end = day_bounds(now)
    day = {"gte": start, "lt": end}

    def within(field: str) -> Q:
        return Q(**{f"{field}__{op}": value for op, value in day.items()})

    figures = M.objects.filter(Q(updated_at__gte=start) | Q(status__in=IN_QUEUE)).aggregate(
        sent=Count("id", filter=within("sent_at")),
        delivered=Count("id", filter=within("delivered_at") & Q(status=M.DELIVERED)),
        failed=Count("id", filter=within("updated_at") & Q(status__in=NOT_DELIVERED)),
        queue=Count("id", filter=Q(status__in=IN_QUEUE)),
    )
    finished = figures["delivered"] + figures["failed"]
    figures["rate"] = round(100 * figures["delivered"] / finished, 1) if finished else None
    return figures


def user_messages(user: User, *, limit: int = 10) -> dict:
    """The latest ``limit`` messages to ``user`` as reader or as staff member, newest first, with
    their replies (three queries): ``messages``, ``count``."""
    mine = M.objects.filter(Q(user=user) | Q(staff=user))
    rows = list(mine.select_related("batch").prefetch_related("replies").order_by("-created_at", "-id")[:limit])
    return {"messages": rows, "count": mine.count()}


REACHABLE, NO_PHONE, OPTED_OUT = "reachable", "no_phone", "opted_out"


def audience(users: list[User]) -> dict:
    """Who of ``users`` an SMS from the admin would reach (one query): ``rows`` ((user, state) in the
    given order, state ``reachable``: a phone number not opted out; ``no_phone``; ``opted_out``:
    reached only by a transactional template) and the number of each state, and ``total``."""
    numbers = {u.phone_number for u in users if u.phone_number}
    out = set(OptOut.objects.filter(phone_number__in=numbers).values_list("phone_number", flat=True))
    rows = [(user, NO_PHONE if not user.phone_number else OPTED_OUT if user.phone_number in out else REACHABLE)
            for user in users]
    counts = {state: sum(1 for _user, s in rows if s == state) for state in (REACHABLE, NO_PHONE, OPTED_OUT)}
    return {"rows": rows, **counts, "total": len(users)}


def batch_audience(*, user_ids: list[int] | None = None, content_access: str = "") -> dict:
    """A batch's recipients before it is created (one query): ``count`` (active readers with a phone
    number, as ``batches.recipient_count``) and ``opted_out`` (of them, numbers that opted out: they
    are skipped unless the template is transactional)."""
    readers = batches.recipients(user_ids=user_ids, content_access=content_access)
    return readers.aggregate(
        count=Count("id"),
        opted_out=Count("id", filter=Q(phone_number__in=OptOut.objects.values("phone_number"))))
