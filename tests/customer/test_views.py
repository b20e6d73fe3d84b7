"""Customer zone: "My subscriptions" (running and future ones, finished behind ?show=all) and the
"Your access" summary on the home page. Time is frozen at 2021-03-15 10:00 in Europe/Bratislava."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine

from masthead.core import catalog
from masthead.subscriptions import services
from masthead.subscriptions.periods import add_days

pytestmark = pytest.mark.django_db

TZ = ZoneInfo("Europe/Bratislava")
NOW = datetime(2021, 3, 15, 10, tzinfo=TZ).astimezone(UTC)


def n(days: int) -> datetime:
    return add_days(NOW, days)


@pytest.fixture(autouse=True)
def frozen(settings):
    settings.TIME_ZONE = "Europe/Bratislava"
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def types(db):
    catalog.load("content_access:\n  - name: web\n    sorting: 10\n  - name: mobile\n    sorting: 20\n"
                 "  - name: print\n    sorting: 30\n")
    web, _ = services.save_subscription_type(
        code="web", fields={"name": "Web", "user_label": "Digital, one month", "price": "9.90", "length": 30},
        content_access=["web", "mobile"], items=[])
    printed, _ = services.save_subscription_type(
        code="print", fields={"name": "Print", "user_label": "Printed edition", "price": "20.00", "length": 30,
                              "extension_method": "start_now"},
        content_access=["print"], items=[])
    return {"web": web, "print": printed}


def rows(html: str, testid: str) -> list[str]:
    table = re.search(rf'data-testid="{testid}">(.*?)</table>', html, re.DOTALL)
    return re.findall(r'<tr data-subscription="(\d+)">', table.group(1)) if table else []


def cells(html: str, pk: int) -> dict[str, str]:
    row = re.search(rf'<tr data-subscription="{pk}">(.*?)</tr>', html, re.DOTALL).group(1)
    return {cls: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", text)).strip()
            for cls, text in re.findall(r'<td class="(\w+)">(.*?)</td>', row, re.DOTALL)}


@pytest.fixture
def timeline(user, make_user, types):
    web, printed = types["web"], types["print"]
    return {
        "finished": services.create_subscription(user=user, subscription_type=web, start=n(-60), end=n(-30)),
        "running": services.create_subscription(user=user, subscription_type=web, start=n(-10)),
        "future": services.create_subscription(user=user, subscription_type=printed, start=n(40)),
        # stopped before it started: zero-length, finished
        "zero": services.create_subscription(user=user, subscription_type=printed, start=n(50), end=n(50)),
        "foreign": services.create_subscription(user=make_user(email="other@example.com"), subscription_type=web),
    }


def test_login_required(client):
    response = client.get("/subscriptions/")
    assert response.status_code == 302
    assert response.url == "/login/?next=/subscriptions/"


def test_shows_running_and_future_and_hides_finished(client, user, timeline):
    client.force_login(user)
    html = client.get("/subscriptions/").content.decode()
    assert rows(html, "current-subscriptions") == [str(timeline["running"].pk), str(timeline["future"].pk)]
    assert 'data-testid="finished-subscriptions"' not in html
    assert str(timeline["foreign"].pk) not in re.findall(r'data-subscription="(\d+)"', html)
    assert cells(html, timeline["running"].pk) == {
        "label": "Digital, one month", "access": "web, mobile",
        "start": "March 5, 2021, 10 a.m.", "end": "April 4, 2021, 10 a.m."}
    assert cells(html, timeline["future"].pk)["label"] == "Printed edition (upcoming)"
    assert 'href="/subscriptions/?show=all"' in html and "Show finished subscriptions (2)" in html


def test_show_all_adds_the_finished_ones_newest_end_first(client, user, timeline):
    client.force_login(user)
    html = client.get("/subscriptions/?show=all").content.decode()
    assert rows(html, "current-subscriptions") == [str(timeline["running"].pk), str(timeline["future"].pk)]
    assert rows(html, "finished-subscriptions") == [str(timeline["zero"].pk), str(timeline["finished"].pk)]
    assert "Hide finished subscriptions" in html and 'href="/subscriptions/"' in html


def test_dates_in_the_readers_language(client, make_user, types):
    reader = make_user(email="sk@example.com", locale="sk")
    sub = services.create_subscription(user=reader, subscription_type=types["web"], start=n(-10))
    client.force_login(reader)
    html = client.get("/subscriptions/").content.decode()
    assert (cells(html, sub.pk)["start"], cells(html, sub.pk)["end"]) == ("5. marec 2021 10:00", "4. apríl 2021 10:00")


def test_empty_state(client, user, types):
    services.create_subscription(user=user, subscription_type=types["web"], start=n(-60), end=n(-30))
    client.force_login(user)
    html = client.get("/subscriptions/").content.decode()
    assert "You have no active or upcoming subscriptions." in html
    assert 'data-testid="current-subscriptions"' not in html
    assert "Show finished subscriptions (1)" in html
    all_rows = client.get("/subscriptions/?show=all").content.decode()
    assert len(rows(all_rows, "finished-subscriptions")) == 1


def test_navigation_links_my_subscriptions(client, user):
    client.force_login(user)
    html = client.get("/account/").content.decode()
    assert '<a href="/subscriptions/">My subscriptions</a>' in html


def test_home_shows_the_access_held_now(client, user, timeline):
    client.force_login(user)
    html = client.get("/").content.decode()
    section = re.search(r'data-widget="subscriptions.access">(.*?)</section>', html, re.DOTALL).group(1)
    assert "Your access" in section
    assert re.sub(r"<[^>]+>", "", re.search(r'data-testid="access-now">(.*?)</p>', section).group(1)) == "web, mobile"


def test_home_without_access(client, user, types):
    client.force_login(user)
    html = client.get("/").content.decode()
    assert "You have no access right now." in html
