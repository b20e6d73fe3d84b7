"""Gateway webhooks: Kannel and generic HTTP delivery reports and inbound messages (/sms/...)."""

import json
import logging
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

import pytest

from masthead.messaging import dispatcher, gateways, services
from masthead.messaging.models import InboundSms, OptOut, SmsMessage, SmsStatusChange
from tests.messaging.conftest import NOW

M = SmsMessage
pytestmark = pytest.mark.django_db
SECRET = "s3cret/with?odd&chars"
TS = 1714989660  # 2024-05-06 10:01:00 UTC


@pytest.fixture(autouse=True)
def webhook_secret(settings):
    settings.SMS_WEBHOOK_SECRET = SECRET


def history(message):
    return list(SmsStatusChange.objects.filter(message=message).order_by("id").values_list("old_status", "new_status"))


def refresh(message):
    return M.objects.get(pk=message.pk)


def sent_via(gateway_code, user, gateway_message_id=None, body="Hello"):
    """A message queued, claimed and accepted by ``gateway_code``, as the dispatcher leaves it."""
    message = services.queue_sms(user=user, body=body)
    dispatcher.claim(gateway_code=gateway_code, limit=10, now=NOW)
    dispatcher.record(refresh(message), gateways.SendResult("accepted", gateway_message_id or str(message.pk)), NOW)
    return refresh(message)


def dlr(client, secret=SECRET, method="get", **params):
    query = urlencode({"secret": secret, **params}) if secret is not None else urlencode(params)
    if method == "post":
        return client.post(f"/sms/kannel/dlr?{urlencode({'secret': secret})}", data=params)
    return client.get(f"/sms/kannel/dlr?{query}")


def mo(client, secret=SECRET, **params):
    query = urlencode({"secret": secret, **params}, quote_via=quote)
    return client.get(f"/sms/kannel/mo?{query}")


# --- Kannel delivery reports ------------------------------------------------------------------------


def test_kannel_dlr_sent_then_delivered(client, reader, clock):
    message = sent_via("kannel", reader)
    response = dlr(client, ref=message.pk, status=8, answer="ACK/", ts=TS)
    assert (response.status_code, response.content) == (200, b"ok: no change\n")  # already sent
    response = dlr(client, ref=message.pk, status=1, answer="", ts=TS)
    assert (response.status_code, response.content, response["Content-Type"]) == (
        200, b"ok: delivered\n", "text/plain; charset=utf-8")
    message = refresh(message)
    assert (message.status, message.sent_at, message.delivered_at, message.error_message) == (
        "delivered", NOW, datetime(2024, 5, 6, 10, 1, tzinfo=UTC), "")
    assert history(message) == [("", "queued"), ("queued", "sending"), ("sending", "sent"), ("sent", "delivered")]
    assert SmsStatusChange.objects.filter(message=message, new_status="delivered").get().detail == "kannel dlr 1"


def test_kannel_dlr_duplicates_and_out_of_order_change_nothing(client, reader, clock):
    """A late "sent" (8) after "delivered" (1) keeps delivered; repeated reports write no history."""
    message = sent_via("kannel", reader)
    assert dlr(client, ref=message.pk, status=1, ts=TS).content == b"ok: delivered\n"
    for status in (1, 8, 1, 2, 16, 4):
        response = dlr(client, ref=message.pk, status=status, answer="ACK/", ts=TS + 5)
        assert (response.status_code, response.content) == (200, b"ok: no change\n")
    message = refresh(message)
    assert (message.status, message.delivered_at) == ("delivered", datetime(2024, 5, 6, 10, 1, tzinfo=UTC))
    assert history(message)[-1] == ("sent", "delivered")
    assert len(history(message)) == 4


def test_kannel_dlr_overtaking_the_sendsms_answer(client, reader, clock):
    """Kannel's 8 and 1 can reach us before the dispatcher recorded the 202: they still apply."""
    message = services.queue_sms(user=reader, body="fast")
    dispatcher.claim(gateway_code="kannel", limit=10, now=NOW)
    assert dlr(client, ref=message.pk, status=8, answer="ACK/", ts=TS).content == b"ok: sent\n"
    assert dlr(client, ref=message.pk, status=1, ts=TS + 1).content == b"ok: delivered\n"
    assert dispatcher.record(refresh(message), gateways.SendResult("accepted", str(message.pk)), NOW) == "sent"
    message = refresh(message)
    assert (message.status, message.gateway_message_id, message.sent_at) == (
        "delivered", str(message.pk), datetime(2024, 5, 6, 10, 1, tzinfo=UTC))
    assert history(message) == [("", "queued"), ("queued", "sending"), ("sending", "sent"), ("sent", "delivered")]


@pytest.mark.parametrize(("status", "answer", "final", "error"), [
    (2, "NACK/undeliverable", "failed", "kannel dlr 2: NACK/undeliverable"),
    (16, "NACK/no SMSC", "rejected", "kannel dlr 16: NACK/no SMSC"),
])
def test_kannel_dlr_failed_and_rejected(client, reader, clock, status, answer, final, error):
    message = sent_via("kannel", reader)
    response = dlr(client, ref=message.pk, status=status, answer=answer, ts=TS)
    assert (response.status_code, response.content) == (200, f"ok: {final}\n".encode())
    message = refresh(message)
    assert (message.status, message.error_message, message.delivered_at) == (final, error, None)


def test_kannel_dlr_buffered_changes_nothing(client, reader, clock):
    message = sent_via("kannel", reader)
    assert dlr(client, ref=message.pk, status=4, ts=TS).content == b"ok: no change\n"
    assert refresh(message).status == "sent"
    assert len(history(message)) == 3


def test_kannel_dlr_by_post_form_and_header_secret(client, reader, clock):
    message = sent_via("kannel", reader)
    response = client.post("/sms/kannel/dlr", data={"ref": str(message.pk), "status": "1", "ts": str(TS)},
                           headers={"X-Webhook-Secret": SECRET})
    assert (response.status_code, response.content) == (200, b"ok: delivered\n")
    assert refresh(message).status == "delivered"


def test_kannel_dlr_unknown_ref_is_acknowledged_and_logged(client, reader, clock, caplog):
    other = sent_via("simulated", reader)  # a message of another gateway is unknown to Kannel
    with caplog.at_level(logging.WARNING, logger="masthead.messaging.webhooks"):
        for ref in (other.pk, 999999, 10**19):
            response = dlr(client, ref=ref, status=1, ts=TS)
            assert (response.status_code, response.content) == (200, b"ok: unknown message\n")
    assert [r.getMessage() for r in caplog.records] == [
        f"Kannel delivery report for unknown message {other.pk} (delivered)",
        "Kannel delivery report for unknown message 999999 (delivered)",
        f"Kannel delivery report for unknown message {10**19} (delivered)"]
    assert refresh(other).status == "sent"
    assert SmsStatusChange.objects.count() == 3


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x", SECRET.upper()])
def test_kannel_webhooks_refuse_a_wrong_or_missing_secret(client, reader, clock, secret):
    message = sent_via("kannel", reader)
    response = dlr(client, secret=secret, ref=message.pk, status=1, ts=TS)
    assert (response.status_code, response.content) == (403, b"forbidden: bad or missing secret\n")
    query = urlencode({"from": "+421908123456", "to": "5555", "text": "STOP", "id": "mo-1", "ts": TS,
                       **({"secret": secret} if secret is not None else {})})
    response = client.get(f"/sms/kannel/mo?{query}")
    assert (response.status_code, response.content) == (403, b"forbidden: bad or missing secret\n")
    response = client.get("/sms/kannel/dlr", {"ref": message.pk, "status": 1}, headers={"X-Webhook-Secret": "nope"})
    assert response.status_code == 403
    assert refresh(message).status == "sent"
    assert len(history(message)) == 3
    assert not InboundSms.objects.exists()


def test_an_empty_configured_secret_refuses_everything(client, reader, clock, settings):
    settings.SMS_WEBHOOK_SECRET = ""
    message = sent_via("kannel", reader)
    assert dlr(client, secret="", ref=message.pk, status=1).status_code == 403
    assert refresh(message).status == "sent"


@pytest.mark.parametrize(("params", "reason"), [
    ({"status": "1"}, "missing field: ref"),
    ({"ref": "{pk}"}, "missing field: status"),
    ({"ref": "", "status": "1"}, "field ref is empty"),
    ({"ref": "abc", "status": "1"}, "ref is not a message id"),
    ({"ref": "-{pk}", "status": "1"}, "ref is not a message id"),
    ({"ref": "{pk}", "status": "%d"}, "status is not a number"),
    ({"ref": "{pk}", "status": "3"}, "unknown status: 3"),
    ({"ref": "{pk}", "status": "1", "ts": "yesterday"}, "field ts is not a Unix time"),
    ({"ref": "{pk}", "status": "1", "answer": "a\x00b"}, "field answer contains a NUL character"),
    ({"ref": "{pk}", "status": "1", "answer": "x" * 2001}, "field answer is longer than 2000 characters"),
    ({"ref": "1" * 21, "status": "1"}, "field ref is longer than 20 characters"),
])
def test_kannel_dlr_bad_input_is_refused_and_writes_nothing(client, reader, clock, params, reason):
    message = sent_via("kannel", reader)
    params = {k: v.replace("{pk}", str(message.pk)) for k, v in params.items()}
    response = dlr(client, **params)
    assert (response.status_code, response.content.decode()) == (400, f"bad request: {reason}\n")
    assert refresh(message).status == "sent"
    assert len(history(message)) == 3


def test_webhooks_take_only_get_and_post(client):
    for path in ("/sms/kannel/dlr", "/sms/kannel/mo", "/sms/http/dlr", "/sms/http/mo"):
        assert client.put(f"{path}?secret={quote(SECRET)}").status_code == 405


# --- Kannel inbound messages ------------------------------------------------------------------------


def test_kannel_mo_is_stored_once_and_linked_as_reply_with_an_empty_answer(
        client, reader, clock, django_capture_on_commit_callbacks):
    sent = sent_via("kannel", reader, body="Renew now?")
    params = {"from": "+421908123456", "to": "55555", "text": "Yes please,  twice spaced\nand a line",
              "id": "a13a576d-1", "ts": str(TS), "smsc": "fake", "coding": "0", "charset": "UTF-8", "udh": ""}
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = mo(client, **params)
    assert len(callbacks) == 1  # the keyword handling, in the background
    assert (response.status_code, response.content) == (200, b"")
    row = InboundSms.objects.get()
    assert (row.gateway, row.gateway_message_id, row.phone_from, row.phone_to, row.text, row.received_at,
            row.user_id, row.reply_to_id, row.keyword) == (
        "kannel", "a13a576d-1", "+421908123456", "55555", "Yes please,  twice spaced\nand a line",
        datetime(2024, 5, 6, 10, 1, tzinfo=UTC), reader.pk, sent.pk, "")
    assert row.processed_at == NOW  # processed at once (Huey runs inline in tests): a plain reply
    again = mo(client, **params)
    assert (again.status_code, again.content) == (200, b"")
    assert InboundSms.objects.count() == 1


def test_kannel_mo_stop_opts_out_and_confirms_once(client, reader, clock, django_capture_on_commit_callbacks):
    params = {"from": "+421908123456", "to": "55555", "text": "  stop ", "id": "mo-stop", "ts": str(TS)}
    with django_capture_on_commit_callbacks(execute=True):
        assert mo(client, **params).content == b""
        assert mo(client, **params).content == b""  # Kannel retried: nothing more happens
    assert OptOut.objects.filter(phone_number="+421908123456").count() == 1
    confirmations = M.objects.filter(phone_number="+421908123456")
    assert [(m.body, m.transactional) for m in confirmations] == [(services.STOP_CONFIRMATION, True)]
    with pytest.raises(services.SmsError) as refused:
        services.queue_sms(user=reader, body="An offer")
    assert refused.value.code == "opted_out"


def test_kannel_mo_unicode_and_other_charsets(client, reader, clock):
    text = "Ďakujem, že píšete 😀"
    assert mo(client, **{"from": "+421908123456", "text": text, "id": "u1", "charset": "UTF-8"}).status_code == 200
    raw = quote(text.encode("utf-16-be"), safe="")
    response = client.get(f"/sms/kannel/mo?secret={quote(SECRET)}&from=%2B421908123456&id=u2&coding=2"
                          f"&charset=UTF-16BE&text={raw}")
    assert (response.status_code, response.content) == (200, b"")
    latin = quote("Grüße".encode("iso-8859-1"), safe="")
    assert client.get(f"/sms/kannel/mo?secret={quote(SECRET)}&from=%2B421908123456&id=u3"
                      f"&charset=ISO-8859-1&text={latin}").status_code == 200
    assert dict(InboundSms.objects.values_list("gateway_message_id", "text")) == {
        "u1": text, "u2": text, "u3": "Grüße"}


@pytest.mark.parametrize(("params", "reason"), [
    ({"to": "5555", "text": "hi", "id": "m1"}, "missing field: from"),
    ({"from": "+421908123456", "text": "hi"}, "missing field: id"),
    ({"from": "+421908123456", "id": "m1"}, "missing field: text"),
    ({"from": " ", "text": "hi", "id": "m1"}, "field from is empty"),
    ({"from": "+421908123456", "text": "a\x00b", "id": "m1"}, "field text contains a NUL character"),
    ({"from": "+421908123456", "text": "x" * 2001, "id": "m1"}, "field text is longer than 2000 characters"),
    ({"from": "+421908123456", "text": "hi", "id": "m" * 101}, "field id is longer than 100 characters"),
    ({"from": "1" * 41, "text": "hi", "id": "m1"}, "field from is longer than 40 characters"),
    ({"from": "+421908123456", "text": "hi", "id": "m1", "ts": "-5"}, "field ts is not a Unix time"),
    ({"from": "+421908123456", "text": "hi", "id": "m1", "charset": "KLINGON"}, "unknown charset: KLINGON"),
])
def test_kannel_mo_bad_input_is_refused_and_writes_nothing(client, reader, clock, params, reason):
    response = mo(client, **params)
    assert (response.status_code, response.content.decode()) == (400, f"bad request: {reason}\n")
    assert not InboundSms.objects.exists()
    assert not OptOut.objects.exists()


# --- generic HTTP gateway ---------------------------------------------------------------------------


def post_json(client, path, payload, secret=SECRET):
    body = payload if isinstance(payload, (str, bytes)) else json.dumps(payload)
    return client.post(path, data=body, content_type="application/json", headers={"X-Webhook-Secret": secret})


def test_http_dlr_by_platform_id_or_ours(client, reader, clock):
    theirs = sent_via("http", reader, gateway_message_id="plat-77")
    ours = sent_via("http", reader, gateway_message_id=None, body="second")
    response = post_json(client, "/sms/http/dlr", {"id": "plat-77", "status": "delivered",
                                                   "at": "2024-05-06T12:01:00+02:00"})
    assert (response.status_code, response.content) == (200, b"ok: delivered\n")
    response = post_json(client, "/sms/http/dlr", {"id": ours.pk, "status": "failed", "detail": "handset off"})
    assert (response.status_code, response.content) == (200, b"ok: failed\n")
    theirs, ours = refresh(theirs), refresh(ours)
    assert (theirs.status, theirs.delivered_at) == ("delivered", datetime(2024, 5, 6, 10, 1, tzinfo=UTC))
    assert (ours.status, ours.error_message) == ("failed", "http report: handset off")
    # duplicates and late reports
    for payload in ({"id": "plat-77", "status": "sent"}, {"id": "plat-77", "status": "delivered"}):
        assert post_json(client, "/sms/http/dlr", payload).content == b"ok: no change\n"
    assert refresh(theirs).status == "delivered"
    assert post_json(client, "/sms/http/dlr", {"id": "nobody", "status": "delivered"}).content == (
        b"ok: unknown message\n")


@pytest.mark.parametrize(("payload", "reason"), [
    ("not json", "the body is not JSON"),
    ([1, 2], "the body must be a JSON object"),
    ({"status": "delivered"}, "missing field: id"),
    ({"id": "1"}, "missing field: status"),
    ({"id": "1", "status": "read"}, "unknown status: read (one of sent, delivered, failed, rejected, expired)"),
    ({"id": ["1"], "status": "delivered"}, "field id must be a string"),
    ({"id": "1", "status": "delivered", "at": "soon"}, "field at is not an ISO 8601 time"),
    ({"id": "1", "status": "delivered", "at": "2024-05-06T10:00:00"}, "field at needs a UTC offset"),
    ({"id": "1\x00", "status": "delivered"}, "field id contains a NUL character"),
])
def test_http_dlr_bad_input(client, reader, clock, payload, reason):
    message = sent_via("http", reader, gateway_message_id="1")
    response = post_json(client, "/sms/http/dlr", payload)
    assert (response.status_code, response.content.decode()) == (400, f"bad request: {reason}\n")
    assert refresh(message).status == "sent"


def test_http_dlr_needs_post_and_the_secret(client, reader, clock):
    message = sent_via("http", reader, gateway_message_id="p1")
    assert client.get(f"/sms/http/dlr?secret={quote(SECRET)}").content == b"bad request: POST a JSON object\n"
    assert post_json(client, "/sms/http/dlr", {"id": "p1", "status": "delivered"}, secret="no").status_code == 403
    assert refresh(message).status == "sent"


def test_http_mo(client, reader, clock):
    sent = sent_via("http", reader, gateway_message_id="p1")
    payload = {"id": "in-1", "from": "0908 123 456", "to": "5555", "text": "Thanks 👍",
               "received_at": "2024-05-06T10:02:00Z"}
    response = post_json(client, "/sms/http/mo", payload)
    assert (response.status_code, response.content) == (200, b"ok: stored\n")
    assert post_json(client, "/sms/http/mo", payload).content == b"ok: already stored\n"
    row = InboundSms.objects.get()
    assert (row.gateway, row.phone_from, row.text, row.received_at, row.user_id, row.reply_to_id) == (
        "http", "+421908123456", "Thanks 👍", NOW + timedelta(minutes=2), reader.pk, sent.pk)
    for bad, reason in [({**payload, "id": "in-2", "text": None}, "missing field: text"),
                        ({**payload, "id": "in-2", "from": 421}, None),
                        ({**payload, "id": "in-3", "text": "x" * 2001}, "field text is longer than 2000 characters")]:
        response = post_json(client, "/sms/http/mo", bad)
        if reason is None:
            assert response.status_code == 200  # a number given as a JSON number is still a number
        else:
            assert (response.status_code, response.content.decode()) == (400, f"bad request: {reason}\n")
    assert set(InboundSms.objects.values_list("gateway_message_id", flat=True)) == {"in-1", "in-2"}
