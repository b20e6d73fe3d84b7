"""Translations: the API, the customer zone and the user's own language; the Slovak catalog is complete."""

import gettext
import json
import shutil
from pathlib import Path

import polib
import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from tests.conftest import require_service

pytestmark = pytest.mark.django_db

LOGIN_API = "/api/v1/users/login"
LOCALE_DIR = Path(settings.LOCALE_PATHS[0])
SK_PO = LOCALE_DIR / "sk" / "LC_MESSAGES" / "django.po"
SK_MO = LOCALE_DIR / "sk" / "LC_MESSAGES" / "django.mo"

WRONG_PASSWORD_EN = "The password you entered doesn't match our records. Please log in as you would on the website."
WRONG_PASSWORD_SK = "Zadané heslo sa nezhoduje s našimi záznamami. Prihláste sa, prosím, tak, ako na webe."
LOG_IN_SK = "Prihlásiť sa"
MY_ACCOUNT_SK = "Môj účet"


def untranslated(path: Path) -> list[str]:
    """Problems of a catalog meant to be complete: fuzzy entries, empty translations, missing plural forms."""
    catalog = polib.pofile(str(path))
    problems = [f"fuzzy: {path.name}:{e.linenum} {e.msgid!r}" for e in catalog.fuzzy_entries()]
    problems += [f"untranslated: {path.name}:{e.linenum} {e.msgid!r}" for e in catalog.untranslated_entries()]
    return problems


# --- API --------------------------------------------------------------------------------------


def _login(client, language: str):
    return client.post(LOGIN_API, data=json.dumps({"email": "jana@example.com", "password": "wrong-password"}),
                       content_type="application/json", HTTP_ACCEPT_LANGUAGE=language)


def test_api_login_error_in_slovak(client, make_user):
    make_user(email="jana@example.com")
    response = _login(client, "sk")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_credential"
    assert body["message"] == WRONG_PASSWORD_SK


def test_api_login_error_in_english(client, make_user):
    make_user(email="jana@example.com")
    response = _login(client, "en")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_credential"
    assert body["message"] == WRONG_PASSWORD_EN


def test_api_unknown_email_in_slovak(client):
    response = _login(client, "sk-SK,sk;q=0.9,en;q=0.5")
    assert response.status_code == 400
    assert response.json()["code"] == "identity_not_found"
    assert response.json()["message"] == (
        "Zadaný e-mail sa nezhoduje s našimi záznamami. Prihláste sa, prosím, tak, ako na webe.")


# --- customer zone ----------------------------------------------------------------------------


def test_login_page_in_slovak(client):
    response = client.get("/login/", HTTP_ACCEPT_LANGUAGE="sk")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<html lang="sk">' in html
    assert LOG_IN_SK in html
    assert ">Log in<" not in html


def test_login_page_in_english(client):
    html = client.get("/login/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert '<html lang="en">' in html
    assert "Log in" in html and LOG_IN_SK not in html


def test_user_locale_wins_over_browser_language(client, make_user):
    client.force_login(make_user(email="jana@example.com", first_name="Jana", locale="sk"))
    response = client.get("/", HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<html lang="sk">' in html
    assert "Dobrý deň, Jana" in html
    assert MY_ACCOUNT_SK in html
    assert response.headers["Content-Language"] == "sk"


def test_english_user_gets_english_despite_slovak_browser(client, make_user):
    client.force_login(make_user(email="john@example.com", first_name="John", locale="en"))
    html = client.get("/", HTTP_ACCEPT_LANGUAGE="sk").content.decode()
    assert '<html lang="en">' in html
    assert "Hello, John" in html


# --- the catalogs -----------------------------------------------------------------------------


def test_slovak_catalog_is_complete():
    assert len(polib.pofile(str(SK_PO)).translated_entries()) > 50, "the Slovak catalog looks empty"
    assert untranslated(SK_PO) == []


def test_slovak_catalog_header():
    metadata = polib.pofile(str(SK_PO)).metadata
    assert metadata["Language"] == "sk"
    assert metadata["Plural-Forms"] == "nplurals=3; plural=(n==1) ? 0 : (n>=2 && n<=4) ? 1 : 2;"


def test_slovak_mo_is_compiled_from_the_current_po():
    """The committed .mo must match the .po (`make messages` after editing it)."""
    with SK_MO.open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    stale = []
    for e in polib.pofile(str(SK_PO)).translated_entries():
        key = f"{e.msgctxt}\x04{e.msgid}" if e.msgctxt else e.msgid
        expected = e.msgstr_plural[0] if e.msgid_plural else e.msgstr
        if compiled._catalog.get((key, 0) if e.msgid_plural else key) != expected:
            stale.append(e.msgid)
    assert stale == []


def test_every_marked_string_is_in_the_slovak_catalog(tmp_path, monkeypatch):
    """Re-extract the strings (in a copy of the package) and require a Slovak translation for each.

    Catches a new _("...") or {% translate %} added without running makemessages and translating it.
    """
    require_service("GNU gettext (xgettext)", shutil.which("xgettext") is not None)
    package = Path(settings.BASE_DIR)
    copy = tmp_path / "masthead"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__", "*.mo", "var", "*.sqlite3"))
    monkeypatch.chdir(copy)
    with override_settings(LOCALE_PATHS=[]):
        call_command("makemessages", locale=["sk"], ignore_patterns=["migrations/*"], no_obsolete=True,
                     verbosity=0)
    assert untranslated(copy / "locale" / "sk" / "LC_MESSAGES" / "django.po") == []
