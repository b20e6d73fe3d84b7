"""Family subscriptions in the admin (R-FAM-1/2/4/11/16/23/33): the family type form, the read-only
codes list with its filters, search and actions, the parent view's forms, and the dashboard and user
page widgets with their exact numbers.

Every change goes through family.services; a refused input is an error and writes nothing (checked
with a snapshot of the codes, subscriptions and subscription meta). Time is frozen at
tests.family.conftest.NOW (2024-05-06 08:00 UTC); the ``parent`` fixture is a running parent of
parent@example.com with 5 unused codes of the type family_child.
"""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from masthead.family import queries, services
from masthead.family.models import FamilyRequest, FamilySubscriptionType
from masthead.subscriptions.models import Subscription, SubscriptionMeta
from masthead.users.models import User
from tests.family.conftest import NOW, buy, make_type

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clock")]

R = FamilyRequest
CODES = "/admin/family/familyrequest/"
TYPES = "/admin/family/familysubscriptiontype/"


@pytest.fixture
def staff(make_user):
    return make_user(email="boss@example.com", is_superuser=True, is_staff=True)


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def team_type(child_type):
    """A second parent type starting now, so one reader can hold parents side by side (no renewal links)."""
    team = make_type("family_team", price="30.00", extension_method="start_now")
    FamilySubscriptionType.objects.create(master_subscription_type=team, slave_subscription_type=child_type, count=5)
    return team


def parent_page(parent) -> str:
    return f"{CODES}parent/{parent.pk}/"


def codes(parent, status=None):
    rows = R.objects.filter(master_subscription=parent)
    return rows.filter(status=status) if status else rows


def unused_code(parent) -> str:
    return codes(parent, R.CREATED).order_by("pk").first().code


def seat_for(reader, parent) -> FamilyRequest:
    """An unused code of ``parent`` activated for ``reader`` as staff would (R-FAM-11 checks skipped)."""
    return services.activate(user=reader, code=unused_code(parent), by_admin=True)


def snapshot():
    """Everything a family admin form could write."""
    return (list(R.objects.order_by("pk").values_list("pk", "status", "slave_user_id", "slave_subscription_id", "note",
                                                      "accepted_at", "canceled_at", "updated_at")),
            list(Subscription.objects.order_by("pk").values_list("pk", "user_id", "start_time", "end_time")),
            list(SubscriptionMeta.objects.order_by("pk").values_list("pk", "key", "value")))


def texts(response) -> list[tuple[str, str]]:
    return [(m.level_tag, m.message) for m in response.context["messages"]]


def listed(response) -> list[str]:
    return [row.code for row in response.context["cl"].result_list]


def act(client, action, *rows, follow=True, **extra):
    return client.post(CODES, {"action": action, "_selected_action": [r.pk for r in rows], **extra}, follow=follow)


def post(client, parent, action, follow=True, **data):
    return client.post(parent_page(parent), {"action": action, **data}, follow=follow)


def errors(response) -> list[str]:
    block = re.search(r'<div class="errornote" data-testid="errors">(.*?)</div>', response.content.decode(), re.DOTALL)
    return re.findall(r"<p>(.*?)</p>", block.group(1)) if block else []


def cells(html: str, marker: str) -> list[str]:
    """The text of each cell of the table row containing ``marker``."""
    [row] = [part for part in html.split("<tr")[1:] if marker in part]
    return [unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.DOTALL)]


def widget(html: str, name: str) -> str:
    match = re.search(rf'<section class="mh-widget" data-widget="{re.escape(name)}">(.*?)</section>', html, re.DOTALL)
    assert match, f"widget {name!r} not rendered"
    return match.group(1)


def figure(html: str, name: str) -> str:
    return re.search(rf'data-testid="{re.escape(name)}"[^>]*>([^<]*)<', html).group(1).strip()


def viewer_client(make_user, *codenames) -> Client:
    viewer = make_user(email="viewer@example.com", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(viewer)
    return client


# --- pages --------------------------------------------------------------------------------------------


def test_admin_pages_render(staff_client, parent, make_user, child_type):
    seat = seat_for(make_user(email="kid@example.com"), parent)
    family_type = FamilySubscriptionType.objects.get()
    for url in (TYPES, f"{TYPES}add/", f"{TYPES}{family_type.pk}/change/", CODES, f"{CODES}?status__exact=accepted",
                f"{CODES}?subscription_type__id__exact={child_type.pk}",
                f"{CODES}?master_subscription__id__exact={parent.pk}",
                f"{CODES}?master_user__id__exact={parent.user_id}",
                f"{CODES}?slave_user__id__exact={seat.slave_user_id}", f"{CODES}?q=kid", f"{CODES}{seat.pk}/change/",
                parent_page(parent), "/admin/", f"/admin/users/user/{seat.slave_user_id}/change/"):
        assert staff_client.get(url).status_code == 200, url


# --- family types (R-FAM-1) -----------------------------------------------------------------------------


def type_form(master, child=None, **fields) -> dict:
    return {"master_subscription_type": master.pk, "slave_subscription_type": child.pk if child else "",
            "donation_method": "copy", "count": "3", "is_paid": "on", "days": "", **fields}


def test_family_type_list_columns(staff_client, parent_type, db):
    custom = make_type("company_custom", price="0", items=[])
    row = FamilySubscriptionType.objects.create(master_subscription_type=custom, donation_method="fixed_days",
                                                days=30, count=0, is_paid=False)
    html = staff_client.get(TYPES).content.decode()
    assert cells(html, ">family_parent (family_parent)<")[:4] == [
        "family_parent (family_parent)", "family_child (family_child)", "Copy the parent's dates", "5"]
    assert cells(html, f"{TYPES}{row.pk}/change/")[:4] == [
        "company_custom (company_custom)", "from the payment's items", "Fixed number of days from activation", "0"]
    assert re.findall(r'<td class="field-is_paid"><img [^>]*alt="(\w+)"', html) == ["False", "True"]


def test_family_type_is_added_through_the_form(staff_client, child_type):
    company = make_type("company")
    response = staff_client.post(f"{TYPES}add/", type_form(company, child_type, donation_method="fixed_days",
                                                           days="14"))
    assert response.status_code == 302
    row = FamilySubscriptionType.objects.get(master_subscription_type=company)
    assert (row.slave_subscription_type_id, row.donation_method, row.days, row.count, row.is_paid) == (
        child_type.pk, "fixed_days", 14, 3, True)


def test_family_type_child_must_differ_from_the_parent(staff_client, db):
    """R-FAM-1/9: a parent is never its own child type; nothing is written."""
    company = make_type("company")
    response = staff_client.post(f"{TYPES}add/", type_form(company, company))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "slave_subscription_type": ["The child type must differ from the parent type."]}
    assert not FamilySubscriptionType.objects.exists()


def test_family_type_fixed_days_needs_days_or_a_child_type(staff_client, child_type):
    company = make_type("company")
    response = staff_client.post(f"{TYPES}add/", type_form(company, donation_method="fixed_days"))
    assert response.context["adminform"].form.errors == {
        "days": ["Fixed days need a number of days or a child type (its length is used)."]}
    response = staff_client.post(f"{TYPES}add/", type_form(company, donation_method="fixed_days", days="0"))
    assert response.context["adminform"].form.errors == {"days": ["Ensure this value is greater than or equal to 1."]}
    assert not FamilySubscriptionType.objects.exists()
    for data in (type_form(company, child_type, donation_method="fixed_days"),
                 type_form(make_type("company_b"), donation_method="fixed_days", days="7")):
        assert staff_client.post(f"{TYPES}add/", data).status_code == 302
    assert FamilySubscriptionType.objects.count() == 2


def test_family_type_edit_keeps_the_parent_type_and_is_never_deleted(staff_client, parent_type, child_type):
    row = FamilySubscriptionType.objects.get()
    other = make_type("other")
    response = staff_client.post(f"{TYPES}{row.pk}/change/", type_form(other, child_type, count="8", is_paid=""))
    assert response.status_code == 302
    row.refresh_from_db()
    assert (row.master_subscription_type_id, row.count, row.is_paid) == (parent_type.pk, 8, False)
    response = staff_client.post(f"{TYPES}{row.pk}/change/", type_form(other, parent_type))
    assert response.context["adminform"].form.errors == {
        "slave_subscription_type": ["The child type must differ from the parent type."]}
    assert staff_client.post(f"{TYPES}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert FamilySubscriptionType.objects.get().slave_subscription_type_id == child_type.pk


# --- the codes list (R-FAM-2) ------------------------------------------------------------------------------


def test_codes_list_columns_link_to_the_parent_view(staff_client, parent, make_user):
    seat = seat_for(make_user(email="kid@example.com"), parent)
    html = staff_client.get(CODES).content.decode()
    row = cells(html, f'value="{seat.pk}"')
    assert row[1:7] == [seat.code, "accepted", "parent@example.com", f"#{parent.pk} family_parent",
                        "family_child (family_child)", "kid@example.com"]
    assert row[7] and row[8]  # accepted at, updated at
    assert cells(html, f'value="{codes(parent, R.CREATED).first().pk}"')[6] == "-"
    assert f'<a href="{parent_page(parent)}" data-testid="parent-link">' in html


def test_codes_list_filters(staff_client, parent, make_user, parent_type, child_type):
    other = buy(make_user(email="other@example.com"), parent_type).subscription
    kid = make_user(email="kid@example.com")
    mine, theirs = seat_for(kid, parent), seat_for(kid, other)
    response = staff_client.get(CODES, {"master_subscription__id__exact": parent.pk})
    assert sorted(listed(response)) == sorted(codes(parent).values_list("code", flat=True))
    html = response.content.decode()
    assert f"#{parent.pk} family_parent (parent@example.com)" in html  # the chosen parent, shown in the filter
    response = staff_client.get(CODES, {"master_user__id__exact": other.user_id})
    assert sorted(listed(response)) == sorted(codes(other).values_list("code", flat=True))
    assert staff_client.get(CODES, {"slave_user__id__exact": kid.pk}).context["cl"].result_count == 2
    assert sorted(listed(staff_client.get(CODES, {"status__exact": "accepted"}))) == sorted([mine.code, theirs.code])
    assert staff_client.get(CODES, {"subscription_type__id__exact": child_type.pk}).context["cl"].result_count == 10
    assert staff_client.get(CODES, {"master_subscription__id__exact": "x"}).url == f"{CODES}?e=1"
    assert staff_client.get(CODES, {"master_subscription__id__exact": "999999"}).context["cl"].result_count == 0


def test_codes_list_search_by_code_and_emails(staff_client, parent, make_user, parent_type):
    other = buy(make_user(email="other@example.com"), parent_type).subscription
    seat = seat_for(make_user(email="kid@example.com"), other)
    assert listed(staff_client.get(CODES, {"q": seat.code})) == [seat.code]
    assert sorted(listed(staff_client.get(CODES, {"q": "other@example"}))) == sorted(
        codes(other).values_list("code", flat=True))
    assert listed(staff_client.get(CODES, {"q": "kid@example.com"})) == [seat.code]
    assert listed(staff_client.get(CODES, {"q": "nobody@example.com"})) == []


def test_a_code_is_read_only_never_added_or_deleted(staff_client, parent):
    """R-FAM-2/4: only the services change codes."""
    row = codes(parent).first()
    before = snapshot()
    html = staff_client.get(f"{CODES}{row.pk}/change/").content.decode()
    assert row.code in html and 'name="note"' not in html and 'name="_save"' not in html
    assert parent_page(parent) in html
    assert staff_client.post(f"{CODES}{row.pk}/change/", {"note": "x", "status": "canceled"}).status_code == 403
    assert staff_client.get(f"{CODES}add/").status_code == 403
    assert staff_client.post(f"{CODES}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert "delete_selected" not in staff_client.get(CODES).content.decode()
    assert snapshot() == before


# --- actions (R-FAM-4/16) -------------------------------------------------------------------------------------


def test_release_selected_seats_releases_only_accepted_codes(staff_client, parent, make_user):
    """R-FAM-16 with the admin flag: the child ends now, a new code takes the seat; an unused code is left alone."""
    seat = seat_for(make_user(email="kid@example.com"), parent)
    unused = codes(parent, R.CREATED).first()
    response = act(staff_client, "release_seats", seat, unused)
    assert texts(response) == [("success", "1 seat released."),
                               ("warning", "1 selected code was not in use: nothing changed.")]
    seat.refresh_from_db()
    assert (seat.status, seat.canceled_at) == (R.CANCELED, NOW)
    assert seat.slave_subscription.end_time == NOW
    assert R.objects.get(pk=unused.pk).status == R.CREATED
    assert (codes(parent, R.CREATED).count(), codes(parent).count()) == (5, 6)


def test_cancel_unused_codes_asks_first_then_cancels_the_parents_unused_codes(staff_client, parent, make_user,
                                                                              parent_type):
    """R-FAM-4: a parent reader's unused codes are canceled together; other readers' codes stay."""
    seat = seat_for(make_user(email="kid@example.com"), parent)
    other = buy(make_user(email="other@example.com"), parent_type).subscription
    picked = codes(parent, R.CREATED).first()
    before = snapshot()
    response = act(staff_client, "cancel_unused_codes", picked, seat)
    html = response.content.decode()
    assert "not only the selected ones" in html
    assert cells(html, f'data-owner="{parent.user_id}"') == ["parent@example.com", "4"]
    assert snapshot() == before
    response = act(staff_client, "cancel_unused_codes", picked, seat, post="yes")
    assert texts(response) == [("success", "4 unused codes canceled.")]
    assert codes(parent, R.CREATED).count() == 0
    assert (codes(parent, R.CANCELED).count(), codes(parent, R.ACCEPTED).count()) == (4, 1)
    assert codes(other, R.CREATED).count() == 5


def test_cancel_unused_codes_without_an_unused_code_changes_nothing(staff_client, parent, make_user):
    seat = seat_for(make_user(email="kid@example.com"), parent)
    before = snapshot()
    response = act(staff_client, "cancel_unused_codes", seat, post="yes")
    assert texts(response) == [("warning", "None of the selected codes is unused: nothing changed.")]
    assert snapshot() == before


def test_actions_need_the_change_permission(make_user, parent):
    viewer = viewer_client(make_user, "view_familyrequest")
    seat = seat_for(make_user(email="kid@example.com"), parent)
    html = viewer.get(CODES).content.decode()
    assert "release_seats" not in html and "cancel_unused_codes" not in html
    before = snapshot()
    act(viewer, "release_seats", seat)
    act(viewer, "cancel_unused_codes", codes(parent, R.CREATED).first(), post="yes")
    assert snapshot() == before


# --- the parent view (R-FAM-33) ---------------------------------------------------------------------------


def test_parent_view_shows_the_parent_and_all_its_codes(staff_client, parent, make_user):
    kid = make_user(email="kid@example.com")
    seat = seat_for(kid, parent)
    services.set_note(request=seat, note="Grandma")
    released = seat_for(make_user(email="gone@example.com"), parent)
    services.release(request=released, by_admin=True)
    html = staff_client.get(parent_page(parent)).content.decode()
    assert figure(html, "owner") == "parent@example.com"
    assert [figure(html, n) for n in ("usable", "in-use", "unused", "canceled")] == ["5", "1", "4", "1"]
    assert re.findall(r'<tr data-code="(\w+)" data-status="(\w+)"', html) == (
        [(seat.code, "accepted")] + [(c, "created") for c in codes(parent, R.CREATED).order_by("pk")
                                     .values_list("code", flat=True)] + [(released.code, "canceled")])
    row = cells(html, f'data-code="{seat.code}"')
    assert row[1:5] == ["accepted", "family_child", "kid@example.com", "May 6, 2024, 10 a.m. – June 5, 2024, 10 a.m."]
    assert 'value="Grandma"' in html
    assert cells(html, f'data-code="{released.code}"')[3] == "gone@example.com"
    assert "Codes (6)" in html and f"?master_subscription__id__exact={parent.pk}" in html


def test_parent_view_only_for_parents(staff_client, parent, make_user, child_type):
    plain = buy(make_user(), child_type).subscription
    assert staff_client.get(parent_page(plain)).status_code == 404
    assert staff_client.get(f"{CODES}parent/999999/").status_code == 404


def test_activate_a_code_for_a_reader_by_email(staff_client, parent, make_user):
    """R-FAM-11 as admin: the child gets the parent's dates (copy)."""
    kid = make_user(email="kid@example.com")
    code = unused_code(parent)
    response = post(staff_client, parent, "activate", code=code, email="kid@example.com")
    assert texts(response) == [("success", f"Code {code} activated for kid@example.com.")]
    seat = R.objects.get(code=code)
    assert (seat.status, seat.slave_user_id, seat.accepted_at) == (R.ACCEPTED, kid.pk, NOW)
    assert (seat.slave_subscription.start_time, seat.slave_subscription.end_time) == (parent.start_time,
                                                                                      parent.end_time)
    assert response.redirect_chain == [(parent_page(parent), 302)]


def test_activation_as_admin_skips_the_one_per_user_check(staff_client, parent, make_user):
    """R-FAM-11 step 1 is skipped for an admin: the same reader may take a second seat."""
    kid = make_user(email="kid@example.com")
    seat_for(kid, parent)
    post(staff_client, parent, "activate", code=unused_code(parent), email="kid@example.com")
    assert codes(parent, R.ACCEPTED).filter(slave_user=kid).count() == 2


@pytest.mark.parametrize(("email", "message"), [
    ("nobody@example.com", "Reader&#x27;s e-mail: No reader has the e-mail nobody@example.com."),
    ("not-an-email", "Reader&#x27;s e-mail: Enter a valid email address."),
    ("", "Reader&#x27;s e-mail: This field is required."),
])
def test_activate_refuses_a_bad_email_and_writes_nothing(staff_client, parent, email, message):
    code = unused_code(parent)
    before = snapshot()
    response = post(staff_client, parent, "activate", code=code, email=email)
    assert response.status_code == 200
    assert errors(response) == [message]
    assert f"""aria-label="reader's e-mail" value="{email}">""" in response.content.decode()
    assert snapshot() == before


def test_activate_shows_the_service_refusal_and_writes_nothing(staff_client, parent, make_user, team_type, clock):
    """R-FAM-11: wrong status (an accepted code), an inactive reader, an ended parent."""
    make_user(email="kid@example.com")
    ended = ended_parent(make_user(email="old@example.com"), team_type, clock)
    late = unused_code(ended)
    taken = seat_for(make_user(email="first@example.com"), parent)
    asleep = make_user(email="asleep@example.com")
    User.objects.filter(pk=asleep.pk).update(is_active=False)
    code = unused_code(parent)
    before = snapshot()
    response = post(staff_client, parent, "activate", code=taken.code, email="kid@example.com")
    assert errors(response) == [f"Family request code [{taken.code}] has wrong status: accepted"]
    response = post(staff_client, parent, "activate", code=code, email="asleep@example.com")
    assert errors(response) == ["User [asleep@example.com] is not active"]
    assert 'data-testid="activate"' not in staff_client.get(parent_page(ended)).content.decode()
    response = post(staff_client, ended, "activate", code=late, email="kid@example.com")
    assert errors(response) == [f"Family request code [{late}] expired"]
    assert snapshot() == before


def test_a_code_of_another_parent_is_refused(staff_client, parent, make_user, parent_type):
    other = buy(make_user(email="other@example.com"), parent_type).subscription
    make_user(email="kid@example.com")
    foreign = unused_code(other)
    before = snapshot()
    for action, extra in (("activate", {"email": "kid@example.com"}), ("release", {}), ("note", {"note": "x"})):
        response = post(staff_client, parent, action, code=foreign, **extra)
        assert errors(response) == [f"Code {foreign} is not a code of this parent subscription."], action
    assert snapshot() == before


def test_release_a_seat(staff_client, parent, make_user):
    """R-FAM-16 as admin: canceled, the child ends now, a new unused code keeps the seat count."""
    seat = seat_for(make_user(email="kid@example.com"), parent)
    response = post(staff_client, parent, "release", code=seat.code)
    replacement = codes(parent, R.CREATED).order_by("-pk").first()
    assert texts(response) == [
        ("success", f"Code {seat.code} released; the new code {replacement.code} takes the seat.")]
    seat.refresh_from_db()
    assert (seat.status, seat.canceled_at, seat.slave_subscription.end_time) == (R.CANCELED, NOW, NOW)
    assert codes(parent, R.CREATED).count() == 5


def test_release_of_an_unused_code_is_refused(staff_client, parent):
    code = unused_code(parent)
    before = snapshot()
    response = post(staff_client, parent, "release", code=code)
    assert errors(response) == [f"Code {code} is not in use: there is no seat to release."]
    assert snapshot() == before


def test_edit_a_note(staff_client, parent, make_user):
    """R-FAM-23: notes ≤ 255 characters; a longer one is refused whole."""
    seat = seat_for(make_user(email="kid@example.com"), parent)
    response = post(staff_client, parent, "note", code=seat.code, note="  Sales team  ")
    assert texts(response) == [("success", f"Note of code {seat.code} saved.")]
    assert R.objects.get(pk=seat.pk).note == "Sales team"
    before = snapshot()
    response = post(staff_client, parent, "note", code=seat.code, note="x" * 256)
    assert errors(response) == ["Note: Ensure this value has at most 255 characters (it has 256)."]
    assert 'value="' + "x" * 256 + '"' in response.content.decode()
    assert snapshot() == before
    post(staff_client, parent, "note", code=seat.code, note="")
    assert R.objects.get(pk=seat.pk).note == ""


def test_change_the_seat_count(staff_client, parent, make_user):
    seat_for(make_user(email="kid@example.com"), parent)
    response = post(staff_client, parent, "seats", seats="7")
    assert texts(response) == [("success", "The parent subscription has 7 seats now.")]
    assert (codes(parent, R.CREATED).count(), codes(parent, R.ACCEPTED).count()) == (6, 1)
    post(staff_client, parent, "seats", seats="1")
    assert (codes(parent, R.CREATED).count(), codes(parent, R.CANCELED).count()) == (0, 6)
    assert SubscriptionMeta.objects.get(subscription=parent, key="family_seats").value == "1"


@pytest.mark.parametrize(("seats", "message"), [
    ("0", "1 seat is in use: the count cannot go below that."),
    ("-1", "Seats: Ensure this value is greater than or equal to 0."),
    ("10001", "Seats: Ensure this value is less than or equal to 10000."),
    ("many", "Seats: Enter a whole number."),
])
def test_a_bad_seat_count_is_refused_and_writes_nothing(staff_client, parent, make_user, seats, message):
    seat_for(make_user(email="kid@example.com"), parent)
    before = snapshot()
    response = post(staff_client, parent, "seats", seats=seats)
    assert errors(response) == [message]
    assert f'name="seats" min="0" required value="{seats}"' in response.content.decode()
    assert snapshot() == before


def test_seat_count_of_a_customizable_parent_is_refused(staff_client, make_user):
    custom = make_type("company_custom", price="0", items=[])
    FamilySubscriptionType.objects.create(master_subscription_type=custom)
    parent = Subscription.objects.create(user=make_user(), subscription_type=custom, start_time=NOW,
                                         end_time=NOW + timedelta(days=30))
    html = staff_client.get(parent_page(parent)).content.decode()
    assert 'data-testid="seats-form"' not in html and "from the payment's items" in html
    before = snapshot()
    response = post(staff_client, parent, "seats", seats="3")
    assert errors(response) == ["Only a parent with one child type has a seat count."]
    assert snapshot() == before


def test_an_unknown_action_is_a_bad_request(staff_client, parent):
    before = snapshot()
    assert post(staff_client, parent, "delete", follow=False, code=unused_code(parent)).status_code == 400
    assert snapshot() == before


def test_parent_view_posts_need_the_change_permission(make_user, parent):
    """Viewers see the page without forms; every POST is 403 and writes nothing."""
    viewer = viewer_client(make_user, "view_familyrequest")
    make_user(email="kid@example.com")
    seat = seat_for(make_user(email="first@example.com"), parent)
    response = viewer.get(parent_page(parent))
    assert response.status_code == 200 and 'name="action"' not in response.content.decode()
    before = snapshot()
    for action, data in (("activate", {"code": unused_code(parent), "email": "kid@example.com"}),
                         ("release", {"code": seat.code}), ("note", {"code": seat.code, "note": "x"}),
                         ("seats", {"seats": "9"})):
        assert post(viewer, parent, action, follow=False, **data).status_code == 403, action
    assert snapshot() == before


def test_parent_view_needs_a_family_permission(make_user, parent):
    outsider = viewer_client(make_user, "view_user")
    assert outsider.get(parent_page(parent)).status_code == 403


def test_parent_view_posts_need_csrf(staff, parent, make_user):
    make_user(email="kid@example.com")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(staff)
    before = snapshot()
    response = post(strict, parent, "activate", follow=False, code=unused_code(parent), email="kid@example.com")
    assert response.status_code == 403
    assert snapshot() == before


# --- widgets (R-FAM-33) ---------------------------------------------------------------------------------------


def ended_parent(owner, team_type, clock, *, children=()):
    """A parent bought 40 days ago (ended 10 days ago), with ``children`` activated back then."""
    clock.move_to(NOW - timedelta(days=40))
    old = buy(owner, team_type).subscription
    for kid in children:
        seat_for(kid, old)
    clock.move_to(NOW)
    return old


def test_dashboard_family_counts(staff_client, parent, make_user, team_type, clock):
    """Active family owners (distinct readers), codes of active parents (created + accepted), unused codes,
    and paid accesses (readers with a paid subscription other than a parent + unused codes)."""
    ended_parent(make_user(email="old@example.com"), team_type, clock, children=[make_user(email="gone@example.com")])
    for kid in ("kid1@example.com", "kid2@example.com"):
        seat_for(make_user(email=kid), parent)
    second = buy(parent.user, team_type).subscription  # a second running parent of the same owner
    services.release(request=seat_for(make_user(email="kid3@example.com"), second), by_admin=True)
    third = buy(make_user(email="third@example.com"), team_type).subscription
    seat_for(make_user(email="kid4@example.com"), third)
    buy(make_user(email="reader@example.com"), make_type("web_monthly"))
    section = widget(staff_client.get("/admin/").content.decode(), "family.counts")
    assert {name: figure(section, f"family-{name}") for name in ("owners", "codes", "accepted", "unused",
                                                                 "paid-accesses")} == {
        "owners": "2", "codes": "15", "accepted": "3", "unused": "12", "paid-accesses": "16"}


def test_abusive_users(staff_client, settings, parent, make_user, team_type, clock):
    """Parents with more than the threshold of codes created in the window, as N (accepted / unused /
    canceled), highlighted and linked to their codes; children with more activations than the threshold."""
    settings.FAMILY_ABUSE_THRESHOLD, settings.FAMILY_ABUSE_DAYS = 5, 30
    big = make_user(email="big@example.com")
    firsts = [buy(big, team_type).subscription for _ in range(2)]
    hoarder = make_user(email="hoarder@example.com")
    for n in range(6):
        seat_for(hoarder, firsts[n % 2])
    gone = seat_for(make_user(email="kid@example.com"), parent)
    services.release(request=gone, by_admin=True)  # parent@example.com: 6 codes, one canceled
    buy(make_user(email="exactly@example.com"), team_type)  # 5 codes: not more than the threshold
    old, old_kid = make_user(email="old@example.com"), make_user(email="old-kid@example.com")
    for _ in range(2):  # 10 codes and 6 activations of one child, all before the window
        ended_parent(old, team_type, clock, children=[old_kid] * 3)
    section = widget(staff_client.get("/admin/").content.decode(), "family.abusive")
    assert "Readers with more than 5 codes in the last 30 days." in section
    parents = re.findall(r'<tr class="mh-bad" data-abusive-parent="(\d+)"><td><a href="([^"]+)">([^<]+)</a></td>'
                         r"<td>([^<]+)</td>", section)
    assert parents == [
        (str(big.pk), f"{CODES}?master_user__id__exact={big.pk}", "big@example.com", "10 (6 / 4 / 0)"),
        (str(parent.user_id), f"{CODES}?master_user__id__exact={parent.user_id}", "parent@example.com",
         "6 (0 / 5 / 1)")]
    children = re.findall(r'<tr class="mh-bad" data-abusive-child="(\d+)"><td><a href="([^"]+)">([^<]+)</a></td>'
                          r"<td>([^<]+)</td>", section)
    assert children == [(str(hoarder.pk), f"{CODES}?slave_user__id__exact={hoarder.pk}", "hoarder@example.com",
                         "6 (6 / 0)")]
    assert staff_client.get(f"{CODES}?master_user__id__exact={big.pk}").context["cl"].result_count == 10
    assert staff_client.get(f"{CODES}?slave_user__id__exact={hoarder.pk}").context["cl"].result_count == 6


def test_no_abusive_users(staff_client, parent):
    section = widget(staff_client.get("/admin/").content.decode(), "family.abusive")
    assert section.count("None.") == 2 and "mh-bad" not in section


def test_user_page_lists_the_readers_parents(staff_client, parent, make_user, team_type, clock):
    """Parents newest end first with their codes; an ended parent without a seat in use is left out."""
    owner = parent.user
    kept = ended_parent(owner, team_type, clock, children=[make_user(email="kid@example.com")])
    hidden = ended_parent(owner, team_type, clock)
    seat_for(make_user(email="now@example.com"), parent)
    section = widget(staff_client.get(f"/admin/users/user/{owner.pk}/change/").content.decode(), "family.user")
    assert "Family subscriptions as parent (2)" in section
    assert re.findall(r'<tr data-parent="(\d+)">', section) == [str(parent.pk), str(kept.pk)]
    assert cells(section, f'data-parent="{parent.pk}"')[3] == "5 (1 / 4 / 0)"
    assert cells(section, f'data-parent="{kept.pk}"')[3] == "5 (1 / 4 / 0)"
    assert f'href="{parent_page(parent)}"' in section and parent_page(hidden) not in section
    assert "Family seats as child (0)" in section


def test_user_page_lists_the_readers_seats_newest_child_end_first(staff_client, parent, make_user, team_type, clock):
    kid = make_user(email="kid@example.com")
    old = ended_parent(make_user(email="old@example.com"), team_type, clock, children=[kid])
    current = seat_for(kid, parent)
    gone = seat_for(kid, parent)
    services.release(request=gone, by_admin=True)
    section = widget(staff_client.get(f"/admin/users/user/{kid.pk}/change/").content.decode(), "family.user")
    assert "Family seats as child (2)" in section and "Family subscriptions as parent (0)" in section
    [old_seat] = codes(old, R.ACCEPTED)
    assert re.findall(r'<tr data-seat="(\w+)">', section) == [current.code, old_seat.code]
    assert cells(section, f'data-seat="{current.code}"')[4] == "parent@example.com (family_parent)"
    assert cells(section, f'data-seat="{old_seat.code}"')[4] == "old@example.com (family_team)"
    assert f'href="{parent_page(old)}"' in section


def test_user_page_widget_hidden_for_readers_without_family(staff_client, make_user, parent):
    reader = make_user(email="reader@example.com")
    html = staff_client.get(f"/admin/users/user/{reader.pk}/change/").content.decode()
    assert 'data-widget="family.user"' not in html and 'data-widget="payments.user"' in html


def test_widgets_hidden_without_a_family_permission(make_user, parent):
    outsider = viewer_client(make_user, "view_user", "change_user")
    assert 'data-widget="family.' not in outsider.get("/admin/").content.decode()
    assert 'data-widget="family.' not in outsider.get(f"/admin/users/user/{parent.user_id}/change/").content.decode()


def test_queries_do_not_loop_over_rows(parent, make_user, team_type, clock):
    """R-FAM-33 figures are aggregates: a fixed number of queries whatever the number of codes."""
    kid = make_user()
    for owner in (parent.user, make_user(), make_user()):
        seat_for(kid, buy(owner, team_type).subscription)
    ended_parent(parent.user, team_type, clock, children=[kid])
    expected = {
        lambda: queries.dashboard(NOW): 2,
        lambda: queries.abusive(NOW): 2,
        lambda: queries.parent_codes(parent): 2,
        lambda: queries.user_family(parent.user, NOW): 2,
        lambda: queries.user_family(kid, NOW): 2,
    }
    for call, count in expected.items():
        with CaptureQueriesContext(connection) as captured:
            call()
        assert len(captured) == count, [q["sql"] for q in captured]
