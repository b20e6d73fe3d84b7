"""The real Kannel with its fake operator (``../shared/kannel/``): delivery reports, inbound messages,
STOP, Unicode — end to end through sendsms, fakesmsc and our webhooks on pytest-django's live server.

A private Kannel per module (own state dir, free ports), started with the recipe's ``start.sh`` and
stopped with its ``stop.sh``. Its MO service calls ``<live server>/sms/kannel/mo?secret=…``: the
recipe's config template with the secret added to the ``get-url`` query (as a deployment's own
kannel.conf does). Our messages carry a ``dlr-url`` to ``<live server>/sms/kannel/dlr``.
Huey runs inline in tests, so queueing a message dispatches it at commit, and an inbound STOP is
processed (and its confirmation sent) inside the webhook's request.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

import pytest

from masthead.core import clock
from masthead.messaging import dispatcher, services
from masthead.messaging.models import InboundSms, OptOut, SmsMessage, SmsStatusChange
from tests.conftest import require_service

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

M = SmsMessage
PROJECT_ROOT = Path(__file__).resolve().parents[2]
RECIPE = Path(os.environ.get("KANNEL_RECIPE_DIR") or next(
    (p for p in (PROJECT_ROOT.parent / "shared" / "kannel", Path("/work/shared/kannel")) if (p / "start.sh").exists()),
    PROJECT_ROOT.parent / "shared" / "kannel"))
SECRET = f"kannel-it-{uuid.uuid4().hex}"
PHONE = "+421908123456"
SHORT_NUMBER = "55555"
WAIT = 20  # seconds for an SMS, a report or an inbound message to arrive
START_TIMEOUT = 600  # start.sh may install the Debian packages first


class Kannel:
    def __init__(self, state: Path, env: dict):
        self.state, self.env = state, env
        values = dict(line.strip().split("=", 1) for line in (state / "run" / "kannel.env").read_text().splitlines()
                      if "=" in line)
        self.sendsms_url = f"http://127.0.0.1:{values['KANNEL_SENDSMS_PORT']}/cgi-bin/sendsms"
        self.username, self.password = values["KANNEL_SENDSMS_USER"], values["KANNEL_SENDSMS_PASS"]

    def inject(self, sender: str, receiver: str, text: str, ucs2: bool = False) -> None:
        """An inbound SMS from ``sender``, through fakesmsc."""
        cmd = [str(RECIPE / "inject-mo.sh"), *(["-u"] if ucs2 else []), sender, receiver, text]
        subprocess.run(cmd, env=self.env, check=True, capture_output=True, timeout=30)

    def mts(self) -> list[tuple[str, str, str, str]]:
        """The MTs fakesmsc received: (from, to, kind, text), UCS-2 decoded."""
        log = (self.state / "log" / "fakesmsc.out").read_text(encoding="utf-8", errors="replace")
        found = []
        for sender, to, kind, data in re.findall(r"Got message \d+: <(\S+) (\S+) (text|ucs-2) (.*)>$", log, re.M):
            if kind == "ucs-2":
                data = unquote_to_bytes(data.replace("+", " ")).decode("utf-16-be")
            found.append((sender, to, kind, data))
        return found

    def report_sections(self):
        for name in ("fakesmsc.out", "smsbox.log", "bearerbox.log"):
            path = self.state / "log" / name
            text = path.read_text(errors="replace") if path.exists() else "(none)"
            yield f"kannel {name} (tail)", "\n".join(text.splitlines()[-40:])


def _conf_template(directory: Path) -> Path:
    """The recipe's template with our secret in the MO service's URL query."""
    source = (RECIPE / "kannel.conf.tmpl").read_text()
    marker = 'get-url = "${KANNEL_MO_URL}?from='
    assert marker in source, "the recipe's MO get-url changed"
    target = directory / "kannel.conf.tmpl"
    target.write_text(source.replace(marker, f'get-url = "${{KANNEL_MO_URL}}?secret={SECRET}&from='))
    return target


@pytest.fixture(scope="module")
def kannel(live_server, tmp_path_factory):
    require_service(f"Kannel recipe ({RECIPE})", (RECIPE / "start.sh").is_file())
    base = f"http://127.0.0.1:{urlsplit(live_server.url).port}"
    work = tmp_path_factory.mktemp("kannel")
    state = work / "state"
    env = dict(os.environ, KANNEL_STATE_DIR=str(state), KANNEL_ADMIN_PORT="0", KANNEL_SMSBOX_PORT="0",
               KANNEL_FAKE_PORT="0", KANNEL_SENDSMS_PORT="0", KANNEL_MO_URL=f"{base}/sms/kannel/mo",
               KANNEL_CONF_TEMPLATE=str(_conf_template(work)))
    try:
        started = subprocess.run([str(RECIPE / "start.sh")], env=env, capture_output=True, text=True,
                                 timeout=START_TIMEOUT, stdin=subprocess.DEVNULL)
        ok = started.returncode == 0
        why = (started.stderr or started.stdout).strip()[-500:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        ok, why = False, str(exc)
    try:
        require_service(f"Kannel (start.sh: {why})" if not ok else "Kannel", ok)
        yield Kannel(state, env)
    finally:
        subprocess.run([str(RECIPE / "stop.sh")], env=env, capture_output=True, timeout=60)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(autouse=True)
def through_kannel(kannel, live_server, settings):
    settings.SMS_GATEWAY = "kannel"
    settings.KANNEL_SENDSMS_URL = kannel.sendsms_url
    settings.KANNEL_USERNAME, settings.KANNEL_PASSWORD = kannel.username, kannel.password
    settings.KANNEL_TIMEOUT_SECONDS = 10
    settings.SMS_PUBLIC_URL = f"http://127.0.0.1:{urlsplit(live_server.url).port}"
    settings.SMS_WEBHOOK_SECRET = SECRET
    settings.SMS_SENDER = "Masthead"
    settings.SMS_QUIET_HOURS = ""


@pytest.fixture
def reader(make_user):
    return make_user(email="reader@example.com", phone_number=PHONE, first_name="Jana")


def wait_for(what: str, probe, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def status_of(message) -> str:
    return M.objects.get(pk=message.pk).status


def statuses(message) -> list[str]:
    return list(SmsStatusChange.objects.filter(message=message).order_by("id").values_list("new_status", flat=True))


def test_a_message_is_delivered_and_its_report_moves_it_to_delivered(kannel, reader):
    text = f"Your paper is ready {uuid.uuid4().hex[:8]}"
    message = services.queue_sms(user=reader, body=text)  # dispatched through Kannel at commit
    wait_for("the delivery report", lambda: status_of(message) == "delivered")
    message = M.objects.get(pk=message.pk)
    assert (message.gateway, message.gateway_message_id, message.attempts, message.error_message) == (
        "kannel", str(message.pk), 1, "")
    assert message.sent_at is not None and message.delivered_at is not None
    assert statuses(message) == ["queued", "sending", "sent", "delivered"]
    assert SmsStatusChange.objects.get(message=message, new_status="delivered").detail == "kannel dlr 1"
    got = wait_for("the MT at fakesmsc", lambda: [mt for mt in kannel.mts() if mt[3] == text])
    assert got == [("Masthead", PHONE, "text", text)]


def test_an_inbound_sms_is_linked_as_a_reply(kannel, reader):
    tag = uuid.uuid4().hex[:8]
    question = services.queue_sms(user=reader, body=f"Shall we renew your subscription? {tag}")
    wait_for("the delivery report", lambda: status_of(question) == "delivered")
    time.sleep(1.1)  # Kannel stamps an inbound SMS in whole seconds (%T): let it come after our sent_at
    kannel.inject(PHONE, SHORT_NUMBER, f"Yes please {tag}")
    row = wait_for("the inbound SMS, processed", lambda: InboundSms.objects.filter(
        text=f"Yes please {tag}", processed_at__isnull=False).first())
    assert (row.gateway, row.phone_from, row.phone_to, row.user_id, row.reply_to_id, row.keyword) == (
        "kannel", PHONE, SHORT_NUMBER, reader.pk, question.pk, "")
    assert re.fullmatch(r"[0-9a-f-]{36}", row.gateway_message_id)
    assert list(question.replies.values_list("pk", flat=True)) == [row.pk]
    assert not OptOut.objects.exists()
    time.sleep(1.5)  # fakesmsc logs MTs up to ~1 s late: the webhook's answer must not come back as an SMS
    assert [mt for mt in kannel.mts() if mt[1] == PHONE and tag in mt[3]] == [
        ("Masthead", PHONE, "text", f"Shall we renew your subscription? {tag}")]


def test_stop_opts_out_and_marketing_is_rejected_without_reaching_kannel(kannel, reader):
    tag = uuid.uuid4().hex[:8]
    before = services.queue_sms(user=reader, body=f"Offer one {tag}", send_at=clock.now() + timedelta(seconds=3))
    assert status_of(before) == "queued"  # scheduled: not sent yet
    kannel.inject(PHONE, SHORT_NUMBER, " Stop ")
    optout = wait_for("the opt-out", lambda: OptOut.objects.filter(phone_number=PHONE).first())
    assert optout.source.startswith("inbound ")
    confirmation = M.objects.get(phone_number=PHONE, transactional=True)
    assert confirmation.body == services.STOP_CONFIRMATION
    wait_for("the confirmation delivered", lambda: status_of(confirmation) == "delivered")

    with pytest.raises(services.SmsError) as refused:
        services.queue_sms(user=reader, body=f"Offer two {tag}")
    assert refused.value.code == "opted_out"
    assert not M.objects.filter(body=f"Offer two {tag}").exists()

    wait_for("the scheduled offer to fall due", lambda: clock.now() >= before.next_attempt_at, timeout=10)
    dispatcher.run(budget_seconds=10)
    before = M.objects.get(pk=before.pk)
    assert (before.status, before.error_message, before.gateway_message_id, before.sent_at) == (
        "rejected", "opted_out", None, None)
    assert statuses(before) == ["queued", "sending", "rejected"]

    wait_for("the confirmation at fakesmsc", lambda: [mt for mt in kannel.mts() if mt[3] == services.STOP_CONFIRMATION])
    time.sleep(1.5)  # fakesmsc logs MTs up to ~1 s late
    assert [mt for mt in kannel.mts() if tag in mt[3]] == []
    assert [mt[3] for mt in kannel.mts() if mt[3] == services.STOP_CONFIRMATION] == [services.STOP_CONFIRMATION]


def test_unicode_arrives_intact_both_ways(kannel, reader):
    tag = uuid.uuid4().hex[:6]
    text = f"Ďakujeme, že čítate 😀 {tag}"
    message = services.queue_sms(user=reader, body=text)
    assert (message.encoding, message.segments) == ("ucs2", 1)
    wait_for("the delivery report", lambda: status_of(message) == "delivered")
    got = wait_for("the MT at fakesmsc", lambda: [mt for mt in kannel.mts() if tag in mt[3]])
    assert got == [("Masthead", PHONE, "ucs-2", text)]  # UTF-16BE in fakesmsc's log, decoded here
    time.sleep(1.1)  # inbound times are whole seconds: the replies must come after our sent_at

    for ucs2, reply in ((False, f"Ďakujem pekne ✓ {tag}"), (True, f"Грация 😀 {tag}")):
        kannel.inject(PHONE, SHORT_NUMBER, reply, ucs2=ucs2)
        row = wait_for(f"the inbound SMS {reply!r}", lambda: InboundSms.objects.filter(text=reply).first())
        assert (row.phone_from, row.user_id, row.reply_to_id) == (PHONE, reader.pk, message.pk)
    assert sorted(InboundSms.objects.values_list("text", flat=True)) == sorted(
        [f"Ďakujem pekne ✓ {tag}", f"Грация 😀 {tag}"])
