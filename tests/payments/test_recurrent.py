"""Recurrent payments: profiles (R-REC-1..5), the charge run (R-REC-6..13), moves (R-REC-14), stops and
reactivation (R-REC-15..18), "is stopped" (R-REC-19), trials (R-REC-20) and charge items (R-REC-21)."""

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ImproperlyConfigured

from masthead.payments import events, services
from masthead.payments.models import Payment, PaymentGateway, PaymentLog, RecurrentPayment
from masthead.payments.services import ItemSpec, PaymentError
from masthead.subscriptions import services as subscription_services
from masthead.subscriptions.models import Subscription
from masthead.subscriptions.services import ItemSpec as TypeItem
from tests.payments.conftest import (
    GATEWAY_DOWN,
    GOOD_CARD,
    HARD_DECLINE,
    NOW,
    PENDING_CARD,
    SOFT_DECLINE,
    make_type,
    paid_with_card,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("settings_charges")]

RP = RecurrentPayment
DAY = timedelta(days=30)


def profile(payment) -> RecurrentPayment:
    return RP.objects.get(parent_payment=payment)


def chain(user) -> list[tuple]:
    return list(RP.objects.filter(user=user).order_by("pk").values_list("charge_at", "retries", "state", "status"))


# --- R-REC-1/2 ---------------------------------------------------------------------------------------------


def test_r_rec_2_states():
    assert RP.STATE_CODES == ("active", "pending", "charged", "charge_failed", "user_stop", "admin_stop",
                              "system_stop")


# --- R-REC-3 creation from a paid payment ----------------------------------------------------------------------


def test_r_rec_3_profile_from_a_paid_payment(user, monthly, clock, recorded):
    seen = recorded(events.RecurrentPaymentCreated)
    payment = paid_with_card(user, monthly)
    row = profile(payment)
    assert (row.cid, row.gateway.code, row.user_id, row.subscription_type_id, row.next_subscription_type_id,
            row.state, row.retries, row.status, row.payment_id, row.custom_amount) == (
        GOOD_CARD, "fake_card", user.pk, monthly.pk, None, "active", 4, None, None, None)
    assert row.charge_at == Subscription.objects.get(pk=payment.subscription_id).end_time == NOW + DAY
    assert [(e.recurrent_payment_id, e.parent_payment_id) for e in seen] == [(row.pk, payment.pk)]


def test_r_rec_3_idempotent(user, monthly, clock, recorded):
    payment = paid_with_card(user, monthly)
    seen = recorded(events.RecurrentPaymentCreated)
    again = services.create_recurrent_payment(payment=payment, cid="card_4111111111111111")
    services.confirm(payment=payment, cid="card_4111111111111111")
    assert again == profile(payment)
    assert RP.objects.count() == 1
    assert seen == []


@pytest.mark.parametrize(("ladder", "retries"), [("PT15M, PT6H, PT6H", 2), ("PT1H", 0), ("", 0),
                                                  ("PT15M,PT6H,PT6H,PT6H,PT6H", 4)])
def test_r_rec_3_retries_follow_the_ladder(user, monthly, clock, settings, ladder, retries):
    settings.RECURRENT_PAYMENT_CHARGES = ladder
    assert profile(paid_with_card(user, monthly)).retries == retries


@pytest.mark.parametrize("status", ["form", "fail", "timeout", "refund", "imported"])
def test_r_rec_3_only_for_paid_payments(user, monthly, clock, status):
    payment = services.create_payment(user=user, gateway="fake_card", subscription_type=monthly)
    services.change_status(payment=payment, status=status)
    with pytest.raises(PaymentError) as refused:
        services.create_recurrent_payment(payment=payment, cid=GOOD_CARD)
    assert refused.value.code == "payment_not_paid"
    assert not RP.objects.exists()


@pytest.mark.parametrize("status", ["paid", "prepaid", "authorized"])
def test_r_rec_3_paid_statuses(user, monthly, clock, status):
    payment = services.create_payment(user=user, gateway="fake_card", subscription_type=monthly)
    services.confirm(payment=payment, status=status, cid=GOOD_CARD)
    row = profile(payment)
    # authorized on a gateway without recurrent authorisation makes no subscription: paid_at + length
    assert row.charge_at == NOW + DAY


def test_r_rec_3_not_on_a_one_off_gateway(user, monthly, clock):
    payment = services.create_payment(user=user, gateway="free", subscription_type=monthly)
    services.confirm(payment=payment, cid=GOOD_CARD)  # the token is ignored
    assert not RP.objects.exists()
    with pytest.raises(PaymentError) as refused:
        services.create_recurrent_payment(payment=payment, cid=GOOD_CARD)
    assert refused.value.code == "gateway_not_recurrent"


def test_r_rec_3_no_profile_when_charge_time_cannot_be_computed(user, monthly, clock, recorded):
    """R-REC-4: a subscription that already ended gives a base time in the past: no profile, payment paid."""
    seen = recorded(events.RecurrentPaymentCreated)
    payment = paid_with_card(user, monthly, subscription_start_at=NOW - timedelta(days=40),
                             subscription_end_at=NOW - timedelta(days=10))
    assert Payment.objects.get(pk=payment.pk).status == "paid"
    assert Subscription.objects.filter(pk=payment.subscription_id).exists()
    assert not RP.objects.exists()
    assert seen == []


# --- R-REC-4/5 charge time -------------------------------------------------------------------------------------


def test_r_rec_4_without_subscription_paid_at_plus_length(user, clock):
    no_subscription = make_type("support", no_subscription=True, length=31)
    payment = services.create_payment(user=user, gateway="fake_card", subscription_type=no_subscription)
    services.confirm(payment=payment, cid=GOOD_CARD)
    assert payment.subscription_id is None
    assert profile(payment).charge_at == NOW + timedelta(days=31)


def test_r_rec_5_charge_before_needs_a_subscription(user, clock, settings):
    settings.RECURRENT_CHARGE_BEFORE_HOURS = "24"
    no_subscription = make_type("support", no_subscription=True)
    payment = services.create_payment(user=user, gateway="fake_card", subscription_type=no_subscription)
    services.confirm(payment=payment)
    with pytest.raises(PaymentError) as refused:
        services.create_recurrent_payment(payment=payment, cid=GOOD_CARD)
    assert refused.value.code == "charge_before_needs_subscription"


END = datetime(2024, 3, 31, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("type_hours", "global_hours", "expected"), [
    (48, "", datetime(2024, 3, 29, 0, 0, tzinfo=UTC)),      # the rule's example
    (-24, "", datetime(2024, 4, 1, 0, 0, tzinfo=UTC)),      # the rule's example
    (None, "48", datetime(2024, 3, 29, 0, 0, tzinfo=UTC)),  # global config
    (0, "48", END),                                         # the type's value wins, even 0
    (None, "-24", END),                                     # invalid global values are ignored
    (None, "abc", END),
    (None, "", END),
])
def test_r_rec_5_charge_before(user, settings, type_hours, global_hours, expected):
    settings.RECURRENT_CHARGE_BEFORE_HOURS = global_hours
    subscription_type = make_type("monthly", recurrent_charge_before=type_hours)
    with time_machine.travel(datetime(2024, 3, 1, 12, 0, tzinfo=UTC), tick=False):
        payment = paid_with_card(user, subscription_type, subscription_start_at=datetime(2024, 3, 1, 12, tzinfo=UTC),
                                 subscription_end_at=END)
    assert profile(payment).charge_at == expected


@pytest.mark.parametrize(("hours", "code"), [
    (24 * 40, "charge_at_before_start"),  # the subscription lasts 30 days
    (24 * 30 + 1, "charge_at_before_start"),
])
def test_r_rec_5_charge_time_must_follow_start_and_payment(user, clock, hours, code):
    subscription_type = make_type("monthly", recurrent_charge_before=hours)
    payment = services.create_payment(user=user, gateway="fake_card", subscription_type=subscription_type)
    services.confirm(payment=payment)
    with pytest.raises(PaymentError) as refused:
        services.create_recurrent_payment(payment=payment, cid=GOOD_CARD)
    assert refused.value.code == code
    assert not RP.objects.exists()


def test_r_rec_5_charge_time_must_be_in_the_future(user, clock):
    """The base time is still ahead, but the time charge-before points at has passed."""
    subscription_type = make_type("monthly", recurrent_charge_before=12)
    payment = services.create_payment(user=user, gateway="fake_card", subscription_type=subscription_type)
    services.confirm(payment=payment)
    clock.move_to(NOW + DAY - timedelta(hours=6))
    with pytest.raises(PaymentError) as refused:
        services.create_recurrent_payment(payment=payment, cid=GOOD_CARD)
    assert refused.value.code == "charge_at_in_past"
    clock.move_to(NOW + DAY)
    with pytest.raises(PaymentError) as refused:
        services.create_recurrent_payment(payment=payment, cid=GOOD_CARD)
    assert refused.value.code == "charge_at_in_past"  # R-REC-4: base time not in the future
    assert not RP.objects.exists()


def test_r_rec_5_charge_time_must_not_precede_the_payment(user, clock):
    """A subscription made elsewhere that started before the payment was paid."""
    subscription_type = make_type("monthly", recurrent_charge_before=24)
    subscription = subscription_services.create_subscription(user=user, subscription_type=subscription_type,
                                                             start=NOW - timedelta(days=10), end=NOW + timedelta(hours=12))
    payment = services.create_payment(user=user, gateway="fake_card", subscription_type=subscription_type)
    Payment.objects.filter(pk=payment.pk).update(subscription=subscription)
    services.change_status(payment=payment, status="paid")
    payment = Payment.objects.get(pk=payment.pk)
    with pytest.raises(PaymentError) as refused:
        services.create_recurrent_payment(payment=payment, cid=GOOD_CARD)
    assert refused.value.code == "charge_at_before_paid"


# --- R-REC-6 / R-REC-9 the charge run and a successful charge ---------------------------------------------------


def test_r_rec_6_picks_only_due_active_rows(user, make_user, monthly, clock, fake_card):
    due = profile(paid_with_card(user, monthly))
    others = [profile(paid_with_card(make_user(), monthly)) for _ in range(4)]
    RP.objects.filter(pk=others[0].pk).update(charge_at=due.charge_at + timedelta(minutes=16))   # not yet due
    RP.objects.filter(pk=others[1].pk).update(state="user_stop")
    RP.objects.filter(pk=others[2].pk).update(status="legacy")                                 # status not NULL
    RP.objects.filter(pk=others[3].pk).update(retries=-1)
    RP.objects.filter(pk=due.pk).update(charge_at=due.charge_at + timedelta(minutes=14))        # within 15 min
    clock.move_to(due.charge_at)
    result = services.charge_due()
    assert (result.claimed, result["charged"]) == (1, 1)
    due.refresh_from_db()
    assert due.state == "charged"
    assert [r.state for r in RP.objects.filter(pk__in=[o.pk for o in others]).order_by("pk")] == [
        "active", "user_stop", "active", "active"]
    assert len(fake_card.charges) == 1


def test_r_rec_9_success(user, monthly, clock, fake_card, recorded):
    first = paid_with_card(user, monthly)
    row = profile(first)
    first_subscription = Subscription.objects.get(pk=first.subscription_id)
    seen = recorded(events.BeforeRecurrentCharge, events.RecurrentPaymentRenewed, events.PaymentPaid,
                    events.RecurrentPaymentStateChanged)
    charge_time = row.charge_at
    clock.move_to(charge_time)
    result = services.charge_due()
    assert result.outcomes == {"charged": 1}
    row.refresh_from_db()
    payment = row.payment
    assert (row.state, row.status, row.approval, row.claimed_at) == ("charged", "approved", "Approved", None)
    assert (payment.status, payment.paid_at, payment.recurrent_charge, payment.amount, payment.gateway.code,
            payment.subscription_type_id) == ("paid", charge_time, True, Decimal("10.00"), "fake_card", monthly.pk)
    subscription = Subscription.objects.get(pk=payment.subscription_id)
    assert (subscription.start_time, subscription.end_time, subscription.is_recurrent) == (
        first_subscription.end_time, first_subscription.end_time + DAY, True)
    following = profile(payment)
    assert (following.cid, following.state, following.retries, following.charge_at) == (
        GOOD_CARD, "active", 4, subscription.end_time)
    assert fake_card.charges == [(f"masthead-rp-{row.pk}-{payment.variable_symbol}", GOOD_CARD, Decimal("10.00"))]
    names = [(type(e).__name__, getattr(e, "new_state", "")) for e in seen]
    assert names == [("RecurrentPaymentStateChanged", "pending"), ("BeforeRecurrentCharge", ""),
                     ("PaymentPaid", ""), ("RecurrentPaymentStateChanged", "charged"),
                     ("RecurrentPaymentRenewed", "")]
    renewed = seen[-1]
    assert (renewed.recurrent_payment_id, renewed.payment_id, renewed.next_recurrent_payment_id) == (
        row.pk, payment.pk, following.pk)
    assert list(PaymentLog.objects.filter(payment=payment).values_list("status", "source")) == [
        ("OK", "recurrent_charge")]
    # a second run at the same time has nothing to do
    assert services.charge_due().claimed == 0
    assert len(fake_card.charges) == 1


def test_r_rec_9_custom_amount_is_carried(user, monthly, clock, fake_card):
    payment = services.create_payment(user=user, gateway="fake_card", subscription_type=monthly)
    services.confirm(payment=payment, cid=GOOD_CARD, custom_amount="7.50")
    row = profile(payment)
    clock.move_to(row.charge_at)
    services.charge_due()
    row.refresh_from_db()
    assert row.payment.amount == Decimal("7.50")
    assert profile(row.payment).custom_amount == Decimal("7.50")


def test_r_rec_6_already_paid_payment_is_not_sent_to_the_gateway(user, monthly, clock, fake_card):
    """A payment paid meanwhile (a listener, a bank transfer) counts as success without a charge."""
    row = profile(paid_with_card(user, monthly))
    clock.move_to(row.charge_at)

    def pay_it(event):
        services.change_status(payment=Payment.objects.get(pk=event.payment_id), status="paid")

    from masthead.core import events as bus
    bus.subscribe(events.BeforeRecurrentCharge, pay_it)
    try:
        result = services.charge_due()
    finally:
        bus.unsubscribe(events.BeforeRecurrentCharge, pay_it)
    assert result.outcomes == {"charged": 1}
    row.refresh_from_db()
    assert (row.state, row.status) == ("charged", "already_paid")
    assert fake_card.calls == 0
    assert Subscription.objects.filter(user=user).count() == 2


def test_two_runs_never_claim_one_row(user, monthly, clock):
    row = profile(paid_with_card(user, monthly))
    clock.move_to(row.charge_at)
    first = services.claim_due(limit=10, due_before=row.charge_at)
    second = services.claim_due(limit=10, due_before=row.charge_at)
    assert [r for r, _ in first] == [row.pk]
    assert second == []
    row.refresh_from_db()
    assert row.state == "pending"


def test_a_dead_runs_claim_is_taken_over_and_charged_once(user, monthly, clock, fake_card, monkeypatch):
    """A run that died after calling the gateway: an hour later another run takes the row over, reuses the
    attempt's payment and idempotency key, and the card is charged once."""
    row = profile(paid_with_card(user, monthly))
    clock.move_to(row.charge_at)
    [(row_id, dead_claim)] = services.claim_due(limit=10, due_before=row.charge_at)
    def crash(**kwargs):
        raise SystemExit("worker killed")

    with monkeypatch.context() as patch:
        patch.setattr(services.apply_result, "inner", crash)
        with pytest.raises(SystemExit):
            services._charge_claimed(row_id, dead_claim)
    assert len(fake_card.charges) == 1
    row.refresh_from_db()
    assert (row.state, row.status) == ("pending", None)
    clock.shift(timedelta(minutes=30))
    assert services.charge_due().claimed == 0  # not yet considered dead
    clock.shift(timedelta(minutes=31))
    result = services.charge_due()
    assert (result.claimed, result.outcomes) == (1, {"charged": 1})
    row.refresh_from_db()
    assert row.state == "charged"
    assert len(fake_card.charges) == 1 and fake_card.calls == 2
    assert Payment.objects.filter(user=user, recurrent_charge=True).count() == 1
    # the dead run, had it survived, could not record anything any more
    assert services._claimed_row(row_id, dead_claim) is None


def test_unexpected_error_keeps_the_claim_until_it_times_out(user, monthly, clock, fake_card, settings):
    """A failure while building the payment (here: a recurrent donation without DONATION_VAT_RATE) writes
    nothing; the row stays claimed and a run after CLAIM_TIMEOUT tries again (not the same run, in a loop)."""
    settings.DONATION_VAT_RATE = ""
    payment = services.create_payment(user=user, gateway="fake_card", subscription_type=monthly, items=[
        ItemSpec(name="Monthly", amount="10.00", vat="20"), ItemSpec(name="Gift", amount="5.00", type="donation")],
        additional_amount="5", additional_type="recurrent")
    services.confirm(payment=payment, cid=GOOD_CARD)
    row = profile(payment)
    clock.move_to(row.charge_at)
    result = services.charge_due()
    assert (result.claimed, result.outcomes) == (1, {"exception": 1})
    row.refresh_from_db()
    assert (row.state, row.payment_id, row.status) == ("pending", None, None)
    assert Payment.objects.count() == 1
    assert fake_card.calls == 0
    clock.shift(timedelta(minutes=59))
    assert services.charge_due().claimed == 0
    settings.DONATION_VAT_RATE = "20"  # fixed
    clock.shift(timedelta(minutes=2))
    assert services.charge_due().outcomes == {"charged": 1}
    row.refresh_from_db()
    assert (row.state, row.payment.amount) == ("charged", Decimal("15.00"))


def test_one_bad_row_does_not_hold_back_its_chunk(user, make_user, monthly, clock, fake_card):
    """Rows are recorded together; when that fails (a handler raises for one reader), each answer is
    recorded on its own: the others are charged, the bad one stays claimed for a later run."""
    from masthead.core import events as bus
    from masthead.subscriptions.events import SubscriptionCreated

    readers = [user] + [make_user() for _ in range(3)]
    rows = [profile(paid_with_card(reader, monthly, card=f"card_41111111{k:02d}424242")) for k, reader in enumerate(readers)]
    bad = readers[2].pk

    def reject(event):
        if event.user_id == bad:
            raise RuntimeError("handler failed")

    bus.subscribe(SubscriptionCreated, reject)
    try:
        clock.move_to(rows[0].charge_at)
        result = services.charge_due()
    finally:
        bus.unsubscribe(SubscriptionCreated, reject)
    assert result.outcomes == {"charged": 3, "exception": 1}
    assert [RP.objects.get(pk=r.pk).state for r in rows] == ["charged", "charged", "pending", "charged"]
    assert len(fake_card.charges) == 4  # the bad row's card was charged: its outcome is recorded later
    clock.shift(timedelta(hours=1, minutes=1))
    assert services.charge_due().outcomes == {"charged": 1}  # taken over; the gateway replays, no new charge
    assert len(fake_card.charges) == 4
    assert RP.objects.get(pk=rows[2].pk).state == "charged"


def test_variable_symbol_collision_while_preparing_a_chunk(user, make_user, monthly, clock, fake_card, monkeypatch):
    rows = [profile(paid_with_card(reader, monthly, card=f"card_42222222{k:02d}424242"))
            for k, reader in enumerate([user, make_user()])]
    taken = Payment.objects.first().variable_symbol
    drawn = iter([taken, "0000000001", "0000000002", "0000000003"])
    monkeypatch.setattr(services, "_new_variable_symbol", lambda: next(drawn))
    clock.move_to(rows[0].charge_at)
    assert services.charge_due().outcomes == {"charged": 2}
    assert sorted(Payment.objects.filter(recurrent_charge=True).values_list("variable_symbol", flat=True)) == [
        "0000000002", "0000000003"]


def test_charge_now(user, monthly, clock, fake_card):
    row = profile(paid_with_card(user, monthly))
    assert services.charge_now(recurrent_payment=row) == "charged"
    with pytest.raises(PaymentError) as refused:
        services.charge_now(recurrent_payment=row)
    assert refused.value.code == "recurrent_payment_not_active"
    assert len(fake_card.charges) == 1


# --- R-REC-7 fast-charge guard ---------------------------------------------------------------------------------


def _second_profile_same_card(user, monthly, charge_at, card=GOOD_CARD):
    """Another profile of the same card whose charge time is ``charge_at``."""
    other = profile(paid_with_card(user, monthly, card=card))
    RP.objects.filter(pk=other.pk).update(charge_at=charge_at)
    other.refresh_from_db()
    return other


def test_r_rec_7_fast_charge_guard(user, monthly, clock, fake_card):
    row = profile(paid_with_card(user, monthly))
    clock.move_to(row.charge_at)
    services.charge_due()
    twin = _second_profile_same_card(user, monthly, row.charge_at + timedelta(hours=2))
    clock.move_to(twin.charge_at)
    result = services.charge_due()
    assert result.outcomes == {"fast_charge": 1}
    twin.refresh_from_db()
    assert (twin.state, twin.note, twin.payment_id) == ("system_stop", "Fast charge", None)
    assert len(fake_card.charges) == 1


def test_r_rec_7_same_charge_time_is_fast_even_later(user, monthly, clock, fake_card):
    row = profile(paid_with_card(user, monthly))
    clock.move_to(row.charge_at)
    services.charge_due()
    _second_profile_same_card(user, monthly, row.charge_at)
    clock.move_to(row.charge_at + timedelta(days=2))
    assert services.charge_due().outcomes == {"fast_charge": 1}


@pytest.mark.parametrize(("threshold", "card", "outcome"), [
    (0, GOOD_CARD, "charged"),                  # 0 disables the guard
    (24, "card_5555555555554444", "charged"),    # another card
    (1, GOOD_CARD, "charged"),                   # 2 h ago is beyond a 1 h threshold
])
def test_r_rec_7_guard_does_not_fire(user, monthly, clock, fake_card, settings, threshold, card, outcome):
    settings.FASTCHARGE_THRESHOLD_HOURS = threshold
    row = profile(paid_with_card(user, monthly))
    clock.move_to(row.charge_at)
    services.charge_due()
    twin = profile(paid_with_card(user, monthly, card=card))
    RP.objects.filter(pk=twin.pk).update(charge_at=row.charge_at + timedelta(hours=2))
    clock.move_to(row.charge_at + timedelta(hours=2))
    assert services.charge_due().outcomes == {outcome: 1}


def test_r_rec_7_two_rows_of_one_card_in_one_run(user, monthly, clock, fake_card, recorded):
    """Two due rows of the same card: the older is charged, the other waits for a later run (never two
    charges of one card at once), which stops it by the fast-charge guard."""
    first = profile(paid_with_card(user, monthly))
    twin = _second_profile_same_card(user, monthly, first.charge_at)
    clock.move_to(first.charge_at)
    result = services.charge_due()
    assert (result.claimed, result.outcomes) == (2, {"charged": 1, "deferred": 1})
    first.refresh_from_db()
    twin.refresh_from_db()
    assert (first.state, twin.state, twin.payment_id, twin.claimed_at) == ("charged", "active", None, None)
    clock.shift(timedelta(minutes=15))
    assert services.charge_due().outcomes == {"fast_charge": 1}
    assert RP.objects.get(pk=twin.pk).state == "system_stop"
    assert len(fake_card.charges) == 1


def test_r_rec_7_a_row_waits_while_its_card_is_in_flight(user, monthly, clock, fake_card, settings):
    """Even with the guard off: an older row of the card awaiting the gateway holds the younger back."""
    settings.FASTCHARGE_THRESHOLD_HOURS = 0
    first = profile(paid_with_card(user, monthly, card=PENDING_CARD))
    twin = _second_profile_same_card(user, monthly, first.charge_at, card=PENDING_CARD)
    clock.move_to(first.charge_at)
    assert services.charge_due().outcomes == {"pending": 1, "deferred": 1}
    assert services.charge_now(recurrent_payment=twin) == "deferred"
    assert RP.objects.get(pk=twin.pk).state == "active"
    assert fake_card.calls == 1


# --- R-REC-8 pending -----------------------------------------------------------------------------------------


def test_r_rec_8_pending(user, monthly, clock, fake_card):
    row = profile(paid_with_card(user, monthly, card=PENDING_CARD))
    clock.move_to(row.charge_at)
    assert services.charge_due().outcomes == {"pending": 1}
    row.refresh_from_db()
    assert (row.state, row.status, row.approval, row.payment.status) == ("pending", "processing", "Processing", "form")
    # answered later by the processor: recorded through apply_result
    clock.shift(timedelta(hours=3))
    assert services.charge_due().claimed == 0  # a row with a status is not re-claimed
    from masthead.payments.gateways.base import ChargeResult
    row = RP.objects.select_related("payment").get(pk=row.pk)
    assert services.apply_result(row=row, result=ChargeResult("ok", "approved", "Approved")) == "charged"
    row.refresh_from_db()
    assert (row.state, row.payment.status) == ("charged", "paid")
    assert PaymentLog.objects.filter(payment=row.payment).count() == 2


# --- R-REC-10..13 failures -------------------------------------------------------------------------------------


def test_r_rec_10_retry_ladder_timeline(user, monthly, fake_card, recorded):
    """From the first charge to system_stop with the default ladder: 5 attempts at T0, +15 min, +6 h,
    +6 h, +6 h; the last entry of the ladder is never used."""
    with time_machine.travel(NOW, tick=False) as clock:
        first = paid_with_card(user, monthly, card=SOFT_DECLINE)
        t0 = profile(first).charge_at
        seen = recorded(events.RecurrentPaymentFailTry, events.RecurrentPaymentFailed)
        expected_times = [t0, t0 + timedelta(minutes=15), t0 + timedelta(hours=6, minutes=15),
                          t0 + timedelta(hours=12, minutes=15), t0 + timedelta(hours=18, minutes=15)]
        for attempt, due in enumerate(expected_times):
            clock.move_to(due - timedelta(minutes=16))
            assert services.charge_due().claimed == 0, f"attempt {attempt + 1} charged early"
            clock.move_to(due)
            result = services.charge_due()
            assert result.outcomes == ({"retry": 1} if attempt < 4 else {"failed": 1})
        assert chain(user) == [
            (expected_times[0], 4, "charge_failed", "insufficient_funds"),
            (expected_times[1], 3, "charge_failed", "insufficient_funds"),
            (expected_times[2], 2, "charge_failed", "insufficient_funds"),
            (expected_times[3], 1, "charge_failed", "insufficient_funds"),
            (expected_times[4], 0, "system_stop", "insufficient_funds"),
        ]
        rows = list(RP.objects.filter(user=user).order_by("pk"))
        assert rows[0].parent_payment_id == first.pk
        for previous, row in itertools.pairwise(rows):
            assert row.parent_payment_id == previous.payment_id  # parent = the failed payment (R-REC-10)
            assert (row.cid, row.subscription_type_id) == (SOFT_DECLINE, monthly.pk)  # R-REC-11
        assert [r.approval for r in rows] == ["Insufficient funds"] * 5
        failed = Payment.objects.filter(user=user, recurrent_charge=True).order_by("pk")
        assert [p.status for p in failed] == ["fail"] * 5
        assert len({p.pk for p in failed}) == 5  # a fresh payment per attempt
        assert [type(e).__name__ for e in seen] == ["RecurrentPaymentFailTry"] * 4 + ["RecurrentPaymentFailed"]
        assert [e.next_recurrent_payment_id for e in seen[:4]] == [r.pk for r in rows[1:]]
        assert fake_card.calls == 5 and fake_card.charges == []
        clock.move_to(expected_times[4] + timedelta(days=7))
        assert services.charge_due().claimed == 0
        assert Subscription.objects.filter(user=user).count() == 1


def test_r_rec_10_retry_then_success(user, monthly, clock, fake_card, settings):
    row = profile(paid_with_card(user, monthly, card=SOFT_DECLINE))
    clock.move_to(row.charge_at)
    services.charge_due()
    retry = RP.objects.get(parent_payment=RP.objects.get(pk=row.pk).payment)
    settings.FAKE_CARD_DECLINES = ""  # the reader topped up the card
    clock.move_to(retry.charge_at)
    assert services.charge_due().outcomes == {"charged": 1}
    retry.refresh_from_db()
    assert retry.state == "charged"
    assert profile(retry.payment).retries == 4  # a new period starts with a full ladder
    assert len(fake_card.charges) == 1


@pytest.mark.parametrize(("ladder", "retries", "delay"), [
    ("PT15M, PT6H, PT6H, PT6H, PT6H", 4, timedelta(minutes=15)),
    ("PT15M,PT6H,PT6H,PT6H,PT6H", 1, timedelta(hours=6)),
    ("PT15M,PT1H,PT2H", 2, timedelta(minutes=15)),
    ("PT15M,PT1H,PT2H", 1, timedelta(hours=1)),
    ("PT15M,PT1H,PT2H", 9, timedelta(minutes=15)),   # retries ≥ n: list[0]
    ("P1DT2H, PT30S", 1, timedelta(days=1, hours=2)),
])
def test_r_rec_10_delay(settings, ladder, retries, delay):
    settings.RECURRENT_PAYMENT_CHARGES = ladder
    assert services.retry_delay(retries) == delay


@pytest.mark.parametrize("ladder", ["15 minutes", "PT15M, 6h", "-PT1H"])
def test_r_rec_10_bad_ladder_is_a_configuration_error(settings, ladder):
    settings.RECURRENT_PAYMENT_CHARGES = ladder
    with pytest.raises(ImproperlyConfigured):
        services.retry_ladder()


def test_r_rec_12_hard_decline_stops_at_once(user, monthly, clock, fake_card, recorded):
    row = profile(paid_with_card(user, monthly, card=HARD_DECLINE))
    seen = recorded(events.RecurrentPaymentFailed, events.RecurrentPaymentFailTry)
    clock.move_to(row.charge_at)
    assert services.charge_due().outcomes == {"failed": 1}
    row.refresh_from_db()
    assert (row.state, row.status, row.approval, row.retries, row.payment.status) == (
        "system_stop", "expired_card", "Expired card", 4, "fail")
    assert RP.objects.count() == 1
    assert [(type(e).__name__, e.code) for e in seen] == [("RecurrentPaymentFailed", "expired_card")]
    assert PaymentLog.objects.get(payment=row.payment).status == "ERROR"


def test_r_rec_13_gateway_error_keeps_the_retries(user, monthly, clock, fake_card, settings, recorded):
    row = profile(paid_with_card(user, monthly, card=GATEWAY_DOWN))
    seen = recorded(events.RecurrentPaymentFailTry)
    t0 = row.charge_at
    clock.move_to(t0)
    assert services.charge_due().outcomes == {"gateway_error": 1}
    assert chain(user) == [(t0, 4, "charge_failed", "gateway_unavailable"), (t0 + timedelta(hours=1), 4, "active", None)]
    assert [(e.gateway_error, e.code) for e in seen] == [(True, "gateway_unavailable")]
    settings.RECURRENT_GATEWAY_FAIL_DELAY = "PT2H"
    clock.move_to(t0 + timedelta(hours=1))
    services.charge_due()
    assert chain(user)[-1] == (t0 + timedelta(hours=3), 4, "active", None)
    settings.FAKE_CARD_DECLINES = ""  # the gateway is back
    clock.move_to(t0 + timedelta(hours=3))
    assert services.charge_due().outcomes == {"charged": 1}
    assert [p.status for p in Payment.objects.filter(recurrent_charge=True).order_by("pk")] == ["fail", "fail", "paid"]
    assert len(fake_card.charges) == 1


def test_r_rec_13_a_raising_adapter_is_a_gateway_error(user, monthly, clock, fake_card, monkeypatch):
    row = profile(paid_with_card(user, monthly))

    def broken(**kwargs):
        raise ConnectionError("connection reset")

    monkeypatch.setattr(fake_card, "charge", broken)
    clock.move_to(row.charge_at)
    assert services.charge_due().outcomes == {"gateway_error": 1}
    row.refresh_from_db()
    assert (row.state, row.status, row.approval) == ("charge_failed", "gateway_exception", "connection reset")


# --- R-REC-14 moved subscription --------------------------------------------------------------------------------


def test_r_rec_14_moving_the_subscription_moves_the_charge(user, monthly, clock):
    payment = paid_with_card(user, monthly)
    subscription = Subscription.objects.get(pk=payment.subscription_id)
    row = profile(payment)
    subscription_services.move_subscription(subscription=subscription, start=subscription.start_time + timedelta(days=5))
    assert RP.objects.get(pk=row.pk).charge_at == row.charge_at + timedelta(days=5)


def test_r_rec_14_only_active_profiles_move(user, monthly, clock):
    payment = paid_with_card(user, monthly)
    row = profile(payment)
    services.stop_by_user(recurrent_payment=row)
    subscription = Subscription.objects.get(pk=payment.subscription_id)
    subscription_services.move_subscription(subscription=subscription, start=subscription.start_time + timedelta(days=5))
    assert RP.objects.get(pk=row.pk).charge_at == row.charge_at


# --- R-REC-15..18 stop and reactivate -------------------------------------------------------------------------


def _gateway_with(**meta):
    return PaymentGateway.objects.create(code="card_" + "_".join(meta) or "card", name="Card", is_recurrent=True,
                                         meta=meta)


def _profile_on(user, subscription_type, gateway, status="paid"):
    payment = services.create_payment(user=user, gateway=gateway, subscription_type=subscription_type)
    services.confirm(payment=payment, status=status, cid=GOOD_CARD)
    return profile(payment)


@pytest.mark.parametrize(("meta", "status", "user_can", "admin_can"), [
    ({}, "paid", True, True),
    ({"unstoppable": "1"}, "paid", False, False),
    ({"unstoppable": 1}, "paid", False, False),
    ({"user_unstoppable": "1"}, "paid", False, True),
    ({"unstoppable": "0"}, "paid", True, True),
    ({}, "prepaid", False, False),
])
def test_r_rec_15_stoppability(user, monthly, clock, meta, status, user_can, admin_can):
    row = _profile_on(user, monthly, _gateway_with(**meta), status)
    assert services.can_stop(row, by_user=True) is user_can
    assert services.can_stop(row, by_user=False) is admin_can


def test_r_rec_16_user_stop(user, monthly, clock, recorded):
    row = profile(paid_with_card(user, monthly))
    seen = recorded(events.RecurrentPaymentStateChanged, events.RecurrentPaymentStoppedByUser)
    services.stop_by_user(recurrent_payment=row)
    row.refresh_from_db()
    assert (row.state, row.charge_at) == ("user_stop", NOW + DAY)
    assert [type(e).__name__ for e in seen] == ["RecurrentPaymentStateChanged", "RecurrentPaymentStoppedByUser"]
    with pytest.raises(PaymentError) as refused:
        services.stop_by_user(recurrent_payment=row)
    assert (refused.value.code, refused.value.params) == ("recurrent_payment_not_active", {"state": "user_stop"})


def test_r_rec_16_user_cannot_stop_a_user_unstoppable_gateway(user, monthly, clock):
    row = _profile_on(user, monthly, _gateway_with(user_unstoppable="1"))
    with pytest.raises(PaymentError) as refused:
        services.stop_by_user(recurrent_payment=row)
    assert refused.value.code == "user_unstoppable_recurrent_payment_gateway"
    assert RP.objects.get(pk=row.pk).state == "active"
    services.stop_by_admin(recurrent_payment=row, note="asked by phone")
    row.refresh_from_db()
    assert (row.state, row.note) == ("admin_stop", "asked by phone")


def test_r_rec_16_admin_cannot_stop_unstoppable(user, monthly, clock):
    row = _profile_on(user, monthly, _gateway_with(unstoppable="1"))
    with pytest.raises(PaymentError) as refused:
        services.stop_by_admin(recurrent_payment=row)
    assert refused.value.code == "unstoppable_recurrent_payment"
    assert RP.objects.get(pk=row.pk).state == "active"


def test_r_rec_16_gdpr_stops_every_active_profile(user, make_user, monthly, clock):
    mine = [profile(paid_with_card(user, monthly)), profile(paid_with_card(user, monthly, card="card_5555555555554444"))]
    other = profile(paid_with_card(make_user(), monthly))
    assert services.stop_all_for_user(user=user) == 2
    assert [RP.objects.get(pk=r.pk).state for r in mine] == ["user_stop", "user_stop"]
    assert RP.objects.get(pk=other.pk).state == "active"


def test_r_rec_17_user_reactivation(user, monthly, clock, recorded):
    row = profile(paid_with_card(user, monthly))
    services.stop_by_user(recurrent_payment=row)
    RP.objects.filter(pk=row.pk).update(status="x", approval="y")
    seen = recorded(events.RecurrentPaymentStateChanged)
    services.reactivate_by_user(recurrent_payment=row)
    row.refresh_from_db()
    assert (row.state, row.status, row.approval, row.payment_id, row.charge_at) == ("active", None, "", None, NOW + DAY)
    assert [(e.old_state, e.new_state) for e in seen] == [("user_stop", "active")]
    with pytest.raises(PaymentError) as refused:
        services.reactivate_by_user(recurrent_payment=row)
    assert refused.value.code == "recurrent_payment_not_active"


def test_r_rec_17_no_reactivation_after_the_charge_time(user, monthly, clock):
    row = profile(paid_with_card(user, monthly))
    services.stop_by_user(recurrent_payment=row)
    clock.move_to(row.charge_at + timedelta(seconds=1))
    with pytest.raises(PaymentError) as refused:
        services.reactivate_by_user(recurrent_payment=row)
    assert refused.value.code == "recurrent_payment_next_charge_in_past"
    assert RP.objects.get(pk=row.pk).state == "user_stop"


def _exhausted(user, monthly, clock, card=SOFT_DECLINE):
    row = profile(paid_with_card(user, monthly, card=card))
    while True:
        clock.move_to(row.charge_at)
        services.charge_due()
        row = RP.objects.filter(user=user).order_by("-pk").first()
        if row.state == "system_stop":
            return row


def test_r_rec_18_admin_reactivation(user, monthly, clock, fake_card, settings):
    stopped = _exhausted(user, monthly, clock)
    reactivated_at = stopped.charge_at + timedelta(days=3)
    clock.move_to(reactivated_at)
    new_row = services.reactivate_by_admin(recurrent_payment=stopped)
    assert (new_row.cid, new_row.parent_payment_id, new_row.charge_at, new_row.retries, new_row.state,
            new_row.note) == (SOFT_DECLINE, stopped.payment_id, reactivated_at + timedelta(hours=24), 4, "active",
                              f"Reactivated by admin from recurrent payment #{stopped.pk}")
    with pytest.raises(PaymentError) as refused:
        services.reactivate_by_admin(recurrent_payment=stopped)
    assert refused.value.code == "recurrent_payment_already_reactivated"
    assert RP.objects.filter(state="active").count() == 1


def test_r_rec_18_refusals(user, make_user, monthly, clock, fake_card):
    stopped = _exhausted(user, monthly, clock)
    clock.move_to(stopped.charge_at + timedelta(days=14, seconds=1))
    with pytest.raises(PaymentError) as too_old:
        services.reactivate_by_admin(recurrent_payment=stopped)
    assert too_old.value.code == "recurrent_payment_too_old"
    hard = profile(paid_with_card(make_user(), monthly, card=HARD_DECLINE))  # system_stop with retries left
    clock.move_to(hard.charge_at)
    services.charge_due()
    with pytest.raises(PaymentError) as retries_left:
        services.reactivate_by_admin(recurrent_payment=hard)
    assert retries_left.value.code == "recurrent_payment_not_reactivatable"
    active = profile(paid_with_card(make_user(), monthly))
    with pytest.raises(PaymentError) as not_stopped:
        services.reactivate_by_admin(recurrent_payment=active)
    assert not_stopped.value.code == "recurrent_payment_not_reactivatable"


# --- R-REC-19 is stopped -------------------------------------------------------------------------------------


def test_r_rec_19_is_stopped(user, make_user, monthly, clock, fake_card, settings):
    no_card = services.create_payment(user=user, gateway="free", subscription_type=monthly)
    services.confirm(payment=no_card)
    assert services.is_stopped(subscription=Subscription.objects.get(pk=no_card.subscription_id)) is True

    payment = paid_with_card(user, monthly)
    subscription = Subscription.objects.get(pk=payment.subscription_id)
    row = profile(payment)
    assert services.is_stopped(subscription=subscription) is False
    services.stop_by_user(recurrent_payment=row)
    assert services.is_stopped(subscription=subscription) is True

    reader = make_user()
    failing = paid_with_card(reader, monthly, card=SOFT_DECLINE)
    failing_subscription = Subscription.objects.get(pk=failing.subscription_id)
    first = profile(failing)
    clock.move_to(first.charge_at)
    services.charge_due()  # first row charge_failed, a retry is active
    assert services.is_stopped(subscription=failing_subscription) is False
    retry = RP.objects.filter(user=reader).order_by("-pk").first()
    services.stop_by_user(recurrent_payment=retry)
    assert services.is_stopped(subscription=failing_subscription) is True


# --- R-REC-20 trials ----------------------------------------------------------------------------------------


def _charge_chain(user, trial, rows, clock):
    """A chain of ``rows`` rows: the first payment, then rows-1 successful charges. Returns the last row."""
    row = profile(paid_with_card(user, trial))
    for _ in range(rows - 1):
        clock.move_to(row.charge_at)
        services.charge_due()
        row = RP.objects.filter(user=user).order_by("-pk").first()
    return row


@pytest.mark.parametrize(("rows", "trials", "switches"), [
    (1, 0, False), (2, 0, False), (1, 1, True), (3, 2, True), (3, 3, True), (1, 2, False), (2, 4, False)])
def test_r_rec_20_trial_periods(user, clock, fake_card, rows, trials, switches):
    full = make_type("full", price="10.00")
    trial = make_type("trial", price="1.00", next_subscription_type=full, trial_periods=trials)
    row = _charge_chain(user, trial, rows, clock)
    assert services.next_subscription_type(row) == (full if switches else trial)
    clock.move_to(row.charge_at)
    services.charge_due()
    row.refresh_from_db()
    assert (row.payment.subscription_type, row.payment.amount) == ((full, Decimal("10.00")) if switches
                                                                   else (trial, Decimal("1.00")))


def test_r_rec_20_a_failed_parent_counts_no_period(user, clock, fake_card, settings):
    full = make_type("full", price="10.00")
    trial = make_type("trial", price="1.00", next_subscription_type=full, trial_periods=2)
    row = profile(paid_with_card(user, trial, card=SOFT_DECLINE))
    clock.move_to(row.charge_at)
    services.charge_due()  # fails: a retry row whose parent is the failed payment
    retry = RP.objects.filter(user=user).order_by("-pk").first()
    assert services.successful_predecessors(retry) == 0
    assert services.next_subscription_type(retry) == trial
    settings.FAKE_CARD_DECLINES = ""
    clock.move_to(retry.charge_at)
    services.charge_due()
    following = RP.objects.filter(user=user).order_by("-pk").first()
    assert services.successful_predecessors(following) == 1
    assert services.next_subscription_type(following) == full


def test_r_rec_20_next_type_override(user, clock):
    other = make_type("other", price="3.00")
    row = profile(paid_with_card(user, make_type("monthly")))
    RP.objects.filter(pk=row.pk).update(next_subscription_type=other)
    row.refresh_from_db()
    assert services.next_subscription_type(row) == other


# --- R-REC-21 items of the charge -------------------------------------------------------------------------------


def _first_payment_with_donation(user, subscription_type, donation_type):
    items = [ItemSpec(name=i.name, amount=i.amount, vat=i.vat, subscription_type_id=subscription_type.pk)
             for i in subscription_type.items.all()]
    items.append(ItemSpec(name="Donation", amount="66.00", vat="20", type="donation"))
    payment = services.create_payment(user=user, gateway="fake_card", subscription_type=subscription_type,
                                      items=items, additional_amount="66", additional_type=donation_type)
    return services.confirm(payment=payment, cid=GOOD_CARD)


@pytest.mark.parametrize(("donation_type", "amount", "items", "additional"), [
    ("single", Decimal("100.00"), [("Print", Decimal("20.00"), Decimal("10.00"), "subscription_type"),
                                   ("Web", Decimal("80.00"), Decimal("10.00"), "subscription_type")],
     (Decimal("0.00"), "")),
    ("recurrent", Decimal("166.00"), [("Print", Decimal("20.00"), Decimal("10.00"), "subscription_type"),
                                      ("Web", Decimal("80.00"), Decimal("10.00"), "subscription_type"),
                                      ("Donation", Decimal("66.00"), Decimal("20.00"), "donation")],
     (Decimal("66.00"), "recurrent")),
])
def test_r_rec_21_donations(user, clock, fake_card, settings, donation_type, amount, items, additional):
    settings.DONATION_VAT_RATE = "20"
    subscription_type = make_type("paper", price="100.00", items=[("Print", "20", "10"), ("Web", "80", "10")])
    first = _first_payment_with_donation(user, subscription_type, donation_type)
    assert first.amount == Decimal("166.00")
    row = profile(first)
    clock.move_to(row.charge_at)
    services.charge_due()
    row.refresh_from_db()
    charge = row.payment
    assert charge.amount == amount
    assert list(charge.items.values_list("name", "amount", "vat", "type")) == items
    assert (charge.additional_amount, charge.additional_type) == additional
    # the donation repeats on every later charge too (or never)
    following = profile(charge)
    clock.move_to(following.charge_at)
    services.charge_due()
    following.refresh_from_db()
    assert following.payment.amount == amount


def test_r_rec_21_parent_items_are_copied(user, clock, fake_card):
    subscription_type = make_type("paper", price="100.00", items=[("Print", "20", "10"), ("Web", "80", "10")])
    first = services.create_payment(user=user, gateway="fake_card", subscription_type=subscription_type, items=[
        ItemSpec(name="Print (old name)", amount="20", vat="10", subscription_type_id=subscription_type.pk),
        ItemSpec(name="Web (old name)", amount="80", vat="10", subscription_type_id=subscription_type.pk)])
    services.confirm(payment=first, cid=GOOD_CARD)
    row = profile(first)
    clock.move_to(row.charge_at)
    services.charge_due()
    row.refresh_from_db()
    assert list(row.payment.items.values_list("name", flat=True)) == ["Print (old name)", "Web (old name)"]


def test_r_rec_21_current_items_when_vat_changed(user, clock, fake_card):
    subscription_type = make_type("paper", price="100.00", items=[("Print", "20", "10"), ("Web", "80", "10")])
    row = profile(paid_with_card(user, subscription_type))
    subscription_services.save_subscription_type(
        code="paper", fields={"name": "Paper", "user_label": "Paper", "price": "100.00", "length": 30},
        content_access=[], items=[TypeItem("Print", "20", "5"), TypeItem("Web", "80", "20")])
    clock.move_to(row.charge_at)
    services.charge_due()
    row.refresh_from_db()
    assert list(row.payment.items.values_list("name", "amount", "vat")) == [
        ("Print", Decimal("20.00"), Decimal("5.00")), ("Web", Decimal("80.00"), Decimal("20.00"))]


def test_r_rec_21_new_price_uses_current_items(user, clock, fake_card):
    subscription_type = make_type("paper", price="90.00", items=[("Paper", "90", "10")])
    row = profile(paid_with_card(user, subscription_type))
    subscription_services.save_subscription_type(
        code="paper", fields={"name": "Paper", "user_label": "Paper", "price": "100.00", "length": 30},
        content_access=[], items=[TypeItem("Paper", "100", "10")])
    clock.move_to(row.charge_at)
    services.charge_due()
    row.refresh_from_db()
    assert row.payment.amount == Decimal("100.00")


def test_r_rec_21_custom_amount_is_split_by_price(user, clock, fake_card):
    subscription_type = make_type("paper", price="100.00", items=[("Print", "20", "10"), ("Web", "80", "20")])
    payment = services.create_payment(user=user, gateway="fake_card", subscription_type=subscription_type)
    services.confirm(payment=payment, cid=GOOD_CARD, custom_amount="33.33")
    row = profile(payment)
    clock.move_to(row.charge_at)
    services.charge_due()
    row.refresh_from_db()
    assert row.payment.amount == Decimal("33.33")
    assert list(row.payment.items.values_list("name", "amount", "vat")) == [
        ("Print", Decimal("6.66"), Decimal("10.00")), ("Web", Decimal("26.67"), Decimal("20.00"))]


def test_r_rec_21_item_providers_win(user, clock, fake_card):
    subscription_type = make_type("monthly")
    row = profile(paid_with_card(user, subscription_type))

    def family_items(*, row, subscription_type):
        return [ItemSpec(name="Family seat", amount="4.00", vat="20", count=3)]

    services.register_item_provider(family_items)
    try:
        clock.move_to(row.charge_at)
        services.charge_due()
    finally:
        services.ITEM_PROVIDERS.remove(family_items)
    row.refresh_from_db()
    assert row.payment.amount == Decimal("12.00")
    assert list(row.payment.items.values_list("name", "count")) == [("Family seat", 3)]


# --- the periodic task --------------------------------------------------------------------------------------


def test_charge_run_task(user, monthly, clock, fake_card, settings):
    from masthead.payments import tasks

    settings.CHARGE_RUN_WORKERS = 1  # worker threads would not see this test's transaction
    row = profile(paid_with_card(user, monthly))
    clock.move_to(row.charge_at)
    assert tasks.charge_run.call_local() == {"claimed": 1, "charged": 1}
    assert tasks.charge_run.call_local() == {"claimed": 0}
    assert len(fake_card.charges) == 1


def test_charge_run_task_is_periodic():
    from masthead.payments import tasks

    task = tasks.charge_run.s()

    def validate(when):
        return task.validate_datetime(when)

    assert validate(datetime(2024, 5, 6, 8, 15)) and validate(datetime(2024, 5, 6, 8, 45))
    assert not validate(datetime(2024, 5, 6, 8, 20))
