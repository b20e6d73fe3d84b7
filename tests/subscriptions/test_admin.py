"""Subscriptions in the admin: type forms, subscription add/edit, stop and extend actions, the user
page widget with its stop button, and the dashboard widgets' exact numbers (R-ST-1, R-SUB-3/9).

Every write must go through subscriptions.services; a refused form writes nothing. Time is frozen
with time_machine; now = 2021-03-15 10:00 in Europe/Bratislava unless a test moves it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from masthead.core import catalog
from masthead.core import events as bus
from masthead.subscriptions import events, queries, services
from masthead.subscriptions.models import (
    ContentAccess,
    Subscription,
    SubscriptionMeta,
    SubscriptionType,
    SubscriptionTypeItem,
    SubscriptionTypeMeta,
)
from masthead.subscriptions.periods import add_days
from masthead.users.models import Address

pytestmark = pytest.mark.django_db

TZ = ZoneInfo("Europe/Bratislava")
CONTENT_ACCESS = "content_access:\n  - name: web\n    sorting: 10\n  - name: mobile\n    sorting: 20\n" \
                 "  - name: print\n    sorting: 30\n"


def local(year, month, day, hour=0, minute=0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=TZ).astimezone(UTC)


NOW = local(2021, 3, 15, 10)


def n(days: int) -> datetime:
    return add_days(NOW, days)


@pytest.fixture(autouse=True)
def bratislava(settings):
    settings.TIME_ZONE = "Europe/Bratislava"
    settings.PRINT_ACCESS_NAMES = ["print"]
    settings.PRINT_ADDRESS_TYPES = ["print"]


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def access(db):
    catalog.load(CONTENT_ACCESS)
    return {a.name: a for a in ContentAccess.objects.all()}


@pytest.fixture
def web(access):
    obj, _ = services.save_subscription_type(
        code="web", fields={"name": "Web", "user_label": "Digital", "price": "9.90", "length": 30,
                            "extension_method": "extend_actual"},
        content_access=["web", "mobile"], items=[])
    return obj


@pytest.fixture
def printed(access):
    obj, _ = services.save_subscription_type(
        code="print", fields={"name": "Print", "user_label": "Printed", "price": "20.00", "length": 30,
                              "extension_method": "start_now"},
        content_access=["print", "web"], items=[])
    return obj


@pytest.fixture
def staff(make_user):
    return make_user(email="boss@example.com", is_superuser=True, is_staff=True)


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def recorded():
    seen: list = []
    kinds = (events.SubscriptionCreated, events.SubscriptionUpdated, events.SubscriptionShortened)
    for cls in kinds:
        bus.subscribe(cls, seen.append)
    yield seen
    for cls in kinds:
        bus.unsubscribe(cls, seen.append)


def figure(html: str, name: str) -> str:
    match = re.search(rf'data-testid="{re.escape(name)}"[^>]*>([^<]*)<', html)
    assert match, f"no data-testid={name!r}"
    return match.group(1).strip()


def widget(html: str, name: str) -> str:
    match = re.search(rf'<section class="mh-widget" data-widget="{re.escape(name)}">(.*?)</section>', html, re.DOTALL)
    assert match, f"widget {name!r} not rendered"
    return match.group(1)


# --- subscription types (R-ST-1/2) --------------------------------------------------------------


def type_form(access, *, items=(), meta=(), **fields) -> dict:
    data = {
        "code": "combo", "name": "Combo", "user_label": "Print and web", "description": "", "price": "24.90",
        "length": "31", "extending_length": "", "length_method": "fix_days", "extension_method": "extend_actual",
        "fixed_start_0": "", "fixed_start_1": "", "fixed_end_0": "", "fixed_end_1": "",
        "content_access": [access["web"].pk, access["print"].pk], "active": "on", "visible": "on", "sorting": "100",
        "limit_per_user": "", "next_subscription_type": "", "trial_periods": "", "recurrent_charge_before": "",
        "items-TOTAL_FORMS": str(len(items)), "items-INITIAL_FORMS": "0", "items-MIN_NUM_FORMS": "0",
        "items-MAX_NUM_FORMS": "1000",
        "meta-TOTAL_FORMS": str(len(meta)), "meta-INITIAL_FORMS": "0", "meta-MIN_NUM_FORMS": "0",
        "meta-MAX_NUM_FORMS": "1000",
        **fields,
    }
    for k, (name, amount, vat, sorting) in enumerate(items):
        data.update({f"items-{k}-name": name, f"items-{k}-amount": amount, f"items-{k}-vat": vat,
                     f"items-{k}-sorting": sorting})
    for k, (key, value) in enumerate(meta):
        data.update({f"meta-{k}-key": key, f"meta-{k}-value": value})
    return data


def test_type_form_offers_content_access_as_checkboxes(staff_client, access):
    html = staff_client.get("/admin/subscriptions/subscriptiontype/add/").content.decode()
    for a in access.values():
        assert f'type="checkbox" name="content_access" value="{a.pk}"' in html
    assert '<option value="extend_same_content_access">' in html  # every registered extension method


def test_add_type_with_items_not_summing_to_the_price_is_a_form_error_and_writes_nothing(staff_client, access):
    response = staff_client.post("/admin/subscriptions/subscriptiontype/add/", type_form(
        access, items=[("Printed edition", "15.00", "10", "1"), ("Digital", "9.00", "23", "2")]))
    assert response.status_code == 200
    assert "Items sum to 24.00, the price is 24.90" in response.content.decode()
    assert not SubscriptionType.objects.exists()
    assert not SubscriptionTypeItem.objects.exists()


def test_add_type_goes_through_the_service(staff_client, access):
    response = staff_client.post("/admin/subscriptions/subscriptiontype/add/", type_form(
        access, items=[("Digital", "9.90", "23", "20"), ("Printed edition", "15.00", "10", "10")],
        meta=[("color", "blue")]))
    assert response.status_code == 302
    combo = SubscriptionType.objects.get(code="combo")
    # items in their "sorting" order, renumbered by the service
    assert [(i.name, str(i.amount), str(i.vat), i.sorting) for i in combo.items.all()] == [
        ("Printed edition", "15.00", "10.00", 10), ("Digital", "9.90", "23.00", 20)]
    assert sorted(combo.content_access.values_list("name", flat=True)) == ["print", "web"]
    assert dict(combo.meta.values_list("key", "value")) == {"color": "blue"}
    assert (combo.price, combo.length, combo.user_label) == (combo.price.__class__("24.90"), 31, "Print and web")


def test_add_type_without_items_gets_one_item_for_the_price(staff_client, access, settings):
    settings.VAT_DEFAULT = "23"
    assert staff_client.post("/admin/subscriptions/subscriptiontype/add/", type_form(access)).status_code == 302
    combo = SubscriptionType.objects.get(code="combo")
    assert [(i.name, str(i.amount), str(i.vat)) for i in combo.items.all()] == [("Print and web", "24.90", "23.00")]


def test_edit_type_keeps_code_and_rewrites_items_through_the_service(staff_client, access, web):
    item = web.items.get()
    data = type_form(access, code="ignored", name="Web monthly", price="12.00", items=[], content_access=[
        access["web"].pk])
    data.update({"items-TOTAL_FORMS": "2", "items-INITIAL_FORMS": "1",
                 "items-0-id": str(item.pk), "items-0-subscription_type": str(web.pk), "items-0-name": "Digital",
                 "items-0-amount": "10.00", "items-0-vat": "23", "items-0-sorting": "10",
                 "items-1-name": "Archive", "items-1-amount": "2.00", "items-1-vat": "23", "items-1-sorting": "20"})
    response = staff_client.post(f"/admin/subscriptions/subscriptiontype/{web.pk}/change/", data)
    assert response.status_code == 302
    web.refresh_from_db()
    assert (web.code, web.name, str(web.price)) == ("web", "Web monthly", "12.00")
    assert [(i.name, str(i.amount)) for i in web.items.all()] == [("Digital", "10.00"), ("Archive", "2.00")]
    assert list(web.content_access.values_list("name", flat=True)) == ["web"]
    assert not SubscriptionType.objects.filter(code="ignored").exists()


def test_edit_type_price_without_matching_items_is_refused(staff_client, access, web):
    item = web.items.get()
    data = type_form(access, code="web", name="Web", price="12.00", items=[])
    data.update({"items-TOTAL_FORMS": "1", "items-INITIAL_FORMS": "1", "items-0-id": str(item.pk),
                 "items-0-subscription_type": str(web.pk), "items-0-name": item.name, "items-0-amount": "9.90",
                 "items-0-vat": "23", "items-0-sorting": "10"})
    response = staff_client.post(f"/admin/subscriptions/subscriptiontype/{web.pk}/change/", data)
    assert response.status_code == 200
    assert "Items sum to 9.90, the price is 12.00" in response.content.decode()
    web.refresh_from_db()
    assert str(web.price) == "9.90"


def test_duplicate_meta_key_is_a_form_error(staff_client, access):
    response = staff_client.post("/admin/subscriptions/subscriptiontype/add/", type_form(
        access, meta=[("color", "blue"), ("color", "red")]))
    assert response.status_code == 200
    assert "Please correct the duplicate data for key." in response.content.decode()
    assert not SubscriptionType.objects.exists()
    assert not SubscriptionTypeMeta.objects.exists()


def test_types_are_never_deleted_in_admin(staff_client, web):
    response = staff_client.post(f"/admin/subscriptions/subscriptiontype/{web.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert SubscriptionType.objects.filter(pk=web.pk).exists()


# --- subscriptions: add, edit (R-SUB-3/6) -----------------------------------------------------


def subscription_add_form(user, type_, **fields) -> dict:
    return {"user": str(user.pk), "subscription_type": str(type_.pk), "type": "regular", "is_paid": "false",
            "start_0": "", "start_1": "", "end_0": "", "end_1": "", "note": "", **fields}


def test_add_subscription_lands_through_the_service_after_the_current_one(frozen, staff_client, user, web,
                                                                         recorded):
    current = services.create_subscription(user=user, subscription_type=web, start=n(-10))
    recorded.clear()
    response = staff_client.post("/admin/subscriptions/subscription/add/", subscription_add_form(
        user, web, type="gift", is_paid="true", note="birthday"))
    assert response.status_code == 302
    added = Subscription.objects.exclude(pk=current.pk).get()
    # extend_actual: it starts where the current one ends, and the service linked them (R-SUB-8)
    assert (added.start_time, added.end_time) == (current.end_time, add_days(current.end_time, 30))
    assert (added.type, added.is_paid, added.note, added.internal_status) == ("gift", True, "birthday",
                                                                               Subscription.BEFORE_START)
    assert Subscription.objects.get(pk=current.pk).next_subscription_id == added.pk
    assert [type(e).__name__ for e in recorded] == ["SubscriptionCreated"]


def test_add_subscription_with_given_dates_and_back_to_the_user_page(frozen, staff_client, user, web):
    page = staff_client.get(f"/admin/subscriptions/subscription/add/?user={user.pk}").content.decode()
    assert f'<option value="{user.pk}" selected>jana@example.com</option>' in page
    response = staff_client.post(f"/admin/subscriptions/subscription/add/?user={user.pk}", subscription_add_form(
        user, web, start_0="2021-04-01", start_1="00:00:00", end_0="2021-04-11", end_1="12:00:00"))
    assert response.status_code == 302
    assert response.url == f"/admin/users/user/{user.pk}/change/"
    added = Subscription.objects.get()
    assert (added.start_time, added.end_time) == (local(2021, 4, 1), local(2021, 4, 11, 12))


def test_add_subscription_with_end_before_start_is_refused(frozen, staff_client, user, web):
    response = staff_client.post("/admin/subscriptions/subscription/add/", subscription_add_form(
        user, web, start_0="2021-04-11", start_1="00:00:00", end_0="2021-04-01", end_1="00:00:00"))
    assert response.status_code == 200
    assert "The end must not be before the start." in response.content.decode()
    assert not Subscription.objects.exists()


def change_form(subscription, **fields) -> dict:
    start, end = (s.astimezone(TZ) for s in (subscription.start_time, subscription.end_time))
    return {"subscription_type": str(subscription.subscription_type_id), "type": subscription.type,
            "is_paid": "true" if subscription.is_paid else "false", "note": subscription.note, "address": "",
            "start_time_0": f"{start:%Y-%m-%d}", "start_time_1": f"{start:%H:%M:%S}",
            "end_time_0": f"{end:%Y-%m-%d}", "end_time_1": f"{end:%H:%M:%S}", **fields}


def test_edit_dates_goes_through_update_subscription(frozen, staff_client, user, web, recorded):
    first = services.create_subscription(user=user, subscription_type=web, start=n(-10))
    second = services.create_subscription(user=user, subscription_type=web, start=n(30))
    recorded.clear()
    response = staff_client.post(f"/admin/subscriptions/subscription/{first.pk}/change/", change_form(
        first, end_time_0="2021-04-14", end_time_1="10:00:00"))
    assert response.status_code == 302
    first.refresh_from_db()
    assert first.end_time == local(2021, 4, 14, 10) == n(30)
    assert first.next_subscription_id == second.pk  # relinked by the service (R-SUB-8)
    assert [(type(e).__name__, e.changed) for e in recorded] == [("SubscriptionUpdated", ("end_time",))]


def test_edit_end_before_start_is_a_form_error(frozen, staff_client, user, web):
    sub = services.create_subscription(user=user, subscription_type=web)
    response = staff_client.post(f"/admin/subscriptions/subscription/{sub.pk}/change/", change_form(
        sub, end_time_0="2021-03-01"))
    assert response.status_code == 200
    assert "The end must not be before the start." in response.content.decode()
    assert Subscription.objects.get(pk=sub.pk).end_time == n(30)


def test_subscription_list_searches_by_email(frozen, staff_client, make_user, web):
    for email in ("anna@example.com", "bob@example.com"):
        services.create_subscription(user=make_user(email=email), subscription_type=web)
    html = staff_client.get("/admin/subscriptions/subscription/?q=anna").content.decode()
    assert "anna@example.com" in html and "bob@example.com" not in html


# --- actions (R-SUB-9) ---------------------------------------------------------------------


def test_stop_action_stops_running_and_refuses_ended_or_zero_length(frozen, staff_client, user, web, recorded):
    running = services.create_subscription(user=user, subscription_type=web, start=n(-10))
    ended = services.create_subscription(user=user, subscription_type=web, start=n(-60), end=n(-40))
    zero = services.create_subscription(user=user, subscription_type=web, start=n(5), end=n(5))
    recorded.clear()
    response = staff_client.post("/admin/subscriptions/subscription/", {
        "action": "stop_now", "_selected_action": [running.pk, ended.pk, zero.pk]}, follow=True)
    html = response.content.decode()
    assert "1 subscription stopped." in html
    assert "2 subscriptions were not stopped: they have already ended or have no length." in html
    running.refresh_from_db()
    assert (running.end_time, running.internal_status) == (NOW, Subscription.AFTER_END)
    assert running.note == f"[Admin stop] Original end_time {n(20).astimezone(TZ).isoformat()}"
    assert SubscriptionMeta.objects.get(subscription=running).key == "expired_by_admin"
    assert Subscription.objects.get(pk=ended.pk).end_time == n(-40)
    assert Subscription.objects.get(pk=zero.pk).end_time == n(5)
    assert [type(e).__name__ for e in recorded] == ["SubscriptionUpdated", "SubscriptionShortened"]


def test_extend_action_adds_one_period_of_the_same_type_after_it(frozen, staff_client, user, web):
    running = services.create_subscription(user=user, subscription_type=web, start=n(-10), type="gift",
                                           is_paid=True)
    response = staff_client.post("/admin/subscriptions/subscription/", {
        "action": "extend_one_period", "_selected_action": [running.pk]}, follow=True)
    assert "1 subscription added." in response.content.decode()
    added = Subscription.objects.exclude(pk=running.pk).get()
    assert (added.user_id, added.subscription_type_id, added.type, added.is_paid) == (user.pk, web.pk, "gift", False)
    assert (added.start_time, added.end_time) == (n(20), n(50))
    assert Subscription.objects.get(pk=running.pk).next_subscription_id == added.pk


def test_subscriptions_are_never_deleted_in_admin(frozen, staff_client, user, web):
    sub = services.create_subscription(user=user, subscription_type=web)
    assert staff_client.post(f"/admin/subscriptions/subscription/{sub.pk}/delete/", {"post": "yes"}).status_code == 403
    assert "delete_selected" not in staff_client.get("/admin/subscriptions/subscription/").content.decode()


# --- the user page widget and its stop button ---------------------------------------------


def test_user_page_lists_subscriptions_newest_end_first_with_the_actual_label(frozen, staff_client, user, web,
                                                                             printed):
    past = services.create_subscription(user=user, subscription_type=web, start=n(-60), end=n(-30))
    running = services.create_subscription(user=user, subscription_type=printed, start=n(-5))
    future = services.create_subscription(user=user, subscription_type=web, start=n(40))
    html = staff_client.get(f"/admin/users/user/{user.pk}/change/").content.decode()
    section = widget(html, "subscriptions.user")
    assert "Subscriptions (3)" in section
    rows = re.findall(r'<tr data-subscription="(\d+)"', section)
    assert rows == [str(future.pk), str(running.pk), str(past.pk)]
    assert section.count("actual subscription") == 1
    running_row = re.search(rf'<tr data-subscription="{running.pk}".*?</tr>', section, re.DOTALL).group(0)
    assert "actual subscription" in running_row and "web, print" in running_row and ">active<" in running_row
    # stop offered for the running and the future one, not for the ended one
    assert re.findall(r'/admin/subscriptions/subscription/(\d+)/stop/', section) == [str(future.pk), str(running.pk)]
    assert f'href="/admin/subscriptions/subscription/add/?user={user.pk}"' in section


def test_stop_button_confirms_then_stops_through_the_service_and_goes_back(frozen, staff_client, user, web):
    sub = services.create_subscription(user=user, subscription_type=web, start=n(-10))
    back = f"/admin/users/user/{user.pk}/change/"
    url = f"/admin/subscriptions/subscription/{sub.pk}/stop/"
    confirm = staff_client.get(f"{url}?next={back}")
    assert confirm.status_code == 200
    assert "Stop the subscription Web of jana@example.com?" in confirm.content.decode()
    assert Subscription.objects.get(pk=sub.pk).end_time == n(20)  # a GET changes nothing

    response = staff_client.post(url, {"next": back}, follow=True)
    assert response.redirect_chain == [(back, 302)]
    assert "Subscription Web of jana@example.com stopped." in response.content.decode()
    sub.refresh_from_db()
    assert sub.end_time == NOW
    assert sub.meta.get(key="expired_by_admin").value == "1"

    again = staff_client.post(url, {"next": back}, follow=True)
    assert "This subscription has already ended or has no length: there is nothing to stop." in again.content.decode()
    assert Subscription.objects.get(pk=sub.pk).end_time == NOW


def test_stop_button_refuses_foreign_redirects_and_non_staff_and_missing_csrf(frozen, client, staff, user, web):
    sub = services.create_subscription(user=user, subscription_type=web, start=n(-10))
    url = f"/admin/subscriptions/subscription/{sub.pk}/stop/"

    client.force_login(user)  # a reader: the admin sends them to its login page
    response = client.post(url)
    assert response.status_code == 302 and response.url.startswith("/admin/login/")

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(staff)
    assert strict.post(url).status_code == 403
    assert Subscription.objects.get(pk=sub.pk).end_time == n(20)

    client.force_login(staff)
    response = client.post(url, {"next": "https://evil.example.com/"})
    assert response.url == f"/admin/users/user/{user.pk}/change/"
    assert Subscription.objects.get(pk=sub.pk).end_time == NOW


# --- dashboard widgets ----------------------------------------------------------------------
# (#, user, type, start, end, created at (local), paid) — the expected numbers at NOW are derived
# in the test's comments.

DATASET = [
    (1, "a", "web", local(2021, 3, 1), local(2021, 3, 20), local(2021, 3, 15, 8), True),
    (2, "a", "web", local(2021, 3, 20), local(2021, 4, 19), local(2021, 3, 15, 9), False),
    (3, "b", "print", local(2021, 3, 10, 12), local(2021, 4, 9, 12), local(2021, 3, 10, 12), True),
    (4, "c", "print", local(2021, 3, 10, 12), local(2021, 3, 18, 12), local(2021, 3, 10, 12), False),
    (5, "d", "web", local(2021, 2, 15, 9), local(2021, 3, 1), local(2021, 2, 15, 9), True),
    (6, "e", "web", local(2021, 2, 15, 11), local(2021, 3, 17, 11), local(2021, 2, 15, 11), False),
    (7, "e", "print", local(2021, 3, 25), local(2021, 4, 24), local(2021, 3, 1, 0, 30), False),
    (8, "f", "web", local(2021, 2, 3), local(2021, 3, 5), local(2021, 2, 3, 8), False),
    (9, "g", "web", local(2020, 4, 10), local(2020, 5, 10), local(2020, 4, 1, 0, 30), False),
    (10, "h", "web", local(2020, 3, 31), local(2020, 4, 30), local(2020, 3, 31, 23, 30), False),
    (11, "k", "web", local(2021, 3, 16), local(2021, 3, 16), local(2021, 1, 20, 12), False),
    (12, "m", "print", local(2020, 12, 1), local(2021, 12, 1), local(2020, 12, 1, 12), False),
]


@pytest.fixture
def dataset(make_user, web, printed):
    types = {"web": web, "print": printed}
    users = {}
    for _, who, code, start, end, created, paid in DATASET:
        if who not in users:
            users[who] = make_user(email=f"{who}@example.com")
        with time_machine.travel(created, tick=False):
            services.create_subscription(user=users[who], subscription_type=types[code], start=start, end=end,
                                         is_paid=paid)
    Address.objects.create(user=users["c"], type="print", street="Hlavna", city="Bratislava")
    Address.objects.create(user=users["m"], type="invoice", street="Dlha", city="Kosice")
    return users


def test_dashboard_widgets_show_exact_numbers(dataset, frozen, staff_client):
    html = staff_client.get("/admin/").content.decode()

    # running at NOW: #1 a, #3 b, #4 c, #6 e, #12 m → 5 readers; web via both types, mobile via web only
    active = widget(html, "subscriptions.active")
    assert figure(active, "active-subscribers") == "5"
    assert [figure(active, f"active-{a}") for a in ("web", "mobile", "print")] == ["5", "2", "3"]

    # today (Mar 15 00:00–10:00): #1 #2; the same stretch of Feb 15: #5 (09:00; #6 at 11:00 is later)
    # this month: #1 #2 #3 #4 #7; Feb 1 – Feb 15 10:00: #5 #8
    new = widget(html, "subscriptions.new")
    assert [figure(new, k) for k in ("new-today", "new-today-last-month", "new-today-delta")] == ["2", "1", "+1"]
    assert [figure(new, k) for k in ("new-month", "new-month-last-month", "new-month-delta")] == ["5", "2", "+3"]

    # ending by Mar 22 10:00: #1 (Mar 20), #4 (Mar 18), #6 (Mar 17); not the zero-length #11.
    # renewed: #1 (a's #2 starts at its end), #6 (e's #7 starts later, after a gap); not #4
    ending = widget(html, "subscriptions.ending")
    assert "Ending within 7 days" in ending
    assert (figure(ending, "ending"), figure(ending, "ending-renewed")) == ("3", "2 of them already renewed")

    total = widget(html, "subscriptions.total")
    assert (figure(total, "subscriptions-total"), figure(total, "subscriptions-paid")) == ("12", "3 paid")

    # print access running: b, c, m; c has a print address, m only an invoice one
    missing = widget(html, "subscriptions.print_without_address")
    assert figure(missing, "print-without-address") == "2"
    assert re.findall(r'<a href="/admin/users/user/(\d+)/change/">([^<]+)</a>', missing) == [
        (str(dataset["b"].pk), "b@example.com"), (str(dataset["m"].pk), "m@example.com")]


def test_dashboard_ending_period_is_adjustable(dataset, frozen, staff_client):
    # by Apr 14 10:00 also #3 (Apr 9), which has no follower
    ending = widget(staff_client.get("/admin/?ending_days=30").content.decode(), "subscriptions.ending")
    assert "Ending within 30 days" in ending
    assert (figure(ending, "ending"), figure(ending, "ending-renewed")) == ("4", "2 of them already renewed")


def test_dashboard_print_widget_follows_settings(dataset, frozen, staff_client, settings):
    settings.PRINT_ADDRESS_TYPES = ["print", "invoice"]
    missing = widget(staff_client.get("/admin/").content.decode(), "subscriptions.print_without_address")
    assert figure(missing, "print-without-address") == "1"
    settings.PRINT_ACCESS_NAMES = ["mobile"]  # a and e have mobile access, no address at all
    missing = widget(staff_client.get("/admin/").content.decode(), "subscriptions.print_without_address")
    assert figure(missing, "print-without-address") == "2"
    assert "a@example.com" in missing and "e@example.com" in missing


def test_dashboard_graph_is_an_svg_with_12_monthly_bars(dataset, frozen, staff_client):
    graph = widget(staff_client.get("/admin/").content.decode(), "subscriptions.graph")
    assert "<svg" in graph and "<script" not in graph and "http" not in graph.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    bars = re.findall(r'data-month="(\d{4}-\d{2})" data-count="(\d+)"', graph)
    # Apr 2020 … Mar 2021 in local time: #9 (Apr 1 00:30 local = Mar 31 UTC) counts in April,
    # #10 (Mar 31 23:30 local) is before the window
    assert bars == [("2020-04", "1"), ("2020-05", "0"), ("2020-06", "0"), ("2020-07", "0"), ("2020-08", "0"),
                    ("2020-09", "0"), ("2020-10", "0"), ("2020-11", "0"), ("2020-12", "1"), ("2021-01", "1"),
                    ("2021-02", "3"), ("2021-03", "5")]
    assert graph.count('<rect class="mh-bar"') == 12
    labels = re.findall(r'text-anchor="middle">([A-Z][a-z]+\.?)</text>', graph)
    assert labels[0] == "April" or labels[0].startswith("Apr")
    assert labels[-1].startswith("Mar") and len(labels) == 12
    heights = [int(h) for h in re.findall(r'<rect class="mh-bar"[^>]* height="(\d+)"', graph)]
    assert heights[-1] == max(heights) and heights[1] == 0 and heights[-2] < heights[-1]


def test_dashboard_queries_do_not_loop_over_rows(dataset, frozen):
    """Each widget's numbers come from a fixed number of aggregate queries."""
    expected = {
        lambda: queries.active_subscribers(NOW): 2,
        lambda: queries.new_subscriptions(NOW): 1,
        lambda: queries.ending_soon(NOW, 7): 1,
        lambda: queries.total_subscriptions(): 1,
        lambda: queries.new_per_month(NOW): 1,
        lambda: queries.print_without_address(NOW): 2,
    }
    for call, count in expected.items():
        with CaptureQueriesContext(connection) as captured:
            call()
        assert len(captured) == count, [q["sql"] for q in captured]


def test_new_subscriptions_on_a_day_last_month_lacks(make_user, web):
    """Mar 31: today is compared with Feb 28, the month so far with the whole of February."""
    reader = make_user(email="x@example.com")
    for created in (local(2021, 2, 28, 9), local(2021, 2, 28, 20), local(2021, 3, 31, 8)):
        with time_machine.travel(created, tick=False):
            services.create_subscription(user=reader, subscription_type=web)
    counts = queries.new_subscriptions(local(2021, 3, 31, 10))
    assert (counts["today"], counts["today_last_month"], counts["month"], counts["month_last_month"]) == (1, 1, 1, 2)


def test_admin_pages_render(frozen, staff_client, user, web):
    sub = services.create_subscription(user=user, subscription_type=web, start=n(-10))
    Address.objects.create(user=user, type="print", street="Hlavna", city="Bratislava")
    for url in ("/admin/subscriptions/subscription/",
                "/admin/subscriptions/subscription/?internal_status__exact=active",
                f"/admin/subscriptions/subscription/{sub.pk}/change/", "/admin/subscriptions/subscription/add/",
                "/admin/subscriptions/subscriptiontype/", f"/admin/subscriptions/subscriptiontype/{web.pk}/change/",
                "/admin/subscriptions/contentaccess/"):
        assert staff_client.get(url).status_code == 200, url
    change = staff_client.get(f"/admin/subscriptions/subscription/{sub.pk}/change/").content.decode()
    assert f'href="/admin/users/user/{user.pk}/change/">jana@example.com</a>' in change
    assert 'name="address"' in change and "Hlavna" in change


def test_staff_without_change_permission_sees_no_stop_button(frozen, client, make_user, user, web):
    from django.contrib.auth.models import Permission

    viewer = make_user(email="viewer@example.com", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_user", "change_user",
                                                                        "view_subscription"]))
    sub = services.create_subscription(user=user, subscription_type=web, start=n(-10))
    client.force_login(viewer)
    section = widget(client.get(f"/admin/users/user/{user.pk}/change/").content.decode(), "subscriptions.user")
    assert "actual subscription" in section and "/stop/" not in section and "Add subscription" not in section
    assert client.post(f"/admin/subscriptions/subscription/{sub.pk}/stop/").status_code == 403
    assert Subscription.objects.get(pk=sub.pk).end_time == n(20)
