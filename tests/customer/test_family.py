"""Customer zone, family subscriptions: the parent's codes on "My subscriptions" (generated lazily,
R-FAM-5), revoking a seat (R-FAM-16), "Shared by" on a child's rows, and a code's landing page
(R-FAM-15) with every state, activation (R-FAM-11/12) and signing up on the way. Time is frozen at
2024-05-06 10:00 in Europe/Bratislava."""

from __future__ import annotations

import html as html_lib
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone, translation
from django.utils.formats import date_format

from masthead.family import services as family_services
from masthead.family.models import FamilyRequest, FamilySubscriptionType
from masthead.subscriptions import services as subscription_services
from masthead.subscriptions.models import Subscription
from masthead.users.models import User
from tests.family.conftest import buy, make_type

pytestmark = pytest.mark.django_db

R = FamilyRequest
NOW = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)
PARENT_END = NOW + timedelta(days=30)


@pytest.fixture(autouse=True)
def frozen(settings):
    settings.TIME_ZONE = "Europe/Bratislava"
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def child_type(db):
    return make_type("family_web", price="0", items=[], user_label="Digital for the family", access=("web",))


@pytest.fixture
def parent_type(child_type):
    parent = make_type("family_pack", price="30.00", user_label="Family pack", access=("web", "print"))
    FamilySubscriptionType.objects.create(master_subscription_type=parent, slave_subscription_type=child_type,
                                          donation_method="copy", count=3, is_paid=True)
    return parent


@pytest.fixture
def owner(make_user):
    return make_user(email="petra@example.com", first_name="Petra", last_name="Rodic")


@pytest.fixture
def parent(owner, parent_type):
    """A running family pack bought today: three unused codes."""
    return buy(owner, parent_type).subscription


@pytest.fixture
def holder(make_user):
    return make_user(email="karol@example.com", first_name="Karol", last_name="Dieta")


def codes(parent, status=None) -> list[R]:
    rows = R.objects.filter(master_subscription=parent).order_by("pk")
    return list(rows.filter(status=status) if status else rows)


def first_code(parent) -> str:
    return codes(parent, R.CREATED)[0].code


def shown(value, fmt="DATETIME_FORMAT") -> str:
    with translation.override("en"):
        return date_format(timezone.localtime(value), fmt)


def text(fragment: str) -> str:
    return html_lib.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", fragment))).strip()


def cells(fragment: str) -> dict[str, str]:
    """{cell class: its text} of a table row."""
    return {cls: text(body) for cls, body in re.findall(r'<td class="(\w+)">(.*?)</td>', fragment, re.DOTALL)}


def seat_rows(html: str, parent) -> list[tuple[str, str]]:
    """(code, status) of each code row in the parent's section, in page order."""
    section = re.search(rf'<section class="family" data-testid="family-codes" data-subscription="{parent.pk}">'
                        r"(.*?)</section>", html, re.DOTALL).group(1)
    return re.findall(r'<tr data-code="(\w+)" data-status="(\w+)">', section)


def seat_cells(html: str, code: str) -> dict[str, str]:
    row = re.search(rf'<tr data-code="{code}".*?</tr>', html, re.DOTALL).group(0)
    shown_cells = cells(row)
    del shown_cells["url"]  # the link is an input's value, with the copy button
    link = re.search(r'<input [^>]*value="([^"]*)" data-testid="activation-url"', row).group(1)
    return {**shown_cells, "link": html_lib.unescape(link), "revoke": 'data-testid="revoke"' in row}


def seats_line(html: str, parent) -> str:
    section = re.search(rf'data-subscription="{parent.pk}">(.*?)</section>', html, re.DOTALL).group(1)
    return text(re.search(r'<p class="seats">(.*?)</p>', section, re.DOTALL).group(1))


def label_cell(html: str, subscription) -> str:
    row = re.search(rf'<tr data-subscription="{subscription.pk}">(.*?)</tr>', html, re.DOTALL).group(1)
    return text(re.search(r'<td class="label">(.*?)</td>', row, re.DOTALL).group(1))


def landing(html: str) -> tuple[str, str]:
    """The landing page's state and its text."""
    state, body = re.search(r'<section data-testid="family-(\w+)">(.*?)</section>', html, re.DOTALL).groups()
    return state, text(body)


def heading(html: str) -> str:
    return text(re.search(r"<main>.*?<h1>(.*?)</h1>", html, re.DOTALL).group(1))


def error_page(response) -> tuple[int, str, str]:
    """A refused activation: the status, the page's heading and the service's message under it."""
    html = response.content.decode()
    assert landing(html)[0] == "error"
    return response.status_code, heading(html), text(re.search(r'<p class="error-message">(.*?)</p>', html).group(1))


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, m.message) for m in response.context["messages"]]


def snapshot() -> tuple:
    """Everything an activation, a revoke or a signup could write."""
    return (list(R.objects.order_by("pk").values_list("pk", "status", "slave_user_id", "slave_subscription_id",
                                                      "opened_at", "accepted_at", "canceled_at", "updated_at")),
            list(Subscription.objects.order_by("pk").values_list("pk", "start_time", "end_time")),
            list(User.objects.order_by("pk").values_list("pk", "email", "password")))


# --- the parent's codes on "My subscriptions" ---------------------------------------------------------------


def test_parent_sees_each_code_with_its_absolute_link(client, owner, parent):
    client.force_login(owner)
    html = client.get("/subscriptions/").content.decode()
    unused = codes(parent)
    assert seat_rows(html, parent) == [(seat.code, "created") for seat in unused]
    assert seats_line(html, parent) == (
        "0 of 3 seats in use. Send the link of an unused code to the person you want to share with.")
    assert "Share Family pack" in html
    assert seat_cells(html, unused[0].code) == {
        "status": "unused", "holder": "—", "actions": "",
        "link": f"http://testserver/family/activate/{unused[0].code}/", "revoke": False}
    assert 'data-copy="code-' in html and "navigator.clipboard.writeText" in html


def test_codes_are_generated_when_the_page_renders(client, owner, parent, parent_type):
    """R-FAM-5: the list is brought up to the target whenever it is rendered."""
    FamilySubscriptionType.objects.filter(master_subscription_type=parent_type).update(count=4)
    client.force_login(owner)
    html = client.get("/subscriptions/").content.decode()
    assert len(codes(parent)) == 4
    assert [code for code, _status in seat_rows(html, parent)] == [seat.code for seat in codes(parent)]
    client.get("/subscriptions/")
    assert len(codes(parent)) == 4  # idempotent


def test_a_parent_whose_codes_cannot_be_worked_out_shows_none(client, owner, child_type):
    """R-FAM-8: a dynamic count without a payment is a configuration error; the page stays up."""
    dynamic = make_type("dynamic_pack", user_label="Dynamic pack")
    FamilySubscriptionType.objects.create(master_subscription_type=dynamic, slave_subscription_type=child_type,
                                          count=0)
    sub = subscription_services.create_subscription(user=owner, subscription_type=dynamic)
    client.force_login(owner)
    response = client.get("/subscriptions/")
    assert response.status_code == 200
    html = response.content.decode()
    assert seats_line(html, sub) == (
        "0 of 0 seats in use. Send the link of an unused code to the person you want to share with.")
    assert seat_rows(html, sub) == []
    assert R.objects.count() == 0


def test_only_running_and_upcoming_parents_have_a_section(client, owner, parent_type, frozen):
    ended = buy(owner, parent_type).subscription
    frozen.move_to(ended.end_time + timedelta(days=1))
    running = buy(owner, parent_type).subscription
    upcoming = subscription_services.create_subscription(user=owner, subscription_type=parent_type,
                                                         start=running.end_time + timedelta(days=5))
    client.force_login(owner)
    html = client.get("/subscriptions/").content.decode()
    assert re.findall(r'data-testid="family-codes" data-subscription="(\d+)"', html) == [
        str(running.pk), str(upcoming.pk)]
    assert len(seat_rows(html, upcoming)) == 3


def test_someone_elses_codes_and_plain_subscriptions_have_no_section(client, make_user, parent):
    reader = make_user()
    subscription_services.create_subscription(user=reader, subscription_type=make_type("web_month"))
    client.force_login(reader)
    html = client.get("/subscriptions/").content.decode()
    assert 'data-testid="family-codes"' not in html
    assert "navigator.clipboard" not in html
    assert not any(seat.code in html for seat in codes(parent))


def test_an_accepted_seat_shows_its_holder_and_a_revoke_button(client, owner, parent, holder):
    seat = family_services.activate(user=holder, code=first_code(parent))
    client.force_login(owner)
    html = client.get("/subscriptions/").content.decode()
    assert seat_rows(html, parent)[0] == (seat.code, "accepted")
    row = seat_cells(html, seat.code)
    assert (row["status"], row["holder"], row["revoke"]) == ("accepted", f"Karol Dieta since {shown(NOW)}", True)
    assert f'action="/family/revoke/{seat.code}/"' in html
    assert "Revoke the seat of Karol Dieta? Their access ends now." in html
    assert seats_line(html, parent).startswith("1 of 3 seats in use.")


def test_a_holder_without_a_name_is_shown_by_e_mail(client, owner, parent, make_user):
    seat = family_services.activate(user=make_user(email="anon@example.com"), code=first_code(parent))
    client.force_login(owner)
    assert seat_cells(client.get("/subscriptions/").content.decode(), seat.code)["holder"] == (
        f"anon@example.com since {shown(NOW)}")


# --- the child's rows -------------------------------------------------------------------------------------------


def test_the_child_sees_who_shares_the_subscription(client, parent, holder, make_user):
    seat = family_services.activate(user=holder, code=first_code(parent))
    own = subscription_services.create_subscription(user=holder, subscription_type=make_type("web_month",
                                                                                              user_label="Web"))
    client.force_login(holder)
    html = client.get("/subscriptions/").content.decode()
    assert label_cell(html, seat.slave_subscription) == "Digital for the family Shared by Petra Rodic"
    assert label_cell(html, own) == "Web (upcoming)"
    assert 'data-testid="family-codes"' not in html


def test_shared_by_names_the_parent_by_e_mail_and_stays_on_finished_rows(client, make_user, parent_type, holder,
                                                                          frozen):
    nameless = make_user(email="boss@example.com")
    parent = buy(nameless, parent_type).subscription
    seat = family_services.activate(user=holder, code=first_code(parent))
    frozen.move_to(parent.end_time + timedelta(days=1))
    client.force_login(holder)
    html = client.get("/subscriptions/?show=all").content.decode()
    assert label_cell(html, seat.slave_subscription) == "Digital for the family Shared by boss@example.com"


# --- revoke -----------------------------------------------------------------------------------------------------


def test_parent_revokes_a_seat(client, owner, parent, holder, frozen):
    """R-FAM-16: the holder's subscription ends now, the code is canceled, a fresh code takes the seat."""
    seat = family_services.activate(user=holder, code=first_code(parent))
    frozen.move_to(NOW + timedelta(days=2))
    client.force_login(owner)
    response = client.post(f"/family/revoke/{seat.code}/", follow=True)
    assert response.redirect_chain == [("/subscriptions/", 302)]
    assert messages_of(response) == [
        ("success", "The seat is free again: its holder no longer has access. A new code replaces the old one.")]
    seat.refresh_from_db()
    assert (seat.status, seat.canceled_at) == (R.CANCELED, NOW + timedelta(days=2))
    assert Subscription.objects.get(pk=seat.slave_subscription_id).end_time == NOW + timedelta(days=2)
    html = response.content.decode()
    usable = [s for s in codes(parent) if s.status != R.CANCELED]
    assert seat_rows(html, parent) == [(s.code, "created") for s in usable]
    assert len(usable) == 3 and seat.code not in [s.code for s in usable]


def test_revoking_a_code_that_is_not_in_use_is_refused(client, owner, parent):
    client.force_login(owner)
    before = snapshot()
    response = client.post(f"/family/revoke/{first_code(parent)}/", follow=True)
    assert messages_of(response) == [("error", "This code is not in use, so there is nothing to revoke.")]
    assert snapshot() == before


def test_a_reader_cannot_revoke_someone_elses_seat(client, parent, holder, make_user):
    seat = family_services.activate(user=holder, code=first_code(parent))
    client.force_login(make_user())
    before = snapshot()
    for code in (seat.code, "nosuchcode"):
        response = client.post(f"/family/revoke/{code}/", follow=True)
        assert messages_of(response) == [("error", "This code is not one of yours.")]
    client.force_login(holder)  # nor can the holder: the seat is the parent's
    response = client.post(f"/family/revoke/{seat.code}/", follow=True)
    assert messages_of(response) == [("error", "This code is not one of yours.")]
    assert snapshot() == before


def test_revoke_needs_a_logged_in_post(client, owner, parent, holder):
    seat = family_services.activate(user=holder, code=first_code(parent))
    before = snapshot()
    response = client.post(f"/family/revoke/{seat.code}/")
    assert (response.status_code, response.url) == (302, f"/login/?next=/family/revoke/{seat.code}/")
    client.force_login(owner)
    assert client.get(f"/family/revoke/{seat.code}/").status_code == 405
    assert snapshot() == before


# --- the landing page: every state (R-FAM-15) ----------------------------------------------------------------


def test_an_unknown_code_is_not_found(client, parent):
    before = snapshot()
    response = client.get("/family/activate/nosuchcode/")
    assert response.status_code == 404
    assert landing(response.content.decode()) == (
        "not_found", "Code not found Check that you opened the whole link you were sent.")
    assert snapshot() == before


def test_opening_the_page_marks_the_code_opened_once(client, parent, frozen):
    """R-FAM-4: opened_at is set the first time the landing page is opened."""
    code = first_code(parent)
    client.get(f"/family/activate/{code}/")
    frozen.move_to(NOW + timedelta(hours=1))
    client.get(f"/family/activate/{code}/")
    assert R.objects.get(code=code).opened_at == NOW
    assert [s.opened_at for s in codes(parent) if s.code != code] == [None, None]


def test_an_anonymous_reader_is_offered_to_log_in_or_sign_up(client, parent):
    code = first_code(parent)
    response = client.get(f"/family/activate/{code}/")
    assert response.status_code == 200
    html = response.content.decode()
    state, body = landing(html)
    assert state == "signup"
    assert heading(html) == "Petra Rodic shares a subscription with you"
    assert "Digital for the family (web)" in body
    assert "To activate it, log in or create an account." in body
    assert f'href="/login/?next=/family/activate/{code}/" data-testid="login"' in html
    assert 'name="action" value="signup"' in html and 'name="action" value="activate"' not in html


def test_the_login_link_brings_the_reader_back(client, parent, holder):
    code = first_code(parent)
    response = client.post(f"/login/?next=/family/activate/{code}/", {
        "username": "karol@example.com", "password": "correct-horse-1", "next": f"/family/activate/{code}/"})
    assert (response.status_code, response.url) == (302, f"/family/activate/{code}/")
    assert landing(client.get(response.url).content.decode())[0] == "confirm"


def test_a_logged_in_reader_confirms_and_gets_the_childs_subscription(client, parent, holder):
    """R-FAM-11/12: the child's subscription copies the parent's dates and gives the child type's access."""
    code = first_code(parent)
    client.force_login(holder)
    html = client.get(f"/family/activate/{code}/").content.decode()
    assert landing(html)[0] == "confirm"
    assert 'name="action" value="activate"' in html and 'data-testid="signup"' not in html
    response = client.post(f"/family/activate/{code}/", {"action": "activate"})
    assert (response.status_code, response.url) == (302, f"/family/activate/{code}/")
    seat = R.objects.get(code=code)
    child = seat.slave_subscription
    assert (seat.status, seat.slave_user_id, seat.accepted_at) == (R.ACCEPTED, holder.pk, NOW)
    assert (child.user_id, child.subscription_type.code, child.type) == (holder.pk, "family_web", "family")
    assert (child.start_time, child.end_time) == (parent.start_time, PARENT_END)
    html = client.get(response.url).content.decode()
    assert (landing(html)[0], heading(html)) == ("success", "Your shared subscription is active")
    table = re.search(r'data-testid="family-subscription">(.*?)</table>', html, re.DOTALL).group(1)
    assert cells(table) == {
        "label": "Digital for the family Shared by Petra Rodic", "access": "web",
        "start": shown(NOW), "end": shown(PARENT_END)}
    assert '<a href="/subscriptions/">My subscriptions</a>' in html
    assert R.objects.filter(master_subscription=parent, status=R.ACCEPTED).count() == 1


def test_the_child_then_has_web_access(client, parent, holder):
    client.force_login(holder)
    client.post(f"/family/activate/{first_code(parent)}/", {"action": "activate"})
    html = client.get("/").content.decode()
    assert text(re.search(r'data-testid="access-now">(.*?)</p>', html).group(1)) == "web"


def test_a_second_confirm_of_the_same_code_shows_success_and_writes_nothing(client, parent, holder):
    code = first_code(parent)
    client.force_login(holder)
    client.post(f"/family/activate/{code}/", {"action": "activate"})
    before = snapshot()
    response = client.post(f"/family/activate/{code}/", {"action": "activate"})
    assert (response.status_code, landing(response.content.decode())[0]) == (200, "success")
    assert snapshot() == before


def test_a_code_used_by_someone_else_shows_the_masked_e_mail_and_date(client, parent, holder, make_user):
    code = first_code(parent)
    family_services.activate(user=holder, code=code)
    on = shown(NOW, "DATE_FORMAT")
    expected = ("used", f"This code has already been used. It was activated by k***@example.com on {on}.")
    assert landing(client.get(f"/family/activate/{code}/").content.decode()) == expected
    client.force_login(make_user())
    before = snapshot()
    assert landing(client.get(f"/family/activate/{code}/").content.decode()) == expected
    response = client.post(f"/family/activate/{code}/", {"action": "activate"})
    assert (response.status_code, landing(response.content.decode())) == (200, expected)
    assert snapshot() == before


def test_a_canceled_code_is_no_longer_valid(client, owner, parent, holder):
    seat = family_services.activate(user=holder, code=first_code(parent))
    family_services.revoke(parent_user=owner, code=seat.code)
    client.force_login(holder)
    before = snapshot()
    response = client.post(f"/family/activate/{seat.code}/", {"action": "activate"})
    assert landing(response.content.decode()) == (
        "canceled", "This code is no longer valid Ask the person who shared it with you for a new one.")
    assert snapshot() == before


def test_a_code_of_an_ended_parent_has_expired(client, parent, holder, frozen):
    code = first_code(parent)
    frozen.move_to(PARENT_END)
    client.force_login(holder)
    before = snapshot()
    response = client.post(f"/family/activate/{code}/", {"action": "activate"})
    assert landing(response.content.decode()) == (
        "expired", "This code has expired. Ask the person who shared it with you for a new one.")
    assert snapshot() == before


def test_a_code_past_its_own_expiry_has_expired(client, parent):
    code = first_code(parent)
    R.objects.filter(code=code).update(expires_at=NOW)  # as staff set it in the admin
    assert landing(client.get(f"/family/activate/{code}/").content.decode())[0] == "expired"


# --- refused activations: the error page, nothing written (R-FAM-11) -------------------------------------------


def test_one_seat_per_reader(client, parent, holder):
    family_services.activate(user=holder, code=first_code(parent))
    code = first_code(parent)
    client.force_login(holder)
    before = snapshot()
    response = client.post(f"/family/activate/{code}/", {"action": "activate"})
    assert error_page(response) == (
        400, "You already hold a seat of this subscription.",
        "User [karol@example.com] already used company code from this company subscription.")
    assert snapshot() == before


def test_the_parent_cannot_use_his_own_code_when_self_use_is_off(client, owner, parent, settings):
    settings.FAMILY_ALLOW_SELF_ACTIVATION = False
    code = first_code(parent)
    client.force_login(owner)
    before = snapshot()
    response = client.post(f"/family/activate/{code}/", {"action": "activate"})
    assert error_page(response) == (
        400, "This code cannot be used on the account that shares it.",
        f"Cannot activate family request code [{code}] on parent's account")
    assert snapshot() == before


def test_an_unsupported_donation_method_is_an_internal_error(client, make_user, child_type, holder):
    """R-FAM-17: a family type row whose method is not copy (nor fixed days) activates nothing."""
    legacy = make_type("legacy_pack")
    FamilySubscriptionType.objects.create(master_subscription_type=legacy, slave_subscription_type=child_type,
                                          donation_method="gift", count=1)
    parent = buy(make_user(), legacy).subscription
    code = first_code(parent)
    client.force_login(holder)
    before = snapshot()
    response = client.post(f"/family/activate/{code}/", {"action": "activate"})
    assert error_page(response) == (500, "The code could not be activated.", "Internal server error")
    assert snapshot() == before


def test_a_code_taken_between_the_page_and_the_confirm(client, parent, holder, make_user, monkeypatch):
    """Two readers confirm one code: the row lock lets one win; the other gets the error page (409)."""
    code = first_code(parent)
    rival = make_user(email="rival@example.com")
    real_activate = family_services.activate

    def raced(*, user, code):
        real_activate(user=rival, code=code)
        return real_activate(user=user, code=code)

    monkeypatch.setattr(family_services, "activate", raced)
    client.force_login(holder)
    response = client.post(f"/family/activate/{code}/", {"action": "activate"})
    assert error_page(response) == (
        409, "This code has already been used.", f"Family request code [{code}] has wrong status: accepted")
    assert R.objects.get(code=code).slave_user_id == rival.pk
    assert not Subscription.objects.filter(user=holder).exists()


def test_an_anonymous_confirm_goes_to_the_login_page(client, parent):
    code = first_code(parent)
    before = snapshot()
    response = client.post(f"/family/activate/{code}/", {"action": "activate"})
    assert (response.status_code, response.url) == (302, f"/login/?next=/family/activate/{code}/")
    assert snapshot() == before


# --- signing up on the landing page ------------------------------------------------------------------------------


def test_signup_creates_the_account_logs_in_and_returns_to_the_confirm_step(client, parent):
    code = first_code(parent)
    response = client.post(f"/family/activate/{code}/", {
        "action": "signup", "email": " Nova@Example.com ", "password": "long-enough-1", "first_name": "Nova"})
    assert (response.status_code, response.url) == (302, f"/family/activate/{code}/")
    reader = User.objects.get(email="nova@example.com")
    assert (reader.source, reader.first_name, reader.locale) == ("family", "Nova", "en")
    assert reader.check_password("long-enough-1")
    html = client.get(response.url).content.decode()
    assert landing(html)[0] == "confirm"
    assert 'data-testid="whoami">nova@example.com<' in html
    assert R.objects.get(code=code).status == R.CREATED  # activation waits for the confirm
    client.post(f"/family/activate/{code}/", {"action": "activate"})
    assert R.objects.get(code=code).slave_user_id == reader.pk


def test_signup_in_slovak_keeps_the_readers_language(client, parent):
    code = first_code(parent)
    client.post(f"/family/activate/{code}/", {"action": "signup", "email": "sk@example.com",
                                              "password": "long-enough-1"}, HTTP_ACCEPT_LANGUAGE="sk")
    assert User.objects.get(email="sk@example.com").locale == "sk"


def field_errors(html: str) -> dict[str, str]:
    form = re.search(r'<form method="post" data-testid="signup">(.*?)</form>', html, re.DOTALL).group(1)
    return {name: text(errors) for name, errors in re.findall(
        r'<input [^>]*name="(\w+)"[^>]*>\s*<ul class="errorlist"[^>]*>(.*?)</ul>', form, re.DOTALL)}


@pytest.mark.parametrize(("data", "errors"), [
    ({"email": "not-an-email", "password": "long-enough-1"}, {"email": "Enter a valid email address."}),
    ({"email": "", "password": ""}, {"email": "This field is required.", "password": "This field is required."}),
    ({"email": "new@example.com", "password": "short"},
     {"password": "This password is too short. It must contain at least 8 characters."}),
    ({"email": "new@example.com", "password": "long-enough-1", "first_name": "x" * 151},
     {"first_name": "Ensure this value has at most 150 characters (it has 151)."}),
    ({"email": "KAROL@example.com", "password": "long-enough-1"},
     {"email": "An account with this e-mail already exists. Please log in instead."}),
])
def test_invalid_signup_shows_the_errors_and_writes_nothing(client, parent, holder, data, errors):
    code = first_code(parent)
    client.get(f"/family/activate/{code}/")  # opened_at is written by the visit, before the snapshot
    before = snapshot()
    response = client.post(f"/family/activate/{code}/", {"action": "signup", **data})
    assert response.status_code == 200
    html = response.content.decode()
    assert landing(html)[0] == "signup"
    assert field_errors(html) == errors
    assert f'value="{data["email"]}"' in html
    assert snapshot() == before
    assert "_auth_user_id" not in client.session


def test_a_logged_in_reader_posting_the_signup_form_stays_on_the_confirm_step(client, parent, holder):
    code = first_code(parent)
    client.force_login(holder)
    client.get(f"/family/activate/{code}/")
    before = snapshot()
    response = client.post(f"/family/activate/{code}/", {"action": "signup", "email": "x@example.com",
                                                         "password": "long-enough-1"})
    assert (response.status_code, landing(response.content.decode())[0]) == (200, "confirm")
    assert snapshot() == before
