"""Customer zone: "My recurring payments" — the reader's own active, pending and user-stopped profiles with
Stop (R-REC-16, refused per R-REC-15) and Reactivate (R-REC-17). Another reader's id is a 404.
Time is frozen at tests.payments.conftest.NOW (2024-05-06 08:00 UTC); shown in Europe/Bratislava."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.test import Client

from masthead.payments import services
from masthead.payments.models import PaymentGateway, RecurrentPayment
from masthead.subscriptions.models import Subscription
from tests.payments.conftest import GOOD_CARD, NOW, PENDING_CARD, make_type, paid_with_card

pytestmark = pytest.mark.django_db

RP = RecurrentPayment
CHARGE_AT = NOW + timedelta(days=30)  # the monthly type's subscription end, no charge-before


@pytest.fixture(autouse=True)
def frozen(settings):
    settings.TIME_ZONE = "Europe/Bratislava"
    settings.RECURRENT_PAYMENT_CHARGES = "PT15M, PT6H, PT6H, PT6H, PT6H"
    settings.RECURRENT_CHARGE_BEFORE_HOURS = ""
    settings.FASTCHARGE_THRESHOLD_HOURS = 24
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def monthly(db):
    return make_type("monthly", price="9.90", user_label="Digital, monthly")


@pytest.fixture
def reader_client(client, user):
    client.force_login(user)
    return client


def profile(payment) -> RP:
    return RP.objects.get(parent_payment=payment)


def profile_on(user, subscription_type, *, status="paid", **meta) -> RP:
    gateway = PaymentGateway.objects.create(code="card_" + "_".join(meta), name="Card", is_recurrent=True, meta=meta)
    payment = services.create_payment(user=user, gateway=gateway, subscription_type=subscription_type)
    services.confirm(payment=payment, status=status, cid=GOOD_CARD)
    return profile(payment)


def shown_rows(html: str) -> list[str]:
    return re.findall(r'<tr data-recurrent="(\d+)"', html)


def cells(html: str, pk: int) -> dict[str, str]:
    row = re.search(rf'<tr data-recurrent="{pk}".*?</tr>', html, re.DOTALL).group(0)
    return {cls: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", text)).strip()
            for cls, text in re.findall(r'<td class="(\w+)">(.*?)</td>', row, re.DOTALL)}


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, m.message) for m in response.context["messages"]]


# --- the list -------------------------------------------------------------------------------------------


def test_login_required(client):
    response = client.get("/recurring/")
    assert response.status_code == 302
    assert response.url == "/login/?next=/recurring/"


def test_stop_and_reactivate_need_login_too(client, user, monthly):
    row = profile(paid_with_card(user, monthly))
    for action in ("stop", "reactivate"):
        response = client.post(f"/recurring/{row.pk}/{action}/")
        assert response.status_code == 302 and response.url.startswith("/login/")
    assert RP.objects.get(pk=row.pk).state == "active"


def test_lists_only_the_readers_own_active_pending_and_user_stopped_profiles(reader_client, user, make_user,
                                                                             monthly):
    active = profile(paid_with_card(user, monthly))
    stopped = profile(paid_with_card(user, monthly, card="card_5555555555554444"))
    services.stop_by_user(recurrent_payment=stopped)
    by_admin = profile(paid_with_card(user, monthly, card="card_4111111111111111"))
    services.stop_by_admin(recurrent_payment=by_admin)
    pending = profile(paid_with_card(user, monthly, card=PENDING_CARD))
    services.charge_now(recurrent_payment=pending)
    assert RP.objects.get(pk=pending.pk).state == "pending"
    foreign = profile(paid_with_card(make_user(email="other@example.com"), monthly))

    html = reader_client.get("/recurring/").content.decode()
    assert sorted(shown_rows(html)) == sorted(str(r.pk) for r in (active, stopped, pending))
    assert str(foreign.pk) not in shown_rows(html) and str(by_admin.pk) not in shown_rows(html)
    assert cells(html, active.pk) == {"label": "Digital, monthly", "charge": "June 5, 2024, 10 a.m.",
                                      "amount": "9.90", "state": "active", "actions": "Stop"}
    assert cells(html, stopped.pk) == {"label": "Digital, monthly", "charge": "—", "amount": "9.90",
                                       "state": "stopped", "actions": "Reactivate"}
    assert cells(html, pending.pk)["state"] == "processing" and cells(html, pending.pk)["actions"] == ""
    assert f'action="/recurring/{active.pk}/stop/"' in html
    assert f'action="/recurring/{stopped.pk}/reactivate/"' in html
    assert html.count('name="csrfmiddlewaretoken"') >= 3  # logout, stop, reactivate


def test_amount_is_the_custom_amount_when_set(reader_client, user, monthly):
    payment = services.create_payment(user=user, gateway="fake_card", subscription_type=monthly)
    services.confirm(payment=payment, cid=GOOD_CARD, custom_amount="4.50")
    html = reader_client.get("/recurring/").content.decode()
    assert cells(html, profile(payment).pk)["amount"] == "4.50"


def test_empty_state_and_navigation_link(reader_client, user):
    html = reader_client.get("/recurring/").content.decode()
    assert "You have no recurring payments." in html
    assert '<a href="/recurring/">My recurring payments</a>' in reader_client.get("/").content.decode()


def test_unstoppable_profile_shows_no_stop_button(reader_client, user, monthly):
    row = profile_on(user, monthly, user_unstoppable="1")
    html = reader_client.get("/recurring/").content.decode()
    assert cells(html, row.pk)["actions"] == "Cannot be stopped online."
    assert f"/recurring/{row.pk}/stop/" not in html


def test_slovak_reader(client, make_user, monthly):
    reader = make_user(email="sk@example.com", locale="sk")
    row = profile(paid_with_card(reader, monthly))
    client.force_login(reader)
    html = client.get("/recurring/").content.decode()
    assert cells(html, row.pk)["amount"] == "9,90"
    assert cells(html, row.pk)["charge"] == "5. jún 2024 10:00"


# --- stop (R-REC-15/16) ------------------------------------------------------------------------------------


def test_stop_writes_user_stop_and_keeps_the_charge_time(reader_client, user, monthly):
    payment = paid_with_card(user, monthly)
    row = profile(payment)
    response = reader_client.post(f"/recurring/{row.pk}/stop/", follow=True)
    assert response.redirect_chain == [("/recurring/", 302)]
    assert messages_of(response) == [("success", "The recurring payment is stopped: you will not be charged again. "
                                                 "Your subscription lasts until its end.")]
    row.refresh_from_db()
    assert (row.state, row.charge_at, row.retries) == ("user_stop", CHARGE_AT, 4)
    subscription = Subscription.objects.get(pk=payment.subscription_id)
    assert subscription.end_time == CHARGE_AT  # the subscription itself is untouched
    assert cells(response.content.decode(), row.pk)["state"] == "stopped"


def test_stop_refused_when_not_active(reader_client, user, monthly):
    row = profile(paid_with_card(user, monthly))
    services.stop_by_user(recurrent_payment=row)
    response = reader_client.post(f"/recurring/{row.pk}/stop/", follow=True)
    assert messages_of(response) == [("error", "This recurring payment is not active, so there is nothing to stop.")]
    assert RP.objects.get(pk=row.pk).state == "user_stop"


@pytest.mark.parametrize("meta", [{"user_unstoppable": "1"}, {"unstoppable": "1"}])
def test_stop_refused_for_an_unstoppable_gateway(reader_client, user, monthly, meta):
    row = profile_on(user, monthly, **meta)
    response = reader_client.post(f"/recurring/{row.pk}/stop/", follow=True)
    assert messages_of(response) == [("error", "This recurring payment cannot be stopped online. Please contact us.")]
    assert RP.objects.get(pk=row.pk).state == "active"


def test_stop_refused_for_a_prepaid_parent(reader_client, user, monthly):
    row = profile_on(user, monthly, status="prepaid")
    response = reader_client.post(f"/recurring/{row.pk}/stop/", follow=True)
    assert messages_of(response) == [("error", "This recurring payment was prepaid and cannot be stopped.")]
    assert RP.objects.get(pk=row.pk).state == "active"


def test_another_readers_profile_is_a_404(reader_client, make_user, monthly):
    foreign = profile(paid_with_card(make_user(email="other@example.com"), monthly))
    services_state = RP.objects.get(pk=foreign.pk).state
    assert reader_client.post(f"/recurring/{foreign.pk}/stop/").status_code == 404
    assert reader_client.post(f"/recurring/{foreign.pk}/reactivate/").status_code == 404
    assert reader_client.post("/recurring/999999/stop/").status_code == 404
    assert RP.objects.get(pk=foreign.pk).state == services_state == "active"


def test_stop_needs_post_and_csrf(user, monthly):
    row = profile(paid_with_card(user, monthly))
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.get(f"/recurring/{row.pk}/stop/").status_code == 405
    assert strict.post(f"/recurring/{row.pk}/stop/").status_code == 403
    assert RP.objects.get(pk=row.pk).state == "active"


# --- reactivate (R-REC-17) -----------------------------------------------------------------------------------


def test_reactivate_a_stopped_profile(reader_client, user, monthly):
    row = profile(paid_with_card(user, monthly))
    services.stop_by_user(recurrent_payment=row)
    response = reader_client.post(f"/recurring/{row.pk}/reactivate/", follow=True)
    assert messages_of(response) == [("success", "The recurring payment is active again. Next charge: "
                                                 "June 5, 2024, 10 a.m.")]
    row.refresh_from_db()
    assert (row.state, row.charge_at) == ("active", CHARGE_AT)


def test_reactivate_refusals(reader_client, user, monthly, frozen):
    active = profile(paid_with_card(user, monthly))
    response = reader_client.post(f"/recurring/{active.pk}/reactivate/", follow=True)
    assert messages_of(response) == [("error", "Only a recurring payment you stopped can be reactivated.")]
    assert RP.objects.get(pk=active.pk).state == "active"

    services.stop_by_user(recurrent_payment=active)
    frozen.move_to(CHARGE_AT + timedelta(seconds=1))
    reader_client.force_login(user)
    html = reader_client.get("/recurring/").content.decode()
    assert cells(html, active.pk)["actions"] == ""  # no Reactivate button after the charge time
    response = reader_client.post(f"/recurring/{active.pk}/reactivate/", follow=True)
    assert messages_of(response) == [("error", "This recurring payment cannot be reactivated: its charge date has "
                                               "passed.")]
    assert RP.objects.get(pk=active.pk).state == "user_stop"
