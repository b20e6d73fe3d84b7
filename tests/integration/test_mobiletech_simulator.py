"""Premium SMS end to end over real HTTP (issue 7, R-MT-2..12): the provider simulator
(``masthead.mobiletech.simulator``) on 127.0.0.1 and our webhook on pytest-django's live server.

Our ``http`` client posts the XML ``send`` command to the simulator (bearer token checked); the
simulator answers with an id and, a moment later, posts its ``status`` reports (``A0`` then ``D1``)
to the webhook (shared secret checked); an inbound SMS is the simulator's ``receive`` injection.
Huey runs inline in tests, so an inbound message is handled, and its billed reply sent, inside the
webhook's request. time-machine moves the wall clock of every thread (live server included) to the
charge times; it leaves the monotonic clock alone, so the simulator's delays and every socket
timeout stay real. Nothing else is faked.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
import time_machine

from masthead import cli
from masthead.core import clock
from masthead.mobiletech import services
from masthead.mobiletech.models import (
    BillingKey,
    InboundMessage,
    KeywordAction,
    OutboundMessage,
    OutboundStatus,
    Template,
)
from masthead.mobiletech.simulator import Rule, Simulator, inject
from masthead.payments import services as payment_services
from masthead.payments.models import Payment, PaymentGateway, RecurrentPayment
from masthead.subscriptions.models import ContentAccess, Subscription
from masthead.subscriptions.services import ItemSpec, save_subscription_type

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

RP = RecurrentPayment
READER = "+421908123456"
SHORT = "8866"
SECRET = "sim-secret"
TOKEN = "sim-token"
WAIT = 15  # seconds for a message or a report to arrive


def eventually(check, timeout: float = WAIT):
    """``check()``'s first truthy value, polled (the reports arrive on other threads)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        time.sleep(0.05)


@pytest.fixture
def sms_catalog(transactional_db):
    """A monthly web subscription bought by texting WEB (billing key BK4, recurring); STOP; receipts."""
    for code, name, recurrent, sorting in (("mobiletech", "Premium SMS", False, 1200),
                                           ("mobiletech_recurrent", "Premium SMS, recurring", True, 1201)):
        # a transactional test may run after another one flushed the seeded rows
        PaymentGateway.objects.get_or_create(code=code, defaults={"name": name, "is_recurrent": recurrent,
                                                                   "sorting": sorting, "meta": {}})
    ContentAccess.objects.get_or_create(name="web")
    monthly, _ = save_subscription_type(code="sms_month", fields={"name": "SMS month", "user_label": "Web month",
                                                                   "price": "4.00", "length": 30},
                                        content_access=["web"], items=[ItemSpec("Web", Decimal("4.00"), Decimal(20))])
    Template.objects.create(code="bought", body="Thanks! {{ subscription_name }} is yours.")
    Template.objects.create(code="stop_confirmation", body="Stopped.")
    Template.objects.create(code="receipt", body="Receipt: {{ amount }} EUR for {{ subscription_name }}.")
    BillingKey.objects.create(code="FREE", amount=Decimal(0))
    bk4 = BillingKey.objects.create(code="BK4", amount=Decimal("4.00"))
    KeywordAction.objects.create(keyword="WEB", subscription_type=monthly, billing_key=bk4, template_code="bought",
                                 recurrent=True)
    KeywordAction.objects.create(keyword="STOP", action=KeywordAction.STOP, template_code="stop_confirmation")
    return monthly


@pytest.fixture
def provider(live_server, settings, sms_catalog):
    """The simulator wired both ways: our client sends to it, it reports to our webhook."""
    webhook = f"http://127.0.0.1:{urlsplit(live_server.url).port}/api/v1/mobiletech/webhook"
    with Simulator(webhook=webhook, delay=0.2, status="A0,D1", token=TOKEN, secret=SECRET) as sim:
        settings.MOBILETECH_CLIENT = "http"
        settings.MOBILETECH_GATEWAY_URL = sim.url
        settings.MOBILETECH_TOKEN = TOKEN
        settings.MOBILETECH_WEBHOOK_SECRET = SECRET
        settings.RECURRENT_PAYMENT_CHARGES = "PT1H, PT6H"
        settings.RECURRENT_CHARGE_BEFORE_HOURS = ""
        yield sim
        sim.wait_idle(WAIT)  # no report may hit the webhook after the test's database is flushed


def text_in(sim: Simulator, text: str, mobiletech_id: str | None = None) -> str:
    mid, status, body = inject(sim.webhook, phone_from=READER, to=SHORT, text=text, mobiletech_id=mobiletech_id,
                               serv_id="42", project_id="7", secret=SECRET)
    assert (status, body) == (200, b'<?xml version="1.0" encoding="UTF-8"?>\n'
                                   + f'<message command="rcv_rsp"><id>{mid}</id></message>'.encode())
    return mid


def reports_of(sim: Simulator, mobiletech_id: str) -> list[tuple[str, int]]:
    return [(r.status, r.http_status) for r in sim.reports if r.id == mobiletech_id]


def history(mobiletech_id: str) -> list[str]:
    return list(OutboundStatus.objects.filter(outbound__mobiletech_id=mobiletech_id).values_list("status", flat=True))


def test_keyword_sms_billed_reply_reports_paid_subscription(provider):
    sim = provider
    mo = text_in(sim, "WEB", mobiletech_id="mo-web-1")
    # the billed reply reached the provider inside the webhook's request (Huey inline)
    [reply] = sim.sent
    assert {k: reply.fields[k] for k in ("serv_id", "project_id", "rcv_msg_id", "from", "to", "billkey", "content",
                                         "content_coding", "esm", "dcs", "expiration", "operator_type")} == {
        "serv_id": "42", "project_id": "7", "rcv_msg_id": mo, "from": SHORT, "to": READER, "billkey": "BK4",
        "content": "Thanks! Web month is yours.", "content_coding": "text", "esm": "0", "dcs": "0",
        "expiration": "100", "operator_type": "O"}
    inbound = InboundMessage.objects.get(mobiletech_id=mo)
    reader = inbound.user
    assert (inbound.result, reader.mobiletech_phone.phone_number) == ("payment started", "0908123456")
    row = OutboundMessage.objects.get(rcv_msg_id=mo)
    assert row.mobiletech_id == reply.id  # the id from the simulator's send_rsp
    # A0 then D1 come back over HTTP: the payment is paid once, the subscription is active
    payment = eventually(lambda: Payment.objects.filter(user=reader, status="paid").first())
    sim.wait_idle(WAIT)
    assert (payment.gateway.code, payment.amount) == ("mobiletech_recurrent", Decimal("4.00"))
    assert reports_of(sim, reply.id) == [("A0", 200), ("D1", 200)]
    assert history(reply.id) == ["A0", "D1"]
    assert OutboundMessage.objects.get(pk=row.pk).status == "D1"
    [subscription] = Subscription.objects.filter(user=reader)
    assert (subscription.subscription_type.code, subscription.internal_status, subscription.is_recurrent) == (
        "sms_month", "active", True)
    assert subscription.start_time <= clock.now() < subscription.end_time
    profile = RP.objects.get(user=reader)
    assert (profile.cid, profile.state, profile.gateway.code) == (mo, "active", "mobiletech_recurrent")
    # the free receipt went out as a push, and nothing else
    assert [(m.fields["billkey"], m.fields["rcv_msg_id"], m.fields["content"]) for m in sim.sent[1:]] == [
        ("FREE", "", "Receipt: 4.00 EUR for Web month.")]
    assert sim.refused == []
    # the provider repeats the receive: stored once, nothing sent again
    text_in(sim, "WEB", mobiletech_id=mo)
    assert InboundMessage.objects.filter(mobiletech_id=mo).count() == 1
    assert (Payment.objects.count(), len(sim.sent)) == (1, 2)


def test_recurring_no_report_times_out_retries_then_succeeds_and_stop_ends_the_chain(provider):
    sim = provider
    mo = text_in(sim, "WEB", mobiletech_id="mo-web-2")
    profile = eventually(lambda: RP.objects.filter(cid=mo, state="active").first())
    sim.wait_idle(WAIT)
    sent_before = len(sim.sent)
    # the operator never reports on this number's next billed push
    sim.rules = [Rule.parse(rf"^\{READER}$:none")]
    with time_machine.travel(profile.charge_at, tick=False) as traveller:
        outcome = payment_services.charge_due()
        assert outcome.claimed == 1
        profile.refresh_from_db()
        assert (profile.state, profile.status) == ("pending", "charge_pending")
        [push] = sim.sent[sent_before:]
        assert {k: push.fields[k] for k in ("rcv_msg_id", "billkey", "expiration", "from", "to", "content")} == {
            "rcv_msg_id": "", "billkey": "BK4", "expiration": "600", "from": SHORT, "to": READER,
            "content": "Thanks! Web month is yours."}
        assert OutboundMessage.objects.get(payment=profile.payment).mobiletech_id == push.id
        time.sleep(0.5)  # well past the simulator's delay: still no report
        assert reports_of(sim, push.id) == []
        # R-MT-12: pending after the timeout → the attempt fails and the retry ladder takes over
        traveller.move_to(profile.charge_at + timedelta(minutes=14))
        assert services.expire_pending_charges() == 0
        traveller.move_to(profile.charge_at + timedelta(minutes=16))
        assert services.expire_pending_charges() == 1
        profile.refresh_from_db()
        assert (profile.state, profile.payment.status) == ("charge_failed", "fail")
        retry = RP.objects.get(state="active")
        assert retry.cid == mo
        assert retry.charge_at == profile.charge_at + timedelta(minutes=16, hours=1)
        # the next attempt is reported as usual
        sim.rules = []
        traveller.move_to(retry.charge_at)
        assert payment_services.charge_due().claimed == 1
        [second] = sim.sent[sent_before + 1:sent_before + 2]
        assert (second.fields["rcv_msg_id"], second.fields["billkey"]) == ("", "BK4")
        eventually(lambda: RP.objects.filter(pk=retry.pk, state="charged").exists())
        sim.wait_idle(WAIT)
        retry.refresh_from_db()
        assert retry.payment.status == "paid"
        assert history(second.id) == ["A0", "D1"]
        assert Subscription.objects.filter(user=profile.user).count() == 2
        assert Payment.objects.filter(user=profile.user, status="paid").count() == 2
        assert history(push.id) == []  # the silent attempt never got a report
        following = RP.objects.get(state="active")
        # STOP from the reader's phone ends the chain and is confirmed by a free SMS
        stop = text_in(sim, "STOP")
        assert InboundMessage.objects.get(mobiletech_id=stop).result == "stopped 1"
        assert RP.objects.get(pk=following.pk).state == "user_stop"
        confirmation = sim.sent[-1]
        assert (confirmation.fields["rcv_msg_id"], confirmation.fields["billkey"], confirmation.fields["content"]) == (
            stop, "FREE", "Stopped.")
        sim.wait_idle(WAIT)
        sent_after_stop = len(sim.sent)
        # nothing is charged at the next period
        traveller.move_to(following.charge_at + timedelta(days=1))
        assert payment_services.charge_due().claimed == 0
        assert len(sim.sent) == sent_after_stop
        assert not RP.objects.filter(state__in=("active", "pending")).exists()
    assert sim.refused == []
    assert all(r.http_status == 200 for r in sim.reports)


def test_command_line_simulator_fail_pattern_and_inject(live_server, settings, sms_catalog, capsys):
    """``masthead mobiletech simulator`` as its own process, a number pattern answering A5 (billing
    failed), and ``masthead mobiletech simulator inject``: the payment fails, no subscription."""
    webhook = f"http://127.0.0.1:{urlsplit(live_server.url).port}/api/v1/mobiletech/webhook"
    command = [sys.executable, "-m", "masthead.cli", "mobiletech", "simulator", "--webhook", webhook, "--delay", "0.1",
               "--fail-pattern", r"^\+421905:A5", "--token", TOKEN, "--secret", SECRET]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: list[str] = []
    try:
        first = proc.stdout.readline()
        lines.append(first)
        found = re.search(r"simulator on (http://127\.0\.0\.1:\d+/)", first)
        assert found, first
        settings.MOBILETECH_CLIENT = "http"
        settings.MOBILETECH_GATEWAY_URL = found.group(1)
        settings.MOBILETECH_TOKEN = TOKEN
        settings.MOBILETECH_WEBHOOK_SECRET = SECRET
        assert cli.main(["mobiletech", "simulator", "inject", "--webhook", webhook, "--from", "+421905111222",
                         "--to", SHORT, "--text", "web", "--id", "mo-cli-1", "--secret", SECRET]) == 0
        assert "receive mo-cli-1 → 200" in capsys.readouterr().out
        reply = OutboundMessage.objects.get(rcv_msg_id="mo-cli-1")
        assert (reply.billkey, reply.operator_type, reply.phone_to) == ("BK4", "O", "+421905111222")
        eventually(lambda: Payment.objects.filter(status="fail").exists())
        assert Payment.objects.get().error_message == "Mobiletech status A5"
        assert history(reply.mobiletech_id) == ["A5"]
        assert not Subscription.objects.exists()
        assert not RP.objects.exists()
        # a wrong secret is refused by the webhook, and nothing is stored
        assert cli.main(["mobiletech", "simulator", "inject", "--webhook", webhook, "--from", "+421905111222",
                         "--to", SHORT, "--text", "web", "--id", "mo-cli-2", "--secret", "wrong"]) == 1
        assert not InboundMessage.objects.filter(mobiletech_id="mo-cli-2").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        lines.append(out)
    log = "".join(lines)
    assert proc.returncode == 0, log
    assert re.search(rf"send #1 \S+: to \+421905111222 from {SHORT} billkey BK4 rcv_msg_id mo-cli-1 .*→ reports A5",
                     log), log
    assert re.search(r"status A5 for \S+ → webhook answered 200", log), log
