"""Scale-out: asynchronous event handlers run in separate Huey consumer processes over Redis.

Two ``masthead worker`` processes consume one Redis queue against the test's PostgreSQL database;
a third process emits events. Every event must be handled exactly once, by both consumers between
them. Needs PostgreSQL (DATABASE_URL of the test run) and Redis (REDIS_TEST_URL, exported by
``scripts/services.sh start_redis``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

from masthead.core import events
from masthead.core.models import HandledEvent
from tests.conftest import require_service

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EVENT_COUNT = 200
HANDLE_TIMEOUT = 60  # seconds for all events to be handled
START_TIMEOUT = 30  # seconds for a consumer to report it started
STOP_TIMEOUT = 10  # seconds between SIGTERM and SIGKILL
HANDLER_PATH = events.dotted_name(events.record_heartbeat)
EVENT_PATH = events.dotted_name(events.WorkerHeartbeat)

EMIT_SNIPPET = textwrap.dedent(
    """
    import sys
    import django

    django.setup()
    from masthead.core import events

    ids = []
    for _ in range(int(sys.argv[1])):
        event = events.WorkerHeartbeat()
        events.emit(event)  # outside a transaction: on_commit enqueues into Redis at once
        ids.append(event.event_id)
    print("\\n".join(ids))
    """
)


# --- services ---------------------------------------------------------------------------------


def _redis_available(url: str) -> bool:
    if not url:
        return False
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except Exception:
        return False


@pytest.fixture
def postgres(transactional_db) -> str:
    """The URL of the live test database (pytest-django's ``test_<name>``), for subprocesses."""
    require_service("PostgreSQL", connection.vendor == "postgresql")
    s = connection.settings_dict
    auth = quote(s["USER"] or "", safe="")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"], safe="")
    host = s["HOST"] or "127.0.0.1"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgresql://{auth}@{host}{port}/{quote(s['NAME'], safe='')}"


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("REDIS_TEST_URL", "")
    require_service("Redis", _redis_available(url))
    return url


@pytest.fixture
def worker_env(postgres, redis_url):
    """The environment of every subprocess: its own Huey queue name, so stale messages never interfere."""
    # Huey's Redis keys keep only [a-z0-9] of the name; an alphanumeric name is used as-is.
    name = f"mastheadit{uuid.uuid4().hex[:12]}"
    env = dict(os.environ)
    env.update(DATABASE_URL=postgres, REDIS_URL=redis_url, HUEY_NAME=name, HUEY_IMMEDIATE="0",
               MASTHEAD_TESTING="1", DJANGO_SETTINGS_MODULE="masthead.settings", PYTHONUNBUFFERED="1")
    yield env
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"*{name}*"))
    if keys:
        client.delete(*keys)


# --- consumers --------------------------------------------------------------------------------


def _masthead_command() -> list[str]:
    script = Path(sys.executable).parent / "masthead"
    return [str(script)] if script.exists() else [sys.executable, "-m", "masthead.cli"]


class Consumers:
    """Huey consumer processes (``masthead worker``), each logging to its own file."""

    def __init__(self, env: dict, logdir: Path):
        self.env = env
        self.logdir = logdir
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.threads = 0
        self._redis = None
        self._blocked_before = 0

    def _blocked_clients(self) -> int:
        return int(self._redis.info("clients")["blocked_clients"])

    def start(self, count: int, workers: int = 2) -> None:
        import redis

        self._redis = redis.Redis.from_url(self.env["REDIS_URL"])
        self._blocked_before = self._blocked_clients()
        self.threads += count * workers
        for index in range(count):
            log = self.logdir / f"consumer-{index}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen([*_masthead_command(), "worker", "--workers", str(workers)],
                                        env=self.env, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT)
            self.procs.append(proc)
            self.logs.append(log)

    def wait_started(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until every consumer is up, so none can take the whole queue alone.

        Up means each consumer logged its start, or every worker thread is waiting in BRPOP
        (the signal that does not depend on the consumer's log level).
        """
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            if all("Huey consumer started" in log.read_text(errors="replace") for log in self.logs):
                return
            if self._blocked_clients() - self._blocked_before >= self.threads:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"consumers did not start within {timeout} s")
            time.sleep(0.1)

    def check_alive(self) -> None:
        dead = [(proc.pid, proc.returncode) for proc in self.procs if proc.poll() is not None]
        if dead:
            pytest.fail(f"consumer exited early (pid, exit code): {dead}")

    @property
    def worker_names(self) -> set[str]:
        """How ``events.worker_name()`` names each consumer (thread workers share the process pid)."""
        host = socket.gethostname()
        return {f"{host}:{proc.pid}" for proc in self.procs}

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._redis is not None:
            self._redis.close()

    def report_sections(self) -> list[tuple[str, str]]:
        """Shown in a failing test's report (see tests/integration/conftest.py)."""
        return [(f"consumer pid {proc.pid} log", log.read_text(errors="replace") if log.exists() else "")
                for proc, log in zip(self.procs, self.logs)]


@pytest.fixture
def consumers(worker_env):
    # Depends (through worker_env -> postgres) on transactional_db, so the consumers are stopped
    # before pytest-django flushes the database and before it drops it at the end of the session.
    with tempfile.TemporaryDirectory(prefix="masthead-consumers-") as logdir:
        group = Consumers(worker_env, Path(logdir))
        try:
            yield group
        finally:
            group.stop()


def emit_heartbeats(env: dict, count: int) -> list[str]:
    """Emit ``count`` WorkerHeartbeat events from a separate process; returns their event ids."""
    result = subprocess.run([sys.executable, "-c", EMIT_SNIPPET, str(count)], env=env, cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"emitter failed ({result.returncode}):\n{result.stderr}"
    return result.stdout.split()


# --- tests ------------------------------------------------------------------------------------


def test_events_are_handled_once_each_across_two_consumer_processes(consumers, worker_env):
    consumers.start(2, workers=2)
    consumers.wait_started()

    ids = emit_heartbeats(worker_env, EVENT_COUNT)
    assert len(ids) == EVENT_COUNT and len(set(ids)) == EVENT_COUNT

    # The consumers' periodic heartbeat emits WorkerHeartbeat events of its own: count only ours.
    ours = HandledEvent.objects.filter(event_id__in=ids, handler=HANDLER_PATH)
    deadline = time.monotonic() + HANDLE_TIMEOUT
    while (handled := ours.count()) < EVENT_COUNT:
        consumers.check_alive()
        if time.monotonic() > deadline:
            pytest.fail(f"only {handled} of {EVENT_COUNT} events handled within {HANDLE_TIMEOUT} s")
        time.sleep(0.2)

    rows = list(ours.values_list("event_id", "worker", "event_type"))
    handled_ids = [event_id for event_id, _, _ in rows]
    assert len(handled_ids) == len(set(handled_ids)), "an event was handled more than once"
    assert set(handled_ids) == set(ids)
    assert {event_type for _, _, event_type in rows} == {EVENT_PATH}

    workers = {worker for _, worker, _ in rows}
    assert os.getpid() not in {int(worker.rsplit(":", 1)[1]) for worker in workers}, "handled in the test process"
    assert workers == consumers.worker_names, (
        f"expected both consumers {sorted(consumers.worker_names)} to handle events, got {sorted(workers)}")


def test_redelivered_task_is_skipped(postgres):
    payload = events.serialize(events.WorkerHeartbeat())
    event_id = events.deserialize(EVENT_PATH, payload).event_id

    assert events.run_async_handler(HANDLER_PATH, EVENT_PATH, payload) is True
    assert events.run_async_handler(HANDLER_PATH, EVENT_PATH, payload) is False

    rows = HandledEvent.objects.filter(event_id=event_id)
    assert rows.count() == 1
    assert rows.get().worker == events.worker_name()
