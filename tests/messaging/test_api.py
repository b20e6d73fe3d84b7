"""SMS API (issue 6, API paragraph): sms_send, sms_list, sms_detail, sms_cancel, sms_batch_create,
sms_batch_detail, each behind its own API-token whitelist entry; error bodies per DESIGN.md and
R-AUTH-9; every refused call writes nothing."""

import json
from datetime import timedelta

import pytest

from masthead.core.models import ApiIdempotencyKey
from masthead.messaging import batches, dispatcher, services
from masthead.messaging.models import InboundSms, SmsBatch, SmsMessage, SmsStatusChange
from masthead.subscriptions.models import ContentAccess
from masthead.subscriptions.services import create_subscription, save_subscription_type
from masthead.users import services as user_services
from tests.conftest import bearer
from tests.messaging.conftest import NOW

pytestmark = pytest.mark.django_db

SMS = "/api/v1/sms"
BATCHES = "/api/v1/sms/batches"
LOCAL_NOW = "2024-05-06T12:00:00+02:00"  # NOW in Europe/Bratislava
OPERATIONS = ["sms_send", "sms_list", "sms_detail", "sms_cancel", "sms_batch_create", "sms_batch_detail"]


def post(client, url, body, token, **headers):
    raw = body if isinstance(body, str) else json.dumps(body)
    return client.generic("POST", url, raw.encode(), content_type="application/json",
                          CONTENT_TYPE="application/json", **bearer(token), **headers)


def get(client, url, token, **params):
    return client.get(url, params, **bearer(token))


def written():
    """Everything the SMS endpoints could write."""
    return (SmsMessage.objects.count(), SmsStatusChange.objects.count(), SmsBatch.objects.count(),
            ApiIdempotencyKey.objects.count())


def payload(*errors):
    return {"status": "error", "code": "payload_error", "message": "Payload error", "errors": list(errors)}


def refusal(code, message):
    return {"status": "error", "code": code, "message": message}


def sms(message, **overrides):
    """The expected MESSAGE JSON of a freshly queued message."""
    return {
        "id": message.pk, "user_id": message.user_id, "staff_id": message.staff_id,
        "phone_number": message.phone_number, "body": message.body, "template_code": None, "params": {},
        "status": "queued", "segments": 1, "encoding": "gsm7", "scheduled_at": None, "sent_at": None,
        "delivered_at": None, "attempts": 0, "gateway": None, "gateway_message_id": None, "error_message": None,
        "batch_id": None, "created_by": "all-endpoints", "created_at": LOCAL_NOW, **overrides,
    }


@pytest.fixture(autouse=True)
def frozen(clock):
    return clock


@pytest.fixture
def promo_template():
    template, _ = services.save_template(code="promo", body="Hi {{ first_name }}, {{ offer }}",
                                         parameters=["first_name", "offer"],
                                         sample_params={"first_name": "A", "offer": "B"})
    return template


# --- sms_send -------------------------------------------------------------------------------------


def test_send_text_to_a_reader(client, api_token, reader):
    response = post(client, SMS, {"user_id": reader.pk, "message": "  Hello Jana  "}, api_token)
    assert response.status_code == 201
    message = SmsMessage.objects.get()
    assert response.json() == {"status": "ok", "sms": sms(message, user_id=reader.pk,
                                                          phone_number="+421908123456", body="Hello Jana")}
    assert (message.user, message.staff, message.created_by, message.next_attempt_at) == (
        reader, None, "all-endpoints", NOW)
    assert list(message.history.values_list("old_status", "new_status")) == [("", "queued")]
    assert not ApiIdempotencyKey.objects.exists()


def test_send_to_a_staff_member(client, api_token, staff):
    response = post(client, SMS, {"staff_id": staff.pk, "message": "Call the printer"}, api_token)
    assert response.status_code == 201
    message = SmsMessage.objects.get()
    assert response.json()["sms"] == sms(message, user_id=None, staff_id=staff.pk, phone_number="+421905111222",
                                         body="Call the printer")
    assert (message.user, message.staff) == (None, staff)


def test_send_a_template_with_params(client, api_token, reader, promo_template):
    response = post(client, SMS, {"user_id": reader.pk, "template_code": "promo",
                                  "params": {"first_name": "Jana", "offer": "50 % off"}}, api_token)
    assert response.status_code == 201
    message = SmsMessage.objects.get()
    assert response.json()["sms"] == sms(message, user_id=reader.pk, phone_number="+421908123456",
                                         body="Hi Jana, 50 % off", template_code="promo",
                                         params={"first_name": "Jana", "offer": "50 % off"})
    assert message.template == promo_template


@pytest.mark.parametrize(("text", "segments", "encoding"), [
    ("a" * 160, 1, "gsm7"), ("a" * 161, 2, "gsm7"), ("€" * 80, 1, "gsm7"), ("Ahoj Žofia", 1, "ucs2"),
    ("ž" * 71, 2, "ucs2"), ("a" * 1530, 10, "gsm7"),
])
def test_send_reports_segments_and_encoding(client, api_token, reader, text, segments, encoding):
    response = post(client, SMS, {"user_id": reader.pk, "message": text}, api_token)
    assert response.status_code == 201
    assert (response.json()["sms"]["segments"], response.json()["sms"]["encoding"]) == (segments, encoding)


def test_send_form_body(client, api_token, reader):
    """Flat fields work as a form too; the id arrives as a string of digits."""
    response = client.post(SMS, {"user_id": str(reader.pk), "message": "From a form"}, **bearer(api_token))
    assert response.status_code == 201
    assert SmsMessage.objects.get().body == "From a form"


def test_send_later(client, api_token, reader, simulated):
    response = post(client, SMS, {"user_id": reader.pk, "message": "Later",
                                  "send_at": "2024-05-07T09:30:00+02:00"}, api_token)
    assert response.status_code == 201
    message = SmsMessage.objects.get()
    assert response.json()["sms"] == sms(message, user_id=reader.pk, phone_number="+421908123456", body="Later",
                                         scheduled_at="2024-05-07T09:30:00+02:00")
    assert message.next_attempt_at == NOW + timedelta(hours=21, minutes=30)
    assert list(message.history.values_list("detail", flat=True)) == ["scheduled for 2024-05-07T09:30:00+02:00"]
    assert dispatcher.run(budget_seconds=5).claimed == 0


@pytest.mark.parametrize("send_at", ["2024-05-06T11:59:59+02:00", "2020-01-01T00:00:00Z", LOCAL_NOW, "", None])
def test_send_at_in_the_past_or_empty_means_now(client, api_token, reader, send_at):
    response = post(client, SMS, {"user_id": reader.pk, "message": "Now", "send_at": send_at}, api_token)
    assert response.status_code == 201
    assert response.json()["sms"]["scheduled_at"] is None
    assert SmsMessage.objects.get().next_attempt_at == NOW


def test_send_at_at_most_a_year_ahead(client, api_token, reader):
    year = "2025-05-06T10:00:00Z"  # NOW + 365 days
    assert post(client, SMS, {"user_id": reader.pk, "message": "x", "send_at": year}, api_token).status_code == 201
    before = written()
    response = post(client, SMS, {"user_id": reader.pk, "message": "x", "send_at": "2025-05-06T10:00:01Z"},
                    api_token)
    assert (response.status_code, response.json()) == (400, refusal(
        "send_at_too_late", "send_at may be at most 365 days ahead."))
    assert written() == before


WRONG_SEND_AT = refusal("send_at_wrong_format",
                        "send_at has wrong format - RFC3339 format required, e.g. 2024-05-06T12:00:00+02:00")


@pytest.mark.parametrize("send_at", [
    "2024-05-07", "2024-05-07T09:30:00", "2024-05-07 09:30:00+02:00", "2024-05-07T09:30:00.5+02:00",
    "2024-02-30T09:30:00+02:00", "2024-05-07T09:30:00+25:00", "0001-01-01T00:00:00+01:00", "tomorrow",
    "２０２４-05-07T09:30:00+02:00",
])
def test_send_at_must_be_strict_rfc3339(client, api_token, reader, send_at):
    response = post(client, SMS, {"user_id": reader.pk, "message": "x", "send_at": send_at}, api_token)
    assert (response.status_code, response.json()) == (400, WRONG_SEND_AT)
    assert written() == (0, 0, 0, 0)


@pytest.mark.parametrize(("body", "status", "expected"), [
    ({"message": "hi"}, 400, refusal("one_recipient", "Give exactly one of user_id and staff_id.")),
    ({"user_id": "READER", "staff_id": "STAFF", "message": "hi"}, 400,
     refusal("one_recipient", "Give exactly one of user_id and staff_id.")),
    ({"user_id": 999999, "message": "hi"}, 404, refusal("user_not_found", "User 999999 not found.")),
    ({"staff_id": 999999, "message": "hi"}, 404, refusal("staff_not_found", "Staff member 999999 not found.")),
    ({"staff_id": "READER", "message": "hi"}, 400,
     refusal("not_staff", "User [reader@example.com] is not a staff member.")),
    ({"user_id": "NO_PHONE", "message": "hi"}, 400,
     refusal("no_phone_number", "User [silent@example.com] has no phone number.")),
    ({"user_id": "READER"}, 400, refusal("text_or_template", "Give exactly one of message and template_code.")),
    ({"user_id": "READER", "template_code": ""}, 400,
     refusal("text_or_template", "Give exactly one of message and template_code.")),
    ({"user_id": "READER", "message": "hi", "template_code": "promo"}, 400,
     refusal("text_or_template", "Give exactly one of message and template_code.")),
    ({"user_id": "READER", "message": "hi", "params": {"a": 1}}, 400,
     refusal("params_without_template", "params can only be given with a template_code.")),
    ({"user_id": "READER", "message": ""}, 400, refusal("empty_message", "The message is empty.")),
    ({"user_id": "READER", "message": " \n "}, 400, refusal("empty_message", "The message is empty.")),
    ({"user_id": "READER", "message": "a" * 1531}, 400,
     refusal("message_too_long", "The message takes 11 SMS segments; at most 10 are allowed.")),
    ({"user_id": "READER", "message": "ž" * 671}, 400,
     refusal("message_too_long", "The message takes 11 SMS segments; at most 10 are allowed.")),
    ({"user_id": "READER", "template_code": "nope"}, 404,
     refusal("template_not_found", "No active SMS template 'nope'.")),
    ({"user_id": "READER", "template_code": "promo", "params": {"first_name": "x"}}, 400,
     refusal("template_error", "The template could not be rendered: 'offer' is undefined")),
    ({"user_id": "READER", "template_code": "promo"}, 400,
     refusal("template_error", "The template could not be rendered: 'offer' is undefined")),
])
def test_send_refusals_write_nothing(client, api_token, reader, staff, make_user, promo_template, body, status,
                                     expected):
    names = {"READER": reader.pk, "STAFF": staff.pk, "NO_PHONE": make_user(email="silent@example.com").pk}
    body = {k: names.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    before = written()
    response = post(client, SMS, body, api_token, HTTP_IDEMPOTENCY_KEY="refused")
    assert (response.status_code, response.json()) == (status, expected)
    assert written() == before == (0, 0, 0, 0)


def test_send_to_an_opted_out_number_is_refused(client, api_token, reader):
    services.opt_out(phone_number=reader.phone_number, source="test")  # queues its confirmation
    before = written()
    response = post(client, SMS, {"user_id": reader.pk, "message": "Offer"}, api_token)
    assert (response.status_code, response.json()) == (400, refusal(
        "opted_out", "The number +421908123456 opted out of SMS."))
    assert written() == before


@pytest.mark.parametrize(("body", "errors"), [
    ({"user_id": "abc"}, [{"user_id": "Must be a positive integer"}]),
    ({"user_id": True}, [{"user_id": "Must be a positive integer"}]),
    ({"user_id": 1.5}, [{"user_id": "Must be a positive integer"}]),
    ({"user_id": 0}, [{"user_id": "Must be a positive integer"}]),
    ({"user_id": -3}, [{"user_id": "Must be a positive integer"}]),
    ({"user_id": 2**63}, [{"user_id": "Must be a positive integer"}]),
    ({"staff_id": [1]}, [{"staff_id": "Must be a positive integer"}]),
    ({"message": 5}, [{"message": "Must be a string"}]),
    ({"message": ["hi"]}, [{"message": "Must be a string"}]),
    ({"message": "a" * 4097}, [{"message": "Must be at most 4096 characters"}]),
    ({"message": "hi\x00there"}, [{"message": "Must not contain NUL characters"}]),
    ({"template_code": "p" * 101}, [{"template_code": "Must be at most 100 characters"}]),
    ({"template_code": "promo", "params": ["x"]}, [{"params": "Must be an object"}]),
    ({"template_code": "promo", "params": "first_name=Jana"}, [{"params": "Must be an object"}]),
    ({"template_code": "promo", "params": {f"p{n}": 1 for n in range(51)}},
     [{"params": "Must have at most 50 properties"}]),
    ({"template_code": "promo", "params": {"first_name": ["J"], "offer": {"a": 1}}}, [
        {"params.first_name": "Must be a string of at most 1000 characters without NUL, a number, a boolean or null"},
        {"params.offer": "Must be a string of at most 1000 characters without NUL, a number, a boolean or null"}]),
    ({"template_code": "promo", "params": {"first_name": "J\x00"}},
     [{"params.first_name": "Must be a string of at most 1000 characters without NUL, a number, a boolean or null"}]),
    ({"template_code": "promo", "params": {"first_name": "J" * 1001}},
     [{"params.first_name": "Must be a string of at most 1000 characters without NUL, a number, a boolean or null"}]),
    ({"template_code": "promo", "params": {"self": "x"}}, [{"params": (
        "Parameter names must be identifiers (letters, digits and underscores, not starting with a digit) "
        "other than 'self'")}]),
    ({"template_code": "promo", "params": {"1st": "x"}}, [{"params": (
        "Parameter names must be identifiers (letters, digits and underscores, not starting with a digit) "
        "other than 'self'")}]),
    ({"send_at": 1715000000}, [{"send_at": "Must be a string"}]),
    ({"to": "+421908000000", "message": "hi"}, [{"to": "Unknown property"}]),
    ({"phone_number": "+421908000000", "zz": 1}, [{"phone_number": "Unknown property"}, {"zz": "Unknown property"}]),
])
def test_send_payload_errors_write_nothing(client, api_token, reader, promo_template, body, errors):
    response = post(client, SMS, {"user_id": reader.pk, **body}, api_token)
    assert (response.status_code, response.json()) == (400, payload(*errors))
    assert written() == (0, 0, 0, 0)


@pytest.mark.parametrize("raw", ['{"user_id": 1, "template_code": "promo", "params": {"offer": NaN}}',
                                 '{"user_id": 1, "template_code": "promo", "params": {"offer": 1e999}}'])
def test_send_non_finite_numbers_in_params_are_refused(client, api_token, reader, promo_template, raw):
    response = post(client, SMS, raw.replace('"user_id": 1', f'"user_id": {reader.pk}'), api_token)
    assert (response.status_code, response.json()) == (400, payload(
        {"params.offer": "Must be a string of at most 1000 characters without NUL, a number, a boolean or null"}))
    assert written() == (0, 0, 0, 0)


@pytest.mark.parametrize(("raw", "expected"), [
    ("", {"status": "error", "code": "empty_request", "message": "Empty request"}),
    ("[1]", payload({"body": "must be a JSON object"})),
    ('"hi"', payload({"body": "must be a JSON object"})),
])
def test_send_unreadable_bodies(client, api_token, raw, expected):
    response = post(client, SMS, raw, api_token)
    assert (response.status_code, response.json()) == (400, expected)
    assert written() == (0, 0, 0, 0)


def test_send_malformed_json(client, api_token):
    response = post(client, SMS, '{"user_id": 1,', api_token)
    assert (response.status_code, response.json()["code"], response.json()["message"]) == (
        400, "malformed_json", "Malformed JSON")
    assert written() == (0, 0, 0, 0)


def test_send_idempotency_key_queues_once(client, api_token, reader):
    body = {"user_id": reader.pk, "message": "Once"}
    first = post(client, SMS, body, api_token, HTTP_IDEMPOTENCY_KEY="order-42")
    assert first.status_code == 201
    message = SmsMessage.objects.get()
    again = post(client, SMS, body, api_token, HTTP_IDEMPOTENCY_KEY="order-42")
    assert (again.status_code, again.json()) == (201, first.json())
    assert SmsMessage.objects.count() == 1
    assert sorted(ApiIdempotencyKey.objects.values_list("path", "key")) == [
        (SMS, "order-42"), (f"{SMS}#{message.pk}", "order-42")]
    other = post(client, SMS, body, api_token, HTTP_IDEMPOTENCY_KEY="order-43")
    assert other.status_code == 201
    assert other.json()["sms"]["id"] != message.pk
    assert SmsMessage.objects.count() == 2


def test_send_idempotency_key_recorded_only_on_success(client, api_token, reader, make_user):
    silent = make_user(email="silent@example.com")
    refused = post(client, SMS, {"user_id": silent.pk, "message": "x"}, api_token, HTTP_IDEMPOTENCY_KEY="k1")
    assert refused.status_code == 400
    assert not ApiIdempotencyKey.objects.exists()
    accepted = post(client, SMS, {"user_id": reader.pk, "message": "x"}, api_token, HTTP_IDEMPOTENCY_KEY="k1")
    assert accepted.status_code == 201


def test_send_idempotency_key_too_long(client, api_token, reader):
    response = post(client, SMS, {"user_id": reader.pk, "message": "x"}, api_token, HTTP_IDEMPOTENCY_KEY="k" * 256)
    assert (response.status_code, response.json()) == (400, payload(
        {"Idempotency-Key": "Must be at most 255 characters"}))
    assert written() == (0, 0, 0, 0)


# --- authentication and whitelisting -------------------------------------------------------------------


def call(client, operation, token, target_id=1):
    headers = bearer(token) if token else {}
    if operation == "sms_send":
        return client.post(SMS, {}, content_type="application/json", **headers)
    if operation == "sms_list":
        return client.get(SMS, **headers)
    if operation == "sms_detail":
        return client.get(f"{SMS}/{target_id}", **headers)
    if operation == "sms_cancel":
        return client.post(f"{SMS}/{target_id}/cancel", **headers)
    if operation == "sms_batch_create":
        return client.post(BATCHES, {}, content_type="application/json", **headers)
    return client.get(f"{BATCHES}/{target_id}", **headers)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_each_endpoint_has_its_own_whitelist_entry(client, operation):
    others, _ = user_services.create_api_token(name="others", endpoints=[o for o in OPERATIONS if o != operation])
    only, _ = user_services.create_api_token(name="only", endpoints=[operation])
    response = call(client, operation, others)
    assert (response.status_code, response.json()) == (403, {
        "status": "error", "code": "no_authorization", "error": "no_authorization",
        "message": f"Not authorized: Token has no access to resource [{operation}]"})
    assert call(client, operation, only).status_code != 403
    assert call(client, operation, None).status_code == 403
    assert written() == (0, 0, 0, 0)


def test_created_by_is_the_token_name(client, reader):
    token, _ = user_services.create_api_token(name="crm-connector", endpoints=["sms_send", "sms_cancel"])
    response = post(client, SMS, {"user_id": reader.pk, "message": "hi"}, token)
    assert response.json()["sms"]["created_by"] == "crm-connector"
    client.post(f"{SMS}/{response.json()['sms']['id']}/cancel", **bearer(token))
    assert SmsStatusChange.objects.filter(new_status="canceled").get().detail == "canceled by crm-connector"


# --- sms_list -------------------------------------------------------------------------------------------


@pytest.fixture
def inbox(reader, staff, make_user, frozen):
    """Five messages a minute apart: three to the reader, one to staff, one to another reader (canceled)."""
    other = make_user(email="other@example.com", phone_number="+421908999888")
    rows = []
    for n, kwargs in enumerate([{"user": reader}, {"staff": staff}, {"user": reader}, {"user": other},
                                {"user": reader}]):
        frozen.move_to(NOW + timedelta(minutes=n))
        rows.append(services.queue_sms(body=f"message {n}", created_by="care", **kwargs))
    services.cancel(message=rows[3], by="care")
    frozen.move_to(NOW + timedelta(hours=1))
    return rows


def ids(response):
    assert response.status_code == 200, response.json()
    return [row["id"] for row in response.json()["sms"]]


def test_list_newest_first_with_total(client, api_token, inbox):
    response = get(client, SMS, api_token)
    body = response.json()
    assert {k: body[k] for k in ("status", "page", "per_page", "total", "pages")} == {
        "status": "ok", "page": 1, "per_page": 20, "total": 5, "pages": 1}
    assert ids(response) == [m.pk for m in reversed(inbox)]
    assert body["sms"][0] == sms(inbox[4], user_id=inbox[4].user_id, created_by="care",
                                 created_at="2024-05-06T12:04:00+02:00")
    assert body["sms"][1]["status"] == "canceled"


def test_list_pages(client, api_token, inbox):
    newest_first = [m.pk for m in reversed(inbox)]
    assert ids(get(client, SMS, api_token, per_page=2)) == newest_first[:2]
    page = get(client, SMS, api_token, per_page=2, page=3)
    assert ids(page) == newest_first[4:]
    assert {k: page.json()[k] for k in ("page", "per_page", "total", "pages")} == {
        "page": 3, "per_page": 2, "total": 5, "pages": 3}
    beyond = get(client, SMS, api_token, per_page=2, page=4)
    assert (ids(beyond), beyond.json()["total"]) == ([], 5)
    assert ids(get(client, SMS, api_token, per_page=100, page=1_000_000_000)) == []


def test_list_filters(client, api_token, inbox, reader, staff):
    def only(**params):
        return ids(get(client, SMS, api_token, **params))

    assert only(user_id=reader.pk) == [inbox[4].pk, inbox[2].pk, inbox[0].pk]
    assert only(staff_id=staff.pk) == [inbox[1].pk]
    assert only(status="canceled") == [inbox[3].pk]
    assert only(status="queued", user_id=reader.pk, per_page=1) == [inbox[4].pk]
    assert only(created_from="2024-05-06T12:02:00+02:00") == [inbox[4].pk, inbox[3].pk, inbox[2].pk]
    assert only(created_to="2024-05-06T10:01:00Z") == [inbox[1].pk, inbox[0].pk]
    assert only(created_from="2024-05-06T12:01:00+02:00", created_to="2024-05-06T12:03:00+02:00") == [
        inbox[3].pk, inbox[2].pk, inbox[1].pk]
    assert only(user_id=999999) == []
    assert only(status="delivered") == []
    assert only(batch_id=999999) == []


def test_list_created_bounds_with_an_unencoded_plus(client, api_token, inbox):
    """A "+" left unencoded in a query string arrives as a space."""
    response = client.get(f"{SMS}?created_from=2024-05-06T12:03:00+02:00", **bearer(api_token))
    assert ids(response) == [inbox[4].pk, inbox[3].pk]


def test_list_by_batch(client, api_token, reader, make_user):
    batch = batches.create_batch(name="b", body="Hello", user_ids=[reader.pk], created_by="care")
    batches.fan_out(batch.pk)
    services.queue_sms(user=reader, body="alone")
    response = get(client, SMS, api_token, batch_id=batch.pk)
    assert [(row["batch_id"], row["body"]) for row in response.json()["sms"]] == [(batch.pk, "Hello")]


POSITIVE = ["Must be a positive integer"]
RFC3339_TIME = ["Must be an RFC 3339 time, e.g. 2024-05-06T12:00:00+02:00"]


def not_allowed(value):
    allowed = "queued, sending, sent, delivered, failed, rejected, expired, canceled"
    return [f"Value '{value}' is not allowed. Allowed values: {allowed}"]


@pytest.mark.parametrize(("params", "errors"), [
    ({"page": "0"}, {"page": ["Must be an integer from 1 to 1000000000"]}),
    ({"page": "abc"}, {"page": ["Must be an integer from 1 to 1000000000"]}),
    ({"page": "1000000001"}, {"page": ["Must be an integer from 1 to 1000000000"]}),
    ({"page": "-1"}, {"page": ["Must be an integer from 1 to 1000000000"]}),
    ({"per_page": "0"}, {"per_page": ["Must be an integer from 1 to 100"]}),
    ({"per_page": "101"}, {"per_page": ["Must be an integer from 1 to 100"]}),
    ({"per_page": "1.5"}, {"per_page": ["Must be an integer from 1 to 100"]}),
    ({"user_id": "x"}, {"user_id": POSITIVE}),
    ({"staff_id": "0"}, {"staff_id": POSITIVE}),
    ({"batch_id": "99999999999999999999"}, {"batch_id": POSITIVE}),
    ({"user_id": "１"}, {"user_id": POSITIVE}),
    ({"status": "lost"}, {"status": not_allowed("lost")}),
    ({"status": "QUEUED"}, {"status": not_allowed("QUEUED")}),
    ({"created_from": "2024-05-06"}, {"created_from": RFC3339_TIME}),
    ({"created_from": "2024-05-06T12:00:00"}, {"created_from": RFC3339_TIME}),
    ({"created_to": "2024-13-01T00:00:00Z"}, {"created_to": RFC3339_TIME}),
    ({"created_to": "9999-12-31T23:59:59-01:00"}, {"created_to": RFC3339_TIME}),
    ({"page": "0", "status": "x\x00"}, {"page": ["Must be an integer from 1 to 1000000000"],
                                        "status": not_allowed("x\x00")}),
])
def test_list_invalid_parameters(client, api_token, params, errors):
    response = get(client, SMS, api_token, **params)
    assert (response.status_code, response.json()) == (400, {"status": "error", "code": "invalid_input",
                                                             "errors": errors})


# --- sms_detail -----------------------------------------------------------------------------------------


def test_detail_with_history_and_reply_after_dispatch(client, api_token, reader, simulated):
    queued = post(client, SMS, {"user_id": reader.pk, "message": "Renew?"}, api_token).json()["sms"]
    dispatcher.run(budget_seconds=5)
    services.record_inbound(gateway="simulated", gateway_message_id="in-1", phone_from="+421908123456",
                            text="Yes please", received_at=NOW + timedelta(minutes=5))
    response = get(client, f"{SMS}/{queued['id']}", api_token)
    assert response.status_code == 200
    message = SmsMessage.objects.get()
    reply = InboundSms.objects.get()
    assert response.json() == {"status": "ok", "sms": {
        **sms(message, user_id=reader.pk, phone_number="+421908123456", body="Renew?", status="delivered",
              sent_at=LOCAL_NOW, delivered_at=LOCAL_NOW, attempts=1, gateway="simulated",
              gateway_message_id=f"sim-{message.pk}"),
        "history": [
            {"old": None, "new": "queued", "detail": None, "at": LOCAL_NOW},
            {"old": "queued", "new": "sending", "detail": "attempt 1", "at": LOCAL_NOW},
            {"old": "sending", "new": "sent", "detail": "accepted by the gateway", "at": LOCAL_NOW},
            {"old": "sent", "new": "delivered", "detail": "report: delivered", "at": LOCAL_NOW},
        ],
        "replies": [{"id": reply.pk, "phone_number": "+421908123456", "text": "Yes please",
                     "received_at": "2024-05-06T12:05:00+02:00"}],
    }}


def test_detail_of_a_rejected_message_shows_the_error(client, api_token, reader, simulated, settings):
    settings.SMS_SIMULATED_REJECT = r"^\+421908123456$"
    sms_id = post(client, SMS, {"user_id": reader.pk, "message": "x"}, api_token).json()["sms"]["id"]
    dispatcher.run(budget_seconds=5)
    body = get(client, f"{SMS}/{sms_id}", api_token).json()["sms"]
    assert (body["status"], body["error_message"], body["sent_at"], body["attempts"]) == (
        "rejected", "number refused by the simulated operator", None, 1)
    assert [(change["old"], change["new"], change["detail"]) for change in body["history"]] == [
        (None, "queued", None), ("queued", "sending", "attempt 1"),
        ("sending", "rejected", "number refused by the simulated operator")]
    assert simulated.sent == {}


@pytest.mark.parametrize("sms_id", ["999999", "0", "99999999999999999999999"])
def test_detail_unknown(client, api_token, sms_id):
    response = get(client, f"{SMS}/{sms_id}", api_token)
    assert (response.status_code, response.json()) == (404, refusal(
        "sms_not_found", f"SMS message {sms_id} not found."))


def test_detail_non_numeric_id_is_an_unknown_call(client, api_token):
    response = get(client, f"{SMS}/abc", api_token)
    assert (response.status_code, response.json()) == (404, {
        "error": "Unknown api call: version [1], category [sms], action [abc]"})


# --- sms_cancel ------------------------------------------------------------------------------------------


def test_cancel_a_queued_message_then_again(client, api_token, reader):
    sms_id = post(client, SMS, {"user_id": reader.pk, "message": "Oops"}, api_token).json()["sms"]["id"]
    response = client.post(f"{SMS}/{sms_id}/cancel", **bearer(api_token))
    assert response.status_code == 200
    message = SmsMessage.objects.get()
    assert response.json() == {"status": "ok", "sms": sms(message, user_id=reader.pk, phone_number="+421908123456",
                                                          body="Oops", status="canceled")}
    assert list(message.history.values_list("old_status", "new_status", "detail")) == [
        ("", "queued", ""), ("queued", "canceled", "canceled by all-endpoints")]
    before = written()
    again = client.post(f"{SMS}/{sms_id}/cancel", **bearer(api_token))
    assert (again.status_code, again.json()) == (409, refusal(
        "not_queued", "Only a queued message can be canceled; this one is canceled."))
    assert written() == before


def test_cancel_after_sending_is_refused(client, api_token, reader, simulated):
    sms_id = post(client, SMS, {"user_id": reader.pk, "message": "Gone"}, api_token).json()["sms"]["id"]
    dispatcher.run(budget_seconds=5)
    response = client.post(f"{SMS}/{sms_id}/cancel", **bearer(api_token))
    assert (response.status_code, response.json()) == (409, refusal(
        "not_queued", "Only a queued message can be canceled; this one is delivered."))
    assert SmsMessage.objects.get().status == "delivered"


def test_cancel_unknown(client, api_token):
    response = client.post(f"{SMS}/424242/cancel", **bearer(api_token))
    assert (response.status_code, response.json()) == (404, refusal("sms_not_found", "SMS message 424242 not found."))


# --- batches -------------------------------------------------------------------------------------------


@pytest.fixture
def print_readers(make_user):
    ContentAccess.objects.create(name="print")
    paper, _ = save_subscription_type(code="paper", fields={"name": "p", "user_label": "p", "price": "5",
                                                            "length": 30}, content_access=["print"], items=[])
    readers = [make_user(phone_number=f"+42190800{n:04d}", first_name=f"R{n}") for n in range(3)]
    for reader in readers:
        create_subscription(user=reader, subscription_type=paper)
    return readers


def batch_body(batch, **overrides):
    return {
        "id": batch.pk, "name": batch.name, "status": "fanning_out", "body": None, "template_code": None,
        "params": {}, "content_access": None, "scheduled_at": None, "total": 0, "fanned_out": 0, "skipped": 0,
        "counts": {"queued": 0, "sending": 0, "sent": 0, "delivered": 0, "failed": 0, "rejected": 0,
                   "expired": 0, "canceled": 0},
        "created_by": "all-endpoints", "created_at": LOCAL_NOW, "finished_at": None, **overrides,
    }


def test_batch_to_a_list_of_readers_then_progress(client, api_token, reader, make_user, simulated):
    silent = make_user(email="silent@example.com")
    response = post(client, BATCHES, {"name": "Print strike", "message": "No paper today, sorry.",
                                      "user_ids": [reader.pk, silent.pk]}, api_token)
    assert response.status_code == 201
    batch = SmsBatch.objects.get()
    assert response.json() == {"status": "ok", "batch": batch_body(batch, body="No paper today, sorry.", total=1)}
    assert (batch.user_ids, batch.created_by) == ([reader.pk, silent.pk], "all-endpoints")
    assert not SmsMessage.objects.exists()

    batches.fan_out(batch.pk)
    detail = get(client, f"{BATCHES}/{batch.pk}", api_token)
    assert (detail.status_code, detail.json()) == (200, {"status": "ok", "batch": batch_body(
        batch, body="No paper today, sorry.", status="queued", total=1, fanned_out=1,
        counts=batch_body(batch)["counts"] | {"queued": 1}, finished_at=LOCAL_NOW)})

    dispatcher.run(budget_seconds=5)
    counts = get(client, f"{BATCHES}/{batch.pk}", api_token).json()["batch"]["counts"]
    assert counts == batch_body(batch)["counts"] | {"delivered": 1}
    listed = get(client, SMS, api_token, batch_id=batch.pk).json()["sms"]
    assert [(row["user_id"], row["status"], row["created_by"]) for row in listed] == [
        (reader.pk, "delivered", "all-endpoints")]


def test_batch_to_a_segment_with_a_template(client, api_token, print_readers, promo_template):
    response = post(client, BATCHES, {"name": "Print promo", "template_code": "promo", "params": {"offer": "-50 %"},
                                      "content_access": "print", "send_at": "2024-05-07T09:00:00+02:00"},
                    api_token)
    assert response.status_code == 201
    batch = SmsBatch.objects.get()
    assert response.json()["batch"] == batch_body(
        batch, template_code="promo", params={"offer": "-50 %"}, content_access="print", total=3,
        scheduled_at="2024-05-07T09:00:00+02:00")
    batches.fan_out(batch.pk)
    detail = get(client, f"{BATCHES}/{batch.pk}", api_token).json()["batch"]
    assert (detail["status"], detail["fanned_out"], detail["skipped"], detail["counts"]["queued"]) == (
        "queued", 3, 0, 3)
    assert sorted(SmsMessage.objects.values_list("body", flat=True)) == [f"Hi R{n}, -50 %" for n in range(3)]


def test_batch_idempotency_key_creates_once(client, api_token, reader):
    body = {"name": "Once", "message": "Hello", "user_ids": [reader.pk]}
    first = post(client, BATCHES, body, api_token, HTTP_IDEMPOTENCY_KEY="campaign-7")
    again = post(client, BATCHES, body, api_token, HTTP_IDEMPOTENCY_KEY="campaign-7")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert SmsBatch.objects.count() == 1
    # a key is scoped to its endpoint: the same key on sms_send is a new call
    assert post(client, SMS, {"user_id": reader.pk, "message": "x"}, api_token,
                HTTP_IDEMPOTENCY_KEY="campaign-7").status_code == 201


@pytest.mark.parametrize(("body", "status", "expected"), [
    ({"message": "x", "template_code": "promo", "user_ids": "READERS"}, 400,
     refusal("text_or_template", "Give exactly one of message and template_code.")),
    ({"user_ids": "READERS"}, 400, refusal("text_or_template", "Give exactly one of message and template_code.")),
    ({"message": "", "user_ids": "READERS"}, 400, refusal("empty_message", "The message is empty.")),
    ({"message": "a" * 1531, "content_access": "print"}, 400,
     refusal("message_too_long", "The message takes 11 SMS segments; at most 10 are allowed.")),
    ({"message": "x", "params": {"a": 1}, "user_ids": "READERS"}, 400,
     refusal("params_without_template", "params can only be given with a template_code.")),
    ({"message": "x"}, 400,
     refusal("users_or_segment", "Give either a list of readers or a content access, not both.")),
    ({"message": "x", "user_ids": []}, 400,
     refusal("users_or_segment", "Give either a list of readers or a content access, not both.")),
    ({"message": "x", "user_ids": "READERS", "content_access": "print"}, 400,
     refusal("users_or_segment", "Give either a list of readers or a content access, not both.")),
    ({"message": "x", "content_access": "nope"}, 404,
     refusal("unknown_content_access", "Unknown content access 'nope'.")),
    ({"message": "x", "user_ids": [999998, 999999]}, 404,
     refusal("user_not_found", "Unknown readers: 999998, 999999")),
    ({"template_code": "nope", "content_access": "print"}, 404,
     refusal("template_not_found", "No active SMS template 'nope'.")),
    ({"name": "  ", "message": "x", "content_access": "print"}, 400,
     refusal("name_required", "Give the batch a name.")),
    ({"name": None, "message": "x", "content_access": "print"}, 400,
     refusal("name_required", "Give the batch a name.")),
    ({"message": "x", "content_access": "print", "send_at": "2030-01-01T00:00:00Z"}, 400,
     refusal("send_at_too_late", "send_at may be at most 365 days ahead.")),
    ({"message": "x", "content_access": "print", "send_at": "soon"}, 400, WRONG_SEND_AT),
    ({"message": "x", "user_ids": [True]}, 400, payload({"user_ids": "Must be a list of positive integers"})),
    ({"message": "x", "user_ids": [1, "2"]}, 400, payload({"user_ids": "Must be a list of positive integers"})),
    ({"message": "x", "user_ids": [[1]]}, 400, payload({"user_ids": "Must be a list of positive integers"})),
    ({"message": "x", "user_ids": [0]}, 400, payload({"user_ids": "Must be a list of positive integers"})),
    ({"message": "x", "user_ids": 5}, 400, payload({"user_ids": "Must be a list of positive integers"})),
    ({"message": "x", "user_ids": list(range(1, 50_002))}, 400,
     payload({"user_ids": "Must have at most 50000 items"})),
    ({"name": 5, "message": "x", "content_access": "print"}, 400, payload({"name": "Must be a string"})),
    ({"name": "n" * 256, "message": "x", "content_access": "print"}, 400,
     payload({"name": "Must be at most 255 characters"})),
    ({"message": "x", "content_access": "pri\x00nt"}, 400,
     payload({"content_access": "Must not contain NUL characters"})),
    ({"message": "x", "content_access": "print", "segment": "print"}, 400, payload({"segment": "Unknown property"})),
])
def test_batch_refusals_write_nothing(client, api_token, reader, print_readers, promo_template, body, status,
                                      expected):
    body = {"name": "Batch", **body}
    if body.get("user_ids") == "READERS":
        body["user_ids"] = [reader.pk]
    before = written()
    response = post(client, BATCHES, body, api_token, HTTP_IDEMPOTENCY_KEY="refused")
    assert (response.status_code, response.json()) == (status, expected)
    assert written() == before
    assert not SmsBatch.objects.exists()


def test_batch_of_the_most_readers_the_api_takes(client, api_token, reader):
    """50,000 ids stay within PostgreSQL's 65,535 bind parameters per query (unknown ones are refused)."""
    user_ids = [reader.pk, *range(reader.pk + 1, reader.pk + 50_000)]
    response = post(client, BATCHES, {"name": "Many", "message": "x", "user_ids": user_ids}, api_token)
    unknown = ", ".join(str(i) for i in range(reader.pk + 1, reader.pk + 21))
    assert (response.status_code, response.json()) == (404, refusal("user_not_found", f"Unknown readers: {unknown}"))
    assert written() == (0, 0, 0, 0)


@pytest.mark.parametrize("batch_id", ["424242", "0", "99999999999999999999999"])
def test_batch_detail_unknown(client, api_token, batch_id):
    response = get(client, f"{BATCHES}/{batch_id}", api_token)
    assert (response.status_code, response.json()) == (404, refusal(
        "batch_not_found", f"SMS batch {batch_id} not found."))
