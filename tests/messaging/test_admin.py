"""SMS messaging in the admin: the messages list, filters, search, the read-only message page with its
history and replies, retry and cancel; "Send SMS" (the page, the users list action, the user page
form); batches (count first, then create; progress; cancel); templates (saved by the service, errors on
the form, preview); inbound messages; opt-outs; notification rules; the dashboard and user widgets.

Every change goes through messaging.services or messaging.batches; a refused input is an error and
writes nothing (checked with a snapshot of every messaging table). Time is frozen at
tests.messaging.conftest.NOW (2024-05-06 10:00 UTC, 12:00 in Bratislava). On-commit work (the
dispatcher wake-up, the batch fan-out) does not run inside these tests' transactions: messages stay
queued unless a test runs the dispatcher.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html import unescape

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from masthead.core import widgets
from masthead.messaging import admin as sms_admin
from masthead.messaging import batches, dispatcher, queries, services
from masthead.messaging.models import (
    NotificationRule,
    OptOut,
    SmsBatch,
    SmsMessage,
    SmsStatusChange,
    SmsTemplate,
)
from masthead.subscriptions.models import ContentAccess
from masthead.subscriptions.services import create_subscription, save_subscription_type
from masthead.users.models import User
from tests.messaging.conftest import NOW

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clock", "sms_widgets")]

M = SmsMessage
MESSAGES = "/admin/messaging/smsmessage/"
SEND = f"{MESSAGES}send/"
BATCHES = "/admin/messaging/smsbatch/"
TEMPLATES = "/admin/messaging/smstemplate/"
PREVIEW = f"{TEMPLATES}preview/"
INBOUND = "/admin/messaging/inboundsms/"
OPTOUTS = "/admin/messaging/optout/"
RULES = "/admin/messaging/notificationrule/"
USERS = "/admin/users/user/"


@pytest.fixture
def sms_widgets():
    """The widgets and the users list action, registered once (MessagingConfig.ready does it in the app)."""
    if "messaging.user" not in {w.name for w in widgets.widgets_for("admin.user.detail")}:
        sms_admin.register_widgets()


@pytest.fixture
def boss(make_user):
    return make_user(email="boss@example.com", is_superuser=True, is_staff=True)


@pytest.fixture
def boss_client(client, boss):
    client.force_login(boss)
    return client


def staff_client(make_user, email, *codenames) -> Client:
    member = make_user(email=email, is_staff=True)
    member.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(member)
    return client


@pytest.fixture
def viewer(make_user):
    """Staff who may look at messages and users, and change nothing."""
    return staff_client(make_user, "viewer@example.com", "view_smsmessage", "view_user", "view_smsbatch",
                        "view_smstemplate", "view_optout", "view_inboundsms")


@pytest.fixture
def sender(make_user):
    """Staff who may send (add SMS messages) and see users, but not retry, cancel or add batches."""
    return staff_client(make_user, "sender@example.com", "add_smsmessage", "view_smsmessage", "view_user")


def snapshot():
    """Everything a messaging admin page could write."""
    return (list(M.objects.order_by("pk").values_list("pk", "status", "body", "user_id", "staff_id", "next_attempt_at")),
            list(SmsStatusChange.objects.order_by("pk").values_list("pk", "message_id", "new_status")),
            list(SmsBatch.objects.order_by("pk").values_list("pk", "status", "name")),
            list(SmsTemplate.objects.order_by("pk").values_list("pk", "code", "locale", "body", "updated_at")),
            list(OptOut.objects.order_by("pk").values_list("pk", "phone_number")),
            list(NotificationRule.objects.order_by("pk").values_list("pk", "code")))


def texts(response) -> list[tuple[str, str]]:
    return [(m.level_tag, m.message) for m in response.context["messages"]]


def errors(response) -> list[str]:
    block = re.search(r'<div class="errornote" data-testid="errors">(.*?)</div>', response.content.decode(), re.DOTALL)
    return [unescape(e) for e in re.findall(r"<p>(.*?)</p>", block.group(1), re.DOTALL)] if block else []


def cells(html: str, marker: str) -> list[str]:
    """The text of each cell of the table row containing ``marker``."""
    [row] = [part for part in html.split("<tr")[1:] if marker in part]
    return [" ".join(unescape(re.sub(r"<[^>]+>", " ", c)).split())
            for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.DOTALL)]


def widget(html: str, name: str) -> str:
    match = re.search(rf'<section class="mh-widget" data-widget="{re.escape(name)}">(.*?)</section>', html, re.DOTALL)
    assert match, f"widget {name!r} not rendered"
    return match.group(1)


def by_testid(html: str, name: str) -> str:
    return unescape(re.search(rf'data-testid="{re.escape(name)}"[^>]*>([^<]*)<', html).group(1).strip())


def listed(response) -> list[int]:
    return [row.pk for row in response.context["cl"].result_list]


def send_form(users, **fields) -> dict:
    return {"users": [u.pk for u in users], "body": "", "template": "", "params": "", "send_at": "", "next": "",
            **fields}


def history(message) -> list[tuple[str, str]]:
    return list(SmsStatusChange.objects.filter(message=message).values_list("old_status", "new_status"))


def failed_message(reader, settings, simulated):
    """A message the simulated operator accepted and then failed to deliver."""
    settings.SMS_SIMULATED_FAIL = rf"^\{reader.phone_number}$"
    message = services.queue_sms(user=reader, body="will fail")
    dispatcher.run(budget_seconds=5)
    message.refresh_from_db()
    assert message.status == M.FAILED
    settings.SMS_SIMULATED_FAIL = r"^\+997"
    return message


# --- pages ----------------------------------------------------------------------------------------------


def test_admin_pages_render(boss_client, reader, staff):
    message = services.queue_sms(user=reader, body="Hello", created_by="boss@example.com")
    services.save_template(code="promo", body="Hi {{ first_name }}", parameters=["first_name"])
    batch = batches.create_batch(name="Promo", body="Hi all", user_ids=[reader.pk])
    inbound, _ = services.record_inbound(gateway="simulated", gateway_message_id="in-1", phone_from=reader.phone_number,
                                         text="Thanks")
    services.opt_out(phone_number="+421905000111", source="test")
    rule = NotificationRule.objects.create(code="ending", event=NotificationRule.SUBSCRIPTION_ENDING, days=3,
                                           template_code="promo")
    template = SmsTemplate.objects.get(code="promo")
    out = OptOut.objects.get(phone_number="+421905000111")
    for url in (MESSAGES, f"{MESSAGES}?status__exact=queued", f"{MESSAGES}?gateway=simulated",
                f"{MESSAGES}?batch__id__exact={batch.pk}", f"{MESSAGES}?created_at__gte=2024-05-06+00%3A00%3A00%2B02%3A00",
                f"{MESSAGES}?recipient={reader.pk}", f"{MESSAGES}?q=jana", f"{MESSAGES}{message.pk}/change/",
                f"{SEND}?user={reader.pk}", BATCHES, f"{BATCHES}add/", f"{BATCHES}{batch.pk}/change/", TEMPLATES,
                f"{TEMPLATES}add/", f"{TEMPLATES}{template.pk}/change/", INBOUND, f"{INBOUND}?keyword=none",
                f"{INBOUND}{inbound.pk}/change/", OPTOUTS, f"{OPTOUTS}add/", f"{OPTOUTS}{out.pk}/change/",
                f"{OPTOUTS}{out.pk}/delete/", RULES, f"{RULES}add/", f"{RULES}{rule.pk}/change/", "/admin/",
                f"{USERS}{reader.pk}/change/", f"{USERS}{staff.pk}/change/"):
        assert boss_client.get(url).status_code == 200, url


# --- the messages list ------------------------------------------------------------------------------------


def test_messages_list_columns(boss_client, reader, staff, simulated):
    batch = batches.create_batch(name="Spring", body="Spring offer", user_ids=[reader.pk])
    batches.fan_out(batch.pk)
    delivered = M.objects.get(batch=batch)
    dispatcher.run(budget_seconds=5)
    to_staff = services.queue_sms(staff=staff, body="Ž" * 71, created_by="boss@example.com")
    response = boss_client.get(MESSAGES)
    assert listed(response) == [to_staff.pk, delivered.pk]
    html = response.content.decode()
    assert cells(html, f'value="{to_staff.pk}"')[1:] == [
        str(to_staff.pk), "care@example.com (staff)", "+421905111222", "queued", "2", "May 6, 2024, noon", "-", "-",
        "-", "-", "boss@example.com"]
    assert cells(html, f'value="{delivered.pk}"')[1:] == [
        str(delivered.pk), "reader@example.com", "+421908123456", "delivered", "1", "May 6, 2024, noon",
        "May 6, 2024, noon", "May 6, 2024, noon", "simulated", "Spring", "batch"]
    assert 'data-status="delivered" style="color: #2e7d32"' in html


def test_messages_filters(boss_client, reader, staff, make_user, simulated, clock):
    batch = batches.create_batch(name="Spring", body="Spring offer", user_ids=[reader.pk])
    batches.fan_out(batch.pk)
    in_batch = M.objects.get(batch=batch)
    dispatcher.run(budget_seconds=5)
    clock.move_to(NOW + timedelta(days=1))
    to_staff = services.queue_sms(staff=staff, body="Tomorrow")
    other = services.queue_sms(user=make_user(phone_number="+421902000333"), body="Other")

    def pks(query):
        return listed(boss_client.get(f"{MESSAGES}?{query}"))

    assert pks("status__exact=delivered") == [in_batch.pk]
    assert pks("status__exact=queued") == [other.pk, to_staff.pk]
    assert pks("gateway=simulated") == [in_batch.pk]
    assert pks(f"batch__id__exact={batch.pk}") == [in_batch.pk]
    assert pks("created_at__gte=2024-05-07+00%3A00%3A00%2B02%3A00&created_at__lt=2024-05-08+00%3A00%3A00%2B02%3A00") == [
        other.pk, to_staff.pk]
    assert pks(f"recipient={staff.pk}") == [to_staff.pk]
    assert pks(f"recipient={reader.pk}") == [in_batch.pk]


@pytest.mark.parametrize(("term", "expected"), [
    ("+421908123456", ["reader"]),
    ("0908 123 456", ["reader"]),  # the local form of the number
    ("reader@example", ["reader"]),
    ("care@example.com", ["staff"]),
    ("sim-{reader}", ["reader"]),  # the gateway's id, exactly
    ("sim-", []),
])
def test_messages_search(boss_client, reader, staff, simulated, term, expected):
    to_reader = services.queue_sms(user=reader, body="one")
    to_staff = services.queue_sms(staff=staff, body="two")
    dispatcher.run(budget_seconds=5)
    by_name = {"reader": to_reader.pk, "staff": to_staff.pk}
    response = boss_client.get(MESSAGES, {"q": term.format(reader=to_reader.pk)})
    assert listed(response) == [by_name[name] for name in expected]


def test_message_page_is_read_only_with_history_and_replies(boss_client, reader, simulated):
    message = services.queue_sms(user=reader, body="Renew today?", created_by="boss@example.com")
    dispatcher.run(budget_seconds=5)
    services.record_inbound(gateway="simulated", gateway_message_id="in-1", phone_from="0908 123 456", text="Yes please")
    page = f"{MESSAGES}{message.pk}/change/"
    response = boss_client.get(page)
    html = response.content.decode()
    assert response.context["has_change_permission"] is False
    assert response.context["has_delete_permission"] is False
    assert 'name="_save"' not in html
    # each row: the row's title, at, from, to, detail
    assert [cells(html, f'id="history-{i}"')[1:5] for i in range(4)] == [
        ["May 6, 2024, noon", "-", "queued", "-"], ["May 6, 2024, noon", "queued", "sending", "attempt 1"],
        ["May 6, 2024, noon", "sending", "sent", "accepted by the gateway"],
        ["May 6, 2024, noon", "sent", "delivered", "report: delivered"]]
    assert 'id="history-4"' not in html
    assert "Yes please" in html and "+421908123456" in html
    before = snapshot()
    assert boss_client.post(page, {"body": "changed"}).status_code == 403
    assert boss_client.get(f"{MESSAGES}add/").status_code == 403
    assert boss_client.post(f"{MESSAGES}{message.pk}/delete/", {"post": "yes"}).status_code == 403
    assert snapshot() == before


# --- retry and cancel -------------------------------------------------------------------------------------------


def action_names(response) -> list[str]:
    form = response.context["action_form"]
    return [name for name, _label in form.fields["action"].choices if name] if form is not None else []


def act(client, action, *rows, url=MESSAGES):
    return client.post(url, {"action": action, "_selected_action": [r.pk for r in rows]}, follow=True)


def test_retry_failed(boss_client, reader, make_user, settings, simulated):
    failed = failed_message(reader, settings, simulated)
    queued = services.queue_sms(user=make_user(phone_number="+421902000333"), body="waiting")
    response = act(boss_client, "retry_failed", failed, queued)
    assert texts(response) == [("success", "1 message queued again."),
                               ("warning", "1 selected message had not failed: nothing changed.")]
    failed.refresh_from_db()
    assert (failed.status, failed.next_attempt_at, failed.error_message) == ("queued", NOW, "")
    assert history(failed)[-1] == ("failed", "queued")
    assert SmsStatusChange.objects.filter(message=failed).last().detail == "retried by boss@example.com"
    assert M.objects.get(pk=queued.pk).status == "queued"


def test_cancel_queued(boss_client, reader, staff, simulated):
    first = services.queue_sms(user=reader, body="one", send_at=NOW + timedelta(hours=1))
    second = services.queue_sms(staff=staff, body="two", send_at=NOW + timedelta(hours=1))
    sent = services.queue_sms(user=reader, body="three")
    dispatcher.run(budget_seconds=5)
    response = act(boss_client, "cancel_queued", first, second, sent)
    assert texts(response) == [("success", "2 messages canceled."),
                               ("warning", "1 selected message was not queued: nothing changed.")]
    assert [M.objects.get(pk=m.pk).status for m in (first, second, sent)] == ["canceled", "canceled", "delivered"]
    assert SmsStatusChange.objects.filter(message=first).last().detail == "canceled by boss@example.com"


def test_view_only_staff_cannot_retry_or_cancel(viewer, reader, settings, simulated):
    failed = failed_message(reader, settings, simulated)
    queued = services.queue_sms(user=reader, body="waiting")
    response = viewer.get(MESSAGES)
    assert response.status_code == 200
    assert "retry_failed" not in response.content.decode() and "cancel_queued" not in response.content.decode()
    assert action_names(response) == []
    before = snapshot()
    for action in ("retry_failed", "cancel_queued"):
        response = act(viewer, action, failed, queued)
        assert (response.status_code, texts(response)) == (200, [])  # no action is available: the list again
    assert snapshot() == before


# --- "Send SMS" ------------------------------------------------------------------------------------------------------


def test_send_page_lists_the_recipients(boss_client, reader, make_user):
    no_phone = make_user(email="nophone@example.com")
    out = make_user(email="out@example.com", phone_number="+421902000333")
    services.opt_out(phone_number=out.phone_number)
    response = boss_client.get(SEND, {"user": [reader.pk, no_phone.pk, out.pk]})
    html = response.content.decode()
    assert by_testid(html, "audience") == "1 of 3 chosen readers can receive an SMS."
    assert (by_testid(html, "no-phone"), by_testid(html, "opted-out")) == ("1", "1")
    assert re.findall(r'data-recipient="(\d+)" data-state="(\w+)"', html) == [
        (str(reader.pk), "reachable"), (str(no_phone.pk), "no_phone"), (str(out.pk), "opted_out")]
    assert re.findall(r'<input type="hidden" name="users" value="(\d+)"', html) == [
        str(reader.pk), str(no_phone.pk), str(out.pk)]


def test_send_queues_and_goes_back(boss_client, reader):
    back = f"{USERS}{reader.pk}/change/"
    response = boss_client.post(SEND, send_form([reader], body="  Your paper is at the door.  ", next=back))
    assert response.status_code == 302 and response["Location"] == back
    message = M.objects.get()
    assert (message.user_id, message.staff_id, message.phone_number, message.body, message.status,
            message.created_by, message.next_attempt_at, message.scheduled_at, message.template_id) == (
        reader.pk, None, "+421908123456", "Your paper is at the door.", "queued", "boss@example.com", NOW, None, None)
    assert texts(boss_client.get(back)) == [("success", "1 SMS queued.")]


def test_send_later_with_a_template(boss_client, reader):
    services.save_template(code="code", body="Hi {{ first_name }}, your code is {{ code }}.",
                           parameters=["first_name", "code"], transactional=True)
    response = boss_client.post(SEND, send_form([reader], template="code", params='{"code": "4321"}',
                                                send_at="2024-05-06T18:30"), follow=True)
    message = M.objects.get()
    assert (message.body, message.params, message.scheduled_at, message.next_attempt_at, message.transactional) == (
        "Hi Jana, your code is 4321.", {"code": "4321"},
        NOW + timedelta(hours=6, minutes=30), NOW + timedelta(hours=6, minutes=30), True)  # 18:30 in Bratislava
    assert response.redirect_chain == [(MESSAGES, 302)]
    assert texts(response) == [("success", "1 SMS queued to be sent at May 6, 2024, 6:30 p.m.")]


def test_send_to_several_skips_and_reports(boss_client, reader, staff, make_user):
    no_phone = make_user(email="nophone@example.com")
    out = make_user(email="out@example.com", phone_number="+421902000333")
    services.opt_out(phone_number=out.phone_number)
    gone = make_user(email="gone@example.com", phone_number="+421902000444")
    User.objects.filter(pk=gone.pk).update(is_active=False)  # as unticking "active" in the user's admin form does
    before = M.objects.count()  # the opt-out's confirmation
    response = boss_client.post(SEND, send_form([reader, no_phone, out, staff, gone], body="Hello", next=USERS),
                                follow=True)
    assert texts(response) == [
        ("success", "2 SMS queued."),
        ("warning", ("3 readers skipped: User [nophone@example.com] has no phone number.; "
                    "The number +421902000333 opted out of SMS.; User [gone@example.com] is not active."))]
    sent = M.objects.order_by("pk")[before:]
    assert [(m.user_id, m.staff_id, m.body) for m in sent] == [(reader.pk, None, "Hello"), (None, staff.pk, "Hello")]


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, ["Write a text or choose a template."]),
    ({"body": "   "}, ["Write a text or choose a template."]),
    ({"body": "Hi", "template": "promo"}, ["Write a text or choose a template, not both."]),
    ({"body": "Hi", "params": '{"a": 1}'}, ["Template parameters: Parameters are used with a template only."]),
    ({"template": "promo", "params": "{nope"},
     [("Template parameters: This is not valid JSON: Expecting property name enclosed in double quotes: "
      "line 1 column 2 (char 1)")]),
    ({"template": "promo", "params": "[1]"}, ['Template parameters: Give a JSON object, e.g. {"code": "1234"}.']),
    ({"template": "gone"}, ["Template: Select a valid choice. gone is not one of the available choices."]),
    ({"template": "promo"}, ["The template could not be rendered: 'offer' is undefined"]),
    ({"body": "a" * 1531}, ["Text: The message takes 11 SMS segments; at most 10 are allowed."]),
    ({"body": "Hi", "send_at": "2024-05-06T11:59"},
     ["Send at: This time has passed: choose a later one, or leave it empty to send now."]),
    ({"body": "Hi", "send_at": "tomorrow"}, ["Send at: Enter a valid date/time."]),
    ({"body": "Hi", "users": []}, ["Choose at least one reader."]),
    ({"body": "Hi", "users": ["424242"]}, ["A chosen reader does not exist any more."]),
])
def test_send_refusals_write_nothing(boss_client, reader, fields, expected):
    services.save_template(code="promo", body="Hi {{ offer }}", parameters=["offer"])
    before = snapshot()
    response = boss_client.post(SEND, {**send_form([reader]), **fields})
    assert response.status_code == 200
    assert errors(response) == expected
    assert snapshot() == before


def test_send_to_one_unreachable_reader_is_an_error(boss_client, reader, make_user):
    services.opt_out(phone_number=reader.phone_number)
    no_phone = make_user(email="nophone@example.com")
    before = snapshot()
    assert errors(boss_client.post(SEND, send_form([reader], body="Hi"))) == [
        "The number +421908123456 opted out of SMS."]
    assert errors(boss_client.post(SEND, send_form([no_phone, reader], body="Hi"))) == [
        "The number +421908123456 opted out of SMS.", "User [nophone@example.com] has no phone number."]
    assert snapshot() == before


def test_a_template_error_for_one_reader_writes_nothing(boss_client, reader, make_user):
    """The second reader's language has a template missing a parameter: nobody gets the SMS."""
    slovak = make_user(email="sk@example.com", phone_number="+421902000333", locale="sk")
    services.save_template(code="promo", body="Hi", parameters=[])
    services.save_template(code="promo", locale="sk", body="Ahoj {{ offer }}", parameters=["offer"],
                           sample_params={"offer": "x"})
    before = snapshot()
    response = boss_client.post(SEND, send_form([reader, slovak], template="promo"))
    assert errors(response) == ["The template could not be rendered: 'offer' is undefined"]
    assert snapshot() == before


def test_send_needs_the_add_permission_and_csrf(viewer, sender, reader, make_user):
    before = snapshot()
    assert viewer.get(SEND, {"user": reader.pk}).status_code == 403
    assert viewer.post(SEND, send_form([reader], body="Hi")).status_code == 403
    assert snapshot() == before
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(make_user(email="root@example.com", is_superuser=True, is_staff=True))
    assert strict.post(SEND, send_form([reader], body="Hi")).status_code == 403
    assert snapshot() == before
    assert sender.post(SEND, send_form([reader], body="Hi")).status_code == 302
    assert M.objects.get().created_by == "sender@example.com"


def test_too_many_readers(boss_client, reader, monkeypatch, make_user):
    monkeypatch.setattr(sms_admin, "MAX_RECIPIENTS", 1)
    other = make_user(phone_number="+421902000333")
    before = snapshot()
    response = boss_client.post(SEND, send_form([reader, other], body="Hi"))
    assert errors(response) == ["Send to at most 1 readers at once; for more, create an SMS batch."]
    response = act(boss_client, "send_sms", reader, other, url=USERS)
    assert texts(response) == [("error", "Send to at most 1 readers at once; for more, create an SMS batch.")]
    assert snapshot() == before


def test_users_list_action(boss_client, reader, make_user):
    other = make_user(email="other@example.com")
    changelist = boss_client.get(USERS)
    assert ("send_sms", "Send SMS") in changelist.context["action_form"].fields["action"].choices
    response = boss_client.post(f"{USERS}?q=example", {"action": "send_sms", "_selected_action": [other.pk, reader.pk]})
    assert response.status_code == 200
    html = response.content.decode()
    assert f'action="{SEND}"' in html
    assert re.findall(r'<input type="hidden" name="users" value="(\d+)"', html) == [str(reader.pk), str(other.pk)]
    assert f'name="next" value="{USERS}?q=example"' in html
    assert by_testid(html, "audience") == "1 of 2 chosen readers can receive an SMS."
    assert not M.objects.exists()


def test_users_list_action_only_for_senders(viewer, sender):
    assert action_names(viewer.get(USERS)) == []
    assert action_names(sender.get(USERS)) == ["send_sms"]


def test_register_widgets_twice_changes_nothing():
    from django.contrib import admin

    sms_admin.register_widgets()
    sms_admin.register_widgets()
    assert admin.site.get_model_admin(User).actions.count(sms_admin.send_sms) == 1
    assert [w.name for w in widgets.widgets_for("admin.user.detail")].count("messaging.user") == 1


# --- the user page widget -------------------------------------------------------------------------------------------


def test_user_page_lists_messages_and_has_the_form(boss_client, reader, simulated):
    first = services.queue_sms(user=reader, body="First")
    dispatcher.run(budget_seconds=5)
    second = services.queue_sms(user=reader, body="Second", send_at=NOW + timedelta(days=1))
    services.record_inbound(gateway="simulated", gateway_message_id="in-1", phone_from=reader.phone_number,
                            text="Got it")
    html = widget(boss_client.get(f"{USERS}{reader.pk}/change/").content.decode(), "messaging.user")
    assert "SMS messages (2)" in html
    assert re.findall(r'data-sms="(\d+)" data-status="(\w+)"', html) == [(str(second.pk), "queued"),
                                                                        (str(first.pk), "delivered")]
    assert cells(html, f'data-sms="{first.pk}"')[3:] == ["First", "delivered", "May 6, 2024, noon", "Got it"]
    # the controls belong to a form of their own, added by the script outside the user's form
    for name in ("users", "next", "body", "template", "params", "send_at"):
        assert re.search(rf'name="{name}"[^>]*form="mh-sms-send"', html), name
    assert f'<input type="hidden" name="users" value="{reader.pk}" form="mh-sms-send">' in html
    assert f'<input type="hidden" name="next" value="{USERS}{reader.pk}/change/" form="mh-sms-send">' in html
    assert f'form.action = "{SEND}"' in html


def test_user_page_widget_by_permission(viewer, sender, boss_client, reader, make_user):
    services.queue_sms(user=reader, body="First")
    viewer_html = widget(viewer.get(f"{USERS}{reader.pk}/change/").content.decode(), "messaging.user")
    assert "data-sms=" in viewer_html and 'data-testid="sms-send-form"' not in viewer_html
    sender_html = widget(sender.get(f"{USERS}{reader.pk}/change/").content.decode(), "messaging.user")
    assert 'data-testid="sms-send-form"' in sender_html
    no_phone = make_user(email="nophone@example.com")
    html = widget(boss_client.get(f"{USERS}{no_phone.pk}/change/").content.decode(), "messaging.user")
    assert by_testid(html, "sms-no-phone") == "This user has no phone number: add one to send an SMS."
    services.opt_out(phone_number=reader.phone_number)
    html = widget(boss_client.get(f"{USERS}{reader.pk}/change/").content.decode(), "messaging.user")
    assert by_testid(html, "sms-opted-out") == "The number +421908123456 opted out: only a transactional template reaches it."
    nobody = staff_client(make_user, "nobody@example.com", "view_user")
    assert 'data-widget="messaging.user"' not in nobody.get(f"{USERS}{reader.pk}/change/").content.decode()


def test_user_messages_query_count(reader, staff, django_assert_num_queries):
    for n in range(12):
        services.queue_sms(user=reader, body=f"n{n}")
    services.queue_sms(staff=staff, body="not to the reader")
    with django_assert_num_queries(3):
        result = queries.user_messages(reader, limit=10)
    assert (len(result["messages"]), result["count"]) == (10, 12)
    assert [m.body for m in result["messages"]][:2] == ["n11", "n10"]


# --- the dashboard -----------------------------------------------------------------------------------------------------


def test_dashboard_figures(boss_client, make_user, settings, simulated, clock, django_assert_num_queries):
    settings.SMS_SIMULATED_FAIL = r"^\+421902"
    settings.SMS_SIMULATED_REJECT = r"^\+421903"
    readers = [make_user(phone_number=number) for number in (
        "+421908000001", "+421908000002", "+421908000003", "+421902000001", "+421903000001", "+421908000004")]
    clock.move_to(NOW - timedelta(days=1))  # yesterday: delivered, not counted today
    services.queue_sms(user=readers[0], body="yesterday")
    dispatcher.run(budget_seconds=5)
    clock.move_to(NOW)
    for reader in readers[1:5]:
        services.queue_sms(user=reader, body="today")
    dispatcher.run(budget_seconds=5)  # 2 delivered, 1 failed, 1 rejected
    services.queue_sms(user=readers[5], body="later", send_at=NOW + timedelta(hours=2))  # in the queue
    with django_assert_num_queries(1):
        figures = queries.today(NOW)
    assert figures == {"sent": 3, "delivered": 2, "failed": 2, "queue": 1, "rate": 50.0}
    html = widget(boss_client.get("/admin/").content.decode(), "messaging.today")
    assert [by_testid(html, name) for name in ("sms-sent", "sms-delivered", "sms-failed", "sms-rate", "sms-queue")] == [
        "3", "2", "2", "50 %", "1"]
    # after midnight in Bratislava (22:00 UTC) it is a new day
    assert queries.today(NOW.replace(hour=22)) == {
        "sent": 0, "delivered": 0, "failed": 0, "queue": 1, "rate": None}


def test_dashboard_widget_hidden_without_permission(make_user):
    nobody = staff_client(make_user, "nobody@example.com", "view_user")
    assert 'data-widget="messaging.today"' not in nobody.get("/admin/").content.decode()


# --- batches -------------------------------------------------------------------------------------------------------------


@pytest.fixture
def print_readers(make_user):
    ContentAccess.objects.create(name="print")
    paper, _ = save_subscription_type(code="paper", fields={"name": "p", "user_label": "p", "price": "5",
                                                            "length": 30}, content_access=["print"], items=[])
    readers = [make_user(phone_number=f"+42190800{n:04d}", first_name=f"R{n}") for n in range(3)]
    for reader in readers:
        create_subscription(user=reader, subscription_type=paper)
    services.opt_out(phone_number=readers[0].phone_number)
    return readers


def batch_form(**fields) -> dict:
    return {"name": "Print promo", "readers": "", "content_access": "", "body": "", "template": "", "params": "",
            "send_at": "", **fields}


def test_batch_counts_first_then_sends(boss_client, print_readers):
    before = snapshot()
    response = boss_client.post(f"{BATCHES}add/", batch_form(content_access="print", body="Half price!",
                                                            _preview="Count recipients"))
    html = response.content.decode()
    assert (by_testid(html, "recipient-count"), by_testid(html, "recipient-opted-out")) == (
        "3", "1 of them opted out: skipped unless the template is transactional.")
    assert 'name="_send"' in html and 'value="Send to 3 readers"' in html
    assert '<input type="hidden" name="count" value="3">' in html
    assert snapshot() == before
    response = boss_client.post(f"{BATCHES}add/", batch_form(content_access="print", body="Half price!", count="3",
                                                            _send="Send"), follow=True)
    batch = SmsBatch.objects.get()
    assert response.redirect_chain == [(f"{BATCHES}{batch.pk}/change/", 302)]
    assert texts(response) == [("success", "Batch “Print promo” created for 3 readers.")]
    assert (batch.name, batch.body, batch.content_access, batch.user_ids, batch.total, batch.created_by,
            batch.status) == ("Print promo", "Half price!", "print", [], 3, "boss@example.com", "fanning_out")


def test_batch_to_listed_readers_by_id_and_email(boss_client, print_readers, make_user):
    plain = make_user(email="plain@example.com", phone_number="+421902000333")
    readers = f"{print_readers[1].pk}, PLAIN@example.com\n{print_readers[1].pk}"
    response = boss_client.post(f"{BATCHES}add/", batch_form(readers=readers, body="Hi"))
    assert by_testid(response.content.decode(), "recipient-count") == "2"
    boss_client.post(f"{BATCHES}add/", batch_form(readers=readers, body="Hi", count="2", _send="Send"))
    assert SmsBatch.objects.get().user_ids == sorted([print_readers[1].pk, plain.pk])


def test_batch_with_a_changed_count_shows_it_first(boss_client, print_readers):
    before = snapshot()
    response = boss_client.post(f"{BATCHES}add/", batch_form(content_access="print", body="Hi", count="5",
                                                            _send="Send"))
    html = response.content.decode()
    assert by_testid(html, "notice") == "The number of recipients has changed: check it and send again."
    assert by_testid(html, "recipient-count") == "3"
    assert snapshot() == before


@pytest.mark.parametrize(("fields", "expected"), [
    ({"name": "", "content_access": "print", "body": "Hi"}, ["Name: This field is required."]),
    ({"body": "Hi"}, ["Readers: Choose the readers: their ids or e-mails, or a content access."]),
    ({"readers": "{r1}", "content_access": "print", "body": "Hi"},
     ["Or readers with access to: Choose readers or a content access, not both."]),
    ({"readers": "{r1} nobody@example.com 424242", "body": "Hi"},
     ["Readers: Unknown readers: 424242, nobody@example.com"]),
    ({"readers": "{r1} Jana", "body": "Hi"}, ["Readers: Not a reader id or e-mail: Jana"]),
    ({"content_access": "web", "body": "Hi"},
     ["Or readers with access to: Select a valid choice. web is not one of the available choices."]),
    ({"content_access": "print"}, ["Write a text or choose a template."]),
    ({"content_access": "print", "template": "promo"},
     ["Template: The template could not be rendered: 'offer' is undefined"]),
    ({"content_access": "print", "body": "Hi", "send_at": "2024-05-01T10:00"},
     ["Send at: This time has passed: choose a later one, or leave it empty to send now."]),
])
def test_batch_refusals_write_nothing(boss_client, print_readers, fields, expected):
    services.save_template(code="promo", body="Hi {{ first_name }}, {{ offer }}", parameters=["first_name", "offer"])
    fields = {k: v.format(r1=print_readers[1].pk) for k, v in fields.items()}
    before = snapshot()
    for step in ({"_preview": "Count"}, {"_send": "Send", "count": "3"}):
        response = boss_client.post(f"{BATCHES}add/", {**batch_form(), **fields, **step})
        assert response.status_code == 200
        assert errors(response) == expected
        assert 'data-testid="audience"' not in response.content.decode()
    assert snapshot() == before


def test_batch_without_recipients_is_refused(boss_client, make_user):
    ContentAccess.objects.create(name="print")
    before = snapshot()
    response = boss_client.post(f"{BATCHES}add/", batch_form(content_access="print", body="Hi"))
    html = response.content.decode()
    assert by_testid(html, "recipient-count") == "0" and 'name="_send"' not in html
    response = boss_client.post(f"{BATCHES}add/", batch_form(content_access="print", body="Hi", count="0",
                                                            _send="Send"))
    assert errors(response) == ["No reader would receive this batch."]
    assert snapshot() == before


def test_batch_progress_and_cancel(boss_client, print_readers):
    batch = batches.create_batch(name="Print promo", body="Half price!", content_access="print",
                                 send_at=NOW + timedelta(hours=1))
    batches.fan_out(batch.pk)
    services.cancel(message=M.objects.filter(batch=batch).first())
    page = f"{BATCHES}{batch.pk}/change/"
    html = boss_client.get(page).content.decode()
    assert [by_testid(html, name) for name in ("status", "total", "fanned-out", "skipped", "progress")] == [
        "queued", "3", "2", "1", "100 %"]
    assert (by_testid(html, "count-queued"), by_testid(html, "count-canceled"), by_testid(html, "count-delivered")) == (
        "1", "1", "0")
    assert f'href="{MESSAGES}?batch__id__exact={batch.pk}"' in html
    assert 'data-testid="cancel"' in html
    cancel = f"{BATCHES}{batch.pk}/cancel/"
    assert f'action="{cancel}"' in html
    assert boss_client.get(cancel).status_code == 405
    assert boss_client.post(page).status_code == 405  # the progress page only shows
    response = boss_client.post(cancel, follow=True)
    assert response.redirect_chain == [(page, 302)]
    assert texts(response) == [("success", "Batch canceled: 1 queued message canceled.")]
    assert batches.counts(batch)["canceled"] == 2
    html = response.content.decode()
    assert by_testid(html, "count-canceled") == "2" and 'data-testid="cancel"' not in html


def test_batch_permissions(viewer, sender, print_readers):
    batch = batches.create_batch(name="Print promo", body="Half price!", content_access="print")
    before = snapshot()
    html = viewer.get(f"{BATCHES}{batch.pk}/change/").content.decode()
    assert 'data-testid="cancel"' not in html
    assert viewer.post(f"{BATCHES}{batch.pk}/cancel/").status_code == 403
    assert viewer.get(f"{BATCHES}add/").status_code == 403
    assert viewer.post(f"{BATCHES}add/", batch_form(content_access="print", body="x", count="3",
                                                    _send="Send")).status_code == 403
    assert sender.get(f"{BATCHES}{batch.pk}/change/").status_code == 403
    assert snapshot() == before


# --- templates ----------------------------------------------------------------------------------------------------------


def template_form(**fields) -> dict:
    return {"code": "renewal", "locale": "", "body": "Hi {{ first_name }}, renew by {{ end_date }}.",
            "description": "Renewal reminder", "parameters": "first_name, end_date",
            "sample_params": '{"first_name": "Jana", "end_date": "31. 5."}', "max_segments": "2",
            "transactional": "", "active": "on", **fields}


def test_template_add_and_change_through_the_service(boss_client):
    response = boss_client.post(f"{TEMPLATES}add/", template_form(), follow=True)
    template = SmsTemplate.objects.get()
    assert response.redirect_chain[-1] == (TEMPLATES, 302)
    assert (template.code, template.locale, template.body, template.parameters, template.sample_params,
            template.max_segments, template.transactional, template.active, template.description) == (
        "renewal", "", "Hi {{ first_name }}, renew by {{ end_date }}.", ["first_name", "end_date"],
        {"first_name": "Jana", "end_date": "31. 5."}, 2, False, True, "Renewal reminder")
    page = f"{TEMPLATES}{template.pk}/change/"
    html = boss_client.get(page).content.decode()
    assert 'name="parameters" value="first_name, end_date"' in html
    assert by_testid(html, "preview-text") == "Hi Jana, renew by 31. 5.."
    assert by_testid(html, "preview-info") == "GSM-7, 25 characters, 1 segment"
    assert 'name="code"' not in html  # code and language are read-only once saved
    boss_client.post(page, template_form(code="other", locale="sk", body="Ahoj {{ first_name }}!"))
    template.refresh_from_db()
    assert (template.code, template.locale, template.body) == ("renewal", "", "Ahoj {{ first_name }}!")
    assert SmsTemplate.objects.count() == 1


@pytest.mark.parametrize(("fields", "expected"), [
    ({"body": "Hi {{ first_name"}, ("Text: The template is not valid: syntax error: unexpected end of template, "
                                    "expected 'end of print statement'.")),
    ({"body": "Hi {{ nickname }}"}, "Text: The template is not valid: unknown variables: nickname"),
    ({"body": "x" * 200 + "{{ first_name }}{{ end_date }}"},
     "Text: The template is not valid: 2 segments with the sample parameters, at most 1"),
    ({"parameters": "first_name, end-date"}, "Parameters: Not a parameter name: end-date"),
    ({"sample_params": '["Jana"]'}, 'Sample parameters: Give a JSON object, e.g. {"code": "1234"}.'),
    ({"max_segments": "11"}, "Maximum segments: Ensure this value is less than or equal to 10."),
    ({"code": "sms_promo"}, "SMS template with this Code and Language already exists."),
    ({"code": "bad code"}, "Code: Enter a valid “slug” consisting of letters, numbers, underscores or hyphens."),
])
def test_template_errors_on_the_form_write_nothing(boss_client, fields, expected):
    services.save_template(code="sms_promo", body="Promo")
    before = snapshot()
    response = boss_client.post(f"{TEMPLATES}add/", {**template_form(max_segments="1"), **fields})
    assert response.status_code == 200
    form = response.context["adminform"].form
    lines = [f"{form.fields[name].label}: {e}" if name != "__all__" else e
             for name, errs in form.errors.items() for e in errs]
    assert lines == [expected]
    assert snapshot() == before


def test_template_preview_endpoint(boss_client):
    def preview(**fields):
        return boss_client.post(PREVIEW, {"parameters": "name", "sample_params": '{"name": "Jana"}',
                                          "max_segments": "1", **fields})

    assert preview(body="Hi {{ name }}").json() == {
        "ok": True, "error": "", "text": "Hi Jana", "encoding": "gsm7", "encoding_label": "GSM-7", "units": 7,
        "segments": 1, "max_segments": 1, "summary": "GSM-7, 7 characters, 1 segment"}
    unicode = preview(body="Ahoj {{ name }} 😀" + "ž" * 60, max_segments="3").json()
    assert (unicode["encoding"], unicode["units"], unicode["segments"], unicode["ok"]) == ("ucs2", 72, 2, True)
    too_long = preview(body="{{ name }}" + "€" * 80).json()
    assert (too_long["ok"], too_long["segments"], too_long["error"]) == (
        False, 2, "The template is not valid: 2 segments with the sample parameters, at most 1")
    unknown = preview(body="Hi {{ who }}").json()
    assert (unknown["ok"], unknown["text"], unknown["error"]) == (
        False, "", "The template is not valid: unknown variables: who")
    missing = preview(body="Hi {{ name }}", sample_params="{}").json()
    assert (missing["ok"], missing["text"]) == (True, "Hi name")
    bad = preview(body="Hi", sample_params="[")
    assert bad.status_code == 400 and bad.json()["ok"] is False
    assert boss_client.get(PREVIEW).status_code == 405
    assert not SmsTemplate.objects.exists()


def test_template_preview_permission_and_csrf(viewer, make_user):
    assert viewer.post(PREVIEW, {"body": "Hi"}).status_code == 403
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(make_user(email="root@example.com", is_superuser=True, is_staff=True))
    assert strict.post(PREVIEW, {"body": "Hi"}).status_code == 403


def test_template_view_only_and_no_delete(viewer, boss_client):
    template, _ = services.save_template(code="promo", body="Hi")
    before = snapshot()
    assert viewer.post(f"{TEMPLATES}{template.pk}/change/", template_form(body="changed")).status_code == 403
    assert viewer.post(f"{TEMPLATES}add/", template_form()).status_code == 403
    assert boss_client.post(f"{TEMPLATES}{template.pk}/delete/", {"post": "yes"}).status_code == 403
    assert snapshot() == before


# --- inbound messages, opt-outs, notification rules -----------------------------------------------------------------------


def test_inbound_list_is_read_only(boss_client, reader, simulated):
    message = services.queue_sms(user=reader, body="Renew today?")
    dispatcher.run(budget_seconds=5)
    reply, _ = services.record_inbound(gateway="simulated", gateway_message_id="in-1", phone_from="0908123456",
                                       text="Yes please")
    stop, _ = services.record_inbound(gateway="simulated", gateway_message_id="in-2", phone_from="+421902000333",
                                      text=" stop ")
    response = boss_client.get(INBOUND)
    assert listed(response) == [stop.pk, reply.pk]  # newest first, then the higher id
    html = response.content.decode()
    assert cells(html, f'href="{INBOUND}{reply.pk}/change/"') == [
        "+421908123456", "reader@example.com", "Yes please", "May 6, 2024, noon", f"#{message.pk} Renew today?", "-",
        "simulated"]
    assert cells(html, f'href="{INBOUND}{stop.pk}/change/"') == [
        "+421902000333", "-", "stop", "May 6, 2024, noon", "-", "STOP", "simulated"]
    assert f'href="{MESSAGES}{message.pk}/change/"' in html
    assert listed(boss_client.get(INBOUND, {"keyword": "stop"})) == [stop.pk]
    assert listed(boss_client.get(INBOUND, {"keyword": "none"})) == [reply.pk]
    assert listed(boss_client.get(INBOUND, {"q": "0902 000 333"})) == [stop.pk]
    before = snapshot()
    assert boss_client.get(f"{INBOUND}add/").status_code == 403
    assert boss_client.post(f"{INBOUND}{reply.pk}/change/", {"text": "x"}).status_code == 403
    assert boss_client.post(f"{INBOUND}{reply.pk}/delete/", {"post": "yes"}).status_code == 403
    assert snapshot() == before


def test_opt_out_added_by_number_and_deleted_to_opt_in(boss_client, reader):
    response = boss_client.post(f"{OPTOUTS}add/", {"phone_number": "0908 123 456"}, follow=True)
    assert response.status_code == 200
    out = OptOut.objects.get()
    assert (out.phone_number, out.source, out.created_at) == ("+421908123456", "admin boss@example.com", NOW)
    assert not M.objects.exists()  # staff record it: no SMS to a bare number from the admin
    assert cells(boss_client.get(OPTOUTS).content.decode(), f'value="{out.pk}"')[1:] == [
        "+421908123456", "reader@example.com", "admin boss@example.com", "May 6, 2024, noon"]
    response = boss_client.post(f"{OPTOUTS}{out.pk}/delete/", {"post": "yes"}, follow=True)
    assert response.status_code == 200
    assert not OptOut.objects.exists()
    assert not M.objects.exists()


def test_opt_out_bulk_delete_opts_in(boss_client):
    for number in ("+421902000001", "+421902000002"):
        services.opt_out(phone_number=number)
    response = act(boss_client, "delete_selected", *OptOut.objects.all(), url=OPTOUTS)
    assert response.status_code == 200
    boss_client.post(OPTOUTS, {"action": "delete_selected", "post": "yes",
                               "_selected_action": list(OptOut.objects.values_list("pk", flat=True))})
    assert not OptOut.objects.exists()
    assert M.objects.filter(body=services.START_CONFIRMATION).count() == 0  # the two STOP confirmations only
    assert M.objects.filter(body=services.STOP_CONFIRMATION).count() == 2


@pytest.mark.parametrize(("number", "expected"), [
    ("12", "Not a valid phone number: 12"),
    ("hello", "Not a phone number: hello"),
    ("", "This field is required."),
    ("+421 908 123 456", "The number +421908123456 has already opted out."),
])
def test_opt_out_refusals_write_nothing(boss_client, number, expected):
    services.opt_out(phone_number="+421908123456")
    before = snapshot()
    response = boss_client.post(f"{OPTOUTS}add/", {"phone_number": number})
    assert response.context["adminform"].form.errors == {"phone_number": [expected]}
    assert snapshot() == before


def test_opt_out_is_not_edited(boss_client, viewer):
    services.opt_out(phone_number="+421908123456")
    out = OptOut.objects.get()
    before = snapshot()
    assert boss_client.post(f"{OPTOUTS}{out.pk}/change/", {"phone_number": "+421902000001"}).status_code == 403
    assert viewer.post(f"{OPTOUTS}{out.pk}/delete/", {"post": "yes"}).status_code == 403
    assert viewer.post(f"{OPTOUTS}add/", {"phone_number": "+421902000001"}).status_code == 403
    assert snapshot() == before


def test_notification_rule_admin(boss_client):
    response = boss_client.post(f"{RULES}add/", {"code": "ending_3", "event": "subscription_ending", "days": "3",
                                                 "template_code": "ending", "active": "on"})
    assert response.status_code == 302
    rule = NotificationRule.objects.get()
    assert (rule.code, rule.event, rule.days, rule.template_code, rule.transactional, rule.urgent, rule.active) == (
        "ending_3", "subscription_ending", 3, "ending", False, False, True)


def test_pages_use_a_fixed_number_of_queries(boss_client, reader, make_user):
    def count(url):
        with CaptureQueriesContext(connection) as captured:
            assert boss_client.get(url).status_code == 200
        return len(captured)

    services.queue_sms(user=reader, body="one")
    few = (count(MESSAGES), count(f"{USERS}{reader.pk}/change/"), count("/admin/"))
    for n in range(5):
        services.queue_sms(user=make_user(phone_number=f"+42190200{n:04d}"), body="more")
        services.queue_sms(user=reader, body=f"again {n}")
    assert (count(MESSAGES), count(f"{USERS}{reader.pk}/change/"), count("/admin/")) == few


def test_send_page_json_params_are_kept_on_error(boss_client, reader):
    services.save_template(code="promo", body="Hi {{ offer }}", parameters=["offer"])
    response = boss_client.post(SEND, send_form([reader], template="promo", params='{"offer": "50 %"}',
                                                body="also text"))
    html = response.content.decode()
    assert errors(response) == ["Write a text or choose a template, not both."]
    assert json.loads(unescape(re.search(r'name="params"[^>]*>(.*?)</textarea>', html, re.DOTALL).group(1))) == {
        "offer": "50 %"}
