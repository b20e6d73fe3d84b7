"""Payments in the admin: the payment list and search (R-PAY-8), "Mark as paid" (R-PAY-5: one subscription),
the recurrent payment actions "Stop (admin)" (R-REC-15/16), "Reactivate (admin)" (R-REC-18) and "Charge now",
read-only history (no add, no delete, only the note is written) and the admin user page widget.

Every state change goes through payments.services; a refusal is an error message and writes nothing.
Time is frozen at tests.payments.conftest.NOW (2024-05-06 08:00 UTC).
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client

from masthead.payments import services
from masthead.payments.models import Payment, PaymentGateway, PaymentItem, RecurrentPayment
from masthead.subscriptions import services as subscription_services
from masthead.subscriptions.models import Subscription
from tests.payments.conftest import GOOD_CARD, HARD_DECLINE, NOW, SOFT_DECLINE, paid_with_card

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("settings_charges", "clock")]

RP = RecurrentPayment
PAYMENTS = "/admin/payments/payment/"
RECURRENT = "/admin/payments/recurrentpayment/"


@pytest.fixture
def staff(make_user):
    return make_user(email="boss@example.com", is_superuser=True, is_staff=True)


def login(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def staff_client(client, staff):
    return login(client, staff)


def texts(response) -> list[tuple[str, str]]:
    """The admin's messages as (level, text)."""
    return [(m.level_tag, m.message) for m in response.context["messages"]]


def profile(payment) -> RecurrentPayment:
    return RP.objects.get(parent_payment=payment)


def card_gateway_with(**meta) -> PaymentGateway:
    return PaymentGateway.objects.create(code="card_" + "_".join(meta), name="Card", is_recurrent=True, meta=meta)


def profile_on(user, subscription_type, gateway, status="paid") -> RecurrentPayment:
    payment = services.create_payment(user=user, gateway=gateway, subscription_type=subscription_type)
    services.confirm(payment=payment, status=status, cid=GOOD_CARD)
    return profile(payment)


def exhausted(user, monthly, clock) -> RecurrentPayment:
    """A profile whose card kept declining: system_stop with no retries left (R-REC-12)."""
    row = profile(paid_with_card(user, monthly, card=SOFT_DECLINE))
    while row.state != RP.SYSTEM_STOP:
        clock.move_to(row.charge_at)
        services.charge_due()
        row = RP.objects.filter(user=user).order_by("-pk").first()
    return row


def act(client, url, action, *rows, follow=True, **extra):
    return client.post(url, {"action": action, "_selected_action": [r.pk for r in rows], **extra}, follow=follow)


# --- pages, read-only history ----------------------------------------------------------------------------


def test_admin_pages_render(staff_client, user, monthly, card_gateway):
    payment = paid_with_card(user, monthly)
    row = profile(payment)
    for url in (PAYMENTS, f"{PAYMENTS}?status__exact=paid", f"{PAYMENTS}?gateway__id__exact={card_gateway.pk}",
                f"{PAYMENTS}?recurrent_charge__exact=0", f"{PAYMENTS}?q=jana", f"{PAYMENTS}{payment.pk}/change/",
                RECURRENT, f"{RECURRENT}?state__exact=active", f"{RECURRENT}?gateway__id__exact={card_gateway.pk}",
                f"{RECURRENT}{row.pk}/change/", "/admin/payments/paymentgateway/",
                f"/admin/payments/paymentgateway/{card_gateway.pk}/change/"):
        assert staff_client.get(url).status_code == 200, url


def test_payment_list_columns(staff_client, user, monthly):
    payment = paid_with_card(user, monthly)
    html = staff_client.get(PAYMENTS).content.decode()
    [row] = [part for part in html.split("<tr")[1:] if f'name="_selected_action" value="{payment.pk}"' in part]
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.DOTALL)]
    assert cells[1:7] == [payment.variable_symbol, "jana@example.com", "10.00", "paid", "fake_card",
                          "Monthly (monthly)"]
    assert cells[7] and cells[8]  # paid at, created at


def test_payment_change_page_shows_items_meta_and_only_the_note_is_editable(staff_client, user, monthly):
    payment = services.create_payment(user=user, gateway="fake_card", subscription_type=monthly,
                                      meta={"source": "newsletter"})
    html = staff_client.get(f"{PAYMENTS}{payment.pk}/change/").content.decode()
    assert 'name="note"' in html
    for field in ("amount", "status", "variable_symbol", "gateway", "user", "paid_at"):
        assert f'name="{field}"' not in html, field
    assert "newsletter" in html and "Monthly" in html  # meta and item, read-only
    assert 'name="items-0-name"' not in html and 'name="meta-0-key"' not in html

    response = staff_client.post(f"{PAYMENTS}{payment.pk}/change/", {
        "note": "Paid at the front desk", "status": "paid", "amount": "0.01",
        "items-TOTAL_FORMS": "0", "items-INITIAL_FORMS": "0", "meta-TOTAL_FORMS": "0", "meta-INITIAL_FORMS": "0",
        "logs-TOTAL_FORMS": "0", "logs-INITIAL_FORMS": "0"})
    assert response.status_code == 302
    payment.refresh_from_db()
    assert (payment.note, payment.status, payment.amount, payment.subscription_id) == (
        "Paid at the front desk", "form", Decimal("10.00"), None)
    assert PaymentItem.objects.filter(payment=payment).count() == 1


def test_payments_and_recurrent_payments_are_never_added_or_deleted(staff_client, user, monthly, card_gateway):
    payment = paid_with_card(user, monthly)
    row = profile(payment)
    for base, pk in ((PAYMENTS, payment.pk), (RECURRENT, row.pk)):
        assert staff_client.get(f"{base}add/").status_code == 403
        assert staff_client.post(f"{base}{pk}/delete/", {"post": "yes"}).status_code == 403
        assert "delete_selected" not in staff_client.get(base).content.decode()
    assert staff_client.post(f"/admin/payments/paymentgateway/{card_gateway.pk}/delete/",
                             {"post": "yes"}).status_code == 403
    assert Payment.objects.filter(pk=payment.pk).exists() and RP.objects.filter(pk=row.pk).exists()


def test_recurrent_payment_note_is_saved_alone(staff_client, user, monthly):
    row = profile(paid_with_card(user, monthly))
    response = staff_client.post(f"{RECURRENT}{row.pk}/change/", {"note": "Reader called", "state": "admin_stop",
                                                                   "retries": "0"})
    assert response.status_code == 302
    row.refresh_from_db()
    assert (row.note, row.state, row.retries) == ("Reader called", "active", 4)


def test_gateway_code_is_fixed_once_created(staff_client, card_gateway):
    html = staff_client.get(f"/admin/payments/paymentgateway/{card_gateway.pk}/change/").content.decode()
    assert 'name="code"' not in html and 'name="meta"' in html


# --- search (R-PAY-8) ------------------------------------------------------------------------------------


def test_search_by_variable_symbol_finds_the_zero_padded_symbol(staff_client, user, make_user, monthly, monkeypatch):
    symbols = iter(["0006789465", "1067894650", "0106789465"])
    monkeypatch.setattr(services, "_new_variable_symbol", lambda: next(symbols))
    padded, longer, other = (services.create_payment(user=user, gateway="free", subscription_type=monthly)
                             for _ in range(3))

    def found(term):
        html = staff_client.get(PAYMENTS, {"q": term}).content.decode()
        return sorted(p.variable_symbol for p in (padded, longer, other) if p.variable_symbol in html)

    assert found("6789465") == ["0006789465"]
    assert found("06789465") == ["0006789465"]
    assert found("106789465") == ["0106789465"]
    assert found("1067894650") == ["1067894650"]
    assert found("789465") == []


def test_search_by_email(staff_client, make_user, monthly):
    anna = services.create_payment(user=make_user(email="anna@example.com"), gateway="free", subscription_type=monthly)
    bob = services.create_payment(user=make_user(email="bob@example.com"), gateway="free", subscription_type=monthly)
    html = staff_client.get(PAYMENTS, {"q": "anna"}).content.decode()
    assert anna.variable_symbol in html and bob.variable_symbol not in html


# --- Mark as paid (R-PAY-5) ------------------------------------------------------------------------------


def test_mark_as_paid_confirms_and_creates_exactly_one_subscription(staff_client, user, monthly):
    payment = services.create_payment(user=user, gateway="free", subscription_type=monthly)
    response = act(staff_client, PAYMENTS, "mark_as_paid", payment)
    assert texts(response) == [("success", "1 payment marked as paid.")]
    payment.refresh_from_db()
    assert (payment.status, payment.paid_at) == ("paid", NOW)
    subscription = Subscription.objects.get(user=user)
    assert payment.subscription_id == subscription.pk
    assert (subscription.subscription_type_id, subscription.is_paid, subscription.type) == (monthly.pk, True, "regular")

    again = act(staff_client, PAYMENTS, "mark_as_paid", payment)
    assert texts(again) == [("warning", "1 payment was already paid: nothing changed.")]
    assert Subscription.objects.filter(user=user).count() == 1
    assert RP.objects.count() == 0  # no card token: no recurrent profile


def test_mark_as_paid_counts_new_and_already_paid(staff_client, user, monthly):
    fresh = [services.create_payment(user=user, gateway="free", subscription_type=monthly) for _ in range(2)]
    paid = services.confirm(payment=services.create_payment(user=user, gateway="free", subscription_type=monthly))
    response = act(staff_client, PAYMENTS, "mark_as_paid", *fresh, paid)
    assert texts(response) == [("success", "2 payments marked as paid."),
                               ("warning", "1 payment was already paid: nothing changed.")]
    assert Subscription.objects.filter(user=user).count() == 3


def test_mark_as_paid_refusal_is_a_message_and_writes_nothing(staff_client, user, monthly, monkeypatch):
    payment = services.create_payment(user=user, gateway="free", subscription_type=monthly)

    def refuse(**kwargs):
        raise subscription_services.SubscriptionError("limit_reached", "Limit per user reached")

    monkeypatch.setattr(subscription_services, "create_subscription", refuse)
    response = act(staff_client, PAYMENTS, "mark_as_paid", payment)
    assert texts(response) == [("error", f"Payment {payment.variable_symbol} was not marked as paid: "
                                         "Limit per user reached")]
    payment.refresh_from_db()
    assert (payment.status, payment.paid_at, payment.subscription_id) == ("form", None, None)
    assert Subscription.objects.count() == 0


def test_mark_as_paid_needs_the_change_permission(client, make_user, user, monthly):
    from django.contrib.auth.models import Permission

    viewer = make_user(email="viewer@example.com", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_payment"))
    payment = services.create_payment(user=user, gateway="free", subscription_type=monthly)
    client.force_login(viewer)
    assert "mark_as_paid" not in client.get(PAYMENTS).content.decode()
    act(client, PAYMENTS, "mark_as_paid", payment)
    assert Payment.objects.get(pk=payment.pk).status == "form"


# --- Stop (admin) (R-REC-15/16) ----------------------------------------------------------------------------


def test_admin_stop(staff_client, user, monthly):
    row = profile(paid_with_card(user, monthly))
    response = act(staff_client, RECURRENT, "stop_by_admin", row)
    assert texts(response) == [("success", "1 recurrent payment stopped.")]
    row.refresh_from_db()
    assert (row.state, row.charge_at) == ("admin_stop", NOW + timedelta(days=30))


def test_admin_stop_also_stops_a_user_stopped_row(staff_client, user, monthly):
    row = profile(paid_with_card(user, monthly))
    services.stop_by_user(recurrent_payment=row)
    act(staff_client, RECURRENT, "stop_by_admin", row)
    assert RP.objects.get(pk=row.pk).state == "admin_stop"


def test_admin_stop_refusals(staff_client, user, make_user, monthly):
    unstoppable = profile_on(user, monthly, card_gateway_with(unstoppable="1"))
    prepaid = profile_on(make_user(), monthly, card_gateway_with(), status="prepaid")
    stopped = profile(paid_with_card(make_user(), monthly))
    services.stop_by_admin(recurrent_payment=stopped)
    stoppable = profile(paid_with_card(make_user(), monthly))
    response = act(staff_client, RECURRENT, "stop_by_admin", unstoppable, prepaid, stopped, stoppable)
    assert texts(response) == [
        ("error", f"Recurrent payment #{unstoppable.pk}: refused, its gateway card_unstoppable is unstoppable."),
        ("error", f"Recurrent payment #{prepaid.pk}: refused, it was paid as prepaid."),
        ("error", f"Recurrent payment #{stopped.pk}: refused, it is stopped by admin."),
        ("success", "1 recurrent payment stopped."),
    ]
    assert [RP.objects.get(pk=r.pk).state for r in (unstoppable, prepaid, stopped, stoppable)] == [
        "active", "active", "admin_stop", "admin_stop"]


def test_admin_stop_of_a_user_unstoppable_gateway_is_allowed(staff_client, user, monthly):
    row = profile_on(user, monthly, card_gateway_with(user_unstoppable="1"))
    act(staff_client, RECURRENT, "stop_by_admin", row)
    assert RP.objects.get(pk=row.pk).state == "admin_stop"


# --- Reactivate (admin) (R-REC-18) ---------------------------------------------------------------------------


def test_admin_reactivation_after_system_stop(client, staff, user, monthly, clock, fake_card):
    stopped = exhausted(user, monthly, clock)
    at = stopped.charge_at + timedelta(days=3)
    clock.move_to(at)
    staff_client = login(client, staff)  # after moving the clock: a session older than two weeks expired
    before = RP.objects.count()
    response = act(staff_client, RECURRENT, "reactivate_by_admin", stopped)
    new_row = RP.objects.order_by("-pk").first()
    assert RP.objects.count() == before + 1
    assert (new_row.state, new_row.cid, new_row.parent_payment_id, new_row.charge_at, new_row.retries) == (
        "active", SOFT_DECLINE, stopped.payment_id, at + timedelta(hours=24), 4)
    [(level, text)] = texts(response)
    assert level == "success"
    assert text.startswith(f"Recurrent payment #{stopped.pk} reactivated as #{new_row.pk}, charged at ")
    assert RP.objects.get(pk=stopped.pk).state == "system_stop"


def test_admin_reactivation_refusals(client, staff, user, make_user, monthly, clock, fake_card):
    hard = profile(paid_with_card(make_user(), monthly, card=HARD_DECLINE))  # system_stop with retries left
    clock.move_to(hard.charge_at)
    services.charge_due()
    hard.refresh_from_db()
    too_old = exhausted(user, monthly, clock)
    clock.move_to(too_old.charge_at + timedelta(days=14, seconds=1))
    active = profile(paid_with_card(make_user(), monthly))
    staff_client = login(client, staff)
    before = RP.objects.count()
    response = act(staff_client, RECURRENT, "reactivate_by_admin", active, hard, too_old)
    assert texts(response) == [  # in id order
        ("error", f"Recurrent payment #{hard.pk}: refused, only a recurrent payment stopped by the system with "
                  "no retries left can be reactivated; this one is stopped by system with 4 retries left."),
        ("error", f"Recurrent payment #{too_old.pk}: refused, it stopped more than 14 days ago."),
        ("error", f"Recurrent payment #{active.pk}: refused, only a recurrent payment stopped by the system with "
                  "no retries left can be reactivated; this one is active with 4 retries left."),
    ]
    assert RP.objects.count() == before
    assert RP.objects.get(pk=active.pk).state == "active"


def test_admin_reactivation_refused_for_an_unstoppable_gateway(staff_client, user, monthly):
    row = profile_on(user, monthly, card_gateway_with(unstoppable="1"))
    before = RP.objects.count()
    response = act(staff_client, RECURRENT, "reactivate_by_admin", row)
    assert texts(response) == [("error", f"Recurrent payment #{row.pk}: refused, its gateway card_unstoppable is "
                                         "unstoppable.")]
    assert RP.objects.count() == before


# --- Charge now ------------------------------------------------------------------------------------------


def test_charge_now_asks_first_and_changes_nothing(staff_client, user, monthly, fake_card):
    row = profile(paid_with_card(user, monthly))
    response = act(staff_client, RECURRENT, "charge_now", row, follow=False)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Charge these recurrent payments now" in html
    assert f'<input type="hidden" name="_selected_action" value="{row.pk}">' in html
    assert '<input type="hidden" name="post" value="yes">' in html
    assert RP.objects.get(pk=row.pk).state == "active"
    assert fake_card.calls == 0 and Payment.objects.count() == 1


def test_charge_now_charges_that_one_row(staff_client, user, make_user, monthly, fake_card):
    first = paid_with_card(user, monthly)
    row = profile(first)
    other = profile(paid_with_card(make_user(), monthly))
    response = act(staff_client, RECURRENT, "charge_now", row, post="yes")
    row.refresh_from_db()
    assert row.state == "charged" and row.status == "approved"
    charge = row.payment
    assert texts(response) == [("success", f"Recurrent payment #{row.pk} charged: payment {charge.variable_symbol} "
                                           "is paid.")]
    assert (charge.status, charge.recurrent_charge, charge.amount) == ("paid", True, Decimal("10.00"))
    assert Subscription.objects.filter(user=user).count() == 2
    assert charge.subscription_id is not None
    assert len(fake_card.charges) == 1
    next_row = RP.objects.get(parent_payment=charge)
    assert next_row.state == "active"
    assert RP.objects.get(pk=other.pk).state == "active"  # only the selected row


def test_charge_now_of_a_declined_card_schedules_a_retry(staff_client, user, monthly, fake_card):
    row = profile(paid_with_card(user, monthly, card=SOFT_DECLINE))
    response = act(staff_client, RECURRENT, "charge_now", row, post="yes")
    assert texts(response) == [("warning", f"Recurrent payment #{row.pk} declined (insufficient_funds); "
                                           "a retry is scheduled.")]
    assert RP.objects.get(pk=row.pk).state == "charge_failed"
    assert RP.objects.filter(user=user, state="active", retries=3).count() == 1


def test_charge_now_refuses_a_row_that_is_not_active(staff_client, user, monthly, fake_card):
    row = profile(paid_with_card(user, monthly))
    services.stop_by_user(recurrent_payment=row)
    payments = Payment.objects.count()
    response = act(staff_client, RECURRENT, "charge_now", row, post="yes")
    assert texts(response) == [("error", f"Recurrent payment #{row.pk}: refused, it is stopped by user.")]
    assert RP.objects.get(pk=row.pk).state == "user_stop"
    assert Payment.objects.count() == payments and fake_card.calls == 0


def test_charge_now_needs_csrf(staff, user, monthly, fake_card):
    row = profile(paid_with_card(user, monthly))
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(staff)
    assert act(strict, RECURRENT, "charge_now", row, post="yes", follow=False).status_code == 403
    assert fake_card.calls == 0


# --- the admin user page ------------------------------------------------------------------------------------


def widget(html: str, name: str) -> str:
    match = re.search(rf'<section class="mh-widget" data-widget="{re.escape(name)}">(.*?)</section>', html, re.DOTALL)
    assert match, f"widget {name!r} not rendered"
    return match.group(1)


def test_user_page_lists_latest_payments_and_recurrent_profiles(staff_client, user, make_user, monthly, clock):
    payments = []
    for k in range(11):
        clock.move_to(NOW + timedelta(minutes=k))
        payments.append(services.create_payment(user=user, gateway="free", subscription_type=monthly))
    clock.move_to(NOW + timedelta(minutes=20))
    card = paid_with_card(user, monthly)
    active = profile(card)
    stopped = profile(paid_with_card(user, monthly, card="card_5555555555554444"))
    services.stop_by_user(recurrent_payment=stopped)
    paid_with_card(make_user(), monthly)  # another reader's
    section = widget(staff_client.get(f"/admin/users/user/{user.pk}/change/").content.decode(), "payments.user")
    assert "Payments (13)" in section
    shown = re.findall(r'<tr data-payment="(\d+)"', section)
    assert len(shown) == 10
    assert shown[:2] == [str(p.pk) for p in Payment.objects.filter(user=user, gateway__code="fake_card")
                         .order_by("-pk")]
    assert str(payments[0].pk) not in shown and str(payments[-1].pk) in shown
    assert f"?user__id__exact={user.pk}" in section and "All 13 payments" in section
    assert "Recurrent payments (2)" in section
    rows = dict(re.findall(r'<tr data-recurrent="(\d+)">.*?<td class="state">([^<]*)</td>', section, re.DOTALL))
    assert rows == {str(active.pk): "active", str(stopped.pk): "stopped by user"}
    stopped_row = re.search(rf'<tr data-recurrent="{stopped.pk}">.*?</tr>', section, re.DOTALL).group(0)
    assert '<td class="next-charge">—</td>' in stopped_row


def test_widget_links_filter_the_lists_by_reader(staff_client, user, make_user, monthly):
    mine = paid_with_card(user, monthly)
    theirs = paid_with_card(make_user(), monthly)
    payments = staff_client.get(PAYMENTS, {"user__id__exact": user.pk})
    assert payments.status_code == 200
    assert [p.pk for p in payments.context["cl"].result_list] == [mine.pk]
    recurrent = staff_client.get(RECURRENT, {"user__id__exact": user.pk})
    assert [r.pk for r in recurrent.context["cl"].result_list] == [profile(mine).pk]
    assert profile(theirs).pk not in [r.pk for r in recurrent.context["cl"].result_list]


def test_user_page_widget_hidden_without_payment_permissions(client, make_user, user, monthly):
    from django.contrib.auth.models import Permission

    viewer = make_user(email="viewer@example.com", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_user", "change_user"]))
    paid_with_card(user, monthly)
    client.force_login(viewer)
    html = client.get(f"/admin/users/user/{user.pk}/change/").content.decode()
    assert 'data-widget="payments.user"' not in html
