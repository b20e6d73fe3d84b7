"""The dispatcher: claims due messages, sends them through the gateway concurrently within the rate
limit, and records each outcome.

- One dispatcher per gateway at a time holds a lease (``DispatcherLease``), so the rate limit is
  global; a lease left by a killed worker expires after ``SMS_DISPATCHER_LEASE_SECONDS``.
- A claim is a conditional update queued → sending (``skip_locked`` on PostgreSQL) in batches of
  ``SMS_BATCH_SIZE``. A message left in ``sending`` longer than ``SMS_LEASE_SECONDS`` (its
  dispatcher died) goes back to the queue; it is sent again with the same id, which a gateway
  that deduplicates (simulated, http) recognises.
- Transient failures retry after ``SMS_RETRY_DELAYS``, then fail; permanent refusals are rejected;
  a message past its validity expires; a non-transactional message to an opted-out number is
  rejected (``opted_out``) without reaching the gateway; non-urgent messages wait out quiet hours.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, time as dtime, timedelta

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Case, CharField, F, Q, Value, When
from django.db.models.functions import Cast, Concat

from masthead.core import clock
from masthead.messaging import gateways, services
from masthead.messaging.models import DispatcherLease, OptOut, SmsMessage, SmsStatusChange
from masthead.payments.services import parse_durations

logger = logging.getLogger(__name__)
M = SmsMessage
OWNER = f"{socket.gethostname()}:{os.getpid()}"
RECORD_CHUNK = 100  # accepted answers written together (one compare-and-set for the chunk)
RECORD_WITHIN = 0.2  # seconds an accepted answer waits at most before it is written


@dataclass
class DispatchResult:
    claimed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    reclaimed: int = 0
    reports: int = 0
    skipped: bool = False  # another dispatcher holds the lease

    def count(self, outcome: str, n: int = 1) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n


# --- quiet hours and retries -------------------------------------------------------------------------


def quiet_window(now: datetime) -> datetime | None:
    """The end of the quiet hours ``now`` falls in (aware), or None outside them."""
    raw = (settings.SMS_QUIET_HOURS or "").strip()
    if not raw:
        return None
    start_s, end_s = (part.strip() for part in raw.split("-"))
    start, end = dtime.fromisoformat(start_s), dtime.fromisoformat(end_s)
    local = clock.localtime(now)
    t = local.time()
    inside = (start <= t or t < end) if start > end else (start <= t < end)
    if not inside:
        return None
    day = local.date() if t < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=local.tzinfo)


def retry_delays() -> list[timedelta]:
    return parse_durations(settings.SMS_RETRY_DELAYS)


# --- lease -------------------------------------------------------------------------------------------


def acquire_lease(gateway_code: str, now: datetime) -> bool:
    DispatcherLease.objects.get_or_create(gateway=gateway_code, defaults={"expires_at": now})
    until = now + timedelta(seconds=settings.SMS_DISPATCHER_LEASE_SECONDS)
    return bool(DispatcherLease.objects.filter(Q(expires_at__lte=now) | Q(owner=OWNER), gateway=gateway_code)
                .update(owner=OWNER, expires_at=until))


def release_lease(gateway_code: str) -> None:
    DispatcherLease.objects.filter(gateway=gateway_code, owner=OWNER).update(owner="", expires_at=clock.now())


# --- claiming ----------------------------------------------------------------------------------------------


def reclaim(now: datetime) -> int:
    """Messages whose dispatcher died while sending go back to the queue."""
    stale = list(M.objects.filter(status=M.SENDING, claimed_at__lt=now - timedelta(seconds=settings.SMS_LEASE_SECONDS))
                 .values_list("pk", flat=True)[:1000])
    return sum(services.transition(pk, M.QUEUED, detail="lease expired: sending again", claimed_at=None,
                                   next_attempt_at=now) for pk in stale)


def _due(now: datetime):
    """Queued messages that may go out now (during quiet hours, the urgent ones only)."""
    due = M.objects.filter(status=M.QUEUED, next_attempt_at__lte=now)
    return due.filter(urgent=True) if quiet_window(now) is not None else due


@transaction.atomic
def claim(*, gateway_code: str, limit: int, now: datetime) -> list[SmsMessage]:
    """Due queued messages → sending, ours alone: PostgreSQL skips rows another claim holds; SQLite
    serialises write transactions."""
    due = _due(now).order_by("next_attempt_at", "pk")
    if connection.vendor == "postgresql":
        due = due.select_for_update(skip_locked=True)
    ids = list(due.values_list("pk", flat=True)[:limit])
    if not ids:
        return []
    M.objects.filter(pk__in=ids, status=M.QUEUED).update(
        status=M.SENDING, claimed_at=now, attempts=F("attempts") + 1, gateway=gateway_code, updated_at=now)
    claimed = list(M.objects.filter(pk__in=ids, status=M.SENDING, claimed_at=now).order_by("pk"))
    SmsStatusChange.objects.bulk_create([SmsStatusChange(message_id=m.pk, old_status=M.QUEUED, new_status=M.SENDING,
                                                         detail=f"attempt {m.attempts}", created_at=now)
                                         for m in claimed])
    return claimed


# --- sending ---------------------------------------------------------------------------------------------


class RateLimiter:
    """At most ``rate`` acquisitions per second across the threads of this dispatcher."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_at = time.monotonic()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            wait = self.next_at - now
            self.next_at = max(self.next_at, now) + self.interval
        if wait > 0:
            time.sleep(wait)


def _refusal(message: SmsMessage, now: datetime, opted_out: set[str]) -> tuple[str, str] | None:
    if message.valid_until is not None and message.valid_until <= now:
        return M.EXPIRED, "validity passed before sending"
    if not message.transactional and message.phone_number in opted_out:
        return M.REJECTED, "opted_out"
    return None


def record(message: SmsMessage, result: gateways.SendResult, now: datetime) -> str:
    """Write the gateway's answer for one claimed message; returns the outcome counted."""
    if result.outcome == gateways.ACCEPTED:
        if not services.transition(message.pk, M.SENT, detail="accepted by the gateway", sent_at=now,
                                   gateway_message_id=result.gateway_message_id, claimed_at=None,
                                   error_message=""):
            # a delivery report overtook the answer: keep its status, add the gateway's id
            M.objects.filter(pk=message.pk, gateway_message_id__isnull=True).update(
                gateway_message_id=result.gateway_message_id)
        return "sent"
    if result.outcome == gateways.PERMANENT:
        services.transition(message.pk, M.REJECTED, detail=result.error, error_message=result.error[:500],
                            claimed_at=None)
        return "rejected"
    delays = retry_delays()
    if message.attempts <= len(delays):
        services.transition(message.pk, M.QUEUED, detail=f"transient: {result.error}", claimed_at=None,
                            error_message=result.error[:500], next_attempt_at=now + delays[message.attempts - 1])
        return "retry"
    services.transition(message.pk, M.FAILED, detail=f"gave up after {message.attempts} attempts: {result.error}",
                        error_message=result.error[:500], claimed_at=None)
    return "failed"


def record_accepted(accepted: list[tuple[SmsMessage, gateways.SendResult]], now: datetime) -> int:
    """Write the gateway's "accepted" for many claimed messages at once: sending → sent for those
    still sending (one locked compare-and-set and one history insert for the chunk, instead of a
    transaction per message); a message a delivery report already moved keeps its status and only
    gets the gateway's id, as in :func:`record`. Returns how many were written."""
    ids = {message.pk: answer.gateway_message_id for message, answer in accepted}
    with transaction.atomic():
        still = M.objects.filter(pk__in=ids, status=M.SENDING).order_by("pk")
        if connection.vendor == "postgresql":
            still = still.select_for_update()  # a report waits for this chunk, then sees "sent"
        moved = list(still.values_list("pk", flat=True))
        if moved:
            # Most gateways derive their id from ours ("42", "sim-42"): one UPDATE per such prefix sets
            # it in SQL; any other ids go through one CASE (building many CASE branches is slow).
            by_prefix: dict[str | None, list[int]] = {}
            other: dict[int, str] = {}
            for pk in moved:
                gateway_id, own = ids[pk], str(pk)
                if gateway_id is not None and gateway_id.endswith(own):
                    by_prefix.setdefault(gateway_id[:-len(own)], []).append(pk)
                elif gateway_id is None:
                    by_prefix.setdefault(None, []).append(pk)
                else:
                    other[pk] = gateway_id
            fields = {"status": M.SENT, "sent_at": now, "claimed_at": None, "error_message": "", "updated_at": now}
            for prefix, pks in by_prefix.items():
                own_id = Cast("pk", CharField()) if prefix is not None else Value(None, output_field=CharField())
                M.objects.filter(pk__in=pks).update(
                    gateway_message_id=Concat(Value(prefix), own_id, output_field=CharField()) if prefix else own_id,
                    **fields)
            if other:
                M.objects.filter(pk__in=other).update(
                    gateway_message_id=Case(*(When(pk=pk, then=Value(gid)) for pk, gid in other.items()),
                                            output_field=CharField()), **fields)
            SmsStatusChange.objects.bulk_create([
                SmsStatusChange(message_id=pk, old_status=M.SENDING, new_status=M.SENT,
                                detail="accepted by the gateway", created_at=now) for pk in moved])
        for pk in ids.keys() - set(moved):  # overtaken by a delivery report
            M.objects.filter(pk=pk, gateway_message_id__isnull=True).update(gateway_message_id=ids[pk])
    return len(ids)


def _send(gateway, limiter: RateLimiter, message: SmsMessage) -> gateways.SendResult:
    limiter.acquire()
    try:
        return gateway.send(gateways.Outgoing(message.pk, message.phone_number, message.body, message.encoding))
    except Exception as exc:  # an adapter bug must not leave the message claimed
        logger.exception("SMS gateway %s raised on message %s", gateway.code, message.pk)
        return gateways.SendResult(gateways.TRANSIENT, error=f"adapter error: {exc}"[:500])


def send_claimed(claimed: list[SmsMessage], gateway, limiter: RateLimiter, pool: ThreadPoolExecutor,
                 result: DispatchResult) -> None:
    now = clock.now()
    opted_out = set(OptOut.objects.filter(phone_number__in={m.phone_number for m in claimed})
                    .values_list("phone_number", flat=True))
    sendable = []
    for message in claimed:
        refusal = _refusal(message, now, opted_out)
        if refusal is None:
            sendable.append(message)
        else:
            services.transition(message.pk, refusal[0], detail=refusal[1], error_message=refusal[1], claimed_at=None)
            result.count(refusal[0])
    # Answers are written as they come: refusals and transient errors one by one, acceptances in
    # chunks (at most RECORD_CHUNK, none older than RECORD_WITHIN seconds), so the writing keeps up
    # with the senders instead of costing a transaction per message in this one thread.
    answers: queue.SimpleQueue = queue.SimpleQueue()
    for message in sendable:
        pool.submit(_send, gateway, limiter, message).add_done_callback(
            lambda future, message=message: answers.put((message, future)))
    accepted: list[tuple[SmsMessage, gateways.SendResult]] = []
    oldest = 0.0
    for left in range(len(sendable), 0, -1):
        while True:
            wait = None if not accepted else max(0.0, oldest + RECORD_WITHIN - time.monotonic())
            try:
                message, future = answers.get(timeout=wait)
                break
            except queue.Empty:
                result.count("sent", record_accepted(accepted, clock.now()))
                accepted = []
        answer = future.result()
        if answer.outcome == gateways.ACCEPTED:
            if not accepted:
                oldest = time.monotonic()
            accepted.append((message, answer))
        else:
            result.count(record(message, answer, clock.now()))
        if accepted and (len(accepted) >= RECORD_CHUNK or left == 1):
            result.count("sent", record_accepted(accepted, clock.now()))
            accepted = []


def settle_reports(gateway, now: datetime, limit: int = 5000) -> int:
    """Delivery reports a gateway produces itself (the simulated one); the others report by webhook."""
    if not getattr(gateway, "reports_itself", False):
        return 0
    sent = list(M.objects.filter(status=M.SENT, gateway=gateway.code).order_by("sent_at")
                .values_list("pk", "phone_number", "sent_at")[:limit])
    reports = gateway.due_reports(sent, now) if sent else []
    for report in reports:
        services.record_report(message_id=report.message_id, report=report.status, detail=report.detail,
                               at=report.at)
    return len(reports)


def run(*, budget_seconds: float | None = None, gateway_code: str | None = None, again: bool = True
        ) -> DispatchResult:
    """Send everything due, for at most ``budget_seconds`` (default SMS_DISPATCH_SECONDS)."""
    gateway = gateways.get(gateway_code or settings.SMS_GATEWAY)
    result = DispatchResult()
    if not acquire_lease(gateway.code, clock.now()):
        result.skipped = True
        return result
    deadline = time.monotonic() + (settings.SMS_DISPATCH_SECONDS if budget_seconds is None else budget_seconds)
    limiter = RateLimiter(settings.SMS_RATE_PER_SECOND)
    try:
        with ThreadPoolExecutor(max_workers=max(1, settings.SMS_CONCURRENCY),
                                thread_name_prefix="sms-send") as pool:
            while time.monotonic() < deadline:
                now = clock.now()
                if not acquire_lease(gateway.code, now):  # renewed each round; lost only if we stalled
                    break
                result.reclaimed += reclaim(now)
                # the time after reclaiming: a message reclaimed and claimed again keeps its history in order
                claimed = claim(gateway_code=gateway.code, limit=settings.SMS_BATCH_SIZE, now=clock.now())
                result.claimed += len(claimed)
                if claimed:
                    send_claimed(claimed, gateway, limiter, pool, result)
                result.reports += settle_reports(gateway, clock.now())
                if not claimed:
                    break
    finally:
        release_lease(gateway.code)
        if not connection.in_atomic_block:  # never close a connection under a caller's transaction
            close_old_connections()
    # A wake-up skipped while we held the lease would leave its message to the periodic run: look
    # once more after releasing, and go on if something is due and time remains.
    remaining = deadline - time.monotonic()
    if again and remaining > 0 and _due(clock.now()).exists():
        more = run(budget_seconds=remaining, gateway_code=gateway.code, again=False)
        result.claimed += more.claimed
        result.reclaimed += more.reclaimed
        result.reports += more.reports
        for outcome, count in more.outcomes.items():
            result.outcomes[outcome] = result.outcomes.get(outcome, 0) + count
    return result
