"""Customer zone in a real browser: login, home, language setting, logout."""


import pytest
from django.utils import translation
from django.utils.translation import gettext
from playwright.sync_api import expect

from tests.e2e.conftest import PASSWORD

pytestmark = pytest.mark.e2e


def test_reader_logs_in_switches_to_slovak_and_logs_out(page, live_server, reader):
    page.goto("/login/")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("main h1")).to_have_text("Log in")
    page.fill('input[name="username"]', "reader@example.com")
    page.fill('input[name="password"]', PASSWORD)
    page.locator("main form button[type=submit]").click()

    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.locator('[data-testid="whoami"]')).to_have_text("reader@example.com")
    expect(page.locator("main h1")).to_have_text("Hello, Rea")

    page.goto("/account/")
    expect(page.locator("#id_locale")).to_have_value("en")
    page.select_option("#id_locale", "sk")
    page.locator("main form button[type=submit]").click()

    expect(page).to_have_url(f"{live_server.url}/account/")
    expect(page.locator("html")).to_have_attribute("lang", "sk")
    with translation.override("sk"):
        saved, settings_link, log_out = gettext("Saved."), gettext("Settings"), gettext("Log out")
    # The confirmation is already in the newly chosen language.
    assert saved != "Saved."
    expect(page.locator(".messages li.success")).to_have_text(saved)
    expect(page.locator('header nav a[href="/account/"]')).to_have_text(settings_link)
    expect(page.locator("#id_locale")).to_have_value("sk")
    reader.refresh_from_db()
    assert reader.locale == "sk"

    # The "Log out" button, now in Slovak.
    assert log_out != "Log out"
    logout = page.locator('header form[action="/logout/"] button[type=submit]')
    expect(logout).to_have_text(log_out)
    logout.click()

    expect(page).to_have_url(f"{live_server.url}/login/")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("main h1")).to_have_text("Log in")
    expect(page.locator('[data-testid="whoami"]')).to_have_count(0)

    # The session is gone: the home page sends the browser back to the login page.
    page.goto("/")
    expect(page).to_have_url(f"{live_server.url}/login/?next=/")


def test_reader_login_with_wrong_password_stays_on_login_page(page, live_server, reader):
    page.goto("/login/")
    page.fill('input[name="username"]', "reader@example.com")
    page.fill('input[name="password"]', "wrong-password")
    page.locator("main form button[type=submit]").click()

    expect(page).to_have_url(f"{live_server.url}/login/")
    expect(page.locator("main .errorlist")).to_have_text(
        "Please enter a correct e-mail and password. Note that both fields may be case-sensitive.")
    expect(page.locator('input[name="username"]')).to_have_value("reader@example.com")
    expect(page.locator('[data-testid="whoami"]')).to_have_count(0)
