"""Event bus: sync handlers in the emitter's transaction, async handlers after commit, JSON payloads."""

import dataclasses
from datetime import datetime
from decimal import Decimal

import pytest
from django.db import transaction

from masthead.core import events
from masthead.core.models import HandledEvent

pytestmark = pytest.mark.django_db

seen: list = []


@dataclasses.dataclass(frozen=True, kw_only=True)
class Probe(events.Event):
    user_id: int
    amount: Decimal
    when: datetime


def sync_probe(event):
    seen.append(("sync", event))


def async_probe(event):
    seen.append(("async", event))


def failing_async(event):
    raise RuntimeError("boom")


@pytest.fixture(autouse=True)
def handlers():
    seen.clear()
    events.subscribe(Probe, sync_probe)
    events.subscribe(Probe, async_probe, asynchronous=True)
    yield
    events.unsubscribe(Probe, sync_probe)
    events.unsubscribe(Probe, async_probe)
    seen.clear()


def probe():
    return Probe(user_id=7, amount=Decimal("9.90"), when=datetime.fromisoformat("2026-03-29T01:30:00+00:00"))


def test_sync_runs_at_once_async_after_commit(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with transaction.atomic():
            event = probe()
            events.emit(event)
            assert [kind for kind, _ in seen] == ["sync"]
    assert len(callbacks) == 1
    assert [kind for kind, _ in seen] == ["sync", "async"]
    delivered = seen[1][1]
    # the async handler got a JSON round-tripped copy, equal in every field, not the same object
    assert delivered == event and delivered is not event
    assert delivered.amount == Decimal("9.90") and isinstance(delivered.amount, Decimal)
    row = HandledEvent.objects.get()
    assert row.event_id == event.event_id
    assert row.handler == "tests.core.test_events.async_probe"


def test_rolled_back_transaction_never_runs_async_handler(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(ZeroDivisionError):
            with transaction.atomic():
                events.emit(probe())
                1 / 0
    assert callbacks == []
    assert [kind for kind, _ in seen] == ["sync"]
    assert not HandledEvent.objects.exists()


def test_failing_sync_handler_rolls_back_the_operation(django_capture_on_commit_callbacks):
    from masthead.users.models import User

    def explode(event):
        raise RuntimeError("handler refused")

    events.subscribe(Probe, explode)
    try:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            with pytest.raises(RuntimeError):
                with transaction.atomic():
                    User.objects.create(email="x@example.com")
                    events.emit(probe())
    finally:
        events.unsubscribe(Probe, explode)
    assert not User.objects.exists()
    assert callbacks == []


def test_redelivered_event_is_handled_once():
    event = probe()
    payload = events.serialize(event)
    path = events.dotted_name(Probe)
    assert events.run_async_handler("tests.core.test_events.async_probe", path, payload) is True
    assert events.run_async_handler("tests.core.test_events.async_probe", path, payload) is False
    assert [kind for kind, _ in seen] == ["async"]
    assert HandledEvent.objects.count() == 1


def test_failing_async_handler_leaves_no_record_so_a_retry_runs_it():
    payload = events.serialize(probe())
    with pytest.raises(RuntimeError):
        events.run_async_handler("tests.core.test_events.failing_async", events.dotted_name(Probe), payload)
    assert not HandledEvent.objects.exists()


def test_async_handler_must_be_importable():
    with pytest.raises(ValueError):
        events.subscribe(Probe, lambda e: None, asynchronous=True)


def test_heartbeat_is_recorded_with_worker(django_capture_on_commit_callbacks):
    from masthead.core.queries import last_heartbeat
    from masthead.core.tasks import heartbeat

    assert last_heartbeat() is None
    with django_capture_on_commit_callbacks(execute=True):
        heartbeat.call_local()
    beat = last_heartbeat()
    assert beat["worker"] == events.worker_name()
    assert beat["age_seconds"] <= 1
