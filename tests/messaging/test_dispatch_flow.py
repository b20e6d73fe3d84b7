"""The dispatcher's flow: senders kept fed while the next batch is claimed, answers recorded in chunks,
and what happens to claimed messages when sending is slow or the dispatcher fails."""

import threading
import time
from collections import Counter

import pytest

from masthead.messaging import dispatcher, gateways, services
from masthead.messaging.models import SmsMessage, SmsStatusChange

M = SmsMessage


class GateGateway:
    """Accepts every message; while ``gate`` is closed, each send waits for it. Records the order of
    sends and how many messages were claimed (in ``sending``) at each send."""

    code = "test-gate"
    reports_itself = False

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()
        self.sent: list[int] = []
        self.times: list[float] = []
        self.claimed_at_send: list[int] = []
        self.lock = threading.Lock()
        self.fail_ids: set[int] = set()
        self.delay = 0.0

    def send(self, message):
        self.gate.wait(5)
        time.sleep(self.delay)
        with self.lock:
            self.sent.append(message.message_id)
            self.times.append(time.monotonic())
        if message.message_id in self.fail_ids:
            return gateways.SendResult(gateways.TRANSIENT, error="busy")
        return gateways.SendResult(gateways.ACCEPTED, gateway_message_id=f"g-{message.message_id}")

    def due_reports(self, sent, now):
        return []


gateways.register(GateGateway)


@pytest.fixture
def gate(settings):
    settings.SMS_GATEWAY = "test-gate"
    gateways.register(GateGateway)  # a fresh instance
    return gateways.get("test-gate")


@pytest.fixture
def many(make_user, clock):
    def make(count):
        ids = []
        for n in range(count):
            user = make_user(email=f"r{n}@example.com", phone_number=f"+42190800{n:04d}")
            ids.append(services.queue_sms(user=user, body=f"hello {n}", urgent=True).pk)
        return ids
    return make


@pytest.mark.django_db
def test_every_message_sent_once_across_batches_with_exact_history(gate, many, settings):
    settings.SMS_BATCH_SIZE, settings.SMS_CONCURRENCY, settings.SMS_RATE_PER_SECOND = 3, 2, 0
    ids = many(10)
    result = dispatcher.run(budget_seconds=10)
    assert (result.claimed, result.outcomes) == (10, {"sent": 10})
    assert sorted(gate.sent) == ids
    assert Counter(M.objects.filter(pk__in=ids).values_list("status", "attempts", "gateway")) == {
        ("sent", 1, "test-gate"): 10}
    assert {m.pk: m.gateway_message_id for m in M.objects.filter(pk__in=ids)} == {pk: f"g-{pk}" for pk in ids}
    assert M.objects.filter(pk__in=ids, claimed_at__isnull=False).count() == 0
    history = Counter((h.message_id, h.old_status, h.new_status, h.detail) for h in SmsStatusChange.objects.all())
    expected = Counter()
    for pk in ids:
        expected.update([(pk, "", "queued", ""), (pk, "queued", "sending", "attempt 1"),
                         (pk, "sending", "sent", "accepted by the gateway")])
    assert history == expected


@pytest.mark.django_db
def test_the_next_batch_is_claimed_while_the_last_one_is_still_sending(gate, many, settings, monkeypatch):
    """The senders do not wait for the database: the second batch is claimed before the first is sent
    (claiming one batch after another would see all 4 of the first sent)."""
    settings.SMS_BATCH_SIZE, settings.SMS_CONCURRENCY, settings.SMS_RATE_PER_SECOND = 4, 2, 0
    ids = many(12)
    gate.gate.clear()
    threading.Timer(1.0, gate.gate.set).start()
    sent_at_claims = []
    claim = dispatcher.claim

    def watched(**kwargs):
        with gate.lock:
            sent_at_claims.append(len(gate.sent))
        return claim(**kwargs)

    monkeypatch.setattr(dispatcher, "claim", watched)
    result = dispatcher.run(budget_seconds=20)
    assert result.outcomes == {"sent": 12}
    assert sorted(gate.sent) == ids
    assert sent_at_claims[:2] == [0, 0]
    assert len(sent_at_claims) == 4  # three batches, and one that found nothing


@pytest.mark.django_db
def test_the_rate_limit_holds_across_sender_threads(gate, many, settings):
    """SMS_RATE_PER_SECOND is the dispatcher's, not each thread's: 10 messages at 20/s on 4 threads."""
    settings.SMS_BATCH_SIZE, settings.SMS_CONCURRENCY, settings.SMS_RATE_PER_SECOND = 10, 4, 20
    many(10)
    assert dispatcher.run(budget_seconds=10).outcomes == {"sent": 10}
    times = sorted(gate.times)
    assert times[-1] - times[0] >= 0.45 - 0.02
    assert min(later - earlier for earlier, later in zip(times, times[1:])) >= 0.05 - 0.02


@pytest.mark.django_db
def test_mixed_answers_each_recorded(gate, many, settings):
    settings.SMS_BATCH_SIZE, settings.SMS_CONCURRENCY, settings.SMS_RATE_PER_SECOND = 5, 3, 0
    ids = many(6)
    gate.fail_ids = {ids[1], ids[4]}
    result = dispatcher.run(budget_seconds=10)
    assert result.outcomes == {"sent": 4, "retry": 2}
    statuses = dict(M.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert statuses == {pk: "queued" if pk in gate.fail_ids else "sent" for pk in ids}
    assert M.objects.get(pk=ids[1]).error_message == "busy"


@pytest.mark.django_db
def test_a_message_that_waited_too_long_for_a_sender_goes_back_without_an_attempt(gate, many, settings, clock):
    settings.SMS_RATE_PER_SECOND = 0
    [pk] = many(1)
    now = M.objects.get(pk=pk).created_at
    [claimed] = dispatcher.claim(gateway_code="test-gate", limit=10, now=now)
    claimed.since -= settings.SMS_LEASE_SECONDS  # it sat in the senders' queue for a whole lease
    senders = dispatcher.Senders(gate, dispatcher.RateLimiter(0), 1)
    senders.submit([claimed])
    message, answer = senders.answer(5)
    assert senders.close() == 0
    assert answer is dispatcher.TOO_LATE and gate.sent == []
    assert dispatcher.record(message, answer, now) == "requeued"
    row = M.objects.get(pk=pk)
    assert (row.status, row.attempts, row.claimed_at) == ("queued", 0, None)
    assert list(row.history.values_list("new_status", "detail"))[-1] == (
        "queued", "not sent within half the claim lease: back in the queue")


@pytest.mark.django_db
def test_after_an_error_unsent_messages_stay_claimed_and_are_not_sent(gate, many, settings, monkeypatch):
    """A database error while recording: the run stops, the messages no sender took are not sent (they
    are reclaimed after the lease), and the lease is released."""
    settings.SMS_BATCH_SIZE, settings.SMS_CONCURRENCY, settings.SMS_RATE_PER_SECOND = 10, 1, 0
    ids = many(6)
    gate.delay = 0.05

    def broken(accepted, now):
        raise RuntimeError("database went away")

    monkeypatch.setattr(dispatcher, "record_accepted", broken)
    monkeypatch.setattr(dispatcher, "RECORD_CHUNK", 1)
    with pytest.raises(RuntimeError):
        dispatcher.run(budget_seconds=10)
    assert len(gate.sent) < 6
    assert M.objects.filter(pk__in=ids, status=M.SENDING).count() == 6
    assert list(dispatcher.DispatcherLease.objects.values_list("owner", flat=True)) == [""]


def test_claim_size_stays_within_what_the_rate_sends_in_a_quarter_lease(settings):
    settings.SMS_BATCH_SIZE, settings.SMS_LEASE_SECONDS = 1000, 120
    settings.SMS_RATE_PER_SECOND = 0
    assert dispatcher.claim_size() == 1000
    settings.SMS_RATE_PER_SECOND = 5
    assert dispatcher.claim_size() == 150
    settings.SMS_RATE_PER_SECOND = 0.01
    assert dispatcher.claim_size() == 1


class BrokenPump:
    """A gateway whose multiplexed sender dies after taking one message."""

    code = "test-broken-pump"
    reports_itself = False

    def send(self, message):
        raise AssertionError("the pump is used, not send()")

    def pump(self, work, concurrency):
        work.take(block=True)
        raise RuntimeError("pump bug")

    def due_reports(self, sent, now):
        return []


gateways.register(BrokenPump)


@pytest.mark.django_db
def test_a_dead_pump_stops_the_run_instead_of_waiting_forever(many, settings, caplog):
    settings.SMS_GATEWAY, settings.SMS_BATCH_SIZE, settings.SMS_RATE_PER_SECOND = "test-broken-pump", 10, 0
    ids = many(3)
    with pytest.raises(RuntimeError, match="the SMS senders stopped with messages unanswered"):
        dispatcher.run(budget_seconds=10)
    assert "SMS gateway test-broken-pump stopped sending" in caplog.text
    # nothing was answered: all stay claimed, to be reclaimed after the lease (none was sent twice)
    assert M.objects.filter(pk__in=ids, status=M.SENDING).count() == 3
    assert list(dispatcher.DispatcherLease.objects.values_list("owner", flat=True)) == [""]
