"""Premium SMS end to end through the webhook: a keyword buys a subscription by a billed reply and
its report; a recurring charge pushes a billed SMS, times out, retries and succeeds; STOP ends the
chain; carrier caps; every webhook input class (R-MT-1..12)."""

from datetime import timedelta
from decimal import Decimal

import pytest

from masthead.mobiletech import services
from masthead.mobiletech.models import BillingKey, InboundMessage, OutboundMessage, OutboundStatus, PhoneNumber
from masthead.payments import services as payment_services
from masthead.payments.models import Payment, RecurrentPayment
from masthead.subscriptions.models import Subscription
from tests.mobiletech.conftest import NOW, post_xml, receive_xml, status_xml

pytestmark = pytest.mark.django_db(transaction=False)
RP = RecurrentPayment


@pytest.fixture
def run_commits(django_capture_on_commit_callbacks):
    """Run what the code schedules after commit (Huey tasks are immediate in tests)."""
    def run(fn, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)
    return run


def buy_by_sms(client, run_commits, mid="mo-1"):
    response = run_commits(post_xml, client, receive_xml(mid))
    assert response.status_code == 200
    return response


def test_keyword_billed_reply_report_paid_subscription(client, catalog, silent, clock, run_commits):
    response = buy_by_sms(client, run_commits)
    assert response["Content-Type"] == "application/xml; charset=utf-8"
    assert response.content == (b'<?xml version="1.0" encoding="UTF-8"?>\n'
                                b'<message command="rcv_rsp"><id>mo-1</id></message>')
    inbound = InboundMessage.objects.get()
    assert (inbound.phone_from, inbound.phone_to, inbound.serv_id, inbound.operator_type, inbound.result) == (
        "+421908123456", "8866", "42", "O", "payment started")
    reader = inbound.user
    assert reader.mobiletech_phone.phone_number == "0908123456"
    payment = Payment.objects.get(user=reader)
    assert (payment.gateway.code, payment.status, payment.amount) == ("mobiletech_recurrent", "form", Decimal("4.00"))
    assert dict(payment.meta.values_list("key", "value")) == {
        "mobiletech_billkey": "BK4", "mobiletech_inbound_message_id": str(inbound.pk),
        "mobiletech_template_code": "bought",
        "mobiletech_template_params": '{"subscription_name": "Web month", "price": "4"}'}
    reply = OutboundMessage.objects.get(payment=payment)
    assert (reply.rcv_msg_id, reply.billkey, reply.phone_to, reply.phone_from, reply.serv_id, reply.expiration,
            reply.mobiletech_id, reply.operator_type) == (
        "mo-1", "BK4", "+421908123456", "8866", "42", 100, f"mt-{reply.pk}", "O")
    # the operator bills the reader and reports A0
    response = run_commits(post_xml, client, status_xml(reply.mobiletech_id, "A0"))
    assert (response.status_code, response.content.endswith(
        f'<message command="status_rsp"><id>{reply.mobiletech_id}</id></message>'.encode())) == (200, True)
    payment.refresh_from_db()
    assert payment.status == "paid"
    subscription = Subscription.objects.get(user=reader)
    assert (subscription.start_time, subscription.subscription_type.code) == (NOW, "sms_month")
    profile = RP.objects.get(user=reader)
    assert (profile.cid, profile.state, profile.gateway.code) == ("mo-1", "active", "mobiletech_recurrent")
    receipt = OutboundMessage.objects.exclude(pk=reply.pk).get()
    assert (receipt.content, receipt.billkey, receipt.rcv_msg_id) == ("Receipt: 4.00 EUR for Web month.", "FREE", "")


def test_recurring_charge_times_out_retries_and_succeeds(client, catalog, silent, clock, run_commits, settings):
    settings.RECURRENT_PAYMENT_CHARGES = "PT1H, PT6H"
    settings.RECURRENT_CHARGE_BEFORE_HOURS = ""
    buy_by_sms(client, run_commits)
    reply = OutboundMessage.objects.get(rcv_msg_id="mo-1")
    run_commits(post_xml, client, status_xml(reply.mobiletech_id, "D1"))
    profile = RP.objects.get()
    clock.move_to(profile.charge_at)
    run_commits(payment_services.charge_due)
    profile.refresh_from_db()
    assert (profile.state, profile.status) == ("pending", "charge_pending")
    push = OutboundMessage.objects.get(payment=profile.payment)
    assert (push.rcv_msg_id, push.billkey, push.expiration, push.phone_from, push.content) == (
        "", "BK4", 600, "8866", "Thanks! Web month is yours.")  # R-MT-11: the original template
    # no report: after 15 minutes the attempt fails and the retry ladder takes over
    clock.move_to(profile.charge_at + timedelta(minutes=14))
    assert services.expire_pending_charges() == 0
    clock.move_to(profile.charge_at + timedelta(minutes=15))
    assert run_commits(services.expire_pending_charges) == 1
    profile.refresh_from_db()
    assert (profile.state, profile.payment.status) == ("charge_failed", "fail")
    retry = RP.objects.get(state="active")
    assert retry.charge_at == profile.charge_at + timedelta(minutes=15) + timedelta(hours=1)
    # a late report for the failed attempt changes nothing
    run_commits(post_xml, client, status_xml(push.mobiletech_id, "A0"))
    assert RP.objects.get(pk=profile.pk).state == "charge_failed"
    # the retry goes through
    clock.move_to(retry.charge_at)
    run_commits(payment_services.charge_due)
    retry.refresh_from_db()
    second_push = OutboundMessage.objects.get(payment=retry.payment)
    run_commits(post_xml, client, status_xml(second_push.mobiletech_id, "A0"))
    retry.refresh_from_db()
    assert (retry.state, retry.payment.status) == ("charged", "paid")
    assert Subscription.objects.filter(user=profile.user).count() == 2


def test_stop_ends_the_chain_and_confirms(client, catalog, silent, clock, run_commits):
    buy_by_sms(client, run_commits)
    reply = OutboundMessage.objects.get(rcv_msg_id="mo-1")
    run_commits(post_xml, client, status_xml(reply.mobiletech_id, "A0"))
    run_commits(post_xml, client, receive_xml("mo-2", content=" stop "))
    assert RP.objects.get().state == "user_stop"
    assert InboundMessage.objects.get(mobiletech_id="mo-2").result == "stopped 1"
    confirmation = OutboundMessage.objects.filter(rcv_msg_id="mo-2").get()
    assert (confirmation.content, confirmation.billkey) == ("Stopped.", "FREE")


def test_failed_report_fails_the_payment(client, catalog, silent, clock, run_commits):
    buy_by_sms(client, run_commits)
    reply = OutboundMessage.objects.get(rcv_msg_id="mo-1")
    run_commits(post_xml, client, status_xml(reply.mobiletech_id, "A5"))
    assert Payment.objects.get().status == "fail"
    assert not Subscription.objects.exists()
    run_commits(post_xml, client, status_xml(reply.mobiletech_id, "A0"))  # too late: the payment is settled
    assert Payment.objects.get().status == "fail"
    assert list(OutboundStatus.objects.values_list("status", flat=True)) == ["A5", "A0"]
    assert OutboundMessage.objects.get(pk=reply.pk).status == "A0"  # the last report wins on the message


def test_o2_d0_counts_as_delivered(client, catalog, silent, clock, run_commits):
    run_commits(post_xml, client, receive_xml("mo-1", sender="+421940123456", operator="2"))
    reply = OutboundMessage.objects.get(rcv_msg_id="mo-1")
    run_commits(post_xml, client, status_xml(reply.mobiletech_id, "D0"))
    assert Payment.objects.get().status == "paid"


def test_duplicate_receive_is_stored_once(client, catalog, silent, clock, run_commits):
    for _ in range(3):
        assert run_commits(post_xml, client, receive_xml("mo-1")).status_code == 200
    assert InboundMessage.objects.count() == 1
    assert Payment.objects.count() == 1
    assert OutboundMessage.objects.count() == 1


def test_carrier_caps(client, catalog, silent, clock, run_commits, settings):
    settings.MOBILETECH_MONTHLY_CAP = "10.00"
    for n in range(3):
        run_commits(post_xml, client, receive_xml(f"mo-{n}"))
    results = list(InboundMessage.objects.order_by("pk").values_list("result", flat=True))
    assert results == ["payment started", "payment started", "payment failed"]
    assert OutboundMessage.objects.filter(billkey="BK4").count() == 2
    assert Payment.objects.order_by("pk").last().error_message == "This number would exceed the monthly limit of 10.00."
    BillingKey.objects.create(code="BIG", amount=Decimal("60.00"))
    with pytest.raises(services.MobiletechError) as refused:
        services.send(template_code="bought", billkey="BIG", phone="+421908123456")
    assert refused.value.code == "charge_cap"


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "malformed XML"),
    (b"<message command='receive'><id>1</id>", "malformed XML"),
    (b"not xml at all", "malformed XML"),
    (b'<!DOCTYPE m [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><message command="receive">'
     b"<id>&b;</id><from>+421908123456</from></message>", "malformed XML"),
    (b'<!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]><message command="receive"><id>&x;</id>'
     b"<from>+421908123456</from></message>", "malformed XML"),
    (b'<message command="deliver"><id>1</id></message>', "unknown command: deliver"),
    (b"<msg command='receive'><id>1</id></msg>", "the root element must be"),
    (b'<message command="receive"><from>+421908123456</from></message>', "missing field: id"),
    (b'<message command="receive"><id>1</id></message>', "missing field: from"),
    (b'<message command="status"><id>1</id></message>', "missing field: status"),
    (b'<message command="receive"><id>' + b"9" * 101 + b"</id><from>+421908123456</from></message>",
     "field id is too long"),
])
def test_bad_webhook_bodies_write_nothing(client, catalog, body, reason):
    response = post_xml(client, body)
    assert response.status_code == 400
    assert reason in response.content.decode()
    assert not InboundMessage.objects.exists()
    assert not OutboundStatus.objects.exists()


def test_unknown_outbound_and_out_of_order_status(client, catalog, silent, clock, run_commits):
    assert post_xml(client, status_xml("nope", "D1")).status_code == 404
    buy_by_sms(client, run_commits)
    reply = OutboundMessage.objects.get(rcv_msg_id="mo-1")
    run_commits(post_xml, client, status_xml(reply.mobiletech_id, "D1"))
    run_commits(post_xml, client, status_xml(reply.mobiletech_id, "A0"))  # the billing report after delivery
    assert Payment.objects.get().status == "paid"
    assert Subscription.objects.count() == 1


def test_secret_and_allowlist(client, catalog, settings):
    settings.MOBILETECH_WEBHOOK_SECRET = "s3cret"
    assert post_xml(client, receive_xml("mo-1")).status_code == 403
    assert client.generic("POST", "/api/v1/mobiletech/webhook?secret=wrong", receive_xml("mo-1").encode(),
                          CONTENT_TYPE="application/xml").status_code == 403
    assert post_xml(client, receive_xml("mo-1"), HTTP_X_WEBHOOK_SECRET="s3cret").status_code == 200
    settings.MOBILETECH_ALLOWED_IPS = "10.0.0.0/8"
    assert post_xml(client, receive_xml("mo-2"), HTTP_X_WEBHOOK_SECRET="s3cret").status_code == 403
    assert InboundMessage.objects.count() == 1


def test_phone_numbers_and_login(client, make_user, catalog):
    reader = make_user(email="jana@example.com", password="correct-horse-1")
    services.link_phone(user=reader, phone_number="+421 908 123 456")
    with pytest.raises(services.MobiletechError) as taken:
        services.link_phone(user=make_user(), phone_number="0908123456")
    assert taken.value.code == "phone_exists"
    with pytest.raises(services.MobiletechError) as foreign:
        services.link_phone(user=make_user(), phone_number="+420601123456")
    assert foreign.value.code == "not_slovak"
    assert PhoneNumber.objects.count() == 1
    for identifier in ("0908123456", "+421908123456", "00421 908 123 456"):
        response = client.post("/api/v1/users/login", {"email": identifier, "password": "correct-horse-1"})
        assert response.status_code == 200, identifier
        assert response.json()["user"]["email"] == "jana@example.com"
    refused = client.post("/api/v1/users/login", {"email": "0908123456", "password": "wrong"})
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_credential")
    assert client.login(username="+421908123456", password="correct-horse-1")


def test_a_reader_with_that_account_number_buys_on_his_account(client, catalog, silent, clock, run_commits, make_user):
    """A number not linked for premium SMS yet, but the account's own phone number: his account."""
    jana = make_user(email="jana@example.com", phone_number="+421908123456")
    buy_by_sms(client, run_commits)
    assert InboundMessage.objects.get().user_id == jana.pk
    assert Payment.objects.get().user_id == jana.pk
    assert PhoneNumber.objects.get().user_id == jana.pk
