"""Translations: the API, the customer zone and the user's own language; the Slovak catalog is complete."""

import gettext
import json
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

pytestmark = pytest.mark.django_db

LOGIN_API = "/api/v1/users/login"
LOCALE_DIR = Path(settings.LOCALE_PATHS[0])
SK_PO = LOCALE_DIR / "sk" / "LC_MESSAGES" / "django.po"
SK_MO = LOCALE_DIR / "sk" / "LC_MESSAGES" / "django.mo"

WRONG_PASSWORD_EN = "The password you entered doesn't match our records. Please log in as you would on the website."
WRONG_PASSWORD_SK = "Zadané heslo sa nezhoduje s našimi záznamami. Prihláste sa, prosím, tak, ako na webe."
LOG_IN_SK = "Prihlásiť sa"
MY_ACCOUNT_SK = "Môj účet"


# --- a tiny .po reader (no polib dependency) -------------------------------------------------


def _unquote(text: str) -> str:
    text = text.strip()
    assert text.startswith('"') and text.endswith('"'), text
    escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}
    out, chars = [], iter(text[1:-1])
    for char in chars:
        out.append(escapes.get(next(chars), "?") if char == "\\" else char)
    return "".join(out)


def parse_po(path: Path) -> list[dict]:
    """Entries as dicts: msgid, msgid_plural (or None), msgstrs (list), fuzzy, obsolete, line."""
    entries, entry, field = [], None, None

    def finish():
        if entry is not None and "msgid" in entry:
            entries.append(entry)

    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        obsolete = line.startswith("#~")
        if obsolete:
            line = line[2:].strip()
        if not line:
            continue
        if line.startswith("#") and not obsolete:
            if entry is not None and "msgid" in entry:
                finish()
                entry = None
            if entry is None:
                entry = {"fuzzy": False, "obsolete": False, "msgid_plural": None, "msgstrs": {}, "line": number}
            if line.startswith("#,") and "fuzzy" in line[2:].replace(",", " ").split():
                entry["fuzzy"] = True
            continue
        if line.startswith("msgid "):
            if entry is not None and "msgid" in entry:
                finish()
                entry = None
            if entry is None:
                entry = {"fuzzy": False, "obsolete": False, "msgid_plural": None, "msgstrs": {}, "line": number}
            entry["msgid"], entry["obsolete"], field = _unquote(line[6:]), obsolete, ("msgid", None)
            entry["line"] = number
        elif line.startswith("msgid_plural "):
            entry["msgid_plural"], field = _unquote(line[13:]), ("msgid_plural", None)
        elif line.startswith("msgstr["):
            index = int(line[7:line.index("]")])
            entry["msgstrs"][index], field = _unquote(line[line.index("]") + 1:]), ("msgstrs", index)
        elif line.startswith("msgstr "):
            entry["msgstrs"][0], field = _unquote(line[7:]), ("msgstrs", 0)
        elif line.startswith('"'):
            name, index = field
            if name == "msgstrs":
                entry["msgstrs"][index] += _unquote(line)
            else:
                entry[name] += _unquote(line)
        else:
            raise AssertionError(f"{path}:{number}: cannot parse {raw!r}")
    finish()
    for item in entries:
        item["msgstrs"] = [item["msgstrs"][i] for i in sorted(item["msgstrs"])]
    return entries


def untranslated(path: Path) -> list[str]:
    """Problems of a catalog meant to be complete: fuzzy entries, empty translations, missing plural forms."""
    problems = []
    entries = parse_po(path)
    header = next((e for e in entries if e["msgid"] == ""), None)
    nplurals = 2
    if header is not None:
        for part in header["msgstrs"][0].split("\n"):
            if part.startswith("Plural-Forms:") and "nplurals=" in part:
                nplurals = int(part.split("nplurals=")[1].split(";")[0])
    for e in entries:
        if e["obsolete"]:
            continue
        where = f"{path.name}:{e['line']} {e['msgid']!r}"
        if e["fuzzy"]:
            problems.append(f"fuzzy: {where}")
        if e["msgid"] == "":
            continue
        expected = nplurals if e["msgid_plural"] is not None else 1
        if len(e["msgstrs"]) != expected or not all(s.strip() for s in e["msgstrs"]):
            problems.append(f"untranslated: {where}")
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
    entries = [e for e in parse_po(SK_PO) if e["msgid"] and not e["obsolete"]]
    assert len(entries) > 50, "the Slovak catalog looks empty"
    assert untranslated(SK_PO) == []


def test_slovak_catalog_header():
    header = next(e for e in parse_po(SK_PO) if e["msgid"] == "")["msgstrs"][0]
    assert "Language: sk\n" in header
    assert "Plural-Forms: nplurals=3; plural=(n==1) ? 0 : (n>=2 && n<=4) ? 1 : 2;\n" in header


def test_slovak_mo_is_compiled_from_the_current_po():
    """The committed .mo must match the .po (run compilemessages after editing it)."""
    with SK_MO.open("rb") as handle:
        catalog = gettext.GNUTranslations(handle)
    stale = []
    for e in parse_po(SK_PO):
        if not e["msgid"] or e["obsolete"] or e["fuzzy"]:
            continue
        if e["msgid_plural"] is None:
            if catalog.gettext(e["msgid"]) != e["msgstrs"][0]:
                stale.append(e["msgid"])
        elif catalog.ngettext(e["msgid"], e["msgid_plural"], 1) != e["msgstrs"][0]:
            stale.append(e["msgid"])
    assert stale == []


def test_parser_flags_fuzzy_and_empty(tmp_path):
    po = tmp_path / "django.po"
    po.write_text(
        'msgid ""\nmsgstr ""\n"Plural-Forms: nplurals=3; plural=0;\\n"\n\n'
        '#: a.py:1\nmsgid "Done"\nmsgstr "Hotovo"\n\n'
        '#: a.py:2\n#, fuzzy, python-format\nmsgid "Hi %(name)s"\nmsgstr "Ahoj %(name)s"\n\n'
        '#: a.py:3\nmsgid ""\n"Long "\n"text"\nmsgstr ""\n\n'
        '#: a.py:4\nmsgid "%(n)d item"\nmsgid_plural "%(n)d items"\nmsgstr[0] "%(n)d vec"\nmsgstr[1] "%(n)d veci"\n'
        'msgstr[2] ""\n\n'
        '#~ msgid "Old"\n#~ msgstr ""\n',
        encoding="utf-8",
    )
    problems = untranslated(po)
    assert problems == [
        "fuzzy: django.po:11 'Hi %(name)s'",
        "untranslated: django.po:15 'Long text'",
        "untranslated: django.po:21 '%(n)d item'",
    ]


@pytest.mark.skipif(shutil.which("xgettext") is None, reason="GNU gettext (xgettext) is not installed")
def test_every_marked_string_is_in_the_slovak_catalog(tmp_path, monkeypatch):
    """Re-extract the strings (in a copy of the package) and require a Slovak translation for each.

    Catches a new _("...") or {% translate %} added without running makemessages and translating it.
    """
    package = Path(settings.BASE_DIR)
    copy = tmp_path / "masthead"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__", "*.mo", "var", "*.sqlite3"))
    monkeypatch.chdir(copy)
    with override_settings(LOCALE_PATHS=[]):
        call_command("makemessages", locale=["sk"], ignore_patterns=["migrations/*"], no_obsolete=True,
                     verbosity=0)
    assert untranslated(copy / "locale" / "sk" / "LC_MESSAGES" / "django.po") == []
