"""Queueing, the dispatcher on the simulated gateway, reports, inbound and opt-out."""

from datetime import timedelta

import pytest

from masthead.messaging import dispatcher, services
from masthead.messaging.models import DispatcherLease, InboundSms, OptOut, SmsMessage, SmsStatusChange
from tests.messaging.conftest import NOW

M = SmsMessage
pytestmark = pytest.mark.django_db


def history(message):
    return list(SmsStatusChange.objects.filter(message=message).values_list("old_status", "new_status"))


def refresh(message):
    return M.objects.get(pk=message.pk)


def test_queue_copies_number_and_text(reader, clock):
    message = services.queue_sms(user=reader, body="  Hello Jana  ", created_by="care@example.com")
    assert (message.phone_number, message.body, message.status, message.encoding, message.segments) == (
        "+421908123456", "Hello Jana", "queued", "gsm7", 1)
    assert (message.next_attempt_at, message.valid_until, message.created_by) == (
        NOW, NOW + timedelta(hours=48), "care@example.com")
    assert history(message) == [("", "queued")]


@pytest.mark.parametrize(("kwargs", "code"), [
    ({}, "one_recipient"),
    ({"body": ""}, "empty_message"),
    ({"body": "a" * 1531}, "message_too_long"),
    ({"body": "x\x00y"}, "invalid_message"),
    ({"template_code": "nope"}, "template_not_found"),
])
def test_queue_refusals_write_nothing(reader, clock, kwargs, code):
    target = {} if code == "one_recipient" else {"user": reader}
    with pytest.raises(services.SmsError) as refused:
        services.queue_sms(**{"body": "hi", **target, **kwargs})
    assert refused.value.code == code
    assert not M.objects.exists()


def test_reader_without_phone_and_both_recipients(make_user, reader, staff, clock):
    with pytest.raises(services.SmsError) as refused:
        services.queue_sms(user=make_user(), body="hi")
    assert refused.value.code == "no_phone_number"
    with pytest.raises(services.SmsError) as both:
        services.queue_sms(user=reader, staff=staff, body="hi")
    assert both.value.code == "one_recipient"
    with pytest.raises(services.SmsError) as not_staff:
        services.queue_sms(staff=reader, body="hi")
    assert not_staff.value.code == "not_staff"


def test_dispatch_sends_and_the_simulated_gateway_delivers(reader, staff, clock, simulated):
    first = services.queue_sms(user=reader, body="one")
    second = services.queue_sms(staff=staff, body="two")
    result = dispatcher.run(budget_seconds=5)
    assert (result.claimed, result.outcomes, result.reports) == (2, {"sent": 2}, 2)
    for message in (first, second):
        message = refresh(message)
        assert (message.status, message.sent_at, message.delivered_at, message.gateway,
                message.gateway_message_id, message.attempts) == (
            "delivered", NOW, NOW, "simulated", f"sim-{message.pk}", 1)
        assert history(message) == [("", "queued"), ("queued", "sending"), ("sending", "sent"), ("sent", "delivered")]
    assert simulated.sent == {first.pk: 1, second.pk: 1}
    assert dispatcher.run(budget_seconds=5).claimed == 0


def test_scheduled_message_waits(reader, clock, simulated):
    message = services.queue_sms(user=reader, body="later", send_at=NOW + timedelta(hours=2))
    assert dispatcher.run(budget_seconds=5).claimed == 0
    clock.move_to(NOW + timedelta(hours=2))
    dispatcher.run(budget_seconds=5)
    assert refresh(message).status == "delivered"


def test_permanent_refusal_is_rejected(make_user, clock, simulated):
    odd = make_user(phone_number="+421908000001")
    message = services.queue_sms(user=odd, body="x")
    M.objects.filter(pk=message.pk).update(phone_number="+9991234567")
    dispatcher.run(budget_seconds=5)
    message = refresh(message)
    assert (message.status, message.error_message) == ("rejected", "number refused by the simulated operator")
    assert simulated.sent == {}


def test_transient_failures_retry_with_backoff_then_fail(reader, clock, simulated, settings):
    settings.SMS_RETRY_DELAYS = "PT1M, PT5M"
    message = services.queue_sms(user=reader, body="x")
    M.objects.filter(pk=message.pk).update(phone_number="+9981234567")
    dispatcher.run(budget_seconds=5)
    assert (refresh(message).status, refresh(message).next_attempt_at) == ("queued", NOW + timedelta(minutes=1))
    clock.move_to(NOW + timedelta(minutes=1))
    dispatcher.run(budget_seconds=5)
    assert refresh(message).next_attempt_at == NOW + timedelta(minutes=6)
    clock.move_to(NOW + timedelta(minutes=6))
    dispatcher.run(budget_seconds=5)
    message = refresh(message)
    assert (message.status, message.attempts) == ("failed", 3)
    assert message.error_message == "simulated operator busy, try later"
    retried = services.retry(message=message, by="care@example.com")
    assert (retried.status, retried.next_attempt_at) == ("queued", NOW + timedelta(minutes=6))


def test_failed_delivery_report(make_user, clock, simulated):
    message = services.queue_sms(user=make_user(phone_number="+421908000002"), body="x")
    M.objects.filter(pk=message.pk).update(phone_number="+9971234567")
    dispatcher.run(budget_seconds=5)
    assert (refresh(message).status, refresh(message).error_message) == ("failed", "simulated: not delivered")


def test_expired_before_sending(reader, clock, simulated):
    message = services.queue_sms(user=reader, body="x", send_at=NOW + timedelta(minutes=1))
    M.objects.filter(pk=message.pk).update(valid_until=NOW + timedelta(minutes=1))
    clock.move_to(NOW + timedelta(minutes=1))
    dispatcher.run(budget_seconds=5)
    assert refresh(message).status == "expired"
    assert simulated.sent == {}


def test_opted_out_number(reader, clock, simulated):
    """Queue time refuses; a number opting out after queueing is rejected at send; transactional passes."""
    queued = services.queue_sms(user=reader, body="offer")
    receipt = services.queue_sms(user=reader, body="receipt", transactional=True)
    OptOut.objects.create(phone_number=reader.phone_number, created_at=NOW)
    with pytest.raises(services.SmsError) as refused:
        services.queue_sms(user=reader, body="offer 2")
    assert refused.value.code == "opted_out"
    dispatcher.run(budget_seconds=5)
    assert (refresh(queued).status, refresh(queued).error_message) == ("rejected", "opted_out")
    assert refresh(receipt).status == "delivered"
    assert list(simulated.sent) == [receipt.pk]


def test_quiet_hours_hold_non_urgent_messages(reader, clock, simulated):
    clock.move_to(NOW.replace(hour=20))  # 22:00 in Bratislava
    calm = services.queue_sms(user=reader, body="reminder", urgent=False)
    urgent = services.queue_sms(user=reader, body="code 1234")
    dispatcher.run(budget_seconds=5)
    assert (refresh(calm).status, refresh(urgent).status) == ("queued", "delivered")
    clock.move_to(NOW.replace(hour=6) + timedelta(days=1))  # 08:00 next morning
    dispatcher.run(budget_seconds=5)
    assert refresh(calm).status == "delivered"


def test_quiet_window_end():
    from datetime import UTC, datetime

    assert dispatcher.quiet_window(datetime(2024, 5, 6, 20, 0, tzinfo=UTC)) == datetime(2024, 5, 7, 6, 0, tzinfo=UTC)
    assert dispatcher.quiet_window(datetime(2024, 5, 7, 5, 0, tzinfo=UTC)) == datetime(2024, 5, 7, 6, 0, tzinfo=UTC)
    assert dispatcher.quiet_window(datetime(2024, 5, 7, 6, 0, tzinfo=UTC)) is None


def test_a_stale_claim_is_sent_again_and_deduplicated(reader, clock, simulated, settings):
    """A dispatcher killed after the gateway took the message: the lease expires, the message is
    sent again with the same id, and the gateway counts it once."""
    message = services.queue_sms(user=reader, body="x")
    claimed = dispatcher.claim(gateway_code="simulated", limit=10, now=NOW)
    assert [m.pk for m in claimed] == [message.pk]
    simulated.send(dispatcher.gateways.Outgoing(message.pk, message.phone_number, message.body, "gsm7"))
    clock.move_to(NOW + timedelta(seconds=settings.SMS_LEASE_SECONDS + 1))
    result = dispatcher.run(budget_seconds=5)
    assert result.reclaimed == 1
    message = refresh(message)
    assert (message.status, message.attempts) == ("delivered", 2)
    assert simulated.sent == {message.pk: 1}


def test_one_dispatcher_per_gateway(reader, clock, simulated):
    DispatcherLease.objects.create(gateway="simulated", owner="elsewhere", expires_at=NOW + timedelta(seconds=10))
    services.queue_sms(user=reader, body="x")
    assert dispatcher.run(budget_seconds=5).skipped is True
    clock.move_to(NOW + timedelta(seconds=10))
    assert dispatcher.run(budget_seconds=5).outcomes == {"sent": 1}


def test_cancel_only_while_queued(reader, clock, simulated):
    message = services.queue_sms(user=reader, body="x")
    assert services.cancel(message=message, by="care").status == "canceled"
    with pytest.raises(services.SmsError) as refused:
        services.cancel(message=message)
    assert (refused.value.code, refused.value.status) == ("not_queued", 409)
    assert dispatcher.run(budget_seconds=5).claimed == 0


def test_reports_are_idempotent_and_never_go_back(reader, clock, simulated):
    message = services.queue_sms(user=reader, body="x")
    dispatcher.claim(gateway_code="simulated", limit=10, now=NOW)
    assert services.record_report(message_id=message.pk, report="delivered") is True  # overtakes the answer
    assert services.record_report(message_id=message.pk, report="delivered") is False
    assert services.record_report(message_id=message.pk, report="sent") is False
    assert services.record_report(message_id=message.pk, report="failed") is False
    dispatcher.record(refresh(message), dispatcher.gateways.SendResult("accepted", "gw-1"), NOW)
    message = refresh(message)
    assert (message.status, message.gateway_message_id, message.sent_at, message.delivered_at) == (
        "delivered", "gw-1", NOW, NOW)


def test_inbound_links_reader_and_reply_and_stop_opts_out_once(reader, clock, simulated):
    sent = services.queue_sms(user=reader, body="Renew?")
    dispatcher.run(budget_seconds=5)
    row, created = services.record_inbound(gateway="kannel", gateway_message_id="mo-1", phone_from="0908 123 456",
                                           phone_to="5555", text="  stop  ")
    assert created and (row.user_id, row.reply_to_id, row.keyword, row.phone_from) == (
        reader.pk, sent.pk, "STOP", "+421908123456")
    assert services.record_inbound(gateway="kannel", gateway_message_id="mo-1", phone_from="0908123456",
                                   text="stop") == (row, False)
    assert services.process_inbound(row.pk) == "opted out"
    assert services.process_inbound(row.pk) == "already processed"
    assert OptOut.objects.filter(phone_number=reader.phone_number).exists()
    confirmations = M.objects.filter(phone_number=reader.phone_number, transactional=True)
    assert [m.body for m in confirmations] == [services.STOP_CONFIRMATION]
    again, _ = services.record_inbound(gateway="kannel", gateway_message_id="mo-2", phone_from="+421908123456",
                                       text="KONIEC")
    assert services.process_inbound(again.pk) == "already out"
    assert confirmations.count() == 1
    start, _ = services.record_inbound(gateway="kannel", gateway_message_id="mo-3", phone_from="+421908123456",
                                       text="Start")
    assert services.process_inbound(start.pk) == "opted in"
    assert not OptOut.objects.exists()
    assert InboundSms.objects.count() == 3


def test_templates_render_once_and_validate(reader, clock):
    services.save_template(code="ending", body="Hi {{ first_name }}, your subscription ends {{ end }}.",
                           parameters=["first_name", "end"], sample_params={"first_name": "Jana", "end": "1 May"})
    message = services.queue_sms(user=reader, template_code="ending", params={"first_name": "Jana", "end": "today"})
    assert message.body == "Hi Jana, your subscription ends today."
    with pytest.raises(services.SmsError) as missing:
        services.queue_sms(user=reader, template_code="ending", params={"first_name": "Jana"})
    assert missing.value.code == "template_error"
    for body, problem in [("{{ x }}", "unknown variables: x"), ("{% if %}", "syntax error"),
                          ("{{ first_name.__class__ }}", ""), ("a" * 500, "segments")]:
        with pytest.raises(services.SmsError) as refused:
            services.save_template(code="bad", body=body, parameters=["first_name"], max_segments=2)
        assert problem in refused.value.message
