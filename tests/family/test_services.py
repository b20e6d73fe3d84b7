"""Family services: generation, activation, release, renewal and cascades (R-FAM-*), on the real
subscription and payment services."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest

from masthead.core import events as bus
from masthead.family import events, services
from masthead.family.models import FamilyRequest, FamilySubscriptionType
from masthead.payments.models import Payment
from masthead.payments.services import ItemSpec
from masthead.subscriptions import services as subscription_services
from masthead.subscriptions.models import Subscription, SubscriptionMeta, SubscriptionTypeName
from tests.family.conftest import NOW, buy, make_type

R = FamilyRequest
pytestmark = pytest.mark.django_db


def codes(parent, status=None):
    rows = FamilyRequest.objects.filter(master_subscription=parent)
    return rows.filter(status=status) if status else rows


def first_code(parent):
    return codes(parent, R.CREATED).order_by("pk").first().code


@pytest.fixture
def recorded():
    seen = []
    handlers = [(kind, seen.append) for kind in (events.FamilyRequestCreated, events.FamilyRequestAccepted,
                                                  events.FamilyRequestCanceled)]
    for kind, handler in handlers:
        bus.subscribe(kind, handler)
    yield seen
    for kind, handler in handlers:
        bus.unsubscribe(kind, handler)


# --- generation ----------------------------------------------------------------------------------


def test_fixed_count_generates_that_many_unique_codes_of_the_child_type(parent, child_type, recorded):
    """R-FAM-3/6/7: count 5 → 5 created codes, 32 characters of 0-9a-z, one event each."""
    rows = list(codes(parent))
    assert len(rows) == 5
    assert {r.status for r in rows} == {R.CREATED}
    assert {r.subscription_type_id for r in rows} == {child_type.pk}
    assert {r.master_user_id for r in rows} == {parent.user_id}
    assert all(re.fullmatch(r"[0-9a-z]{32}", r.code) for r in rows)
    assert len({r.code for r in rows}) == 5
    assert all(r.expires_at is None and r.note == "" and r.slave_user_id is None for r in rows)


def test_a_type_that_is_not_a_master_type_gets_no_codes(make_user, child_type, clock):
    """R-FAM-5: ignored silently."""
    sub = buy(make_user(), child_type).subscription
    assert not FamilyRequest.objects.filter(master_subscription=sub).exists()


def test_generation_is_idempotent_and_counts_every_status(parent):
    """R-FAM-7: target − all existing requests; a second run creates nothing."""
    assert services.generate_requests(parent=parent) == []
    assert codes(parent).count() == 5


def test_a_code_collision_draws_again(make_user, parent_type, clock, monkeypatch):
    """R-FAM-3: the unique constraint catches a collision; the batch is drawn again."""
    owner = make_user()
    existing = buy(owner, parent_type).subscription
    taken = first_code(existing)
    draws = iter([taken] + [f"{n:032d}" for n in range(1, 100)])
    monkeypatch.setattr(services, "new_code", lambda: next(draws))
    second = buy(owner, parent_type).subscription
    assert codes(second).count() == 5
    assert not codes(second).filter(code=taken).exists()


def test_dynamic_count_from_the_payment_item_count(make_user, child_type, clock):
    """R-FAM-8 (REMP example): count 0 and an item of the master type with count 7 → 7 codes."""
    company = make_type("company", price="10.00")
    FamilySubscriptionType.objects.create(master_subscription_type=company, slave_subscription_type=child_type,
                                          count=0)
    payment = buy(make_user(), company, items=[ItemSpec(name="seat", amount=Decimal("10.00"), vat=Decimal("20"),
                                                        count=7, subscription_type_id=company.pk)])
    assert codes(payment.subscription).count() == 7


def test_dynamic_count_prefers_the_payment_meta(make_user, child_type, clock):
    company = make_type("company", price="10.00")
    FamilySubscriptionType.objects.create(master_subscription_type=company, slave_subscription_type=child_type)
    payment = buy(make_user(), company, meta={"family_subscriptions_count": "3"})
    assert codes(payment.subscription).count() == 3


def test_dynamic_count_without_a_payment_is_a_configuration_error(make_user, child_type, clock):
    """R-FAM-8: no payment → no codes (logged), the subscription itself is made."""
    company = make_type("company")
    FamilySubscriptionType.objects.create(master_subscription_type=company, slave_subscription_type=child_type)
    sub = subscription_services.create_subscription(user=make_user(), subscription_type=company)
    assert Subscription.objects.filter(pk=sub.pk).exists()
    assert codes(sub).count() == 0


def test_customizable_parent_takes_the_mix_from_the_items(make_user, clock):
    """R-FAM-9 (REMP example): items naming child types by meta → 5 + 1 codes of two types."""
    web, print_ = make_type("member_web", price="0", items=[]), make_type("member_print", price="0", items=[])
    custom = make_type("company_custom", price="0", items=[])
    FamilySubscriptionType.objects.create(master_subscription_type=custom, slave_subscription_type=None)
    payment = buy(make_user(), custom, items=[
        ItemSpec(name="web seats", amount=Decimal("5.00"), vat=Decimal("20"), count=5,
                 subscription_type_id=custom.pk, meta={"slave_subscription_type_id": web.pk}),
        ItemSpec(name="print seat", amount=Decimal("12.00"), vat=Decimal("10"), count=1,
                 subscription_type_id=custom.pk, meta={"slave_subscription_type_id": print_.pk})])
    mine = codes(payment.subscription)
    assert mine.filter(subscription_type=web).count() == 5
    assert mine.filter(subscription_type=print_).count() == 1


def test_customizable_parent_refuses_its_own_type_as_child(make_user, clock):
    custom = make_type("company_custom", price="1.00")
    FamilySubscriptionType.objects.create(master_subscription_type=custom)
    payment = buy(make_user(), custom)  # the item names the parent's own type
    assert codes(payment.subscription).count() == 0


def test_on_demand_parent_keeps_one_unused_code_until_the_target(make_user, parent_type, clock):
    """R-FAM-10: one code at a time; each acceptance makes the next, up to the count."""
    owner = make_user()
    sub = subscription_services.create_subscription(user=owner, subscription_type=parent_type,
                                                    meta={"on_demand_family_requests": "1"})
    assert codes(sub).count() == 1
    for n in range(5):
        services.activate(user=make_user(), code=first_code(sub))
        assert codes(sub, R.ACCEPTED).count() == n + 1
    assert codes(sub).count() == 5
    assert codes(sub, R.CREATED).count() == 0


# --- activation --------------------------------------------------------------------------------------


def test_activation_copies_the_parents_dates_and_is_paid(parent, make_user, child_type, recorded):
    """R-FAM-11/12: a ``family`` child subscription with the parent's start and end."""
    child_user = make_user(email="kid@example.com")
    code = first_code(parent)
    seat = services.activate(user=child_user, code=code)
    child = seat.slave_subscription
    assert (child.user_id, child.subscription_type_id, child.type) == (child_user.pk, child_type.pk, "family")
    assert (child.start_time, child.end_time) == (parent.start_time, parent.end_time)
    assert child.is_paid is True and child.is_recurrent is False
    seat.refresh_from_db()
    assert (seat.status, seat.slave_user_id, seat.accepted_at, seat.updated_at) == (R.ACCEPTED, child_user.pk, NOW, NOW)
    accepted = [e for e in recorded if isinstance(e, events.FamilyRequestAccepted)]
    assert [(e.request_id, e.slave_subscription_id) for e in accepted] == [(seat.pk, child.pk)]
    assert SubscriptionTypeName.objects.filter(code="family").exists()


def test_is_paid_follows_the_family_type_and_the_child_type_meta(parent_type, child_type, make_user, clock):
    FamilySubscriptionType.objects.filter(master_subscription_type=parent_type).update(is_paid=False)
    sub = buy(make_user(), parent_type).subscription
    assert services.activate(user=make_user(), code=first_code(sub)).slave_subscription.is_paid is False
    child_type.meta.create(key="family_subscription_type_is_paid", value="1")
    assert services.activate(user=make_user(), code=first_code(sub)).slave_subscription.is_paid is True


def test_child_of_a_past_started_parent_starts_with_the_parent(parent, make_user, clock):
    """R-FAM-12: copy even when the parent started in the past."""
    clock.move_to(NOW + timedelta(days=10))
    child = services.activate(user=make_user(), code=first_code(parent)).slave_subscription
    assert child.start_time == NOW


def test_fixed_days_child_starts_now_and_never_outlasts_the_parent(make_user, child_type, clock):
    parent_type = make_type("gift_pack", price="10.00", length=30)
    FamilySubscriptionType.objects.create(master_subscription_type=parent_type, slave_subscription_type=child_type,
                                          donation_method="fixed_days", days=20, count=2)
    sub = buy(make_user(), parent_type).subscription
    clock.move_to(NOW + timedelta(days=15))
    child = services.activate(user=make_user(), code=first_code(sub)).slave_subscription
    assert (child.start_time, child.end_time) == (NOW + timedelta(days=15), sub.end_time)
    FamilySubscriptionType.objects.filter(master_subscription_type=parent_type).update(past_parent_end=True)
    child = services.activate(user=make_user(), code=first_code(sub)).slave_subscription
    assert child.end_time == NOW + timedelta(days=35)


@pytest.mark.parametrize(("method", "meta", "expected_days"), [("days", {"family_subscription_days": "12"}, 12),
                                                              ("fixed", {"family_subscription_fixed_expiration":
                                                                         "2024-05-26T08:00:00+00:00"}, 20)])
def test_meta_driven_parents(make_user, child_type, clock, method, meta, expected_days):
    """R-FAM-12: a parent without a family type row, its method and dates in its meta."""
    plain = make_type("plain_pack")
    sub = subscription_services.create_subscription(user=make_user(), subscription_type=plain, is_paid=True,
                                                    meta={"family_subscription_type": method, **meta})
    seat = FamilyRequest.objects.create(code="m" * 32, master_user_id=sub.user_id, master_subscription=sub,
                                        subscription_type=child_type, created_at=NOW, updated_at=NOW)
    child = services.activate(user=make_user(), code=seat.code).slave_subscription
    assert (child.start_time, child.end_time) == (NOW, NOW + timedelta(days=expected_days))
    assert child.is_paid is True
    with pytest.raises(services.FamilyError) as refused:  # R-FAM-11 (b): days/fixed parents cannot self-use
        FamilyRequest.objects.filter(pk=seat.pk).update(status=R.CREATED)
        services.activate(user=sub.user, code=seat.code)
    assert refused.value.code == "family_request_self_use_forbidden"


def test_unknown_donation_method_is_internal(make_user, child_type, clock):
    """R-FAM-17."""
    plain = make_type("plain_pack")
    sub = subscription_services.create_subscription(user=make_user(), subscription_type=plain,
                                                    meta={"family_subscription_type": "sideways"})
    seat = FamilyRequest.objects.create(code="x" * 32, master_user_id=sub.user_id, master_subscription=sub,
                                        subscription_type=child_type, created_at=NOW, updated_at=NOW)
    with pytest.raises(services.FamilyError) as refused:
        services.activate(user=make_user(), code=seat.code)
    assert (refused.value.code, refused.value.status) == ("internal_server_error", 500)
    assert FamilyRequest.objects.get(pk=seat.pk).status == R.CREATED


def refused(**kwargs):
    with pytest.raises(services.FamilyError) as caught:
        services.activate(**kwargs)
    return caught.value.code, caught.value.status, caught.value.message


def test_every_activation_error_writes_nothing(parent, make_user):
    """R-FAM-11/13: each refusal has its code; no subscription, no change to the request."""
    child_user = make_user(email="kid@example.com")
    code = first_code(parent)
    before = Subscription.objects.count()
    assert refused(user=child_user, code="nope") == (
        "family_request_not_found", 404, "Family request code [nope] not found")
    services.activate(user=child_user, code=code)
    assert refused(user=child_user, code=first_code(parent)) == (
        "family_request_one_per_user", 400,
        "User [kid@example.com] already used company code from this company subscription.")
    assert refused(user=make_user(), code=code) == (
        "family_request_wrong_status", 409, f"Family request code [{code}] has wrong status: accepted")
    inactive = make_user()
    inactive.is_active = False
    inactive.save(update_fields=["is_active"])
    assert refused(user=inactive, code=first_code(parent))[:2] == ("family_request_user_inactive", 403)
    assert Subscription.objects.count() == before + 1


def test_expired_parent_or_code(parent, make_user, clock):
    code = first_code(parent)
    FamilyRequest.objects.filter(code=code).update(expires_at=NOW)
    assert refused(user=make_user(), code=code)[:2] == ("family_request_expired", 400)
    clock.move_to(parent.end_time)
    assert refused(user=make_user(), code=first_code(parent))[:2] == ("family_request_expired", 400)


def test_parent_may_use_his_own_copy_code_unless_configured(parent, settings):
    """R-FAM-11: ordinary copy types allow self-use; FAMILY_ALLOW_SELF_ACTIVATION=0 forbids it."""
    settings.FAMILY_ALLOW_SELF_ACTIVATION = False
    code = first_code(parent)
    assert refused(user=parent.user, code=code)[:2] == ("family_request_self_use_forbidden", 400)
    settings.FAMILY_ALLOW_SELF_ACTIVATION = True
    assert services.activate(user=parent.user, code=code).status == R.ACCEPTED


def test_admin_activation_skips_one_per_user(parent, make_user):
    child_user = make_user()
    services.activate(user=child_user, code=first_code(parent))
    second = services.activate(user=child_user, code=first_code(parent), by_admin=True)
    assert second.status == R.ACCEPTED


def test_opened_at_is_set_once(parent, clock):
    seat = codes(parent).first()
    services.mark_opened(request=seat)
    clock.move_to(NOW + timedelta(hours=1))
    services.mark_opened(request=FamilyRequest.objects.get(pk=seat.pk))
    assert FamilyRequest.objects.get(pk=seat.pk).opened_at == NOW


# --- release, revoke, seats ------------------------------------------------------------------------------


def test_release_ends_the_child_and_replaces_the_code(parent, make_user, clock, recorded):
    """R-FAM-16: canceled (updated_at kept), child stopped now, a fresh code keeps 5 usable."""
    seat = services.activate(user=make_user(), code=first_code(parent))
    clock.move_to(NOW + timedelta(days=3))
    replacement = services.release(request=seat)
    seat.refresh_from_db()
    assert (seat.status, seat.canceled_at, seat.updated_at) == (R.CANCELED, NOW + timedelta(days=3), NOW)
    assert Subscription.objects.get(pk=seat.slave_subscription_id).end_time == NOW + timedelta(days=3)
    assert replacement.status == R.CREATED and replacement.subscription_type_id == seat.subscription_type_id
    assert codes(parent).exclude(status=R.CANCELED).count() == 5
    assert services.release(request=seat) is None  # repeated: no-op
    assert codes(parent).count() == 6
    canceled = [e for e in recorded if isinstance(e, events.FamilyRequestCanceled)]
    assert [e.request_id for e in canceled] == [seat.pk]


def test_parent_revokes_a_seat(parent, make_user, clock):
    holder = make_user()
    seat = services.activate(user=holder, code=first_code(parent))
    stranger = make_user()
    with pytest.raises(services.FamilyError) as caught:
        services.revoke(parent_user=stranger, code=seat.code)
    assert caught.value.code == "family_request_not_found"
    clock.move_to(NOW + timedelta(days=1))
    fresh = services.revoke(parent_user=parent.user, code=seat.code)
    assert FamilyRequest.objects.get(pk=seat.pk).status == R.CANCELED
    assert Subscription.objects.get(pk=seat.slave_subscription_id).end_time == NOW + timedelta(days=1)
    assert fresh.status == R.CREATED
    with pytest.raises(services.FamilyError) as again:
        services.revoke(parent_user=parent.user, code=seat.code)
    assert again.value.code == "family_request_wrong_status"


def test_seat_count_cannot_go_below_the_seats_in_use(parent, make_user):
    for _ in range(3):
        services.activate(user=make_user(), code=first_code(parent))
    with pytest.raises(services.FamilyError) as caught:
        services.set_seats(parent=parent, seats=2)
    assert caught.value.code == "family_seats_in_use"
    assert codes(parent).exclude(status=R.CANCELED).count() == 5
    services.set_seats(parent=parent, seats=3)
    assert (codes(parent, R.ACCEPTED).count(), codes(parent, R.CREATED).count()) == (3, 0)
    services.set_seats(parent=parent, seats=7)
    assert codes(parent, R.CREATED).count() == 4
    assert services.generate_requests(parent=parent) == []


def test_cancel_unused_codes_of_a_parent_user(parent, make_user):
    """R-FAM-4: created → canceled in bulk; accepted ones stay."""
    services.activate(user=make_user(), code=first_code(parent))
    assert services.cancel_unused(master_user=parent.user) == 4
    assert codes(parent, R.CANCELED).count() == 4
    assert codes(parent, R.ACCEPTED).count() == 1


# --- cascades -----------------------------------------------------------------------------------------------


def test_parent_date_change_rewrites_the_children(parent, make_user):
    """R-FAM-18: with copy, every non-canceled child takes the parent's dates."""
    kept = services.activate(user=make_user(), code=first_code(parent))
    released = services.activate(user=make_user(), code=first_code(parent))
    services.release(request=released)
    gone = Subscription.objects.get(pk=released.slave_subscription_id)
    later = parent.end_time + timedelta(days=10)
    subscription_services.update_subscription(subscription=parent, end_time=later)
    assert Subscription.objects.get(pk=kept.slave_subscription_id).end_time == later
    assert Subscription.objects.get(pk=gone.pk).end_time == gone.end_time


def test_parent_stopped_stops_the_children_and_keeps_the_requests(parent, make_user, clock):
    """R-FAM-19."""
    seats = [services.activate(user=make_user(), code=first_code(parent)) for _ in range(2)]
    clock.move_to(NOW + timedelta(days=5))
    subscription_services.stop_subscription(subscription=parent)
    for seat in seats:
        assert Subscription.objects.get(pk=seat.slave_subscription_id).end_time == NOW + timedelta(days=5)
        assert FamilyRequest.objects.get(pk=seat.pk).status == R.ACCEPTED
    assert codes(parent).count() == 5  # no replacement codes: the parent has ended


def test_fixed_days_children_end_with_a_shortened_parent(make_user, child_type, clock):
    parent_type = make_type("gift_pack", price="10.00", length=30)
    FamilySubscriptionType.objects.create(master_subscription_type=parent_type, slave_subscription_type=child_type,
                                          donation_method="fixed_days", days=20, count=1)
    sub = buy(make_user(), parent_type).subscription
    child = services.activate(user=make_user(), code=first_code(sub)).slave_subscription
    clock.move_to(NOW + timedelta(days=2))
    subscription_services.stop_subscription(subscription=sub)
    assert Subscription.objects.get(pk=child.pk).end_time == NOW + timedelta(days=2)


def test_child_stopped_early_frees_its_code(parent, make_user, clock):
    """R-FAM-20: the request is released and a new code replaces it while the parent runs."""
    seat = services.activate(user=make_user(), code=first_code(parent))
    clock.move_to(NOW + timedelta(days=1))
    subscription_services.stop_subscription(subscription=seat.slave_subscription)
    assert FamilyRequest.objects.get(pk=seat.pk).status == R.CANCELED
    assert codes(parent, R.CREATED).count() == 5


# --- renewal (R-FAM-21/22) -----------------------------------------------------------------------------------


def test_renewal_at_the_end_moves_the_children(parent, make_user, parent_type, clock):
    """R-FAM-22 (REMP example): A activated; the next parent starts at the old end → A has two
    subscriptions, the new parent 1 accepted + 4 created; B then activates an old code and gets both."""
    a, b = make_user(email="a@example.com"), make_user(email="b@example.com")
    seat_a = services.activate(user=a, code=first_code(parent))
    Subscription.objects.filter(pk=seat_a.slave_subscription_id).update(note="")
    renewal = buy(parent.user, parent_type).subscription
    assert renewal.start_time == parent.end_time
    assert SubscriptionMeta.objects.get(subscription=parent, key="next_family_subscription_id").value == str(renewal.pk)
    assert (codes(renewal, R.ACCEPTED).count(), codes(renewal, R.CREATED).count()) == (1, 4)
    a_subs = Subscription.objects.filter(user=a).order_by("start_time")
    assert [(s.start_time, s.end_time) for s in a_subs] == [(parent.start_time, parent.end_time),
                                                            (renewal.start_time, renewal.end_time)]
    services.activate(user=b, code=first_code(parent))
    assert Subscription.objects.filter(user=b).count() == 2
    assert (codes(parent, R.CREATED).count(), codes(renewal, R.CREATED).count()) == (3, 3)


def test_renewal_within_the_gap_but_not_outside(parent, make_user, parent_type, clock, settings):
    services.activate(user=make_user(), code=first_code(parent))
    clock.move_to(parent.end_time + timedelta(days=6))
    inside = buy(parent.user, parent_type).subscription
    assert codes(inside, R.ACCEPTED).count() == 1
    clock.move_to(inside.end_time + timedelta(days=8))
    outside = buy(parent.user, parent_type).subscription
    assert codes(outside, R.ACCEPTED).count() == 0
    assert codes(outside, R.CREATED).count() == 5


def test_keep_requests_unactivated(parent, make_user, parent_type):
    services.activate(user=make_user(), code=first_code(parent))
    renewal = buy(parent.user, parent_type, meta={"keep_requests_unactivated": "1"}).subscription
    assert codes(renewal, R.CREATED).count() == 5
    assert not SubscriptionMeta.objects.filter(subscription=parent, key="next_family_subscription_id").exists()


def test_renewal_needs_enough_codes(make_user, child_type, clock):
    """R-FAM-22 step 2: a smaller renewal leaves its codes unused."""
    company = make_type("company", price="10.00")
    FamilySubscriptionType.objects.create(master_subscription_type=company, slave_subscription_type=child_type)
    owner = make_user()
    first = buy(owner, company, meta={"family_subscriptions_count": "3"}).subscription
    for _ in range(3):
        services.activate(user=make_user(), code=first_code(first))
    smaller = buy(owner, company, meta={"family_subscriptions_count": "2"}).subscription
    assert (codes(smaller, R.CREATED).count(), codes(smaller, R.ACCEPTED).count()) == (2, 0)


def test_renewal_copies_the_note_and_address(parent, make_user, parent_type):
    from masthead.users.models import Address

    child_user = make_user()
    address = Address.objects.create(user=child_user, type="print", name="K", street="S", number="1", city="C",
                                     zip="00000", country="SK")
    seat = services.activate(user=child_user, code=first_code(parent))
    Subscription.objects.filter(pk=seat.slave_subscription_id).update(address=address)
    services.set_note(request=seat, note="grandma")
    renewal = buy(parent.user, parent_type).subscription
    moved = codes(renewal, R.ACCEPTED).get()
    assert moved.note == "grandma"
    assert moved.slave_subscription.address_id == address.pk


def test_release_follows_the_chain_forward(parent, make_user, parent_type):
    """R-FAM-21: a seat released on the old parent is released on the renewal too."""
    seat = services.activate(user=make_user(), code=first_code(parent))
    renewal = buy(parent.user, parent_type).subscription
    services.release(request=seat)
    assert codes(renewal, R.ACCEPTED).count() == 0
    assert codes(renewal, R.CREATED).count() == 5
    assert codes(renewal, R.CANCELED).count() == 1


def test_renewal_through_the_recurrent_chain(make_user, clock, settings, child_type):
    """R-FAM-22 (a): the charge payment's recurrent row names the previous parent even when the
    gap rule finds two candidates; R-FAM-30: the charge repeats the 7 seats at the current VAT."""
    from masthead.payments import services as payment_services
    from masthead.payments.gateways.fake_card import token_for

    settings.FAKE_CARD_LATENCY_MS = 0
    settings.FAMILY_RENEWAL_GAP_DAYS = 0
    settings.RECURRENT_CHARGE_BEFORE_HOURS = ""
    settings.FASTCHARGE_THRESHOLD_HOURS = 0
    company = make_type("company", price="10.00")
    FamilySubscriptionType.objects.create(master_subscription_type=company, slave_subscription_type=child_type)
    owner = make_user()
    first = payment_services.confirm(payment=payment_services.create_payment(
        user=owner, gateway="fake_card", subscription_type=company,
        items=[ItemSpec(name="company", amount=Decimal("10.00"), vat=Decimal("20"), count=7,
                        subscription_type_id=company.pk)]), cid=token_for("4242424242424242"))
    holder = make_user()
    services.activate(user=holder, code=first_code(first.subscription))
    other = subscription_services.create_subscription(user=owner, subscription_type=company, start=NOW,
                                                      end=first.subscription.end_time)
    company.items.update(vat=Decimal("10"))
    row = owner.recurrent_payments.get()
    clock.move_to(row.charge_at)
    assert payment_services.charge_due().outcomes == {"charged": 1}
    row.refresh_from_db()
    charge = row.payment
    assert [(i.count, i.amount, i.vat) for i in charge.items.all()] == [(7, Decimal("10.00"), Decimal("10.00"))]
    renewal = charge.subscription
    assert codes(renewal).count() == 7
    assert codes(renewal, R.ACCEPTED).get().slave_user_id == holder.pk
    assert not codes(other).filter(status=R.ACCEPTED).exists()


def test_note_follows_the_chain(parent, make_user, parent_type):
    """R-FAM-23."""
    seat = services.activate(user=make_user(), code=first_code(parent))
    renewal = buy(parent.user, parent_type).subscription
    services.set_note(request=seat, note="x" * 300)
    assert codes(renewal, R.ACCEPTED).get().note == "x" * 255


# --- extension method (R-EXT-7) ---------------------------------------------------------------------------------


def test_extend_family_appends_after_the_running_family_subscription(parent, make_user, parent_type):
    parent_type.extension_method = "extend_family"
    parent_type.save()
    other = make_type("newsletter", extension_method="start_now")
    subscription_services.create_subscription(user=parent.user, subscription_type=other,
                                              end=parent.end_time + timedelta(days=100))
    after = subscription_services.create_subscription(user=parent.user, subscription_type=parent_type)
    assert after.start_time == parent.end_time
    fresh = subscription_services.create_subscription(user=make_user(), subscription_type=parent_type)
    assert fresh.start_time == NOW


def test_renewal_leaves_out_a_reader_no_longer_active(parent, make_user, parent_type):
    kept, gone = make_user(), make_user()
    for reader in (kept, gone):
        services.activate(user=reader, code=first_code(parent))
    gone.is_active = False
    gone.save(update_fields=["is_active"])
    renewal = buy(parent.user, parent_type).subscription
    assert list(codes(renewal, R.ACCEPTED).values_list("slave_user_id", flat=True)) == [kept.pk]
    assert codes(renewal, R.CREATED).count() == 4


def test_a_second_parent_bought_in_advance_does_not_take_the_children_again(parent, make_user, parent_type):
    """R-FAM-22: extend_actual puts two advance purchases on the same start; the first renews."""
    services.activate(user=make_user(), code=first_code(parent))
    first = buy(parent.user, parent_type).subscription
    second = buy(parent.user, parent_type).subscription
    assert first.start_time == second.start_time == parent.end_time
    assert codes(first, R.ACCEPTED).count() == 1
    assert codes(second, R.ACCEPTED).count() == 0
    assert SubscriptionMeta.objects.get(subscription=parent, key="next_family_subscription_id").value == str(first.pk)
