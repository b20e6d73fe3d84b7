"""Premium SMS in the admin (R-MT-2..5, 13, 15, 18): phone numbers added through services.link_phone, read-only
inbound and outbound messages (statuses with their meaning, the delivery reports), templates with the preview,
billing keys and keyword actions checked like the catalog, the admin user page widget; a superuser and a staff
member who may only look. A refused input is a form error and writes nothing.

The ``history`` fixture: jana@example.com owns 0908123456 and bought the SMS month by texting WEB (inbound
mo-1, Orange); the billed reply got A0 then D1, the payment is paid and a free receipt went out (no report
yet); an unknown O2 number wrote HELLO (not processed) and got a free push reported D0 (delivered on O2).
Time is frozen at tests.mobiletech.conftest.NOW.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from html import unescape

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from masthead.core import widgets
from masthead.mobiletech import admin as mt_admin
from masthead.mobiletech import services
from masthead.mobiletech.models import (
    BillingKey,
    InboundMessage,
    KeywordAction,
    OutboundMessage,
    OutboundStatus,
    PhoneNumber,
    Template,
)
from masthead.payments.models import Payment

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clock")]

ADMIN = "/admin/mobiletech/"
PHONES, INBOUND, OUTBOUND = f"{ADMIN}phonenumber/", f"{ADMIN}inboundmessage/", f"{ADMIN}outboundmessage/"
TEMPLATES, KEYS, KEYWORDS = f"{ADMIN}template/", f"{ADMIN}billingkey/", f"{ADMIN}keywordaction/"
PREVIEW = f"{TEMPLATES}preview/"
VIEW_PERMISSIONS = ("view_phonenumber", "view_inboundmessage", "view_outboundmessage", "view_template",
                    "view_billingkey", "view_keywordaction", "view_user")


@pytest.fixture(autouse=True)
def widget():
    """The user page widget, registered once (the app config calls register_widgets() in production)."""
    if "mobiletech.user" not in {w.name for w in widgets.widgets_for("admin.user.detail")}:
        mt_admin.register_widgets()


@pytest.fixture
def staff(make_user):
    return make_user(email="boss@example.com", is_superuser=True, is_staff=True)


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def client_with(make_user, *codenames, email="viewer@example.com") -> Client:
    viewer = make_user(email=email, is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(viewer)
    return client


@pytest.fixture
def viewer(make_user):
    """A staff member who may look at everything of premium SMS and at users, and change nothing."""
    return client_with(make_user, *VIEW_PERMISSIONS)


@pytest.fixture
def history(user, catalog, silent, django_capture_on_commit_callbacks):
    services.link_phone(user=user, phone_number="0908123456")
    with django_capture_on_commit_callbacks(execute=True):
        services.receive(mobiletech_id="mo-1", phone_from="+421908123456", phone_to="8866", content="WEB",
                         serv_id="42", project_id="7", content_coding="text", operator_type="O",
                         receive_date=services.parse_receive_date("2405061200001"))
    reply = OutboundMessage.objects.get(rcv_msg_id="mo-1")
    for code in ("A0", "D1"):
        with django_capture_on_commit_callbacks(execute=True):
            services.record_status(mobiletech_id=reply.mobiletech_id, status=code)
    stranger, _created = services.receive(mobiletech_id="mo-2", phone_from="+421940111222", phone_to="8866",
                                          content="HELLO there", serv_id="42", operator_type="2")
    with django_capture_on_commit_callbacks(execute=True):
        push = services.send(template_code="stop_confirmation", phone="+421940111222", push=True)
    with django_capture_on_commit_callbacks(execute=True):
        services.record_status(mobiletech_id=f"mt-{push.pk}", status="D0")
    return {"reader": user, "inbound": InboundMessage.objects.get(mobiletech_id="mo-1"), "stranger": stranger,
            "reply": reply, "receipt": OutboundMessage.objects.get(rcv_msg_id="", user=user),
            "push": OutboundMessage.objects.get(pk=push.pk), "payment": Payment.objects.get(user=user)}


def cells(html: str, marker: str) -> list[str]:
    """The text of each cell of the one table row containing ``marker``."""
    [row] = [part for part in html.split("<tr")[1:] if marker in part]
    return [unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.DOTALL)]


def listed(response) -> list:
    return list(response.context["cl"].result_list)


def form_errors(response) -> dict:
    return {name: list(errors) for name, errors in response.context["adminform"].form.errors.items()}


def widget_html(html: str) -> str | None:
    match = re.search(r'<section class="mh-widget" data-widget="mobiletech.user">(.*?)</section>', html, re.DOTALL)
    return match.group(1) if match else None


def snapshot():
    """Everything the premium SMS forms could write."""
    return (list(PhoneNumber.objects.order_by("pk").values_list("pk", "phone_number", "user_id")),
            list(Template.objects.order_by("pk").values_list("pk", "code", "body", "description")),
            list(BillingKey.objects.order_by("pk").values_list("pk", "code", "amount", "description", "active")),
            list(KeywordAction.objects.order_by("pk").values_list("pk", "keyword", "action", "subscription_type_id",
                                                                  "billing_key_id", "template_code", "recurrent",
                                                                  "active")))


# --- pages ------------------------------------------------------------------------------------------------------


def test_admin_pages_render(staff_client, history):
    inbound, reply = history["inbound"], history["reply"]
    template, key = Template.objects.get(code="bought"), BillingKey.objects.get(code="BK4")
    keyword, phone = KeywordAction.objects.get(keyword="WEB"), PhoneNumber.objects.get()
    for url in (PHONES, f"{PHONES}add/", f"{PHONES}{phone.pk}/change/", f"{PHONES}?q=jana",
                INBOUND, f"{INBOUND}?operator=O", f"{INBOUND}?operator=__none__", f"{INBOUND}?processed=yes",
                f"{INBOUND}?q=WEB", f"{INBOUND}{inbound.pk}/change/",
                OUTBOUND, f"{OUTBOUND}?status=A0", f"{OUTBOUND}?billkey=BK4", f"{OUTBOUND}?operator=2",
                f"{OUTBOUND}{reply.pk}/change/", TEMPLATES, f"{TEMPLATES}add/", f"{TEMPLATES}{template.pk}/change/",
                KEYS, f"{KEYS}add/", f"{KEYS}{key.pk}/change/", KEYWORDS, f"{KEYWORDS}add/",
                f"{KEYWORDS}{keyword.pk}/change/", f"/admin/users/user/{history['reader'].pk}/change/", "/admin/"):
        assert staff_client.get(url).status_code == 200, url


# --- phone numbers (R-MT-13/15) ------------------------------------------------------------------------------------


def test_phone_number_list_and_search(staff_client, history):
    html = staff_client.get(PHONES).content.decode()
    assert cells(html, ">0908123456<") == ["0908123456", "jana@example.com", "May 6, 2024, noon"]  # no actions
    for term in ("0908123456", "+421 908 123 456", "00421908123456", "jana@example", "123456"):
        assert [row.phone_number for row in listed(staff_client.get(PHONES, {"q": term}))] == ["0908123456"], term
    for term in ("0905111222", "+421905111222", "nobody@"):
        assert listed(staff_client.get(PHONES, {"q": term})) == [], term


def test_phone_number_is_added_through_link_phone_in_local_form(staff_client, history, make_user):
    other = make_user(email="peter@example.com")
    response = staff_client.post(f"{PHONES}add/", {"user": other.pk, "phone_number": "+421 905 111 222"})
    assert response.status_code == 302
    assert list(PhoneNumber.objects.filter(user=other).values_list("phone_number", flat=True)) == ["0905111222"]
    assert services.user_by_phone("+421905111222") == other


@pytest.mark.parametrize(("who", "number", "errors"), [
    ("other", "00420 777 111 222", {"phone_number": ["Not a Slovak mobile number: 00420 777 111 222"]}),
    ("other", "0908", {"phone_number": ["Not a Slovak mobile number: 0908"]}),
    ("other", "+421 908 123 456", {"phone_number": ["The phone number 0908123456 already exists."]}),
    ("reader", "0905111222", {"user": ["The reader already has a premium SMS phone number."]}),
    ("other", "", {"phone_number": ["This field is required."]}),
    ("nobody", "0905111222", {"user": ["This field is required."]}),
])
def test_phone_number_refusals_write_nothing(staff_client, history, make_user, who, number, errors):
    users = {"other": make_user(email="peter@example.com").pk, "reader": history["reader"].pk, "nobody": ""}
    before = snapshot()
    response = staff_client.post(f"{PHONES}add/", {"user": users[who], "phone_number": number})
    assert response.status_code == 200
    assert form_errors(response) == errors
    assert snapshot() == before


def test_phone_number_is_never_edited_or_deleted_here(staff_client, history, make_user):
    phone = PhoneNumber.objects.get()
    other = make_user(email="peter@example.com")
    html = staff_client.get(f"{PHONES}{phone.pk}/change/").content.decode()
    assert 'name="phone_number"' not in html and "0908123456" in html
    assert staff_client.post(f"{PHONES}{phone.pk}/change/", {"user": other.pk,
                                                             "phone_number": "0905111222"}).status_code == 403
    assert staff_client.post(f"{PHONES}{phone.pk}/delete/", {"post": "yes"}).status_code == 403
    assert list(PhoneNumber.objects.values_list("phone_number", "user_id")) == [("0908123456", history["reader"].pk)]


# --- inbound messages (R-MT-2) ---------------------------------------------------------------------------------------


def test_inbound_list_shows_the_reader_and_the_result(staff_client, history):
    html = staff_client.get(INBOUND).content.decode()
    assert cells(html, ">mo-1<") == ["mo-1", "+421908123456", "jana@example.com", "WEB", "Orange",
                                      "May 6, 2024, noon", "May 6, 2024, noon", "payment started"]
    assert cells(html, ">mo-2<") == ["mo-2", "+421940111222", "—", "HELLO there", "O2", "-", "-", "-"]


@pytest.mark.parametrize(("query", "expected"), [
    ({"operator": "O"}, ["mo-1"]),
    ({"operator": "2"}, ["mo-2"]),
    ({"operator": "T"}, []),
    ({"processed": "yes"}, ["mo-1"]),
    ({"processed": "no"}, ["mo-2"]),
    ({"q": "+421940"}, ["mo-2"]),
    ({"q": "0908 123 456"}, ["mo-1"]),
    ({"q": "hello"}, ["mo-2"]),
    ({"q": "mo-1"}, ["mo-1"]),
    ({"q": "mo-"}, []),  # the id matches exactly
    ({}, ["mo-2", "mo-1"]),
])
def test_inbound_filters_and_search(staff_client, history, query, expected):
    assert [row.mobiletech_id for row in listed(staff_client.get(INBOUND, query))] == expected


def test_inbound_is_read_only_and_links_its_replies(staff_client, history):
    inbound, reply = history["inbound"], history["reply"]
    html = staff_client.get(f"{INBOUND}{inbound.pk}/change/").content.decode()
    assert f'<a href="{OUTBOUND}{reply.pk}/change/">#{reply.pk} D1 (delivered)</a>' in html
    assert f'<a href="/admin/users/user/{history["reader"].pk}/change/">jana@example.com</a>' in html
    assert 'name="content"' not in html
    assert staff_client.get(f"{INBOUND}add/").status_code == 403
    assert staff_client.post(f"{INBOUND}{inbound.pk}/change/", {"content": "STOP"}).status_code == 403
    assert staff_client.post(f"{INBOUND}{inbound.pk}/delete/", {"post": "yes"}).status_code == 403
    assert InboundMessage.objects.get(pk=inbound.pk).content == "WEB"


# --- outbound messages (R-MT-3/4/5) ------------------------------------------------------------------------------------


def test_outbound_list_shows_statuses_with_their_meaning(staff_client, history):
    reply, receipt, push, payment = history["reply"], history["receipt"], history["push"], history["payment"]
    html = staff_client.get(OUTBOUND).content.decode()
    assert cells(html, f"{OUTBOUND}{reply.pk}/change/")[:9] == [
        str(reply.pk), "+421908123456", "jana@example.com", "bought", "BK4", "4.00", "D1 (delivered)", "Orange",
        payment.variable_symbol]
    assert cells(html, f"{OUTBOUND}{receipt.pk}/change/")[:9] == [
        str(receipt.pk), "+421908123456", "jana@example.com", "receipt", "FREE", "0.00", "waiting for a report",
        "Orange", "—"]
    assert cells(html, f"{OUTBOUND}{push.pk}/change/")[:9] == [  # D0 counts as delivered on O2 (R-MT-4)
        str(push.pk), "+421940111222", "—", "stop_confirmation", "FREE", "0.00", "D0 (delivered)", "O2", "—"]


def test_outbound_filters_and_search(staff_client, history):
    reply, receipt, push = history["reply"], history["receipt"], history["push"]

    def found(**query):
        return [row.pk for row in listed(staff_client.get(OUTBOUND, query))]

    assert found(status="D1") == [reply.pk]
    assert found(status="D0") == [push.pk]
    assert found(status="__none__") == [receipt.pk]
    assert found(billkey="BK4") == [reply.pk]
    assert found(billkey="FREE") == [push.pk, receipt.pk]
    assert found(operator="2") == [push.pk]
    assert found(q="0940 111 222") == [push.pk]
    assert found(q="mo-1") == [reply.pk]
    assert found(q="jana@") == [receipt.pk, reply.pk]
    lookups = staff_client.get(OUTBOUND).context["cl"].filter_specs[0].lookup_choices
    assert [(value, str(label)) for value, label in lookups] == [
        ("__none__", "waiting for a report"), ("D0", "D0"), ("D1", "D1")]


def test_outbound_page_shows_the_delivery_reports_and_is_read_only(staff_client, history):
    reply, inbound, payment = history["reply"], history["inbound"], history["payment"]
    response = staff_client.get(f"{OUTBOUND}{reply.pk}/change/")
    html = response.content.decode()
    [inline] = response.context["inline_admin_formsets"]
    assert [(form.original.status, str(inline.opts.meaning(form.original))) for form in inline] == [
        ("A0", "A0 (billed)"), ("D1", "D1 (delivered)")]
    assert f'<a href="{INBOUND}{inbound.pk}/change/">mo-1</a>' in html
    assert f'<a href="/admin/payments/payment/{payment.pk}/change/">{payment.variable_symbol}</a>' in html
    assert 'name="history-0-status"' not in html
    assert staff_client.post(f"{OUTBOUND}{reply.pk}/change/", {"status": "A1"}).status_code == 403
    assert staff_client.post(f"{OUTBOUND}{reply.pk}/delete/", {"post": "yes"}).status_code == 403
    assert (OutboundMessage.objects.get(pk=reply.pk).status, OutboundStatus.objects.filter(outbound=reply).count()) == (
        "D1", 2)


def test_push_says_it_answers_nothing(staff_client, history):
    html = staff_client.get(f"{OUTBOUND}{history['push'].pk}/change/").content.decode()
    assert "nothing (a push message)" in html


# --- templates (R-MT-18) ----------------------------------------------------------------------------------------------


def test_template_is_added_with_a_sample_that_is_not_stored(staff_client, history):
    response = staff_client.post(f"{TEMPLATES}add/", {
        "code": "renewed", "description": "Push after a charge", "body": "Paid {{ price }} EUR for {{ name }}.",
        "sample_params": '{"price": "4", "name": "Web"}'})
    assert response.status_code == 302
    assert list(Template.objects.filter(code="renewed").values_list("body", "description")) == [
        ("Paid {{ price }} EUR for {{ name }}.", "Push after a charge")]


@pytest.mark.parametrize(("data", "errors"), [
    ({"body": "Hello {{ name"}, {"body": [
        ("The text is not a valid template: syntax error: unexpected end of template, expected 'end of print "
         "statement'.")]}),
    ({"body": "{{ price + 1 }}"}, {"body": [
        'The text cannot be rendered with the sample parameters: TypeError: can only concatenate str (not "int") to str']}),
    ({"body": "x" * 150 + "{{ name }}", "sample_params": '{"name": "01234567890"}'}, {"body": [
        "The text has 161 characters with the sample parameters; a premium SMS has at most 160."]}),
    ({"body": "Hi", "sample_params": "{name: 1}"}, {"sample_params": [
        "This is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"]}),
    ({"body": "Hi", "sample_params": "[1]"}, {"sample_params": ['Give a JSON object, e.g. {"code": "1234"}.']}),
    ({"body": "Hi", "code": "two words"}, {"code": [
        "Enter a valid “slug” consisting of letters, numbers, underscores or hyphens."]}),
    ({"body": "Hi", "code": "bought"}, {"code": ["Premium SMS template with this Code already exists."]}),
    ({"body": ""}, {"body": ["This field is required."]}),
])
def test_template_refusals_write_nothing(staff_client, history, data, errors):
    before = snapshot()
    response = staff_client.post(f"{TEMPLATES}add/", {"code": "new", "description": "", "sample_params": "", **data})
    assert response.status_code == 200
    assert form_errors(response) == errors
    assert snapshot() == before


def test_template_page_previews_the_saved_text_and_keeps_the_code(staff_client, history):
    template = Template.objects.get(code="bought")
    html = staff_client.get(f"{TEMPLATES}{template.pk}/change/").content.decode()
    assert '<pre id="mh-mt-preview-text" data-testid="preview-text" style="white-space: pre-wrap">' \
           "Thanks! subscription_name is yours.</pre>" in html
    assert '<p id="mh-mt-preview-info" data-testid="preview-info">35/160 characters</p>' in html
    assert 'name="code"' not in html
    response = staff_client.post(f"{TEMPLATES}{template.pk}/change/", {
        "code": "renamed", "description": "Reply to WEB", "body": "Yours: {{ subscription_name }}",
        "sample_params": ""})
    assert response.status_code == 302
    assert list(Template.objects.filter(pk=template.pk).values_list("code", "body", "description")) == [
        ("bought", "Yours: {{ subscription_name }}", "Reply to WEB")]


def test_refused_template_page_previews_the_posted_text(staff_client, history):
    template = Template.objects.get(code="bought")
    response = staff_client.post(f"{TEMPLATES}{template.pk}/change/", {
        "description": "", "body": "{{ name }} " + "y" * 150, "sample_params": '{"name": "Jana Novakova"}'})
    assert response.status_code == 200
    assert response.context["preview"] == {
        "ok": False, "text": "Jana Novakova " + "y" * 150, "length": 164, "limit": 160,
        "summary": "164/160 characters",
        "error": "The text has 164 characters with the sample parameters; a premium SMS has at most 160."}
    assert Template.objects.get(pk=template.pk).body == "Thanks! {{ subscription_name }} is yours."


@pytest.mark.parametrize(("data", "status", "expected"), [
    ({"body": "Thanks! {{ subscription_name }} for {{ price }} EUR.",
      "sample_params": '{"subscription_name": "Web month", "price": 4}'}, 200,
     {"ok": True, "text": "Thanks! Web month for 4 EUR.", "length": 28, "limit": 160, "summary": "28/160 characters",
      "error": ""}),
    ({"body": "Hi {{ name }}", "sample_params": ""}, 200,
     {"ok": True, "text": "Hi name", "length": 7, "limit": 160, "summary": "7/160 characters", "error": ""}),
    ({"body": "{% if %}", "sample_params": ""}, 200,
     {"ok": False, "text": "", "length": 0, "limit": 160, "summary": "0/160 characters",
      "error": "The text is not a valid template: syntax error: Expected an expression, got 'end of statement "
               "block'"}),
    ({"body": "Hi", "sample_params": "nope"}, 400,
     {"ok": False, "error": "This is not valid JSON: Expecting value: line 1 column 1 (char 0)"}),
    ({"body": ""}, 400, {"ok": False, "error": "This field is required."}),
])
def test_template_preview(staff_client, history, data, status, expected):
    before = snapshot()
    response = staff_client.post(PREVIEW, data)
    assert (response.status_code, response.json()) == (status, expected)
    assert snapshot() == before


def test_template_preview_is_post_only_and_needs_a_write_permission(staff_client, viewer, history):
    assert staff_client.get(PREVIEW).status_code == 405
    assert viewer.post(PREVIEW, {"body": "Hi"}).status_code == 403


def test_templates_and_billing_keys_are_never_deleted(staff_client, history):
    before = snapshot()
    for url in (f"{TEMPLATES}{Template.objects.get(code='bought').pk}/delete/",
                f"{KEYS}{BillingKey.objects.get(code='FREE').pk}/delete/"):
        assert staff_client.post(url, {"post": "yes"}).status_code == 403, url
    assert snapshot() == before


# --- billing keys ------------------------------------------------------------------------------------------------------


def test_billing_key_is_added_and_its_code_kept(staff_client, history):
    response = staff_client.post(f"{KEYS}add/", {"code": "BK2", "amount": "2.00", "description": "Two", "active": "on"})
    assert response.status_code == 302
    key = BillingKey.objects.get(code="BK2")
    assert (key.amount, key.description, key.active) == (Decimal("2.00"), "Two", True)
    response = staff_client.post(f"{KEYS}{key.pk}/change/", {"code": "BK3", "amount": "2.50", "description": "Two",
                                                             "active": ""})
    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.code, key.amount, key.active) == ("BK2", Decimal("2.50"), False)


@pytest.mark.parametrize(("data", "errors"), [
    ({"amount": "-0.01"}, {"amount": ["Ensure this value is greater than or equal to 0."]}),
    ({"amount": "1.234"}, {"amount": ["Ensure that there are no more than 2 decimal places."]}),
    ({"amount": ""}, {"amount": ["This field is required."]}),
    ({"code": "B K"}, {"code": ["Enter a valid value."]}),
    ({"code": "FREE"}, {"code": ["Billing key with this Code already exists."]}),
])
def test_billing_key_refusals_write_nothing(staff_client, history, data, errors):
    before = snapshot()
    response = staff_client.post(f"{KEYS}add/", {"code": "BK2", "amount": "2.00", "description": "", **data})
    assert response.status_code == 200
    assert form_errors(response) == errors
    assert snapshot() == before


# --- keyword actions ------------------------------------------------------------------------------------------------------


def keyword_form(**fields) -> dict:
    return {"keyword": "news", "action": "buy", "subscription_type": "", "billing_key": "", "template_code": "",
            "active": "on", **fields}


def test_keyword_action_is_added_in_capitals(staff_client, history, catalog):
    key = BillingKey.objects.get(code="BK4")
    response = staff_client.post(f"{KEYWORDS}add/", keyword_form(
        keyword=" news ", subscription_type=catalog.pk, billing_key=key.pk, template_code="bought", recurrent="on"))
    assert response.status_code == 302
    row = KeywordAction.objects.get(keyword="NEWS")
    assert (row.action, row.subscription_type_id, row.billing_key_id, row.template_code, row.recurrent, row.active) == (
        "buy", catalog.pk, key.pk, "bought", True, True)
    response = staff_client.post(f"{KEYWORDS}add/", keyword_form(keyword="Halt", action="stop"))
    assert response.status_code == 302
    assert list(KeywordAction.objects.filter(keyword="HALT").values_list("action", "template_code")) == [("stop", "")]


@pytest.mark.parametrize(("fields", "errors"), [
    ({}, {"subscription_type": ["A purchase needs this."], "billing_key": ["A purchase needs this."],
          "template_code": ["A purchase needs this."]}),
    ({"sub": True, "key": "BK4", "template_code": "receipt"}, {"template_code": [
        "The template 'receipt' uses amount, which this action does not give (it gives: subscription_name, price)."]}),
    ({"sub": True, "key": "BK4", "template_code": "nope"}, {"template_code": [
        "Select a valid choice. nope is not one of the available choices."]}),
    ({"action": "stop", "sub": True, "key": "FREE", "recurrent": "on"}, {
        "subscription_type": ["Only a purchase has this."], "billing_key": ["Only a purchase has this."],
        "recurrent": ["Only a purchase has this."]}),
    ({"action": "stop", "template_code": "bought"}, {"template_code": [
        "The template 'bought' uses subscription_name, which this action does not give (it gives: stopped)."]}),
    ({"action": "stop", "keyword": "two words"}, {"keyword": ["A keyword is one word without spaces."]}),
    ({"action": "stop", "keyword": "web"}, {"keyword": ["Keyword action with this Keyword already exists."]}),
    ({"action": "sell"}, {"action": ["Select a valid choice. sell is not one of the available choices."]}),
])
def test_keyword_action_refusals_write_nothing(staff_client, history, catalog, fields, errors):
    fields = dict(fields)
    if fields.pop("sub", False):
        fields["subscription_type"] = catalog.pk
    if "key" in fields:
        fields["billing_key"] = BillingKey.objects.get(code=fields.pop("key")).pk
    before = snapshot()
    response = staff_client.post(f"{KEYWORDS}add/", keyword_form(**fields))
    assert response.status_code == 200
    assert form_errors(response) == errors
    assert snapshot() == before


def test_keyword_action_change_is_checked_too(staff_client, history):
    web = KeywordAction.objects.get(keyword="WEB")
    before = snapshot()
    response = staff_client.post(f"{KEYWORDS}{web.pk}/change/", keyword_form(
        keyword="WEB", subscription_type=web.subscription_type_id, billing_key=web.billing_key_id,
        template_code="receipt", recurrent="on"))
    assert form_errors(response) == {"template_code": [
        ("The template 'receipt' uses amount, which this action does not give (it gives: subscription_name, "
         "price).")]}
    assert snapshot() == before


# --- a staff member who may only look -------------------------------------------------------------------------------


def test_viewer_sees_everything_and_changes_nothing(viewer, history, catalog):
    template, key = Template.objects.get(code="bought"), BillingKey.objects.get(code="BK4")
    keyword, phone = KeywordAction.objects.get(keyword="WEB"), PhoneNumber.objects.get()
    for url in (PHONES, f"{PHONES}{phone.pk}/change/", INBOUND, f"{INBOUND}{history['inbound'].pk}/change/",
                OUTBOUND, f"{OUTBOUND}{history['reply'].pk}/change/", TEMPLATES, f"{TEMPLATES}{template.pk}/change/",
                KEYS, f"{KEYS}{key.pk}/change/", KEYWORDS, f"{KEYWORDS}{keyword.pk}/change/"):
        assert viewer.get(url).status_code == 200, url
    before = snapshot()
    for url, data in (
            (f"{PHONES}add/", {"user": history["reader"].pk, "phone_number": "0905111222"}),
            (f"{TEMPLATES}add/", {"code": "x", "body": "Hi"}),
            (f"{TEMPLATES}{template.pk}/change/", {"description": "", "body": "Hi"}),
            (f"{KEYS}add/", {"code": "X", "amount": "1"}),
            (f"{KEYS}{key.pk}/change/", {"amount": "9", "active": "on"}),
            (f"{KEYWORDS}add/", keyword_form(action="stop")),
            (f"{KEYWORDS}{keyword.pk}/delete/", {"post": "yes"})):
        assert viewer.post(url, data).status_code == 403, url
    assert snapshot() == before


def test_staff_without_premium_sms_permissions_gets_no_pages(make_user, history):
    other = client_with(make_user, "view_user", email="care@example.com")
    for url in (PHONES, INBOUND, OUTBOUND, TEMPLATES, KEYS, KEYWORDS):
        assert other.get(url).status_code == 403, url


# --- the admin user page widget ------------------------------------------------------------------------------------------


def test_user_page_widget_shows_number_messages_and_sms_payments(staff_client, history):
    reader, inbound, reply, receipt, payment = (history[k] for k in ("reader", "inbound", "reply", "receipt",
                                                                     "payment"))
    html = widget_html(staff_client.get(f"/admin/users/user/{reader.pk}/change/").content.decode())
    assert re.search(r'data-testid="mt-phone">Premium SMS number: <strong>0908123456</strong>', html)
    assert cells(html, f'data-inbound="{inbound.pk}"')[1:] == ["+421908123456", "WEB", "Orange", "payment started"]
    assert cells(html, f'data-outbound="{reply.pk}"')[2:] == ["+421908123456", "bought", "BK4", "4.00",
                                                              "D1 (delivered)"]
    assert cells(html, f'data-outbound="{receipt.pk}"')[2:] == ["+421908123456", "receipt", "FREE", "0.00",
                                                                "waiting for a report"]
    assert cells(html, f'data-payment="{payment.pk}"')[:6] == [
        payment.variable_symbol, "4.00", "paid", "mobiletech_recurrent", "SMS month", "D1 (delivered)"]
    assert "Inbound messages (1)" in html and "Outbound messages (2)" in html and "SMS payments (1)" in html


def test_user_page_widget_lists_only_sms_payments(staff_client, history):
    reader = history["reader"]
    from masthead.payments import services as payment_services

    card = payment_services.create_payment(user=reader, gateway="fake_card", subscription_type=history["payment"]
                                           .subscription_type)
    html = widget_html(staff_client.get(f"/admin/users/user/{reader.pk}/change/").content.decode())
    assert f'data-payment="{card.pk}"' not in html
    assert re.findall(r'data-payment="(\d+)"', html) == [str(history["payment"].pk)]


def test_user_page_widget_shows_only_what_the_staff_member_may_see(make_user, history):
    reader = history["reader"]
    html = widget_html(client_with(make_user, *VIEW_PERMISSIONS).get(
        f"/admin/users/user/{reader.pk}/change/").content.decode())
    assert "0908123456" in html and f'data-outbound="{history["reply"].pk}"' in html
    assert "SMS payments" not in html and "data-payment=" not in html
    html = client_with(make_user, "view_user", email="care@example.com").get(
        f"/admin/users/user/{reader.pk}/change/").content.decode()
    assert widget_html(html) is None


def test_user_page_widget_is_hidden_for_a_reader_without_premium_sms(staff_client, history, make_user):
    other = make_user(email="peter@example.com")
    response = staff_client.get(f"/admin/users/user/{other.pk}/change/")
    assert response.status_code == 200
    assert widget_html(response.content.decode()) is None
    assert mt_admin.user_context(response.wsgi_request, user_obj=other) is None


def test_user_page_widget_links_to_all_messages_beyond_the_latest(staff_client, history):
    reader = history["reader"]
    for number in range(mt_admin.WIDGET_ROWS):
        services.receive(mobiletech_id=f"extra-{number}", phone_from="+421908123456", content="HI")
    html = widget_html(staff_client.get(f"/admin/users/user/{reader.pk}/change/").content.decode())
    assert len(re.findall(r'data-inbound="', html)) == mt_admin.WIDGET_ROWS
    assert f'<a href="{INBOUND}?user__id__exact={reader.pk}">All 11 inbound messages</a>' in html
    assert len(listed(staff_client.get(INBOUND, {"user__id__exact": reader.pk}))) == 11


def test_preview_json_is_the_one_the_page_uses(staff_client, history):
    """The page's script posts the form's body and sample_params; the answer fills the preview box."""
    html = staff_client.get(f"{TEMPLATES}add/").content.decode()
    assert f'data-url="{PREVIEW}"' in html
    answer = staff_client.post(PREVIEW, {"body": "Stopped {{ stopped }}.", "sample_params": json.dumps({"stopped": 2})})
    assert answer.json()["text"] == "Stopped 2."
