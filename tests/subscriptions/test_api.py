"""REMP subscriptions API: users/subscriptions (R-SAPI-1), subscriptions/create (R-SAPI-2..7),
subscriptions/update (R-SAPI-8..10), content-access/list (R-SAPI-11), invalid input (R-AUTH-9), and
Masthead's subscription-types list."""

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from masthead.core import catalog
from masthead.core import events as bus
from masthead.core.models import ApiIdempotencyKey
from masthead.subscriptions import api as subscriptions_api
from masthead.subscriptions import events, services
from masthead.subscriptions.models import Subscription, SubscriptionMeta, SubscriptionTypeName
from tests.conftest import bearer, require_service

pytestmark = pytest.mark.django_db

NOW = datetime(2021, 2, 1, 10, 0, tzinfo=UTC)  # 11:00 in Bratislava
CREATE = "/api/v1/subscriptions/create"
UPDATE = "/api/v1/subscriptions/update"
MINE = "/api/v1/users/subscriptions"

CATALOG = """
content_access:
  - {name: mobile, description: Mobile app access, sorting: 300}
  - {name: web, description: Web access, sorting: 100}
  - {name: print, description: Printed edition, sorting: 200}
  - {name: club, sorting: 400}
"""

SUBSCRIPTION_EVENTS = (events.SubscriptionCreated, events.SubscriptionStarted, events.SubscriptionEnded,
                       events.SubscriptionUpdated)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def post_json(client, url, body, **extra):
    return client.post(url, data=json.dumps(body), content_type="application/json", **extra)


@pytest.fixture(autouse=True)
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def recorded():
    """Every subscription event emitted during the test, in order."""
    seen = []
    for event_type in SUBSCRIPTION_EVENTS:
        bus.subscribe(event_type, seen.append)
    yield seen
    for event_type in SUBSCRIPTION_EVENTS:
        bus.unsubscribe(event_type, seen.append)


@pytest.fixture
def web_year(db):
    catalog.load(CATALOG)
    subscription_type, _ = services.save_subscription_type(
        code="web_year", fields={"name": "Web year", "user_label": "Web year (customer label)", "price": "99",
                                 "length": 365, "sorting": 20},
        content_access=["mobile", "web"], items=[])
    return subscription_type


@pytest.fixture
def print_month(web_year):
    subscription_type, _ = services.save_subscription_type(
        code="print_month", fields={"name": "Print month", "user_label": "Printed edition", "price": "15.5",
                                    "length": 31, "sorting": 20, "visible": False},
        content_access=["print"], items=[])
    return subscription_type


def subscribe(user, subscription_type, start, end, **fields):
    return services.create_subscription(user=user, subscription_type=subscription_type, start=at(start),
                                        end=at(end), **fields)


def snapshot():
    """Everything the create/update endpoints could write."""
    return (list(Subscription.objects.order_by("pk").values()), list(SubscriptionMeta.objects.values()),
            list(ApiIdempotencyKey.objects.values()))


# --- R-SAPI-1 users/subscriptions -------------------------------------------------------------


@pytest.fixture
def timeline(user, make_user, web_year, print_month):
    """Jana's subscriptions: finished, ending exactly now, current, future; and someone else's."""
    return {
        "finished": subscribe(user, web_year, "2020-01-15T00:00:00+01:00", "2021-01-15T00:00:00+01:00"),
        "ends_now": subscribe(user, print_month, "2021-01-01T11:00:00+01:00", "2021-02-01T11:00:00+01:00"),
        "current": subscribe(user, web_year, "2021-01-22T11:00:00+01:00", "2022-01-22T11:00:00+01:00"),
        "future": subscribe(user, print_month, "2022-01-22T11:00:00+01:00", "2022-07-22T11:00:00+02:00"),
        "other": subscribe(make_user(), web_year, "2021-01-01T00:00:00+01:00", "2022-01-01T00:00:00+01:00"),
    }


def mine_json(timeline, *names):
    rows = {
        "finished": {"start_at": "2020-01-15T00:00:00+01:00", "end_at": "2021-01-15T00:00:00+01:00",
                     "code": "web_year", "access": ["web", "mobile"], "name": "Web year",
                     "label": "Web year (customer label)"},
        "ends_now": {"start_at": "2021-01-01T11:00:00+01:00", "end_at": "2021-02-01T11:00:00+01:00",
                     "code": "print_month", "access": ["print"], "name": "Print month", "label": "Printed edition"},
        "current": {"start_at": "2021-01-22T11:00:00+01:00", "end_at": "2022-01-22T11:00:00+01:00",
                    "code": "web_year", "access": ["web", "mobile"], "name": "Web year",
                    "label": "Web year (customer label)"},
        "future": {"start_at": "2022-01-22T11:00:00+01:00", "end_at": "2022-07-22T11:00:00+02:00",
                   "code": "print_month", "access": ["print"], "name": "Print month", "label": "Printed edition"},
    }
    return {"status": "ok", "subscriptions": [{"id": timeline[n].pk} | rows[n] for n in names]}


def test_user_subscriptions_current_and_future_by_end_desc(client, timeline, user_token):
    """R-SAPI-1: without show_finished only end_time >= now (ending exactly now included), newest end first;
    access by content-access sorting; dates in RFC 3339 with the local offset."""
    response = client.get(MINE, **bearer(user_token))
    assert response.status_code == 200
    assert response.json() == mine_json(timeline, "future", "current", "ends_now")


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "on", "Yes"])
def test_user_subscriptions_show_finished(client, timeline, user_token, value):
    """R-SAPI-1: a truthy show_finished (any case) lists every subscription of the reader."""
    response = client.get(MINE, {"show_finished": value}, **bearer(user_token))
    assert response.json() == mine_json(timeline, "future", "current", "ends_now", "finished")


@pytest.mark.parametrize("value", ["0", "false", "no", "off", "", "maybe", "2"])
def test_user_subscriptions_show_finished_falsy(client, timeline, user_token, value):
    """R-SAPI-1: anything else than 1/true/on/yes hides finished subscriptions."""
    response = client.get(MINE, {"show_finished": value}, **bearer(user_token))
    assert response.json() == mine_json(timeline, "future", "current", "ends_now")


def test_user_subscriptions_post_reads_the_query_string(client, timeline, user_token):
    """R-SAPI-1: POST answers like GET; show_finished comes from the query string only."""
    assert client.post(f"{MINE}?show_finished=1", **bearer(user_token)).json() == mine_json(
        timeline, "future", "current", "ends_now", "finished")
    assert client.post(MINE, {"show_finished": "1"}, **bearer(user_token)).json() == mine_json(
        timeline, "future", "current", "ends_now")


def test_user_subscriptions_empty(client, user_token):
    """R-SAPI-1: a reader without subscriptions gets an empty list."""
    assert client.get(MINE, **bearer(user_token)).json() == {"status": "ok", "subscriptions": []}


def test_user_subscriptions_query_count_does_not_grow_with_rows(client, user, user_token, web_year, print_month):
    """R-SAPI-1: subscriptions with their types and access names in one query; nothing per row."""
    subscribe(user, web_year, "2021-01-01T00:00:00+01:00", "2022-01-01T00:00:00+01:00")
    client.get(MINE, **bearer(user_token))  # the token's first use records last_used_at
    with CaptureQueriesContext(connection) as one:
        assert len(client.get(MINE, **bearer(user_token)).json()["subscriptions"]) == 1
    for month in range(3, 9):
        subscribe(user, print_month if month % 2 else web_year, f"2021-0{month}-01T00:00:00+01:00",
                  f"2021-0{month + 1}-01T00:00:00+01:00")
    with CaptureQueriesContext(connection) as seven:
        assert len(client.get(MINE, **bearer(user_token)).json()["subscriptions"]) == 7
    assert len(seven) == len(one)
    subscription_queries = [q["sql"] for q in seven.captured_queries if "subscriptions_" in q["sql"]]
    assert len(subscription_queries) == 1


@pytest.mark.parametrize("method", ["get", "post"])
def test_user_subscriptions_needs_a_user_token(client, api_token, method):
    """R-AUTH-3/5: an API token or no token is refused."""
    assert getattr(client, method)(MINE).status_code == 403
    response = getattr(client, method)(MINE, **bearer(api_token))
    assert response.status_code == 403
    assert response.json()["message"] == "Not authorized: Token doesn't exists"


# --- R-SAPI-2..7 subscriptions/create ---------------------------------------------------------


def test_create_minimal_form(client, api_token, user, web_year, recorded):
    """R-SAPI-2/5: form body; the type's length from now; label regular, note null; not recurrent."""
    response = client.post(CREATE, {"email": "jana@example.com", "subscription_type_id": web_year.pk,
                                    "is_paid": "1"}, **bearer(api_token))
    assert response.status_code == 200
    subscription = Subscription.objects.get()
    assert response.json() == {
        "status": "ok", "message": "Subscription created",
        "subscriptions": {"id": subscription.pk, "subscription_type_id": web_year.pk, "is_paid": True,
                          "start_time": "2021-02-01T11:00:00+01:00", "end_time": "2022-02-01T11:00:00+01:00",
                          "type": "regular", "note": None},
    }
    assert subscription.user == user
    assert subscription.is_recurrent is False
    assert subscription.internal_status == Subscription.ACTIVE
    assert not SubscriptionMeta.objects.exists()
    assert [type(e) for e in recorded] == [events.SubscriptionCreated, events.SubscriptionStarted]


def test_create_json_by_code_with_dates_label_note(client, api_token, user, web_year):
    """R-SAPI-2/4/5: JSON body, type by code, start and end given (a naive time is local), label, note;
    is_paid "false" is false (R-SAPI-4, not REMP's cast)."""
    response = post_json(client, CREATE, {
        "email": "JANA@example.com", "subscription_type_code": "web_year", "is_paid": "false",
        "start_time": "2021-03-08T13:35:05", "end_time": "2021-05-09 13:35:05+02:00",
        "type": "gift", "note": "From grandma"}, **bearer(api_token))
    assert response.status_code == 200
    subscription = Subscription.objects.get()
    assert response.json() == {
        "status": "ok", "message": "Subscription created",
        "subscriptions": {"id": subscription.pk, "subscription_type_id": web_year.pk, "is_paid": False,
                          "start_time": "2021-03-08T13:35:05+01:00", "end_time": "2021-05-09T13:35:05+02:00",
                          "type": "gift", "note": "From grandma"},
    }
    assert subscription.start_time == datetime(2021, 3, 8, 12, 35, 5, tzinfo=UTC)
    assert subscription.internal_status == Subscription.BEFORE_START


def test_create_unknown_id_falls_back_to_code(client, api_token, user, web_year):
    """R-SAPI-3 step 3: by id first; an unknown id is looked up by code."""
    response = client.post(CREATE, {"email": "jana@example.com", "subscription_type_id": "987654",
                                    "subscription_type_code": "web_year", "is_paid": "yes"}, **bearer(api_token))
    assert response.status_code == 200
    assert response.json()["subscriptions"]["subscription_type_id"] == web_year.pk


@pytest.mark.parametrize(("value", "expected"), [
    ("1", True), ("true", True), ("On", True), ("YES", True), (True, True), (1, True),
    ("0", False), ("false", False), ("OFF", False), ("no", False), ("", False), (False, False), (0, False),
])
def test_create_is_paid_parsing(client, api_token, user, web_year, value, expected):
    """R-SAPI-4: booleans are parsed, not cast."""
    response = post_json(client, CREATE, {"email": "jana@example.com", "subscription_type_id": web_year.pk,
                                          "is_paid": value}, **bearer(api_token))
    assert response.status_code == 200
    assert response.json()["subscriptions"]["is_paid"] is expected
    assert Subscription.objects.get().is_paid is expected


@pytest.mark.parametrize("label", [None, "", "bogus", "upgrade"])
def test_create_type_falls_back_to_regular(client, api_token, user, web_year, label):
    """R-SAPI-4: a missing, unknown or inactive label silently becomes regular."""
    SubscriptionTypeName.objects.filter(code="upgrade").update(active=False)
    data = {"email": "jana@example.com", "subscription_type_id": web_year.pk, "is_paid": "1"}
    if label is not None:
        data["type"] = label
    response = client.post(CREATE, data, **bearer(api_token))
    assert response.status_code == 200
    assert response.json()["subscriptions"]["type"] == "regular"
    assert Subscription.objects.get().type == "regular"


def test_create_limit_per_user_counts_past_subscriptions(client, api_token, user, web_year):
    """R-SAPI-3 step 5 / R-SAPI-7: the limit counts every subscription of the type, also finished ones."""
    web_year.limit_per_user = 2
    web_year.save()
    subscribe(user, web_year, "2019-01-01T00:00:00+01:00", "2020-01-01T00:00:00+01:00")
    data = {"email": "jana@example.com", "subscription_type_id": web_year.pk, "is_paid": "1"}
    assert client.post(CREATE, data, **bearer(api_token)).status_code == 200
    before = snapshot()
    response = client.post(CREATE, data, HTTP_IDEMPOTENCY_KEY="k-limit", **bearer(api_token))
    assert response.status_code == 400
    assert response.json() == {"status": "error", "message": "Limit per user reached"}
    assert snapshot() == before
    assert Subscription.objects.count() == 2


OK_CREATE = {"email": "jana@example.com", "subscription_type_code": "web_year", "is_paid": "1"}
REQUIRED = ["Field is required"]
BOOLEAN = ["Must be a boolean (1, true, on, yes, 0, false, off, no)"]
POSITIVE = ["Must be a positive integer"]
START_FORMAT = {"status": "error", "code": "start_time_wrong_format",
                "message": "Start time has wrong format - RFC3339 format required"}
END_FORMAT = {"status": "error", "code": "end_time_wrong_format",
              "message": "End time has wrong format - RFC3339 format required"}


def without(*names, **changes):
    return {k: v for k, v in OK_CREATE.items() if k not in names} | changes


@pytest.mark.parametrize(("data", "status", "body"), [
    # step 1 (R-AUTH-9)
    ({}, 400, {"status": "error", "code": "invalid_input", "errors": {"email": REQUIRED, "is_paid": REQUIRED}}),
    (without("email"), 400, {"status": "error", "code": "invalid_input", "errors": {"email": REQUIRED}}),
    (without("email", email=""), 400, {"status": "error", "code": "invalid_input", "errors": {"email": REQUIRED}}),
    (without("is_paid"), 400, {"status": "error", "code": "invalid_input", "errors": {"is_paid": REQUIRED}}),
    (without(is_paid="maybe"), 400, {"status": "error", "code": "invalid_input", "errors": {"is_paid": BOOLEAN}}),
    # step 2
    (without("subscription_type_code"), 400, {"status": "error", "code": "invalid_input", "errors": {
        "subscription_type_id": ["Field is required if subscription_type_code is not present"],
        "subscription_type_code": ["Field is required if subscription_type_id is not present"]}}),
    (without("subscription_type_code", subscription_type_id="abc"), 400,
     {"status": "error", "code": "invalid_input", "errors": {"subscription_type_id": POSITIVE}}),
    (without(subscription_type_id="-1"), 400,
     {"status": "error", "code": "invalid_input", "errors": {"subscription_type_id": POSITIVE}}),
    (without(subscription_type_id="99999999999999999999"), 400,
     {"status": "error", "code": "invalid_input", "errors": {"subscription_type_id": POSITIVE}}),
    # dates (R-SAPI-4: any parseable datetime)
    (without(start_time="yesterday"), 400, START_FORMAT),
    (without(start_time="0001-01-01T00:00:00+05:00"), 400, START_FORMAT),
    (without(start_time="9999-12-31T23:59:59Z"), 400, START_FORMAT),
    (without(end_time="2021-02-30T00:00:00Z"), 400, END_FORMAT),
    (without(end_time="2021-02-03T00:00:00+25:00"), 400, END_FORMAT),
    # step 3
    (without("subscription_type_code", subscription_type_id="987654"), 404,
     {"status": "error", "message": "Subscription type not found"}),
    (without("subscription_type_code", subscription_type_id=str(2**63 - 1)), 404,
     {"status": "error", "message": "Subscription type not found"}),
    (without(subscription_type_code="nope"), 404, {"status": "error", "message": "Subscription type not found"}),
    # step 4 (REMP answers 500 here; we answer 404)
    (without(email="nobody@example.com"), 404,
     {"status": "error", "code": "user_not_found", "message": "User not found"}),
    # bad values
    (without(note="x" * 256), 400, {"status": "error", "code": "payload_error", "message": "Payload error",
                                    "errors": [{"note": "must be at most 255 characters"}]}),
    (without(note="a\x00b"), 400, {"status": "error", "code": "payload_error", "message": "Payload error",
                                   "errors": [{"note": "must not contain NUL characters"}]}),
])
def test_create_refusals_write_nothing(client, api_token, user, web_year, recorded, data, status, body):
    """R-SAPI-3 (errors in this order) and R-AUTH-9: exact bodies; no subscription, no event, no key recorded."""
    before = snapshot()
    response = client.post(CREATE, data, HTTP_IDEMPOTENCY_KEY="k-1", **bearer(api_token))
    assert response.status_code == status
    assert response.json() == body
    assert snapshot() == before
    assert recorded == []


def test_create_error_order_email_before_type(client, api_token, user, web_year):
    """R-SAPI-3: missing email is reported before missing type fields, type before user."""
    response = client.post(CREATE, {"is_paid": "1"}, **bearer(api_token))
    assert response.json()["errors"] == {"email": REQUIRED}
    response = client.post(CREATE, {"email": "nobody@example.com", "is_paid": "1", "subscription_type_code": "x"},
                           **bearer(api_token))
    assert response.json() == {"status": "error", "message": "Subscription type not found"}


def test_create_bad_json_values(client, api_token, user, web_year):
    """R-AUTH-9: wrongly typed JSON values are refused cleanly."""
    response = post_json(client, CREATE, without(email=5), **bearer(api_token))
    assert response.status_code == 400
    assert response.json() == {"status": "error", "code": "payload_error", "message": "Payload error",
                               "errors": [{"email": "must be a string"}]}
    response = post_json(client, CREATE, without("subscription_type_code", subscription_type_id=1.5),
                         **bearer(api_token))
    assert response.json() == {"status": "error", "code": "invalid_input", "errors": {"subscription_type_id": POSITIVE}}
    assert not Subscription.objects.exists()


def test_create_needs_an_api_token(client, user_token, user, web_year):
    """R-AUTH-4: a user token cannot create subscriptions."""
    assert client.post(CREATE, OK_CREATE, **bearer(user_token)).status_code == 403
    assert not Subscription.objects.exists()


# --- R-SAPI-6 idempotency ---------------------------------------------------------------------


def test_create_idempotency_replay(client, api_token, user, web_year, recorded):
    """R-SAPI-6: a repeated (path, key) answers the first response and creates nothing."""
    first = client.post(CREATE, OK_CREATE | {"note": "first"}, HTTP_IDEMPOTENCY_KEY="order-42", **bearer(api_token))
    assert first.status_code == 200
    subscription = Subscription.objects.get()
    assert subscription.meta.get().key == "idempotent_key"
    assert subscription.meta.get().value == "order-42"
    assert list(ApiIdempotencyKey.objects.values_list("path", "key")) == [(CREATE, "order-42")]
    events_after_first = list(recorded)
    before = snapshot()

    again = client.post(CREATE, OK_CREATE | {"note": "first"}, HTTP_IDEMPOTENCY_KEY="order-42", **bearer(api_token))
    assert again.status_code == 200
    assert again.json() == first.json()
    # the key decides, not the body
    changed = post_json(client, CREATE, OK_CREATE | {"note": "other"}, HTTP_IDEMPOTENCY_KEY="order-42",
                        **bearer(api_token))
    assert changed.json() == first.json()
    assert snapshot() == before
    assert recorded == events_after_first

    other_key = client.post(CREATE, OK_CREATE, HTTP_IDEMPOTENCY_KEY="order-43", **bearer(api_token))
    assert other_key.status_code == 200
    assert other_key.json()["subscriptions"]["id"] != subscription.pk
    assert Subscription.objects.count() == 2


def test_create_idempotency_key_recorded_only_on_success(client, api_token, web_year, make_user):
    """R-SAPI-6: a refused call records nothing, so the same key works once the cause is fixed."""
    refused = client.post(CREATE, OK_CREATE, HTTP_IDEMPOTENCY_KEY="retry-me", **bearer(api_token))
    assert refused.status_code == 404
    assert not ApiIdempotencyKey.objects.exists()
    make_user(email="jana@example.com")
    accepted = client.post(CREATE, OK_CREATE, HTTP_IDEMPOTENCY_KEY="retry-me", **bearer(api_token))
    assert accepted.status_code == 200
    assert ApiIdempotencyKey.objects.count() == 1


def test_create_idempotency_race_loser_answers_the_winner(client, api_token, user, web_year, recorded, monkeypatch):
    """R-SAPI-6: when a concurrent call with the same key commits between our check and our insert, the
    unique (path, key) refuses ours; everything we wrote rolls back and we answer the winner's response."""
    winner = client.post(CREATE, OK_CREATE, HTTP_IDEMPOTENCY_KEY="race", **bearer(api_token))
    before, events_before = snapshot(), list(recorded)
    real_replay = subscriptions_api._replay
    calls = []

    def replay_not_yet_visible(path, key):
        calls.append(key)
        return None if len(calls) == 1 else real_replay(path, key)

    monkeypatch.setattr(subscriptions_api, "_replay", replay_not_yet_visible)
    loser = client.post(CREATE, OK_CREATE, HTTP_IDEMPOTENCY_KEY="race", **bearer(api_token))
    assert calls == ["race", "race"]
    assert loser.status_code == 200
    assert loser.json() == winner.json()
    assert snapshot() == before
    assert recorded == events_before


def test_create_idempotency_key_of_a_deleted_subscription(client, api_token, user, web_year):
    """R-SAPI-6 / R-AUTH-8: a recorded key whose subscription is gone is a conflict, not a second creation."""
    client.post(CREATE, OK_CREATE, HTTP_IDEMPOTENCY_KEY="gone", **bearer(api_token))
    Subscription.objects.all().delete()  # as an admin could
    response = client.post(CREATE, OK_CREATE, HTTP_IDEMPOTENCY_KEY="gone", **bearer(api_token))
    assert response.status_code == 409
    assert response.json() == {"status": "error", "code": "idempotency_key_used",
                               "message": "This Idempotency-Key was already used"}
    assert not Subscription.objects.exists()


def test_create_idempotency_key_too_long(client, api_token, user, web_year):
    """R-SAPI-6: keys are at most 255 characters; a longer one is refused and nothing is written."""
    response = client.post(CREATE, OK_CREATE, HTTP_IDEMPOTENCY_KEY="k" * 256, **bearer(api_token))
    assert response.status_code == 400
    assert response.json() == {"status": "error", "code": "payload_error", "message": "Payload error",
                               "errors": [{"Idempotency-Key": "must be at most 255 characters"}]}
    assert not Subscription.objects.exists()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_create_idempotency_concurrent_calls(api_token, user, web_year):
    """R-SAPI-6 with real concurrency (PostgreSQL): parallel calls with one key create one subscription and
    all answer the same body."""
    require_service("PostgreSQL (DATABASE_URL)", connection.vendor == "postgresql")
    barrier = threading.Barrier(4)
    answers = []

    def call():
        try:
            barrier.wait()
            response = Client().post(CREATE, OK_CREATE, HTTP_IDEMPOTENCY_KEY="parallel", **bearer(api_token))
            answers.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Subscription.objects.count() == 1
    assert [status for status, _ in answers] == [200] * 4
    assert all(body == answers[0][1] for _, body in answers)


# --- R-SAPI-8..10 subscriptions/update --------------------------------------------------------


@pytest.fixture
def current(user, web_year):
    return subscribe(user, web_year, "2021-01-22T11:00:00+01:00", "2022-01-22T11:00:00+01:00")


def test_update_end_one_day_earlier(client, api_token, current, recorded):
    """R-SAPI-10: end_time = old end − 1 day in RFC 3339 comes back as that value."""
    response = client.post(UPDATE, {"id": current.pk, "end_time": "2022-01-21T11:00:00+01:00"}, **bearer(api_token))
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok", "message": "Subscription updated",
        "subscription": {"id": current.pk, "subscription_type_id": current.subscription_type_id, "is_paid": False,
                         "start_time": "2021-01-22T11:00:00+01:00", "end_time": "2022-01-21T11:00:00+01:00",
                         "type": "regular", "note": None},
    }
    current.refresh_from_db()
    assert current.end_time == datetime(2022, 1, 21, 10, 0, tzinfo=UTC)
    assert [type(e) for e in recorded] == [events.SubscriptionUpdated]


def test_update_every_field_json(client, api_token, current, print_month):
    """R-SAPI-8/10: type, paid flag, dates (Z accepted), label and note in a JSON body."""
    response = post_json(client, UPDATE, {
        "id": str(current.pk), "subscription_type_id": print_month.pk, "is_paid": "true",
        "start_time": "2021-01-25T10:00:00Z", "end_time": "2021-02-25T11:00:00+01:00", "type": "gift",
        "note": "moved"}, **bearer(api_token))
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok", "message": "Subscription updated",
        "subscription": {"id": current.pk, "subscription_type_id": print_month.pk, "is_paid": True,
                         "start_time": "2021-01-25T11:00:00+01:00", "end_time": "2021-02-25T11:00:00+01:00",
                         "type": "gift", "note": "moved"},
    }
    current.refresh_from_db()
    assert (current.subscription_type, current.is_paid, current.type, current.note) == (
        print_month, True, "gift", "moved")


def test_update_that_ends_the_subscription_emits_ended(client, api_token, current):
    """R-SAPI-9 step 8 / R-SUB-6: an end in the past changes the status and SubscriptionEnded fires."""
    ended = []
    bus.subscribe(events.SubscriptionEnded, ended.append)
    try:
        response = client.post(UPDATE, {"id": current.pk, "end_time": "2021-01-31T11:00:00+01:00"},
                               **bearer(api_token))
    finally:
        bus.unsubscribe(events.SubscriptionEnded, ended.append)
    assert response.status_code == 200
    assert response.json()["subscription"]["end_time"] == "2021-01-31T11:00:00+01:00"
    assert [(e.subscription_id, e.user_id) for e in ended] == [(current.pk, current.user_id)]
    current.refresh_from_db()
    assert current.internal_status == Subscription.AFTER_END


def test_update_with_only_an_id_changes_nothing(client, api_token, current, recorded):
    """R-SAPI-8: every field but id is optional; an empty update answers the subscription as it is."""
    response = client.post(UPDATE, {"id": current.pk}, **bearer(api_token))
    assert response.status_code == 200
    assert response.json()["subscription"]["end_time"] == "2022-01-22T11:00:00+01:00"
    assert recorded == []


@pytest.mark.parametrize(("data", "status", "body"), [
    # step 1 (R-AUTH-9)
    ({"id": None}, 400, {"status": "error", "code": "invalid_input", "errors": {"id": REQUIRED}}),
    ({"id": ""}, 400, {"status": "error", "code": "invalid_input", "errors": {"id": REQUIRED}}),
    ({"id": "abc"}, 400, {"status": "error", "code": "invalid_input", "errors": {"id": POSITIVE}}),
    ({"id": "1e3"}, 400, {"status": "error", "code": "invalid_input", "errors": {"id": POSITIVE}}),
    # step 2
    ({"id": "987654"}, 404, {"status": "error", "code": "subscription_not_found",
                             "message": "Subscription not found: 987654"}),
    # step 3
    ({"subscription_type_id": "987654"}, 404, {"status": "error", "code": "subscription_type_not_found",
                                               "message": "Subscription type not found: 987654"}),
    ({"subscription_type_id": "web_year"}, 400,
     {"status": "error", "code": "invalid_input", "errors": {"subscription_type_id": POSITIVE}}),
    # step 4
    ({"is_paid": "maybe", "start_time": "bad"}, 400,
     {"status": "error", "code": "invalid_input", "errors": {"is_paid": BOOLEAN}}),
    # step 5: strict RFC 3339
    ({"start_time": "2021-01-25 10:00:00+01:00"}, 400, START_FORMAT),
    ({"start_time": "2021-01-25T10:00:00"}, 400, START_FORMAT),
    ({"start_time": "2021-01-25T10:00+01:00"}, 400, START_FORMAT),
    ({"start_time": "2021-01-25T10:00:00.5+01:00"}, 400, START_FORMAT),
    ({"start_time": "2021-02-30T10:00:00+01:00"}, 400, START_FORMAT),
    ({"start_time": "2021-01-25T10:00:00+01:00\n"}, 400, START_FORMAT),
    ({"start_time": "２０２１-01-25T10:00:00Z"}, 400, START_FORMAT),
    ({"start_time": "0001-01-01T00:00:00+01:00"}, 400, START_FORMAT),
    ({"start_time": "bad", "end_time": "bad", "type": "bogus"}, 400, START_FORMAT),
    # step 6
    ({"end_time": "2022-01-21"}, 400, END_FORMAT),
    ({"end_time": "9999-12-31T23:59:59+00:00", "type": "bogus"}, 400, END_FORMAT),
    # step 7
    ({"type": "bogus"}, 400, {"status": "error", "code": "wrong_type", "message": "Wrong type: bogus"}),
    # the service's own refusal
    ({"end_time": "2021-01-01T00:00:00+01:00"}, 400,
     {"status": "error", "code": "end_before_start", "message": "The end must not be before the start."}),
    ({"note": "x" * 256}, 400, {"status": "error", "code": "payload_error", "message": "Payload error",
                                "errors": [{"note": "must be at most 255 characters"}]}),
])
def test_update_refusals_write_nothing(client, api_token, current, recorded, data, status, body):
    """R-SAPI-9 (checks in this order): exact bodies; the subscription is unchanged and no event fires."""
    data = {k: v for k, v in ({"id": current.pk} | data).items() if v is not None}
    before = snapshot()
    response = client.post(UPDATE, data, **bearer(api_token))
    assert response.status_code == status
    assert response.json() == body
    assert snapshot() == before
    assert recorded == []


def test_update_inactive_label_is_wrong_type(client, api_token, current):
    """R-SAPI-9 step 7: only active labels are accepted."""
    SubscriptionTypeName.objects.filter(code="gift").update(active=False)
    response = client.post(UPDATE, {"id": current.pk, "type": "gift"}, **bearer(api_token))
    assert response.json() == {"status": "error", "code": "wrong_type", "message": "Wrong type: gift"}
    current.refresh_from_db()
    assert current.type == "regular"


# --- R-SAPI-11 content-access/list, subscription-types ----------------------------------------


def test_content_access_list(client, api_token, web_year):
    """R-SAPI-11: a bare array by sorting; code = the access name."""
    response = client.get("/api/v1/content-access/list", **bearer(api_token))
    assert response.status_code == 200
    assert response.json() == [
        {"code": "web", "description": "Web access"},
        {"code": "print", "description": "Printed edition"},
        {"code": "mobile", "description": "Mobile app access"},
        {"code": "club", "description": None},
    ]


def test_subscription_types(client, api_token, print_month, web_year):
    """Masthead's list: every type by sorting then code, price with two decimals, access by sorting."""
    inactive, _ = services.save_subscription_type(
        code="archive", fields={"name": "Archive", "user_label": "Archive", "price": "0", "length": 30,
                                "sorting": 5, "active": False},
        content_access=[], items=[])
    response = client.get("/api/v1/subscription-types", **bearer(api_token))
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "subscription_types": [
        {"id": inactive.pk, "code": "archive", "name": "Archive", "label": "Archive", "price": "0.00", "length": 30,
         "content_access": [], "active": False, "visible": True},
        {"id": print_month.pk, "code": "print_month", "name": "Print month", "label": "Printed edition",
         "price": "15.50", "length": 31, "content_access": ["print"], "active": True, "visible": False},
        {"id": web_year.pk, "code": "web_year", "name": "Web year", "label": "Web year (customer label)",
         "price": "99.00", "length": 365, "content_access": ["web", "mobile"], "active": True, "visible": True},
    ]}


@pytest.mark.parametrize("url", ["/api/v1/content-access/list", "/api/v1/subscription-types"])
def test_catalog_lists_need_an_api_token(client, user_token, url):
    """R-AUTH-4: API token endpoints refuse user tokens."""
    assert client.get(url, **bearer(user_token)).status_code == 403


def test_openapi_lists_the_subscription_operations(client):
    schema = client.get("/api/v1/openapi.json").json()
    operation_ids = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {"users_subscriptions", "users_subscriptions_post", "subscriptions_create", "subscriptions_update",
            "content_access_list", "subscription_types"} <= operation_ids
    create = schema["paths"][CREATE]["post"]
    assert set(create["requestBody"]["content"]) == {"application/json", "application/x-www-form-urlencoded"}
    assert [(p["in"], p["name"], p["required"]) for p in create["parameters"]] == [
        ("header", "Idempotency-Key", False)]


def test_a_type_without_access_and_a_user_token_far_in_the_future(client, user, user_token, web_year):
    """R-SAPI-1: subscriptions of a type without access list an empty access array."""
    empty, _ = services.save_subscription_type(
        code="plain", fields={"name": "Plain", "user_label": "Plain", "price": "1", "length": 10},
        content_access=[], items=[])
    subscription = subscribe(user, empty, "2021-02-01T11:00:00+01:00", "2021-02-11T11:00:00+01:00")
    assert client.get(MINE, **bearer(user_token)).json()["subscriptions"] == [
        {"id": subscription.pk, "start_at": "2021-02-01T11:00:00+01:00", "end_at": "2021-02-11T11:00:00+01:00",
         "code": "plain", "access": [], "name": "Plain", "label": "Plain"}]
    with time_machine.travel(NOW + timedelta(days=11), tick=False):
        assert client.get(MINE, **bearer(user_token)).json()["subscriptions"] == []
