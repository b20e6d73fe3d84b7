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
- The flow: this thread claims and records, the senders only send. Up to ``SMS_CONCURRENCY``
  requests are in flight (through the gateway's ``pump`` on one thread, or on as many threads);
  the next batch is claimed while the last one is going out, and acceptances are written in
  chunks (one statement on PostgreSQL). The claim and that write are plain SQL: at thousands of
  messages a second, building ORM statements and model instances cost more than running them.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, time as dtime, timedelta

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q

from masthead.core import clock
from masthead.messaging import gateways, services
from masthead.messaging.models import DispatcherLease, OptOut, SmsMessage, SmsStatusChange
from masthead.payments.services import parse_durations

logger = logging.getLogger(__name__)
M = SmsMessage
OWNER = f"{socket.gethostname()}:{os.getpid()}"
RECORD_CHUNK = 1000  # accepted answers written together (one compare-and-set for the chunk)
RECORD_WITHIN = 0.2  # seconds an accepted answer waits at most before it is written
POLL = 0.05  # seconds between looks at the senders' queue while answers are slow to come


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


@dataclass(slots=True)
class Claimed:
    """A message this dispatcher moved to ``sending``: what sending and recording it need."""

    pk: int
    phone_number: str
    body: str
    encoding: str
    expired: bool  # its validity had passed when it was claimed
    opted_out: bool  # not transactional, and its number had opted out when it was claimed
    attempts: int
    since: float = field(default_factory=time.monotonic)  # when claimed, on this process's monotonic clock


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


_HISTORY_COLUMNS = "message_id, old_status, new_status, detail, created_at"


def claim(*, gateway_code: str, limit: int, now: datetime) -> list[Claimed]:
    """Due queued messages → sending, ours alone, with their history rows; oldest due first.

    One statement on PostgreSQL (the update and the history insert in one CTE; rows another claim
    holds are skipped); on SQLite, which serialises write transactions, the update and then the
    history rows in one transaction. Plain SQL: this runs for every message sent, and building the
    ORM's statements and model instances cost more than running them."""
    table, history = M._meta.db_table, SmsStatusChange._meta.db_table
    when = connection.ops.adapt_datetimefield_value(now)
    urgent = " AND urgent" if quiet_window(now) is not None else ""
    due = (f"SELECT id FROM {table} WHERE status = %s AND next_attempt_at <= %s{urgent} "
           "ORDER BY next_attempt_at, id LIMIT %s")
    update = (f"UPDATE {table} SET status = %s, claimed_at = %s, attempts = attempts + 1, gateway = %s, "
              "updated_at = %s WHERE status = %s AND {due} RETURNING id, phone_number, body, encoding, "
              "valid_until IS NOT NULL AND valid_until <= %s, "
              f"NOT transactional AND EXISTS (SELECT 1 FROM {OptOut._meta.db_table} AS o "
              f"WHERE o.phone_number = {table}.phone_number), attempts")
    params = [M.SENDING, when, gateway_code, when, M.QUEUED, M.QUEUED, when, limit, when]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # one statement: atomic without a transaction around it
            cursor.execute(
                # ARRAY(...): the subquery runs once (an IN may run it again per row and claim more)
                f"WITH claimed AS ({update.format(due=f'id = ANY(ARRAY({due} FOR UPDATE SKIP LOCKED))')}), "
                f"logged AS (INSERT INTO {history} ({_HISTORY_COLUMNS}) "
                f"SELECT id, %s, %s, 'attempt ' || attempts, %s FROM claimed) SELECT * FROM claimed",
                [*params, M.QUEUED, M.SENDING, when])
            rows = cursor.fetchall()
    else:
        with transaction.atomic(savepoint=False), connection.cursor() as cursor:
            cursor.execute(update.format(due=f"id IN ({due})"), params)
            rows = cursor.fetchall()
            cursor.executemany(f"INSERT INTO {history} ({_HISTORY_COLUMNS}) VALUES (%s, %s, %s, %s, %s)",
                               [(row[0], M.QUEUED, M.SENDING, f"attempt {row[6]}", when) for row in rows])
    claimed = [Claimed(pk, phone, body, encoding, bool(expired), bool(opted_out), attempts)
               for pk, phone, body, encoding, expired, opted_out, attempts in rows]
    claimed.sort(key=lambda message: message.pk)
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


TOO_LATE = gateways.SendResult("too_late", error="not sent within half the claim lease")


def record(message: Claimed | SmsMessage, result: gateways.SendResult, now: datetime) -> str:
    """Write the gateway's answer for one claimed message; returns the outcome counted."""
    if result is TOO_LATE:
        services.transition(message.pk, M.QUEUED, detail=f"{result.error}: back in the queue", claimed_at=None,
                            next_attempt_at=now, attempts=F("attempts") - 1)
        return "requeued"
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


def record_accepted(accepted: list[tuple[Claimed, gateways.SendResult]], now: datetime) -> int:
    """Write the gateway's "accepted" for many claimed messages at once: sending → sent for those
    still sending, with their gateway ids and history rows (one statement on PostgreSQL); a message
    a delivery report already moved keeps its status and only gets the gateway's id, as in
    :func:`record`. Returns how many answers were written.

    The moved rows stay locked until the commit, so a report for one of them waits and then sees
    "sent"."""
    ids = {message.pk: answer.gateway_message_id for message, answer in accepted}
    table, history = M._meta.db_table, SmsStatusChange._meta.db_table
    when = connection.ops.adapt_datetimefield_value(now)
    detail = "accepted by the gateway"
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # one statement: atomic without a transaction around it
            cursor.execute(
                f"WITH moved AS (UPDATE {table} AS m SET status = %s, sent_at = %s, claimed_at = NULL, "
                "error_message = '', updated_at = %s, gateway_message_id = a.gid "
                "FROM unnest(%s::bigint[], %s::text[]) AS a(id, gid) WHERE m.id = a.id AND m.status = %s "
                f"RETURNING m.id), logged AS (INSERT INTO {history} ({_HISTORY_COLUMNS}) "
                "SELECT id, %s, %s, %s, %s FROM moved) SELECT id FROM moved",
                [M.SENT, when, when, list(ids), list(ids.values()), M.SENDING, M.SENDING, M.SENT, detail, when])
            moved = {row[0] for row in cursor.fetchall()}
    else:
        with transaction.atomic(savepoint=False), connection.cursor() as cursor:
            cursor.execute(f"SELECT id FROM {table} WHERE status = %s AND id IN ({', '.join(['%s'] * len(ids))})",
                           [M.SENDING, *ids])
            moved = {row[0] for row in cursor.fetchall()}
            cursor.executemany(f"UPDATE {table} SET status = %s, sent_at = %s, claimed_at = NULL, error_message = '', "
                               "updated_at = %s, gateway_message_id = %s WHERE id = %s",
                               [(M.SENT, when, when, ids[pk], pk) for pk in moved])
            cursor.executemany(f"INSERT INTO {history} ({_HISTORY_COLUMNS}) VALUES (%s, %s, %s, %s, %s)",
                               [(pk, M.SENDING, M.SENT, detail, when) for pk in moved])
    overtaken = [(ids[pk], pk) for pk in ids.keys() - moved if ids[pk] is not None]
    if overtaken:  # by a delivery report: only the gateway's id is missing
        with connection.cursor() as cursor:
            cursor.executemany(f"UPDATE {table} SET gateway_message_id = %s WHERE id = %s "
                               "AND gateway_message_id IS NULL", overtaken)
    return len(ids)


def _outgoing(message: Claimed) -> gateways.Outgoing:
    return gateways.Outgoing(message.pk, message.phone_number, message.body, message.encoding)


def _send(gateway, message: Claimed, outgoing: gateways.Outgoing) -> gateways.SendResult:
    try:
        return gateway.send(outgoing)
    except Exception as exc:  # an adapter bug must not leave the message claimed
        logger.exception("SMS gateway %s raised on message %s", gateway.code, message.pk)
        return gateways.SendResult(gateways.TRANSIENT, error=f"adapter error: {exc}"[:500])


class Senders:
    """Send the messages put on ``todo`` and put ``(message, answer)`` on ``answers``: through the
    gateway's ``pump`` on one thread when it has one (many requests in flight from one thread), else
    on ``count`` threads each sending one message at a time. Only the dispatcher's thread touches the
    database: the senders need none."""

    def __init__(self, gateway, limiter: RateLimiter, count: int):
        self.todo: queue.SimpleQueue = queue.SimpleQueue()
        self.answers: queue.SimpleQueue = queue.SimpleQueue()
        self.limiter = limiter
        self.in_flight = 0  # put on todo and not yet taken from answers
        self.closed = False  # a sender has met the end of the work (close() was called)
        if hasattr(gateway, "pump"):
            self.threads = [threading.Thread(target=self._pump, args=(gateway, count), name="sms-pump", daemon=True)]
        else:
            self.threads = [threading.Thread(target=self._work, args=(gateway,), name=f"sms-send-{n}", daemon=True)
                            for n in range(count)]
        for thread in self.threads:
            thread.start()

    # --- the senders' side ---

    def take(self, block: bool) -> tuple[Claimed, gateways.Outgoing] | None:
        """The next message to send (after the rate limit's wait); None: nothing now (``block`` False)
        or no more (``block`` True)."""
        while not self.closed:
            try:
                message = self.todo.get() if block else self.todo.get_nowait()
            except queue.Empty:
                return None
            if message is None:
                self.closed = True
                break
            if time.monotonic() - message.since > settings.SMS_LEASE_SECONDS / 2:
                # waited so long for a sender (a slow gateway) that the claim lease may run out
                # while sending, and another dispatcher send it too: put it back instead
                self.give(message, TOO_LATE)
                continue
            self.limiter.acquire()
            return message, _outgoing(message)
        return None

    def give(self, message: Claimed, answer: gateways.SendResult) -> None:
        self.answers.put((message, answer))

    def _work(self, gateway) -> None:
        while (taken := self.take(block=True)) is not None:
            self.give(taken[0], _send(gateway, *taken))

    def _pump(self, gateway, concurrency: int) -> None:
        try:
            gateway.pump(self, concurrency)
        except Exception:  # what it had in flight is answered; the dispatcher sees the senders gone
            logger.exception("SMS gateway %s stopped sending", gateway.code)

    # --- the dispatcher's side ---

    def submit(self, messages: list[Claimed]) -> None:
        for message in messages:
            self.todo.put(message)
        self.in_flight += len(messages)

    def waiting(self) -> int:
        """Messages no sender has taken yet."""
        return self.todo.qsize()

    def answer(self, timeout: float | None) -> tuple[Claimed, gateways.SendResult] | None:
        """The next answer, or None after ``timeout`` seconds (None: wait as long as it takes).
        RuntimeError when every sender is gone with messages unanswered."""
        until = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 1.0 if until is None else min(1.0, until - time.monotonic())
            try:
                item = self.answers.get(timeout=max(0.0, left))
                break
            except queue.Empty:
                if not any(thread.is_alive() for thread in self.threads) and self.answers.empty():
                    raise RuntimeError("the SMS senders stopped with messages unanswered") from None
                if until is not None and time.monotonic() >= until:
                    return None
        self.in_flight -= 1
        return item

    def close(self) -> int:
        """Stop the senders; returns how many messages none took (left only after an error)."""
        unsent = 0
        while True:
            try:
                unsent += self.todo.get_nowait() is not None
            except queue.Empty:
                break
        for _ in self.threads:
            self.todo.put(None)
        for thread in self.threads:
            thread.join()
        return unsent


class Recorder:
    """Writes the answers as they come: refusals and transient errors one by one, acceptances in
    chunks (at most RECORD_CHUNK, none waiting longer than RECORD_WITHIN seconds), so that writing
    keeps up with the senders instead of costing a transaction per message."""

    def __init__(self, result: DispatchResult):
        self.result = result
        self.accepted: list[tuple[Claimed, gateways.SendResult]] = []
        self.oldest = 0.0

    def wait(self) -> float | None:
        """How long the next answer may be waited for before the pending chunk is due."""
        return None if not self.accepted else max(0.0, self.oldest + RECORD_WITHIN - time.monotonic())

    def add(self, message: Claimed, answer: gateways.SendResult) -> None:
        if answer.outcome != gateways.ACCEPTED:
            self.result.count(record(message, answer, clock.now()))
            return
        if not self.accepted:
            self.oldest = time.monotonic()
        self.accepted.append((message, answer))
        if len(self.accepted) >= RECORD_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.accepted:
            self.result.count("sent", record_accepted(self.accepted, clock.now()))
            self.accepted = []


def screen(claimed: list[Claimed], result: DispatchResult) -> list[Claimed]:
    """The claimed messages that may go out: those expired when claimed and, unless transactional,
    those to an opted-out number are closed here and never reach the gateway."""
    sendable = []
    for message in claimed:
        if message.expired:
            status, reason = M.EXPIRED, "validity passed before sending"
        elif message.opted_out:
            status, reason = M.REJECTED, "opted_out"
        else:
            sendable.append(message)
            continue
        services.transition(message.pk, status, detail=reason, error_message=reason, claimed_at=None)
        result.count(status)
    return sendable


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


def claim_size() -> int:
    """Messages claimed at a time: SMS_BATCH_SIZE, but no more than the rate limit lets out in a
    quarter of the claim lease."""
    size = max(1, settings.SMS_BATCH_SIZE)
    if settings.SMS_RATE_PER_SECOND > 0:
        size = min(size, max(1, int(settings.SMS_RATE_PER_SECOND * settings.SMS_LEASE_SECONDS / 4)))
    return size


def run(*, budget_seconds: float | None = None, gateway_code: str | None = None, again: bool = True
        ) -> DispatchResult:
    """Send everything due, for at most ``budget_seconds`` (default SMS_DISPATCH_SECONDS).

    The senders never wait for the database: the next batch is claimed while the last one is still
    going out (when fewer than a batch wait for a sender), and answers are recorded as they come."""
    gateway = gateways.get(gateway_code or settings.SMS_GATEWAY)
    result = DispatchResult()
    if not acquire_lease(gateway.code, clock.now()):
        result.skipped = True
        return result
    deadline = time.monotonic() + (settings.SMS_DISPATCH_SECONDS if budget_seconds is None else budget_seconds)
    size = claim_size()
    senders = Senders(gateway, RateLimiter(settings.SMS_RATE_PER_SECOND), max(1, settings.SMS_CONCURRENCY))
    recorder = Recorder(result)
    claiming = True
    try:
        while True:
            if claiming and senders.waiting() < size:
                claiming = _claim_round(gateway, size, deadline, senders, result)
            if not senders.in_flight:
                if not claiming:
                    break
                continue
            wait = recorder.wait()
            if claiming:  # look again soon whether the senders need the next batch
                wait = POLL if wait is None else min(wait, POLL)
            answered = senders.answer(wait)
            if answered is None:
                recorder.flush()
            else:
                recorder.add(*answered)
        recorder.flush()
        result.reports += settle_reports(gateway, clock.now())
    finally:
        unsent = senders.close()  # after an error: what no sender took stays claimed, reclaimed later
        if unsent:
            logger.warning("SMS dispatcher stopped with %s claimed messages unsent; they go out after the lease",
                           unsent)
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


def _claim_round(gateway, size: int, deadline: float, senders: Senders, result: DispatchResult) -> bool:
    """Renew the lease, reclaim what dead dispatchers left, claim a batch and hand it to the senders.
    False: stop claiming (time is up, the lease is lost, or nothing is due)."""
    now = clock.now()
    if time.monotonic() >= deadline or not acquire_lease(gateway.code, now):
        return False
    result.reclaimed += reclaim(now)
    # the time after reclaiming: a message reclaimed and claimed again keeps its history in order
    claimed = claim(gateway_code=gateway.code, limit=size, now=clock.now())
    result.claimed += len(claimed)
    senders.submit(screen(claimed, result))
    result.reports += settle_reports(gateway, clock.now())
    return bool(claimed)
