"""Notifications on events (issue 6): every event sends each active rule's template to the reader
concerned, rendered in his language, once per (rule, subject, period); readers without a number or
opted out are skipped without breaking anything; the ending reminder is an hourly scan."""

from datetime import timedelta

import pytest

from masthead.core import catalog
from masthead.core.events import emit
from masthead.family import services as family_services
from masthead.family.events import FamilyRequestAccepted
from masthead.family.models import FamilyRequest
from masthead.messaging import dispatcher, notifications, tasks
from masthead.messaging.models import (
    NotificationRule,
    NotificationSent,
    OptOut,
    SmsMessage,
)
from masthead.payments import gateways as payment_gateways
from masthead.payments import services as payment_services
from masthead.payments.events import RecurrentPaymentFailed
from masthead.payments.gateways.fake_card import token_for
from masthead.payments.models import RecurrentPayment
from masthead.subscriptions import services as subscription_services
from masthead.subscriptions.events import SubscriptionStarted
from masthead.subscriptions.models import Subscription, SubscriptionType
from tests.messaging.conftest import NOW

pytestmark = pytest.mark.django_db

GOOD_CARD = token_for("4242424242424242")
SOFT_DECLINE = token_for("4000000000000002")
HARD_DECLINE = token_for("4000000000000069")

TYPES = """\
content_access:
  - {name: web}
  - {name: print}
  - {name: club}
subscription_types:
  - {code: web, name: Web, user_label: Digital, price: "10.00", length: 30, content_access: [web]}
  - {code: print_web, name: Print, user_label: Print and digital, price: "20.00", length: 30,
     content_access: [web, print]}
  - {code: club, name: Club, user_label: Club, price: "0", length: 30, content_access: [club]}
  - {code: fam, name: Family, user_label: Family, price: "50.00", length: 365, content_access: [web]}
  - {code: fam_member, name: Member, user_label: Shared by your family, price: "0", length: 365,
     content_access: [web]}
family_types:
  - {master: fam, slave: fam_member, count: 2}
"""

TEMPLATES = """\
sms_templates:
  - {code: welcome, locale: sk, body: "Vitajte {{ first_name }}, {{ subscription_type }} plati do {{ end_date }}.",
     parameters: [first_name, subscription_type, end_date]}
  - {code: welcome, body: "Welcome {{ first_name }}, {{ subscription_type }} runs until {{ end_date }}.",
     parameters: [first_name, subscription_type, end_date]}
  - {code: ending, body: "{{ first_name }}: {{ subscription_type }} ends {{ end_date }}, in {{ days_left }} days.",
     parameters: [first_name, subscription_type, end_date, days_left]}
  - {code: charge_failed, body: "{{ first_name }}, we could not charge {{ amount }} EUR for {{ subscription_type }}.",
     parameters: [first_name, amount, subscription_type]}
  - {code: family, body: "{{ first_name }}, {{ child_name }} activated {{ code }}: {{ subscription_type }}
       until {{ end_date }}.", parameters: [first_name, child_name, code, subscription_type, end_date]}
"""


def rules_yaml(active=True):
    return TEMPLATES + f"""\
notification_rules:
  - {{code: welcome, event: subscription_started, template_code: welcome, active: {str(active).lower()}}}
  - {{code: ending_7, event: subscription_ending, days: 7, template_code: ending, active: {str(active).lower()}}}
  - {{code: charge_failed, event: recurrent_charge_failed, template_code: charge_failed, transactional: true,
     urgent: true, active: {str(active).lower()}}}
  - {{code: family, event: family_code_activated, template_code: family, active: {str(active).lower()}}}
"""


@pytest.fixture
def types(db):
    catalog.load(TYPES)
    return {t.code: t for t in SubscriptionType.objects.all()}


@pytest.fixture
def rules(types):
    catalog.load(rules_yaml())


@pytest.fixture
def jana(make_user):
    return make_user(email="jana@example.com", phone_number="+421908123456", first_name="Jana", locale="sk")


@pytest.fixture
def fake_card(settings):
    settings.FAKE_CARD_LATENCY_MS = 0
    adapter = payment_gateways.get("fake_card")
    adapter.reset()
    yield adapter
    adapter.reset()


@pytest.fixture
def run(django_capture_on_commit_callbacks):
    """Run an operation and then what its commit triggers (the asynchronous handlers, inline)."""
    def call(operation, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return operation(*args, **kwargs)
    return call


def sms():
    return list(SmsMessage.objects.order_by("pk").values_list("user__email", "body", "notification",
                                                             "transactional", "urgent"))


def guards():
    return list(NotificationSent.objects.order_by("pk").values_list("rule__code", "subject", "period",
                                                                    "message__body"))


def subscribe(user, subscription_type, **kwargs):
    return subscription_services.create_subscription(user=user, subscription_type=subscription_type, **kwargs)


# --- subscription started -----------------------------------------------------------------------------------


def test_started_sends_the_welcome_once_in_the_readers_language(rules, types, jana, make_user, clock, simulated,
                                                                 run):
    subscription = run(subscribe, jana, types["web"])
    english = make_user(email="tom@example.com", phone_number="+421908000111", first_name="Tom", locale="en")
    other = run(subscribe, english, types["print_web"])
    assert sms() == [
        ("jana@example.com", "Vitajte Jana, Digital plati do 05.06.2024.", "welcome", False, False),
        ("tom@example.com", "Welcome Tom, Print and digital runs until 06/05/2024.", "welcome", False, False),
    ]
    assert guards() == [("welcome", f"subscription:{subscription.pk}", "", "Vitajte Jana, Digital plati do 05.06.2024."),
                        ("welcome", f"subscription:{other.pk}", "", "Welcome Tom, Print and digital runs until 06/05/2024.")]
    dispatcher.run(budget_seconds=5)
    assert list(SmsMessage.objects.values_list("status", flat=True)) == ["delivered", "delivered"]


def test_duplicate_started_events_send_once(rules, types, jana, clock, run):
    subscription = run(subscribe, jana, types["web"])
    event = SubscriptionStarted(subscription_id=subscription.pk, user_id=jana.pk)
    run(emit, event)  # the same event again: HandledEvent skips it
    run(emit, SubscriptionStarted(subscription_id=subscription.pk, user_id=jana.pk))  # a new event: the guard
    notifications.on_subscription_started(event)  # a direct call
    assert [body for _email, body, *_ in sms()] == ["Vitajte Jana, Digital plati do 05.06.2024."]
    assert NotificationSent.objects.count() == 1


def test_inactive_rules_send_nothing(types, jana, make_user, clock, run, fake_card):
    catalog.load(rules_yaml(active=False))
    run(subscribe, jana, types["club"], start=NOW - timedelta(days=25), end=NOW + timedelta(days=2))  # started
    assert notifications.scan_ending() == 0  # ends within 7 days
    payment = payment_services.create_payment(user=jana, gateway="fake_card", subscription_type=types["web"])
    run(payment_services.confirm, payment=payment, cid=HARD_DECLINE)  # started
    clock.move_to(RecurrentPayment.objects.get(user=jana).charge_at)
    assert run(payment_services.charge_due).outcomes == {"failed": 1}  # charge failed
    _parent, parent_subscription = family_parent(make_user, types)
    run(family_services.activate, user=jana,
        code=FamilyRequest.objects.filter(master_subscription=parent_subscription).first().code)  # family code
    assert sms() == []
    assert guards() == []


def test_reader_without_phone_is_skipped_and_the_subscription_stands(rules, types, make_user, clock, run):
    reader = make_user(email="nophone@example.com", first_name="Eva")
    subscription = run(subscribe, reader, types["web"])
    assert Subscription.objects.get(pk=subscription.pk).internal_status == "active"
    assert sms() == []
    assert guards() == [("welcome", f"subscription:{subscription.pk}", "", None)]  # decided: not retried


def test_opted_out_reader_gets_no_marketing_but_the_transactional_rule(rules, types, jana, clock, run, fake_card):
    OptOut.objects.create(phone_number=jana.phone_number, created_at=NOW)
    run(subscribe, jana, types["club"])
    assert sms() == []
    payment = payment_services.create_payment(user=jana, gateway="fake_card", subscription_type=types["web"])
    run(payment_services.confirm, payment=payment, cid=HARD_DECLINE)
    row = RecurrentPayment.objects.get(user=jana)
    clock.move_to(row.charge_at)
    run(payment_services.charge_due)
    assert sms() == [("jana@example.com", "Jana, we could not charge 10,00 EUR for Digital.", "charge_failed",
                      True, True)]


def test_renewal_gets_no_welcome_but_more_access_does(rules, types, jana, clock, run):
    first = subscribe(jana, types["web"], start=NOW - timedelta(days=29), end=NOW + timedelta(days=1))
    renewal = run(subscribe, jana, types["web"])  # placed after the first (extend_actual)
    assert renewal.start_time == first.end_time and renewal.internal_status == "before_start"
    clock.move_to(renewal.start_time)
    run(subscription_services.sweep_statuses)
    assert Subscription.objects.get(pk=renewal.pk).internal_status == "active"
    assert sms() == []
    upgrade = run(subscribe, jana, types["print_web"], start=renewal.start_time, end=renewal.end_time)
    assert sms() == [("jana@example.com", "Vitajte Jana, Print and digital plati do 06.06.2024.", "welcome",
                      False, False)]
    assert guards()[0][1] == f"subscription:{upgrade.pk}"


def test_no_welcome_for_a_subscription_already_over(rules, types, jana, clock, run):
    short = subscribe(jana, types["web"], start=NOW + timedelta(hours=1), end=NOW + timedelta(hours=2))
    clock.move_to(NOW + timedelta(hours=3))
    assert run(subscription_services.sweep_statuses).started == 1  # started and ended between two sweeps
    assert Subscription.objects.get(pk=short.pk).internal_status == "after_end"
    assert sms() == []


def test_type_without_notifications_sends_nothing(rules, types, jana, clock, run):
    subscription_services.save_subscription_type(
        code="quiet", fields={"name": "Quiet", "user_label": "Quiet", "price": "0", "length": 30,
                              "disable_notifications": True}, content_access=["web"], items=[])
    run(subscribe, jana, SubscriptionType.objects.get(code="quiet"))
    assert sms() == []


# --- recurring charge failed ----------------------------------------------------------------------------------


def test_charge_failed_for_good_notifies_once_retries_do_not(rules, types, jana, clock, run, fake_card):
    soft = payment_services.create_payment(user=jana, gateway="fake_card", subscription_type=types["web"])
    payment_services.confirm(payment=soft, cid=SOFT_DECLINE)
    row = RecurrentPayment.objects.get(user=jana)
    clock.move_to(row.charge_at)
    assert run(payment_services.charge_due).outcomes == {"retry": 1}  # FailTry: the ladder goes on
    assert sms() == []
    retry = RecurrentPayment.objects.get(user=jana, state="active")
    retry_row = RecurrentPayment.objects.filter(pk=retry.pk)
    retry_row.update(retries=0)  # the last attempt
    clock.move_to(retry.charge_at)
    assert run(payment_services.charge_due).outcomes == {"failed": 1}
    assert sms() == [("jana@example.com", "Jana, we could not charge 10,00 EUR for Digital.", "charge_failed",
                      True, True)]
    assert guards() == [("charge_failed", f"recurrent_payment:{retry.pk}", "",
                         "Jana, we could not charge 10,00 EUR for Digital.")]
    notifications.on_recurrent_charge_failed(
        RecurrentPaymentFailed(recurrent_payment_id=retry.pk, user_id=jana.pk, payment_id=None, code="again"))
    assert SmsMessage.objects.count() == 1


# --- family code activated ---------------------------------------------------------------------------------------


def family_parent(make_user, types, *, phone="+421908555666", locale="en"):
    parent = make_user(email="marta@example.com", phone_number=phone, first_name="Marta", locale=locale)
    payment = payment_services.create_payment(user=parent, gateway="free", subscription_type=types["fam"],
                                              allow_zero_amount=True)
    return parent, payment_services.confirm(payment=payment).subscription


def test_family_code_activated_notifies_the_parent(rules, types, make_user, clock, run):
    catalog.load("notification_rules:\n  - {code: welcome, event: subscription_started, template_code: welcome,"
                 " active: false}\n")
    _parent, subscription = family_parent(make_user, types)
    child = make_user(email="peter@example.com", first_name="Peter", last_name="Kovac", phone_number="+421908777888")
    code = FamilyRequest.objects.filter(master_subscription=subscription).order_by("pk").first()
    request = run(family_services.activate, user=child, code=code.code)
    text = f"Marta, Peter Kovac activated {code.code}: Shared by your family until 05/06/2025."
    assert sms() == [("marta@example.com", text, "family", False, False)]
    assert guards()[0][:3] == ("family", f"family_request:{request.pk}", str(request.slave_subscription_id))
    run(emit, FamilyRequestAccepted(request_id=request.pk, master_subscription_id=subscription.pk,
                                    slave_user_id=child.pk, slave_subscription_id=request.slave_subscription_id,
                                    subscription_type_id=types["fam_member"].pk))  # a duplicate
    assert SmsMessage.objects.count() == 1


def test_family_seat_carried_by_a_renewal_or_taken_by_the_parent_is_not_news(rules, types, make_user, clock, run,
                                                                              settings):
    catalog.load("notification_rules:\n  - {code: welcome, event: subscription_started, template_code: welcome,"
                 " active: false}\n")
    settings.FAMILY_ALLOW_SELF_ACTIVATION = True
    parent, subscription = family_parent(make_user, types)
    first, second = FamilyRequest.objects.filter(master_subscription=subscription).order_by("pk")
    taken = run(family_services.activate, user=parent, code=first.code)
    assert taken.status == "accepted"
    child = make_user(email="peter@example.com", first_name="Peter")
    request = family_services.activate(user=child, code=second.code)
    run(emit, FamilyRequestAccepted(request_id=request.pk, master_subscription_id=subscription.pk,
                                    slave_user_id=child.pk, slave_subscription_id=request.slave_subscription_id,
                                    subscription_type_id=types["fam_member"].pk, renewal=True))
    assert sms() == []
    assert guards() == []


def test_family_parent_without_phone_is_skipped(rules, types, make_user, clock, run):
    catalog.load("notification_rules:\n  - {code: welcome, event: subscription_started, template_code: welcome,"
                 " active: false}\n")
    _parent, subscription = family_parent(make_user, types, phone="")
    child = make_user(email="peter@example.com", first_name="Peter")
    request = run(family_services.activate, user=child,
                  code=FamilyRequest.objects.filter(master_subscription=subscription).first().code)
    assert request.status == "accepted"
    assert sms() == []


# --- subscription ends in N days: the periodic scan -------------------------------------------------------------


def test_ending_scan_respects_the_days_and_sends_once_per_end_date(rules, types, jana, clock):
    subscription = subscribe(jana, types["web"], start=NOW - timedelta(days=20), end=NOW + timedelta(days=10))
    assert tasks.remind_ending_subscriptions.call_local() == 0  # 10 days left, the rule says 7
    clock.move_to(NOW + timedelta(days=3) - timedelta(seconds=1))
    assert notifications.scan_ending() == 0
    clock.move_to(NOW + timedelta(days=3))
    assert tasks.remind_ending_subscriptions.call_local() == 1
    assert notifications.scan_ending() == 0
    clock.move_to(NOW + timedelta(days=5))
    assert notifications.scan_ending() == 0
    assert sms() == [("jana@example.com", "Jana: Digital ends 16.05.2024, in 7 days.", "ending_7", False, False)]
    assert guards() == [("ending_7", f"subscription:{subscription.pk}", "2024-05-16",
                         "Jana: Digital ends 16.05.2024, in 7 days.")]
    # extended: a new end date is a new period
    subscription_services.update_subscription(subscription=subscription, end_time=NOW + timedelta(days=11))
    assert notifications.scan_ending() == 1
    assert [body for _e, body, *_ in sms()][1] == "Jana: Digital ends 17.05.2024, in 6 days."
    assert notifications.scan_ending() == 0
    clock.move_to(NOW + timedelta(days=11))
    assert notifications.scan_ending() == 0  # ended: nothing more
    assert SmsMessage.objects.count() == 2


def test_ending_scan_skips_renewed_and_unreachable_readers(rules, types, make_user, clock, fake_card):
    end = NOW + timedelta(days=5)

    def reader(n, **fields):
        user = make_user(email=f"r{n}@example.com", phone_number=f"+42190800000{n}", first_name=f"R{n}", **fields)
        subscribe(user, types["web"], start=NOW - timedelta(days=25), end=end)
        return user

    renewed = reader(1)
    subscribe(renewed, types["web"])  # starts where the first ends
    upgraded = reader(2)
    subscribe(upgraded, types["print_web"], start=end - timedelta(days=1), end=end + timedelta(days=30))
    downgraded = reader(3)  # the club goes on, the web does not
    subscribe(downgraded, types["club"], start=end, end=end + timedelta(days=30))
    opted_out = reader(4)
    OptOut.objects.create(phone_number=opted_out.phone_number, created_at=NOW)
    no_phone = make_user(email="r5@example.com", first_name="R5")
    subscribe(no_phone, types["web"], start=NOW - timedelta(days=25), end=end)
    inactive = reader(6)
    inactive.is_active = False
    inactive.save()
    future = make_user(email="r7@example.com", phone_number="+421908000007")
    subscribe(future, types["web"], start=NOW + timedelta(days=1), end=end)  # not running yet
    card = make_user(email="r8@example.com", phone_number="+421908000008", first_name="R8")
    clock.move_to(end - timedelta(days=30))
    payment_services.confirm(payment=payment_services.create_payment(
        user=card, gateway="fake_card", subscription_type=types["web"]), cid=GOOD_CARD)  # renews by card
    clock.move_to(NOW)
    assert Subscription.objects.get(user=card).end_time == end
    assert RecurrentPayment.objects.get(user=card).state == "active"

    assert notifications.scan_ending() == 1
    assert [email for email, *_ in sms()] == ["r3@example.com"]
    assert guards() == [
        ("ending_7", f"subscription:{Subscription.objects.get(user=downgraded, subscription_type=types['web']).pk}",
         "2024-05-11", sms()[0][1]),
        ("ending_7", f"subscription:{Subscription.objects.get(user=opted_out).pk}", "2024-05-11", None),
    ]
    assert notifications.scan_ending() == 0  # the opted-out reader is not tried again
    assert NotificationSent.objects.count() == 2


def test_ending_scan_with_inactive_rule_sends_nothing(types, jana, clock):
    catalog.load(rules_yaml(active=False))
    subscribe(jana, types["web"], start=NOW - timedelta(days=25), end=NOW + timedelta(days=2))
    assert notifications.scan_ending() == 0
    assert sms() == []


def test_a_broken_template_leaves_no_guard_and_is_retried(rules, types, jana, clock):
    subscribe(jana, types["web"], start=NOW - timedelta(days=25), end=NOW + timedelta(days=2))
    NotificationRule.objects.filter(code="ending_7").update(template_code="missing")
    assert notifications.scan_ending() == 0
    assert guards() == []
    NotificationRule.objects.filter(code="ending_7").update(template_code="ending")
    assert notifications.scan_ending() == 1
    assert sms()[0][1] == "Jana: Digital ends 08.05.2024, in 2 days."
