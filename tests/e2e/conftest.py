"""Browser tests: Playwright (sync API) driving the system Chromium against pytest-django's live_server."""

import os
from pathlib import Path

import pytest

from tests.conftest import require_service

# Playwright's sync API keeps an asyncio event loop in this thread; Django would otherwise refuse
# ORM calls made from the test body ("You cannot call this from an async context").
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 10_000

PASSWORD = "correct-horse-1"


@pytest.fixture(scope="session")
def browser():
    require_service(f"Chromium ({CHROMIUM})", Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def context(browser, live_server):
    context = browser.new_context(base_url=live_server.url, locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(context):
    page = context.new_page()
    try:
        yield page
    finally:
        page.close()


@pytest.fixture
def admin_user(live_server):
    from masthead.users import services

    return services.create_user(email="boss@example.com", password=PASSWORD, first_name="Boss",
                                is_superuser=True)


@pytest.fixture
def reader(live_server):
    from masthead.users import services

    return services.create_user(email="reader@example.com", password=PASSWORD, first_name="Rea")


def admin_login(page, email: str, password: str) -> None:
    page.goto("/admin/login/")
    page.fill("#id_username", email)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_load_state()
