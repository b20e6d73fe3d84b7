"""Family API (R-FAM-13/14) and the family CLI (R-FAM-5), end to end through HTTP."""

import json
from datetime import timedelta

import pytest

from masthead import cli
from masthead.family.models import FamilyRequest
from masthead.subscriptions.models import Subscription
from masthead.users import services as user_services
from tests.conftest import bearer
from tests.family.conftest import NOW

R = FamilyRequest
pytestmark = pytest.mark.django_db
ACTIVATE = "/api/v1/family/activate"
LIST = "/api/v1/family/list"


def token_of(user):
    return user_services.issue_access_token(user=user, source="test")[0]


def post(client, body, token, content_type="application/json"):
    raw = (body if isinstance(body, str) else json.dumps(body)).encode()
    return client.generic("POST", ACTIVATE, raw, content_type=content_type, CONTENT_TYPE=content_type,
                          **bearer(token))


def first_code(parent):
    return R.objects.filter(master_subscription=parent, status=R.CREATED).order_by("pk").first().code


def test_activate_answers_201_with_the_child_subscription(client, parent, make_user):
    """R-FAM-13: code, then the child type's code, dates in RFC 3339 and access in content-access order."""
    kid = make_user(email="kid@example.com")
    code = first_code(parent)
    response = post(client, {"code": code}, token_of(kid))
    assert response.status_code == 201
    assert response.json() == {"code": code, "subscription": {
        "start_at": "2024-05-06T10:00:00+02:00", "end_at": "2024-06-05T10:00:00+02:00",
        "code": "family_child", "access": ["mobile", "web"]}}
    child = Subscription.objects.get(user=kid)
    assert (child.type, child.start_time, child.end_time) == ("family", parent.start_time, parent.end_time)


@pytest.mark.parametrize(("body", "content_type", "message"), [
    ("", "application/json", "Empty request"),
    ("{", "application/json", "Malformed JSON"),
])
def test_activate_refuses_empty_and_malformed_bodies(client, parent, make_user, body, content_type, message):
    response = post(client, body, token_of(make_user()), content_type)
    assert response.status_code == 400
    assert message.lower() in json.dumps(response.json()).lower()
    assert R.objects.filter(status=R.ACCEPTED).count() == 0


@pytest.mark.parametrize("body", [{}, {"code": 5}, {"code": ""}, {"code": "a", "other": 1}, {"code": "x" * 65},
                                  {"code": "ab\x00cd"}, ["code"]])
def test_activate_refuses_invalid_payloads_and_writes_nothing(client, parent, make_user, body):
    before = Subscription.objects.count()
    response = post(client, body, token_of(make_user()))
    assert response.status_code == 400
    assert response.json()["code"] in ("payload_error", "invalid_input")
    assert Subscription.objects.count() == before


def test_activate_error_bodies(client, parent, make_user, clock):
    """R-FAM-13 table: each error with its status and exact body (no ``status`` key)."""
    kid = make_user(email="kid@example.com")
    token = token_of(kid)
    response = post(client, {"code": "missing"}, token)
    assert (response.status_code, response.json()) == (404, {
        "message": "Family request code [missing] not found", "code": "family_request_not_found"})
    used = first_code(parent)
    assert post(client, {"code": used}, token).status_code == 201
    response = post(client, {"code": first_code(parent)}, token)
    assert (response.status_code, response.json()) == (400, {
        "message": "User [kid@example.com] already used company code from this company subscription.",
        "code": "family_request_one_per_user"})
    response = post(client, {"code": used}, token_of(make_user()))
    assert (response.status_code, response.json()) == (409, {
        "message": f"Family request code [{used}] has wrong status: accepted", "code": "family_request_wrong_status"})
    clock.move_to(parent.end_time + timedelta(seconds=1))
    late = first_code(parent)
    response = post(client, {"code": late}, token_of(make_user()))
    assert (response.status_code, response.json()) == (400, {
        "message": f"Family request code [{late}] expired", "code": "family_request_expired"})
    assert R.objects.filter(status=R.ACCEPTED).count() == 1


def test_self_use_forbidden_when_configured(client, parent, settings):
    settings.FAMILY_ALLOW_SELF_ACTIVATION = False
    code = first_code(parent)
    response = post(client, {"code": code}, token_of(parent.user))
    assert (response.status_code, response.json()) == (400, {
        "message": f"Cannot activate family request code [{code}] on parent's account",
        "code": "family_request_self_use_forbidden"})


def test_activate_needs_a_user_token(client, parent, api_token):
    response = client.post(ACTIVATE, json.dumps({"code": first_code(parent)}), content_type="application/json")
    assert response.status_code in (401, 403)
    response = client.post(ACTIVATE, json.dumps({"code": first_code(parent)}), content_type="application/json",
                           **bearer(api_token))
    assert response.status_code in (401, 403)
    assert R.objects.filter(status=R.ACCEPTED).count() == 0


def test_list_shows_the_parents_codes_in_order(client, parent, make_user, clock):
    """R-FAM-14: every request of the caller as parent, updated_at desc, created_at desc, id asc."""
    kid = make_user()
    clock.move_to(NOW + timedelta(hours=1))
    accepted = first_code(parent)
    post(client, {"code": accepted}, token_of(kid))
    response = client.get(LIST, **bearer(token_of(parent.user)))
    assert response.status_code == 200
    rows = response.json()["codes"]
    assert len(rows) == 5
    assert rows[0] == {"code": accepted, "master_user_id": parent.user_id, "status": "accepted",
                       "subscription_type_code": "family_child", "slave_user_id": kid.pk,
                       "created_at": "2024-05-06T10:00:00+02:00", "updated_at": "2024-05-06T11:00:00+02:00",
                       "opened_at": None, "accepted_at": "2024-05-06T11:00:00+02:00", "canceled_at": None,
                       "expires_at": None}
    rest = list(R.objects.filter(master_subscription=parent, status=R.CREATED).order_by("pk")
                .values_list("code", flat=True))
    assert [r["code"] for r in rows[1:]] == rest
    assert {r["status"] for r in rows[1:]} == {"created"}


def test_list_of_a_reader_without_codes_and_without_token(client, make_user):
    assert client.get(LIST, **bearer(token_of(make_user()))).json() == {"codes": []}
    response = client.get(LIST)
    assert response.status_code in (401, 403)


def test_cli_generate(parent, capsys, make_user):
    """R-FAM-5: unknown id or non-master → failure; a parent already complete → 0 new codes."""
    assert cli.main(["family", "generate", "--subscription-id", str(parent.pk)]) == 0
    assert "0 new codes" in capsys.readouterr().out
    R.objects.filter(master_subscription=parent).order_by("pk")[:1].get().delete()
    assert cli.main(["family", "generate", "--subscription-id", str(parent.pk)]) == 0
    assert f"subscription {parent.pk}: 1 new codes" in capsys.readouterr().out
    assert R.objects.filter(master_subscription=parent, status=R.CREATED).count() == 5
    plain = Subscription.objects.create(user=make_user(), subscription_type=R.objects.first().subscription_type,
                                        start_time=NOW, end_time=NOW)
    assert cli.main(["family", "generate", "--subscription-id", str(plain.pk)]) == 2
    assert "is not a family subscription" in capsys.readouterr().err
    assert cli.main(["family", "generate", "--subscription-id", "999999"]) == 2
    assert "not found" in capsys.readouterr().err
