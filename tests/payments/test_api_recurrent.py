"""Recurrent payments API for readers: list (R-REC-22), stop (R-REC-23), reactivate (R-REC-24)."""

import json
from datetime import timedelta
from types import SimpleNamespace
from unittest import mock

import pytest

from masthead.payments import services
from masthead.payments.models import PaymentGateway, RecurrentPayment
from masthead.users import services as user_services
from tests.conftest import bearer
from tests.payments.conftest import GOOD_CARD, NOW, make_type, paid_with_card

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("settings_charges")]

RP = RecurrentPayment
LIST = "/api/v1/users/recurrent-payments"
STOP = "/api/v1/recurrent-payment/stop"
REACTIVATE = "/api/v1/recurrent-payment/reactivate"


def post_json(client, url, body, token):
    raw = (json.dumps(body) if not isinstance(body, str) else body).encode()
    return client.generic("POST", url, raw, content_type="application/json", CONTENT_TYPE="application/json",
                          **bearer(token))


def snapshot():
    return list(RP.objects.order_by("pk").values_list("pk", "state", "charge_at", "status", "approval", "payment_id"))


def row_json(row, **changes):
    row.refresh_from_db()
    return {"id": row.pk, "parent_payment_id": row.parent_payment_id,
            "charge_at": "2024-06-05T10:00:00+02:00", "payment_gateway_code": "fake_card",
            "subscription_type_code": "monthly", "state": row.state, "retries": 4} | changes


@pytest.fixture
def profile(user, monthly, clock):
    return RP.objects.get(parent_payment=paid_with_card(user, monthly))


# --- R-REC-22 list -------------------------------------------------------------------------------------------


def test_r_rec_22_list(client, user, user_token, make_user, monthly, clock, profile):
    second = RP.objects.get(parent_payment=paid_with_card(user, monthly, card="card_5555555555554444"))
    services.stop_by_user(recurrent_payment=second)
    paid_with_card(make_user(), monthly)  # someone else's
    response = client.get(LIST, **bearer(user_token))
    assert response.status_code == 200
    assert response.json() == [
        {"id": profile.pk, "parent_payment_id": profile.parent_payment_id, "charge_at": "2024-06-05T10:00:00+02:00",
         "payment_gateway_code": "fake_card", "subscription_type_code": "monthly", "state": "active", "retries": 4},
        # the second subscription extends the first one
        {"id": second.pk, "parent_payment_id": second.parent_payment_id, "charge_at": "2024-07-05T10:00:00+02:00",
         "payment_gateway_code": "fake_card", "subscription_type_code": "monthly", "state": "user_stop",
         "retries": 4},
    ]
    only_active = client.get(LIST, {"states[]": ["active"]}, **bearer(user_token)).json()
    assert [r["id"] for r in only_active] == [profile.pk]
    both = client.get(LIST, {"states[]": ["user_stop", "active"]}, **bearer(user_token)).json()
    assert [r["id"] for r in both] == [profile.pk, second.pk]
    none = client.get(LIST, {"states[]": ["charged"]}, **bearer(user_token)).json()
    assert none == []


@pytest.mark.parametrize(("value", "ids"), [
    ("2024-06-05T08:00:00Z", "all"),          # exactly the charge time (UTC)
    ("2024-06-05T10:00:00+02:00", "all"),     # the same instant with an offset
    ("2024-06-05T08:00:01Z", "none"),
    ("2016-01-01T01:23:45Z", "all"),
    ("2024-06-05T10:00:01+02:00", "none"),
])
def test_r_rec_22_chargeable_from(client, user_token, profile, value, ids):
    response = client.get(LIST, {"chargeable_from": value}, **bearer(user_token))
    assert response.status_code == 200
    assert [r["id"] for r in response.json()] == ([profile.pk] if ids == "all" else [])


@pytest.mark.parametrize("value", ["2016-01-01", "2016-01-01 01:23:45", "yesterday", "2016-13-01T01:23:45Z",
                                   "2016-01-01T01:23:45.123Z", "2016-01-01T01:23:45"])
def test_r_rec_22_bad_date(client, user_token, profile, value):
    response = client.get(LIST, {"chargeable_from": value}, **bearer(user_token))
    assert response.status_code == 400
    assert response.json() == {
        "status": "error", "code": "invalid_date",
        "message": f"Invalid format provided for charge_at parameter, ISO 8601 expected: {value}"}


def test_r_rec_22_unencoded_plus(client, user_token, profile):
    response = client.get(LIST + "?chargeable_from=2024-06-05T10:00:00+02:00", **bearer(user_token))
    assert [r["id"] for r in response.json()] == [profile.pk]


def test_r_rec_22_bad_state(client, user_token, profile):
    response = client.get(LIST, {"states[]": ["active", "sleeping"]}, **bearer(user_token))
    assert response.status_code == 400
    message = ("Value 'sleeping' is not allowed. Allowed values: active, pending, charged, charge_failed, user_stop, "
               "admin_stop, system_stop")
    assert response.json() == {"status": "error", "code": "invalid_input", "errors": {"states": [message]}}


def test_r_rec_22_needs_a_user_token(client, api_token, profile):
    assert client.get(LIST).status_code == 403
    response = client.get(LIST, **bearer(api_token))
    assert response.status_code == 403
    assert response.json()["code"] == "no_authorization"


def test_r_rec_22_token_without_user(client, user_token, profile):
    with mock.patch.object(user_services, "authenticate_user_token", return_value=SimpleNamespace(id=1, user=None, device_token_id=None)):
        response = client.get(LIST, **bearer(user_token))
    assert response.status_code == 403
    assert response.json() == {"status": "error", "message": "Cannot authorize user"}


# --- R-REC-23 stop -----------------------------------------------------------------------------------------------


def test_r_rec_23_stop(client, user_token, profile):
    response = post_json(client, STOP, {"id": profile.pk}, user_token)
    assert response.status_code == 200
    assert response.json() == row_json(profile, state="user_stop")
    assert profile.state == "user_stop"
    assert profile.charge_at == NOW + timedelta(days=30)


def test_r_rec_23_stop_form_body(client, user_token, profile):
    response = client.post(STOP, {"id": str(profile.pk)}, **bearer(user_token))
    assert response.status_code == 200
    assert response.json()["state"] == "user_stop"


def test_r_rec_23_token_without_user(client, user_token, profile):
    before = snapshot()
    with mock.patch.object(user_services, "authenticate_user_token", return_value=SimpleNamespace(id=1, user=None, device_token_id=None)):
        response = post_json(client, STOP, {"id": profile.pk}, user_token)
    assert response.status_code == 403
    assert response.json() == {"message": "Cannot authorize user", "code": "cannot_authorize_user"}
    assert snapshot() == before


@pytest.mark.parametrize(("body", "expected"), [
    ("", {"status": "error", "code": "empty_request", "message": "Empty request"}),
    ("{}", {"status": "error", "code": "payload_error", "message": "Payload error",
            "errors": [{"id": "Field required"}]}),
    ('{"id": "1"}', {"status": "error", "code": "payload_error", "message": "Payload error",
                     "errors": [{"id": "Input should be a valid integer"}]}),
    ('{"id": 1.5}', {"status": "error", "code": "payload_error", "message": "Payload error",
                     "errors": [{"id": "Input should be a valid integer"}]}),
    ('{"id": true}', {"status": "error", "code": "payload_error", "message": "Payload error",
                      "errors": [{"id": "Input should be a valid integer"}]}),
    ('{"id": 1, "state": "active"}', {"status": "error", "code": "payload_error", "message": "Payload error",
                                      "errors": [{"state": "Extra inputs are not permitted"}]}),
    ("[1]", {"status": "error", "code": "payload_error", "message": "Payload error",
             "errors": [{"body": "must be a JSON object"}]}),
    ("{nope", None),
])
@pytest.mark.parametrize("url", [STOP, REACTIVATE])
def test_r_rec_23_24_bad_bodies(client, user_token, profile, url, body, expected):
    before = snapshot()
    response = post_json(client, url, body, user_token)
    assert response.status_code == 400
    if expected is None:
        assert response.json()["message"] == "Malformed JSON"
    else:
        assert response.json() == expected
    assert snapshot() == before


@pytest.mark.parametrize("url", [STOP, REACTIVATE])
@pytest.mark.parametrize("missing", [0, -5, 999_999, 2**63, 2**80])
def test_r_rec_23_24_unknown_id(client, user_token, profile, url, missing):
    before = snapshot()
    response = post_json(client, url, {"id": missing}, user_token)
    assert response.status_code == 404
    assert response.json() == {"message": f"Recurrent payment with ID [{missing}] not found.",
                               "code": "recurrent_payment_not_found"}
    assert snapshot() == before


@pytest.mark.parametrize("url", [STOP, REACTIVATE])
def test_r_rec_23_24_another_users_row(client, make_user, monthly, profile, url):
    stranger = make_user()
    token, _ = user_services.issue_access_token(user=stranger)
    before = snapshot()
    response = post_json(client, url, {"id": profile.pk}, token)
    assert response.status_code == 404
    assert response.json() == {
        "message": f"User with [{stranger.pk}] doesn't have recurrent payment with ID [{profile.pk}].",
        "code": "recurrent_payment_not_found"}
    assert snapshot() == before


@pytest.mark.parametrize("state", ["user_stop", "charged", "system_stop", "pending"])
def test_r_rec_23_stop_only_active(client, user_token, profile, state):
    RP.objects.filter(pk=profile.pk).update(state=state)
    before = snapshot()
    response = post_json(client, STOP, {"id": profile.pk}, user_token)
    assert response.status_code == 409
    assert response.json() == {
        "message": f"Only active recurrent payment can be stopped by user. Recurrent payment with ID [{profile.pk}] "
                   f"is in state [{state}].",
        "code": "recurrent_payment_not_active"}
    assert snapshot() == before


@pytest.mark.parametrize("meta", [{"user_unstoppable": "1"}, {"unstoppable": "1"}])
def test_r_rec_23_user_unstoppable_gateway(client, user, user_token, monthly, clock, meta):
    gateway = PaymentGateway.objects.create(code="sticky_card", name="Sticky", is_recurrent=True, meta=meta)
    payment = services.create_payment(user=user, gateway=gateway, subscription_type=monthly)
    services.confirm(payment=payment, cid=GOOD_CARD)
    row = RP.objects.get(parent_payment=payment)
    before = snapshot()
    response = post_json(client, STOP, {"id": row.pk}, user_token)
    assert response.status_code == 403
    assert response.json() == {"message": "Payment gateway [sticky_card] is unstoppable by user.",
                               "code": "user_unstoppable_recurrent_payment_gateway"}
    assert snapshot() == before


def test_r_rec_23_prepaid_parent_is_unstoppable(client, user, user_token, monthly, clock):
    payment = services.create_payment(user=user, gateway="fake_card", subscription_type=monthly)
    services.confirm(payment=payment, status="prepaid", cid=GOOD_CARD)
    row = RP.objects.get(parent_payment=payment)
    response = post_json(client, STOP, {"id": row.pk}, user_token)
    assert response.status_code == 403
    assert response.json()["code"] == "user_unstoppable_recurrent_payment_gateway"


def test_r_rec_23_state_is_checked_before_stoppability(client, user, user_token, monthly, clock):
    gateway = PaymentGateway.objects.create(code="sticky_card", name="Sticky", is_recurrent=True,
                                            meta={"user_unstoppable": "1"})
    payment = services.create_payment(user=user, gateway=gateway, subscription_type=monthly)
    services.confirm(payment=payment, cid=GOOD_CARD)
    row = RP.objects.get(parent_payment=payment)
    RP.objects.filter(pk=row.pk).update(state="charged")
    assert post_json(client, STOP, {"id": row.pk}, user_token).status_code == 409


# --- R-REC-24 reactivate -------------------------------------------------------------------------------------------


def test_r_rec_24_reactivate(client, user_token, profile):
    post_json(client, STOP, {"id": profile.pk}, user_token)
    response = post_json(client, REACTIVATE, {"id": profile.pk}, user_token)
    assert response.status_code == 200
    assert response.json() == row_json(profile, state="active")
    assert (profile.state, profile.status, profile.payment_id) == ("active", None, None)


@pytest.mark.parametrize("state", ["active", "admin_stop", "system_stop", "charge_failed"])
def test_r_rec_24_only_user_stopped(client, user_token, profile, state):
    RP.objects.filter(pk=profile.pk).update(state=state)
    before = snapshot()
    response = post_json(client, REACTIVATE, {"id": profile.pk}, user_token)
    assert response.status_code == 409
    assert response.json() == {
        "message": f"Only recurrent payment in state [user_stop] can be reactivated by user. Recurrent payment with "
                   f"ID [{profile.pk}] is in state [{state}].",
        "code": "recurrent_payment_not_active"}
    assert snapshot() == before


def test_r_rec_24_next_charge_in_past(client, user_token, profile, clock):
    post_json(client, STOP, {"id": profile.pk}, user_token)
    clock.move_to(profile.charge_at + timedelta(minutes=1))
    token = user_services.issue_access_token(user=profile.user)[0]
    before = snapshot()
    response = post_json(client, REACTIVATE, {"id": profile.pk}, token)
    assert response.status_code == 400
    assert response.json() == {
        "message": f"Recurrent payment with ID [{profile.pk}] cannot be reactivated. Next charge is in past.",
        "code": "recurrent_payment_next_charge_in_past"}
    assert snapshot() == before


def test_openapi_lists_the_operations(client):
    schema = client.get("/api/v1/openapi.json").json()
    operations = {op["operationId"]: op for path in schema["paths"].values() for op in path.values()}
    assert {"users_recurrent_payments", "recurrent_payment_stop", "recurrent_payment_reactivate"} <= set(operations)
    names = [p["name"] for p in operations["users_recurrent_payments"]["parameters"]]
    assert names == ["states[]", "chargeable_from"]


def test_api_uses_a_type_of_another_code(client, user, user_token, clock):
    """subscription_type_code is the row's own type."""
    weekly = make_type("weekly", length=7)
    row = RP.objects.get(parent_payment=paid_with_card(user, weekly))
    body = client.get(LIST, **bearer(user_token)).json()
    assert [(r["id"], r["subscription_type_code"]) for r in body] == [(row.pk, "weekly")]
