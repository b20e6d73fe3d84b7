"""Issue 6, done-when: on PostgreSQL, a dispatcher killed (SIGKILL) at random points while sending
2,000 messages, 20 times over → every message ends sent exactly once at the gateway, none lost.

The gateway is a local platform on 127.0.0.1 (``sms_counting_gateway``) spoken to by the generic
``http`` adapter: it deduplicates by ``Idempotency-Key`` and counts each message id it really sent.
Each ``masthead sms dispatch`` runs as its own process against the test database and is killed at a
seeded random moment, mostly while requests are in flight (a message the platform accepted whose
answer never reached the dispatcher stays ``sending``); the next process takes over the expired
dispatcher lease, reclaims the messages left ``sending`` and sends them again under the same key.
A last dispatcher drains the queue. Then: all 2,000 ``sent`` (the http gateway makes no delivery
reports), each sent once at the platform under its own key, nothing unknown sent, every message's
history whole and shown in the order it happened, and repeats were really deduplicated (proof that
kills landed mid-send). ``SMS_CRASH_SEED`` picks another sequence of kills.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection, transaction

from masthead.messaging import services
from masthead.messaging.models import SmsMessage, SmsStatusChange
from masthead.users import services as user_services
from tests.conftest import require_service
from tests.integration.sms_counting_gateway import CountingGateway

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MESSAGES = 2000
KILLS = 20
SEED = int(os.environ.get("SMS_CRASH_SEED", "6062024"))
TOKEN = "crash-test-token"
GATEWAY_LATENCY = 0.02  # seconds between accepting a request and answering it (Kannel-like)
BLIND_KILLS = 0.2  # share of kills at any moment after the start (startup, lease wait, claiming, sending)
BLIND_DELAY = (0.0, 2.5)  # seconds after the start, for those
SENDING_DELAY = (0.0, 0.5)  # seconds after this dispatcher's first request reached the gateway, for the others
FIRST_REQUEST_TIMEOUT = 20  # seconds for a dispatcher to start sending
DRAIN_TIMEOUT = 90  # seconds for the last dispatcher to send what is left
DISPATCHER_ENV = {
    "SMS_GATEWAY": "http",
    "SMS_HTTP_TOKEN": TOKEN,
    "SMS_HTTP_TIMEOUT_SECONDS": "5",
    "SMS_LEASE_SECONDS": "1",  # messages left "sending" by a killed dispatcher are reclaimed after 1 s
    "SMS_DISPATCHER_LEASE_SECONDS": "1",  # and its lease expires after 1 s
    "SMS_BATCH_SIZE": "50",
    "SMS_CONCURRENCY": "16",
    "SMS_RATE_PER_SECOND": "200",
    "SMS_RETRY_DELAYS": "PT1S, PT1S, PT1S, PT1S, PT1S",  # an overloaded moment must not park a message for minutes
    "SMS_QUIET_HOURS": "",  # the test may run at night
}
M = SmsMessage


@pytest.fixture
def postgres(transactional_db) -> str:
    """The URL of the live test database (pytest-django's ``test_<name>``), for the dispatcher processes."""
    require_service("PostgreSQL", connection.vendor == "postgresql")
    s = connection.settings_dict
    auth = quote(s["USER"] or "", safe="")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"], safe="")
    host = s["HOST"] or "127.0.0.1"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgresql://{auth}@{host}{port}/{quote(s['NAME'], safe='')}"


@pytest.fixture
def gateway():
    platform = CountingGateway(token=TOKEN, latency=GATEWAY_LATENCY).start()
    try:
        yield platform
    finally:
        platform.stop()


@pytest.fixture
def queued(postgres, monkeypatch) -> list[int]:
    """MESSAGES readers with phone numbers, one message queued to each, committed."""
    # Queueing wakes a dispatcher in this process (Huey runs inline under tests); here only the
    # dispatcher processes send, and nothing but the rows is needed to find the work (house rule 4).
    monkeypatch.setattr(services, "wake_dispatcher", lambda: None)
    with transaction.atomic():
        ids = []
        for k in range(MESSAGES):
            reader = user_services.create_user(email=f"crash{k}@example.com", phone_number=f"+421908{k:06d}")
            ids.append(services.queue_sms(user=reader, body=f"Crash test message {k}: your print edition is ready.",
                                          created_by="crash-test").pk)
    assert M.objects.filter(status=M.QUEUED).count() == MESSAGES
    return ids


def _masthead_command() -> list[str]:
    script = Path(sys.executable).parent / "masthead"
    return [str(script)] if script.exists() else [sys.executable, "-m", "masthead.cli"]


class Dispatchers:
    """``masthead sms dispatch`` processes, one at a time, each logging to its own file."""

    def __init__(self, env: dict, logdir: Path):
        self.env = env
        self.logdir = logdir
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self) -> subprocess.Popen:
        log = self.logdir / f"dispatcher-{len(self.procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([*_masthead_command(), "sms", "dispatch", "--idle", "0.1", "--seconds", "30"],
                                    env=self.env, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def check_alive(self, proc: subprocess.Popen) -> None:
        if proc.poll() is not None:
            pytest.fail(f"dispatcher {proc.pid} exited on its own with {proc.returncode}:\n"
                        + self.logs[self.procs.index(proc)].read_text(errors="replace")[-4000:])

    def kill(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def report_sections(self) -> list[tuple[str, str]]:
        """Shown in a failing test's report (see tests/integration/conftest.py)."""
        return [(f"dispatcher pid {proc.pid} log", log.read_text(errors="replace")[-4000:] if log.exists() else "")
                for proc, log in zip(self.procs, self.logs)]


@pytest.fixture
def dispatchers(postgres, gateway):
    # Depends on transactional_db (through postgres): every process is dead before pytest-django
    # flushes the tables or drops the database.
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    env.update(DISPATCHER_ENV, DATABASE_URL=postgres, SMS_HTTP_URL=gateway.url, MASTHEAD_TESTING="1",
               DJANGO_SETTINGS_MODULE="masthead.settings", PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory(prefix="masthead-sms-crash-") as logdir:
        group = Dispatchers(env, Path(logdir))
        try:
            yield group
        finally:
            group.stop_all()


def _unfinished() -> int:
    return M.objects.filter(status__in=(M.QUEUED, M.SENDING)).count()


def _settle(gateway: CountingGateway, timeout: float = 5.0) -> None:
    """Let the platform finish the requests of a killed dispatcher (answered to nobody)."""
    deadline = time.monotonic() + timeout
    while gateway.in_flight and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)


def _claims() -> dict[int, object]:
    """The messages now "sending" and when they were claimed."""
    return dict(M.objects.filter(status=M.SENDING).values_list("pk", "claimed_at"))


def _accepted_unrecorded(gateway: CountingGateway, claims_before: dict[int, object]) -> int:
    """Messages a killed dispatcher claimed and left "sending" although the platform had accepted them:
    their answer died with it (claims left by an earlier dispatcher are not counted)."""
    with gateway.lock:
        accepted = set(gateway.sent)
    return sum(str(pk) in accepted and claims_before.get(pk) != claimed_at
               for pk, claimed_at in _claims().items())


def test_killed_dispatchers_send_every_message_exactly_once(queued, gateway, dispatchers):
    rng = random.Random(SEED)
    started = time.monotonic()
    # each kill: how it was timed, seconds alive, requests the platform received meanwhile, and how many
    # messages it left "sending" that the platform had already accepted (the answer lost: mid-send)
    kills = []
    for _ in range(KILLS):
        before, claims_before = gateway.requests, _claims()
        proc = dispatchers.start()
        spawned = time.monotonic()
        if rng.random() < BLIND_KILLS:
            how, deadline = "blind", spawned + rng.uniform(*BLIND_DELAY)
        else:
            # wait for this dispatcher's first request, then kill it within the next moments
            how, delay = "sending", rng.uniform(*SENDING_DELAY)
            while gateway.requests == before:
                dispatchers.check_alive(proc)
                if time.monotonic() - spawned > FIRST_REQUEST_TIMEOUT:
                    if not _unfinished():
                        how = "idle"  # nothing left to send
                        break
                    pytest.fail(f"dispatcher {proc.pid} sent nothing within {FIRST_REQUEST_TIMEOUT} s")
                time.sleep(0.005)
            deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            dispatchers.check_alive(proc)
            time.sleep(0.005)
        dispatchers.check_alive(proc)
        dispatchers.kill(proc)
        alive = round(time.monotonic() - spawned, 2)
        _settle(gateway)
        kills.append((how, alive, gateway.requests - before, _accepted_unrecorded(gateway, claims_before)))
    killed_at = time.monotonic()
    left_after_kills = Counter(M.objects.values_list("status", flat=True))

    # the last dispatcher sends what is left, then is stopped
    proc = dispatchers.start()
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while _unfinished():
        dispatchers.check_alive(proc)
        if time.monotonic() > deadline:
            pytest.fail(f"{_unfinished()} messages still queued or sending after {DRAIN_TIMEOUT} s: "
                        f"{Counter(M.objects.values_list('status', flat=True))}")
        time.sleep(0.1)
    dispatchers.kill(proc)
    drained_at = time.monotonic()

    # the database: every message sent, none queued, sending, failed, rejected or lost
    messages = {pk: (status, platform_id) for pk, status, platform_id in
                M.objects.values_list("pk", "status", "gateway_message_id")}
    assert set(messages) == set(queued)
    assert Counter(status for status, _ in messages.values()) == {M.SENT: MESSAGES}
    # ... each with the id the platform gave it
    assert {pk: platform_id for pk, (_, platform_id) in messages.items()} == {pk: f"gw-{pk}" for pk in queued}
    # ... and a whole history: in the order written, each change starts where the one before ended,
    # from "" to sent, sent once (a kill between a status change and its history row leaves a gap) ...
    written: dict[int, list[tuple[str, str]]] = {pk: [] for pk in queued}
    for pk, old, new in SmsStatusChange.objects.order_by("pk").values_list("message_id", "old_status", "new_status"):
        written[pk].append((old, new))
    broken = {pk: chain for pk, chain in written.items()
              if [old for old, _ in chain] != ["", *(new for _, new in chain[:-1])]
              or chain[-1][1] != M.SENT or sum(new == M.SENT for _, new in chain) != 1}
    assert broken == {}
    # ... shown in that order too (the history is listed by its timestamps)
    shown: dict[int, list[tuple[str, str]]] = {pk: [] for pk in queued}
    for pk, old, new in SmsStatusChange.objects.values_list("message_id", "old_status", "new_status"):
        shown[pk].append((old, new))
    assert {pk: chain for pk, chain in shown.items() if chain != written[pk]} == {}

    # the platform: every message sent exactly once, nothing it does not know, nothing malformed
    assert gateway.errors == []
    assert set(gateway.sent) == {str(pk) for pk in queued}, "a message was lost or an unknown id was sent"
    assert max(gateway.sent.values()) == 1, f"sent more than once: {[k for k, n in gateway.sent.items() if n > 1]}"
    assert set(gateway.repeats) <= set(gateway.sent)

    # the kills landed while sending: accepted messages whose answer was lost were asked again
    attempts = Counter(M.objects.values_list("attempts", flat=True))
    reclaimed = SmsStatusChange.objects.filter(old_status=M.SENDING, new_status=M.QUEUED).count()
    mid_send = sum(unrecorded > 0 for *_, unrecorded in kills)
    summary = (f"{KILLS} kills (seed {SEED}): {Counter(how for how, *_ in kills)}, {mid_send} mid-send; "
               f"{gateway.requests} requests for {MESSAGES} messages, {gateway.repeated} repeats deduplicated "
               f"({len(gateway.repeats)} messages), {gateway.aborted} cut short; {reclaimed} reclaims; attempts {dict(sorted(attempts.items()))}; "
               f"after the kills {dict(left_after_kills)}; kills took {killed_at - started:.1f} s, "
               f"drain {drained_at - killed_at:.1f} s; kills (how, s alive, requests, accepted but unrecorded): {kills}")
    print(summary)
    assert mid_send >= KILLS // 2, summary
    assert gateway.repeated > 0, summary
    assert reclaimed >= gateway.repeated > 0, summary
    assert gateway.requests == MESSAGES + gateway.repeated + gateway.aborted, summary
