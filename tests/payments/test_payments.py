"""Payments: creation (R-PAY-3), status changes (R-PAY-4), the subscription of a paid payment
(R-PAY-5/6), refund (R-PAY-7) and the variable-symbol lookup (R-PAY-8)."""

from datetime import timedelta
from decimal import Decimal

import pytest

from masthead.core import events as bus
from masthead.payments import events, services
from masthead.payments.models import Payment, PaymentGateway, PaymentItem, RecurrentPayment
from masthead.payments.services import ItemSpec, PaymentError
from masthead.subscriptions.events import SubscriptionCreated
from masthead.subscriptions.models import Subscription
from masthead.users.models import Address
from tests.payments.conftest import GOOD_CARD, NOW, make_type, paid_with_card

pytestmark = pytest.mark.django_db


def test_gateways_are_seeded(card_gateway, free_gateway):
    """The data migration seeds the two adapters that ship with Masthead."""
    assert (free_gateway.code, free_gateway.is_recurrent, free_gateway.active) == ("free", False, True)
    assert (card_gateway.code, card_gateway.is_recurrent, card_gateway.active) == ("fake_card", True, True)


def test_r_pay_1_statuses():
    assert [code for code, _ in Payment.STATUSES] == [
        "form", "paid", "fail", "timeout", "refund", "imported", "prepaid", "authorized"]


# --- R-PAY-3 creation -----------------------------------------------------------------------------------


def test_r_pay_3_amount_is_the_sum_of_items(user, monthly, recorded):
    seen = recorded(events.NewPayment)
    payment = services.create_payment(user=user, gateway="free", subscription_type=monthly, items=[
        ItemSpec(name="Web", amount="8.00", vat="20", count=2), ItemSpec(name="Print", amount="1.50", vat="10")])
    assert payment.status == "form"
    assert payment.amount == Decimal("17.50")
    assert payment.paid_at is None and payment.subscription_id is None
    assert list(payment.items.values_list("name", "count", "amount", "vat")) == [
        ("Web", 2, Decimal("8.00"), Decimal("20.00")), ("Print", 1, Decimal("1.50"), Decimal("10.00"))]
    assert len(payment.variable_symbol) == 10 and payment.variable_symbol.isdigit()
    assert [(e.payment_id, e.user_id) for e in seen] == [(payment.pk, user.pk)]


def test_r_pay_3_items_default_to_the_types_items_and_amount_wins(user):
    subscription_type = make_type("combo", price="12.00", items=[("Web", "2.00", "20"), ("Print", "10.00", "10")])
    payment = services.create_payment(user=user, gateway="free", subscription_type=subscription_type)
    assert payment.amount == Decimal("12.00")
    assert list(payment.items.values_list("name", "amount", "type", "subscription_type")) == [
        ("Web", Decimal("2.00"), "subscription_type", subscription_type.pk),
        ("Print", Decimal("10.00"), "subscription_type", subscription_type.pk)]
    explicit = services.create_payment(user=user, gateway="free", subscription_type=subscription_type, amount="5")
    assert explicit.amount == Decimal("5.00")


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"amount": "-0.01"}, "invalid_amount"),
    ({"items": [ItemSpec(name="x", amount="-3.00")]}, "invalid_amount"),
    ({"amount": "0"}, "zero_amount"),
    ({"items": []}, "zero_amount"),
    ({"amount": 1.5}, "invalid_amount"),  # floats are refused (house rule 7)
    ({"amount": "abc"}, "invalid_amount"),
    ({"amount": "5", "additional_type": "monthly"}, "invalid_additional_type"),
    ({"items": [ItemSpec(name="x", amount="3.00", count=0)]}, "invalid_item_count"),
])
def test_r_pay_3_refusals_write_nothing(user, recorded, kwargs, code):
    seen = recorded(events.NewPayment)
    with pytest.raises(PaymentError) as refused:
        services.create_payment(user=user, gateway="free", **kwargs)
    assert refused.value.code == code
    assert not Payment.objects.exists()
    assert not PaymentItem.objects.exists()
    assert seen == []


def test_r_pay_3_zero_amount_when_allowed(user):
    payment = services.create_payment(user=user, gateway="free", amount="0", allow_zero_amount=True)
    assert payment.amount == Decimal("0.00")


def test_r_pay_3_unknown_gateway(user):
    with pytest.raises(PaymentError) as refused:
        services.create_payment(user=user, gateway="nope", amount="1")
    assert refused.value.code == "unknown_gateway"
    assert not Payment.objects.exists()


def test_r_pay_3_variable_symbol_collision_draws_again(user, monkeypatch):
    first = services.create_payment(user=user, gateway="free", amount="1")
    drawn = iter([first.variable_symbol, first.variable_symbol, "0000000042"])
    monkeypatch.setattr(services, "_new_variable_symbol", lambda: next(drawn))
    second = services.create_payment(user=user, gateway="free", amount="1")
    assert second.variable_symbol == "0000000042"
    assert Payment.objects.count() == 2


def test_r_pay_3_variable_symbol_gives_up(user, monkeypatch):
    first = services.create_payment(user=user, gateway="free", amount="1")
    monkeypatch.setattr(services, "_new_variable_symbol", lambda: first.variable_symbol)
    with pytest.raises(PaymentError) as refused:
        services.create_payment(user=user, gateway="free", amount="1")
    assert refused.value.code == "variable_symbol_exhausted"
    assert Payment.objects.count() == 1


# --- R-PAY-4 status changes -------------------------------------------------------------------------------


def test_r_pay_4_change_emits_and_stamps_paid_at_once(user, clock, recorded):
    seen = recorded(events.PaymentStatusChanged, events.PaymentPaid)
    payment = services.create_payment(user=user, gateway="free", amount="3")
    services.change_status(payment=payment, status="paid")
    assert (payment.status, payment.paid_at) == ("paid", NOW)
    clock.shift(timedelta(hours=1))
    services.change_status(payment=payment, status="prepaid")
    payment.refresh_from_db()
    assert (payment.status, payment.paid_at) == ("prepaid", NOW)  # paid_at only when empty
    assert [(type(e).__name__, getattr(e, "old_status", None), getattr(e, "new_status", None)) for e in seen] == [
        ("PaymentStatusChanged", "form", "paid"), ("PaymentPaid", None, None),
        ("PaymentStatusChanged", "paid", "prepaid"), ("PaymentPaid", None, None)]


def test_r_pay_4_same_status_is_a_no_op(user, recorded):
    payment = services.create_payment(user=user, gateway="free", amount="3")
    services.change_status(payment=payment, status="timeout")
    seen = recorded(events.PaymentStatusChanged, events.PaymentPaid)
    before = Payment.objects.get(pk=payment.pk).modified_at
    services.change_status(payment=payment, status="timeout")
    assert seen == []
    assert Payment.objects.get(pk=payment.pk).modified_at == before


@pytest.mark.parametrize("paid_status", ["paid", "prepaid", "authorized"])
def test_r_pay_4_paid_to_fail_is_refused(user, recorded, paid_status):
    payment = services.create_payment(user=user, gateway="free", amount="3")
    services.change_status(payment=payment, status=paid_status)
    seen = recorded(events.PaymentStatusChanged)
    services.change_status(payment=payment, status="fail")
    payment.refresh_from_db()
    assert payment.status == paid_status
    assert seen == []


def test_r_pay_4_fail_to_paid_is_allowed(user):
    payment = services.create_payment(user=user, gateway="free", amount="3")
    services.change_status(payment=payment, status="fail", error_message="declined")
    services.change_status(payment=payment, status="paid")
    payment.refresh_from_db()
    assert (payment.status, payment.error_message) == ("paid", "declined")


def test_r_pay_4_unknown_status(user):
    payment = services.create_payment(user=user, gateway="free", amount="3")
    with pytest.raises(PaymentError):
        services.change_status(payment=payment, status="lost")
    assert Payment.objects.get(pk=payment.pk).status == "form"


# --- R-PAY-5 / R-PAY-6 subscription from a paid payment -------------------------------------------------------


def test_r_pay_5_paid_payment_makes_a_regular_subscription(user, monthly, clock, recorded):
    seen = recorded(events.PaymentPaid, SubscriptionCreated)
    address = Address.objects.create(user=user, type="print", street="Hlavna", city="Bratislava")
    payment = services.create_payment(user=user, gateway="free", subscription_type=monthly, address=address)
    services.confirm(payment=payment)
    subscription = Subscription.objects.get(user=user)
    assert payment.subscription_id == subscription.pk
    assert (subscription.subscription_type_id, subscription.type, subscription.is_paid, subscription.is_recurrent,
            subscription.address_id) == (monthly.pk, "regular", True, False, address.pk)
    assert (subscription.start_time, subscription.end_time) == (NOW, NOW + timedelta(days=30))
    created, paid = seen
    assert (created.subscription_id, created.payment_id) == (subscription.pk, payment.pk)
    assert (paid.payment_id, paid.subscription_id, paid.status) == (payment.pk, subscription.pk, "paid")


def test_r_pay_5_recurrent_gateway_and_prepaid(user, monthly, clock):
    payment = services.create_payment(user=user, gateway="fake_card", subscription_type=monthly)
    services.confirm(payment=payment, status="prepaid")
    subscription = Subscription.objects.get(pk=payment.subscription_id)
    assert (subscription.type, subscription.is_recurrent, subscription.is_paid) == ("prepaid", True, True)


def test_r_pay_5_start_and_end_overrides(user, monthly, clock):
    """start = max(subscription_start_at, paid_at); end = subscription_end_at."""
    past = services.create_payment(user=user, gateway="free", subscription_type=monthly,
                                   subscription_start_at=NOW - timedelta(days=3))
    services.confirm(payment=past)
    assert Subscription.objects.get(pk=past.subscription_id).start_time == NOW
    future = services.create_payment(user=user, gateway="free", subscription_type=monthly,
                                     subscription_start_at=NOW + timedelta(days=60),
                                     subscription_end_at=NOW + timedelta(days=65))
    services.confirm(payment=future)
    subscription = Subscription.objects.get(pk=future.subscription_id)
    assert (subscription.start_time, subscription.end_time) == (NOW + timedelta(days=60), NOW + timedelta(days=65))


def test_r_pay_5_no_subscription_cases(user, monthly, recorded):
    seen = recorded(SubscriptionCreated)
    no_type = services.create_payment(user=user, gateway="free", amount="5")
    services.confirm(payment=no_type)
    nothing = make_type("donation-only", no_subscription=True)
    donation = services.create_payment(user=user, gateway="free", subscription_type=nothing)
    services.confirm(payment=donation)
    for status in ("timeout", "imported", "refund", "fail", "authorized"):
        payment = services.create_payment(user=user, gateway="free", subscription_type=monthly)
        services.change_status(payment=payment, status=status)
    assert seen == []
    assert not Subscription.objects.exists()
    assert not Payment.objects.filter(subscription__isnull=False).exists()


def test_r_pay_5_authorized_on_a_recurrent_authorisation_gateway(user, monthly):
    gateway = PaymentGateway.objects.create(code="card_auth", name="Auth", is_recurrent=True,
                                            meta={"recurrent_authorization": "1"})
    payment = services.create_payment(user=user, gateway=gateway, subscription_type=monthly)
    services.change_status(payment=payment, status="authorized")
    assert Subscription.objects.get(pk=payment.subscription_id).is_recurrent is True


def test_confirming_twice_makes_one_subscription(user, monthly, recorded):
    seen = recorded(SubscriptionCreated, events.PaymentPaid)
    payment = services.create_payment(user=user, gateway="free", subscription_type=monthly)
    services.confirm(payment=payment)
    services.confirm(payment=payment)
    services.confirm(payment=Payment.objects.get(pk=payment.pk))  # a second, stale copy
    services.change_status(payment=payment, status="prepaid")  # another paid status: still the same one
    assert Subscription.objects.filter(user=user).count() == 1
    assert [type(e).__name__ for e in seen] == ["SubscriptionCreated", "PaymentPaid", "PaymentPaid"]


def test_stale_copy_cannot_make_a_second_subscription(user, monthly):
    """The check runs on the locked row, not on the caller's copy."""
    payment = services.create_payment(user=user, gateway="free", subscription_type=monthly)
    stale = Payment.objects.get(pk=payment.pk)
    services.confirm(payment=payment)
    stale.status = "fail"  # the caller's copy believes it is unpaid
    services.change_status(payment=stale, status="paid")
    assert Subscription.objects.filter(user=user).count() == 1
    assert stale.subscription_id == payment.subscription_id


def test_r_pay_6_subscription_link_is_written_before_handlers_run(user, monthly):
    """A SubscriptionCreated handler registered after payments' own (family's) finds the payment's link."""
    found = []

    def family_like_handler(event):
        found.append(Payment.objects.filter(subscription_id=event.subscription_id).values_list("pk", flat=True)
                     .first())

    bus.subscribe(SubscriptionCreated, family_like_handler)
    try:
        payment = services.create_payment(user=user, gateway="free", subscription_type=monthly)
        services.confirm(payment=payment)
    finally:
        bus.unsubscribe(SubscriptionCreated, family_like_handler)
    assert found == [payment.pk]


def test_a_failing_subscription_handler_rolls_the_payment_back(user, monthly, recorded):
    """The status change, the subscription and the events are one transaction."""
    def boom(event):
        raise RuntimeError("handler failed")

    bus.subscribe(SubscriptionCreated, boom)
    payment = services.create_payment(user=user, gateway="free", subscription_type=monthly)
    try:
        with pytest.raises(RuntimeError):
            services.confirm(payment=payment)
    finally:
        bus.unsubscribe(SubscriptionCreated, boom)
    stored = Payment.objects.get(pk=payment.pk)
    assert (stored.status, stored.paid_at, stored.subscription_id) == ("form", None, None)
    assert not Subscription.objects.exists()


# --- R-PAY-7 refund ------------------------------------------------------------------------------------------


def test_r_pay_7_refund_stops_the_active_profile(user, monthly, clock, recorded):
    payment = paid_with_card(user, monthly)
    row = RecurrentPayment.objects.get(parent_payment=payment)
    seen = recorded(events.RecurrentPaymentStateChanged)
    services.refund(payment=payment)
    row.refresh_from_db()
    assert (row.state, Payment.objects.get(pk=payment.pk).status) == ("system_stop", "refund")
    assert [(e.recurrent_payment_id, e.old_state, e.new_state) for e in seen] == [(row.pk, "active", "system_stop")]


def test_r_pay_7_refund_leaves_a_user_stopped_profile(user, monthly, clock):
    payment = paid_with_card(user, monthly)
    row = RecurrentPayment.objects.get(parent_payment=payment)
    services.stop_by_user(recurrent_payment=row)
    services.refund(payment=payment)
    row.refresh_from_db()
    assert row.state == "user_stop"


# --- R-PAY-8 variable-symbol lookup --------------------------------------------------------------------------


@pytest.mark.parametrize(("stored", "query", "found"), [
    ("0006789465", "6789465", True),
    ("0006789465", "06789465", True),
    ("0006789465", "0006789465", True),
    ("0106789465", "106789465", True),
    ("0106789465", "6789465", False),
    ("0006789465", "678946", False),
    ("0006789465", "", False),
    ("0006789465", "x6789465", False),
])
def test_r_pay_8_variable_symbol_lookup(user, monkeypatch, stored, query, found):
    monkeypatch.setattr(services, "_new_variable_symbol", lambda: stored)
    payment = services.create_payment(user=user, gateway="free", amount="1")
    result = services.find_by_variable_symbol(query)
    assert (result.pk if result else None) == (payment.pk if found else None)


def test_paid_with_card_schedules_a_profile(user, monthly, clock):
    """R-REC-3 through confirm(): the card token of a recurrent gateway starts the profile."""
    payment = paid_with_card(user, monthly)
    row = RecurrentPayment.objects.get(parent_payment=payment)
    assert (row.cid, row.state, row.retries, row.charge_at) == (GOOD_CARD, "active", 4, NOW + timedelta(days=30))


# --- R-PAY-9 copying a payment ---------------------------------------------------------------------------------


def _paper_payment(user, **kwargs):
    paper = make_type("paper", price="100.00", items=[("Print", "20", "10"), ("Web", "80", "10")])
    items = [ItemSpec(name="Print (2023)", amount="20", vat="10", subscription_type_id=paper.pk),
             ItemSpec(name="Web (2023)", amount="80", vat="10", subscription_type_id=paper.pk),
             ItemSpec(name="Gift", amount="5", vat="0", type="donation")]
    return paper, services.create_payment(user=user, gateway="free", subscription_type=paper, items=items,
                                          additional_amount="5", additional_type="single", **kwargs)


def _retype(items, price="100.00"):
    from masthead.subscriptions.services import ItemSpec as TypeItem
    from masthead.subscriptions.services import save_subscription_type

    save_subscription_type(code="paper", fields={"name": "Paper", "user_label": "Paper", "price": price, "length": 30},
                           content_access=[], items=[TypeItem(*i) for i in items])


def lines(payment):
    return list(payment.items.values_list("name", "amount", "vat", "type"))


def test_r_pay_9_copy_keeps_the_old_items(user):
    paper, original = _paper_payment(user)
    copy = services.copy_payment(payment=original)
    assert (copy.status, copy.amount, copy.subscription_type_id, copy.additional_type, copy.additional_amount) == (
        "form", Decimal("105.00"), paper.pk, "single", Decimal("5.00"))
    assert copy.variable_symbol != original.variable_symbol
    assert lines(copy) == lines(original)


def test_r_pay_9_vat_change_uses_the_current_items(user):
    _paper, original = _paper_payment(user)
    _retype([("Print", "20", "5"), ("Web", "80", "20")])
    copy = services.copy_payment(payment=original)
    assert lines(copy) == [("Print", Decimal("20.00"), Decimal("5.00"), "subscription_type"),
                           ("Web", Decimal("80.00"), Decimal("20.00"), "subscription_type"),
                           ("Gift", Decimal("5.00"), Decimal("0.00"), "donation")]


def test_r_pay_9_item_count_change_uses_the_current_items(user):
    _paper, original = _paper_payment(user)
    _retype([("Print", "20", "10"), ("Web", "30", "10"), ("App", "50", "10")])
    assert [name for name, *_ in lines(services.copy_payment(payment=original))] == ["Print", "Web", "App", "Gift"]


def test_r_pay_9_legacy_price_keeps_the_old_items(user):
    _paper, original = _paper_payment(user)
    _retype([("Paper", "120", "20")], price="120.00")
    copy = services.copy_payment(payment=original)
    assert copy.amount == Decimal("105.00")
    assert lines(copy) == lines(original)
