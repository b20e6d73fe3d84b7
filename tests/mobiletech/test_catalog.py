"""Catalog sections of premium SMS (R-MT-18 templates, billing keys, keyword actions): they load, update and
stay unchanged on a second load; each refused entry names its field and writes nothing (the whole file is
rolled back); the demo catalog loads twice."""

from decimal import Decimal

import pytest

from masthead.core import catalog
from masthead.mobiletech import catalog as mt_catalog
from masthead.mobiletech.models import BillingKey, KeywordAction, Template

pytestmark = pytest.mark.django_db

TYPES = """\
subscription_types:
  - {code: web_month, name: Web month, user_label: Web month, price: "9.90", length: 31}
"""
TEMPLATES = """\
mobiletech_templates:
  - {code: bought, body: "Thanks! {{ subscription_name }} for {{ price }} EUR."}
  - {code: stop_confirmation, body: "{% if stopped %}Stopped.{% else %}Nothing to stop.{% endif %}"}
"""
KEYS = """\
billing_keys:
  - {code: FREE, amount: "0"}
  - {code: BK4, amount: "4.00", description: Four euro}
"""
BASE = TYPES + TEMPLATES + KEYS


@pytest.fixture(autouse=True)
def sections():
    """The premium SMS sections, registered once (the app config calls register() in production)."""
    if not set(mt_catalog.SECTIONS) <= {section.name for section in catalog.sections()}:
        mt_catalog.register()


def counts(report, name):
    return report.counts[name]


def written():
    return (list(Template.objects.values_list("code", "body")),
            list(BillingKey.objects.values_list("code", "amount", "active")),
            list(KeywordAction.objects.values_list("keyword", "action", "template_code")))


# --- loading --------------------------------------------------------------------------------------------


def test_templates_load_update_and_unchanged():
    report = catalog.load(TEMPLATES)
    assert counts(report, "mobiletech_templates") == {"created": 2, "updated": 0, "unchanged": 0}
    assert list(Template.objects.values_list("code", "body", "description")) == [
        ("bought", "Thanks! {{ subscription_name }} for {{ price }} EUR.", ""),
        ("stop_confirmation", "{% if stopped %}Stopped.{% else %}Nothing to stop.{% endif %}", "")]
    assert counts(catalog.load(TEMPLATES), "mobiletech_templates") == {"created": 0, "updated": 0, "unchanged": 2}
    changed = catalog.load('mobiletech_templates:\n  - {code: bought, body: "Yours: {{ subscription_name }}", '
                           'description: Reply to WEB}\n')
    assert counts(changed, "mobiletech_templates") == {"created": 0, "updated": 1, "unchanged": 0}
    assert Template.objects.get(code="bought").body == "Yours: {{ subscription_name }}"
    assert Template.objects.get(code="bought").description == "Reply to WEB"


def test_template_sample_params_make_a_body_render():
    """``{{ price + 1 }}`` fails with the name standing for itself (a string) and renders with a number."""
    body = 'mobiletech_templates:\n  - {code: next, body: "Next: {{ price + 1 }}", sample_params: {price: 3}}\n'
    assert counts(catalog.load(body), "mobiletech_templates")["created"] == 1
    assert Template.objects.get().body == "Next: {{ price + 1 }}"


def test_template_of_exactly_160_characters_is_accepted():
    body = "x" * 150 + "{{ name }}"
    catalog.load(f'mobiletech_templates:\n  - {{code: long, body: "{body}", sample_params: {{name: "0123456789"}}}}\n')
    assert Template.objects.get().body == body


def test_billing_keys_load_update_and_unchanged():
    report = catalog.load(KEYS)
    assert counts(report, "billing_keys") == {"created": 2, "updated": 0, "unchanged": 0}
    assert list(BillingKey.objects.values_list("code", "amount", "description", "active")) == [
        ("BK4", Decimal("4.00"), "Four euro", True), ("FREE", Decimal("0.00"), "", True)]
    assert counts(catalog.load(KEYS), "billing_keys") == {"created": 0, "updated": 0, "unchanged": 2}
    changed = catalog.load('billing_keys:\n  - {code: BK4, amount: "4.50", active: false}\n')
    assert counts(changed, "billing_keys") == {"created": 0, "updated": 1, "unchanged": 0}
    assert list(BillingKey.objects.filter(code="BK4").values_list("amount", "description", "active")) == [
        (Decimal("4.50"), "", False)]


def test_keyword_actions_load_update_and_unchanged():
    actions = ("keyword_actions:\n"
                "  - {keyword: web, subscription_type: web_month, billing_key: BK4, template_code: bought, "
                "recurrent: true}\n"
                "  - {keyword: Stop, action: stop, template_code: stop_confirmation}\n")
    report = catalog.load(BASE + actions)
    assert counts(report, "keyword_actions") == {"created": 2, "updated": 0, "unchanged": 0}
    rows = {row.keyword: row for row in KeywordAction.objects.select_related("subscription_type", "billing_key")}
    assert sorted(rows) == ["STOP", "WEB"]  # upper-cased
    web, stop = rows["WEB"], rows["STOP"]
    assert (web.action, web.subscription_type.code, web.billing_key.code, web.template_code, web.recurrent,
            web.active) == ("buy", "web_month", "BK4", "bought", True, True)
    assert (stop.action, stop.subscription_type, stop.billing_key, stop.template_code, stop.recurrent) == (
        "stop", None, None, "stop_confirmation", False)
    assert counts(catalog.load(BASE + actions), "keyword_actions") == {"created": 0, "updated": 0, "unchanged": 2}
    changed = catalog.load(BASE + "keyword_actions:\n  - {keyword: WEB, subscription_type: web_month, "
                                  "billing_key: FREE, template_code: bought, active: false}\n")
    assert counts(changed, "keyword_actions") == {"created": 0, "updated": 1, "unchanged": 0}
    web.refresh_from_db()
    assert (web.billing_key.code, web.recurrent, web.active) == ("FREE", False, False)
    assert KeywordAction.objects.count() == 2


def test_stop_without_a_template_uses_the_configured_one():
    catalog.load("keyword_actions:\n  - {keyword: stop, action: stop}\n")
    assert list(KeywordAction.objects.values_list("keyword", "action", "template_code")) == [("STOP", "stop", "")]


def test_demo_catalog_has_the_premium_sms_reference_data():
    first = catalog.load_file(catalog.DEMO_CATALOG)
    assert [counts(first, name)["created"] for name in mt_catalog.SECTIONS] == [3, 2, 2]
    assert sorted(Template.objects.values_list("code", flat=True)) == ["bought", "receipt", "stop_confirmation"]
    assert list(BillingKey.objects.values_list("code", "amount")) == [("BK4", Decimal("4.00")),
                                                                      ("FREE", Decimal("0.00"))]
    web = KeywordAction.objects.get(keyword="WEB")
    assert (web.action, web.subscription_type.code, web.billing_key.code, web.template_code, web.recurrent) == (
        "buy", "web_month", "BK4", "bought", True)
    assert KeywordAction.objects.get(keyword="STOP").action == "stop"
    second = catalog.load_file(catalog.DEMO_CATALOG)
    assert [counts(second, name) for name in mt_catalog.SECTIONS] == [
        {"created": 0, "updated": 0, "unchanged": n} for n in (3, 2, 2)]


# --- refusals ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("entry", "reason"), [
    ('{code: bad, body: "Hello {{ name"}', ("mobiletech_templates: 'body': The text is not a valid template: "
                                            "syntax error:")),
    ('{code: bad, body: "{{ price + 1 }}"}', ("mobiletech_templates: 'body': The text cannot be rendered with the "
                                              "sample parameters: ")),
    ('{code: bad, body: "' + "x" * 161 + '"}', ("mobiletech_templates: 'body': The text has 161 characters with the "
                                                "sample parameters; a premium SMS has at most 160.")),
    ('{code: bad, body: "' + "x" * 150 + '{{ name }}", sample_params: {name: "01234567890"}}',
     "'body': The text has 161 characters"),
    ('{code: bad, body: ""}', "mobiletech_templates: 'body': String should have at least 1 character"),
    ('{code: "two words", body: "Hi"}', "mobiletech_templates: 'code': String should match pattern"),
    ('{code: bad, body: "Hi", colour: red}', "mobiletech_templates: 'colour': unknown key"),
    ('{code: bad, body: "Hi", sample_params: [1]}', "mobiletech_templates: 'sample_params': "),
])
def test_bad_templates_write_nothing(entry, reason):
    with pytest.raises(catalog.CatalogError) as refused:
        catalog.load(f"{TEMPLATES}  - {entry}\n")
    assert reason in str(refused.value)
    assert written() == ([], [], [])


@pytest.mark.parametrize(("entry", "reason"), [
    ('{code: BAD, amount: "-0.01"}', "billing_keys: 'amount': Input should be greater than or equal to 0"),
    ('{code: BAD, amount: "1.234"}', ("billing_keys: 'amount': Decimal input should have no more than 2 decimal "
                                      "places")),
    ('{code: BAD, amount: lots}', "billing_keys: 'amount': Input should be a valid decimal"),
    ("{code: BAD}", "billing_keys: 'amount': Field required"),
    ('{code: "B K", amount: "1"}', "billing_keys: 'code': String should match pattern"),
    ('{code: BAD, amount: "1", active: maybe}', "billing_keys: 'active': Input should be a valid boolean"),
])
def test_bad_billing_keys_write_nothing(entry, reason):
    with pytest.raises(catalog.CatalogError) as refused:
        catalog.load(f"{KEYS}  - {entry}\n")
    assert reason in str(refused.value)
    assert written() == ([], [], [])


BUY = "keyword: web, subscription_type: web_month, billing_key: BK4, template_code: bought"


@pytest.mark.parametrize(("entry", "reason"), [
    ("{keyword: two words, subscription_type: web_month, billing_key: BK4, template_code: bought}",
     "keyword_actions: 'keyword': Value error, A keyword is one word without spaces."),
    ('{keyword: "", action: stop}', "keyword_actions: 'keyword': Value error, A keyword is one word"),
    (f"{{{BUY}, action: sell}}", "keyword_actions: 'action': String should match pattern"),
    ("{keyword: web, subscription_type: nope, billing_key: BK4, template_code: bought}",
     "keyword_actions: 'subscription_type': unknown subscription type 'nope'"),
    ("{keyword: web, subscription_type: web_month, billing_key: NOPE, template_code: bought}",
     "keyword_actions: 'billing_key': unknown billing key 'NOPE' (define it in billing_keys)"),
    ("{keyword: web, billing_key: BK4, template_code: bought}",
     "keyword_actions: 'subscription_type': A purchase needs this."),
    ("{keyword: web, subscription_type: web_month, template_code: bought}",
     "keyword_actions: 'billing_key': A purchase needs this."),
    ("{keyword: web, subscription_type: web_month, billing_key: BK4}",
     "keyword_actions: 'template_code': A purchase needs this."),
    ("{keyword: web, subscription_type: web_month, billing_key: BK4, template_code: nope}",
     "keyword_actions: 'template_code': Unknown premium SMS template 'nope'."),
    ("{keyword: web, subscription_type: web_month, billing_key: BK4, template_code: stop_confirmation}",
     ("keyword_actions: 'template_code': The template 'stop_confirmation' uses stopped, which this action does not "
      "give (it gives: subscription_name, price).")),
    ("{keyword: stop, action: stop, template_code: bought}",
     ("keyword_actions: 'template_code': The template 'bought' uses price, subscription_name, which this action does "
      "not give (it gives: stopped).")),
    ("{keyword: stop, action: stop, subscription_type: web_month}",
     "keyword_actions: 'subscription_type': Only a purchase has this."),
    ("{keyword: stop, action: stop, billing_key: FREE}", "keyword_actions: 'billing_key': Only a purchase has this."),
    ("{keyword: stop, action: stop, recurrent: true}", "keyword_actions: 'recurrent': Only a purchase has this."),
    ("{keyword: stop, action: stop, template_code: nope}",
     "keyword_actions: 'template_code': Unknown premium SMS template 'nope'."),
    (f"{{{BUY}, price: 3}}", "keyword_actions: 'price': unknown key"),
])
def test_bad_keyword_actions_write_nothing(entry, reason):
    with pytest.raises(catalog.CatalogError) as refused:
        catalog.load(f"{BASE}keyword_actions:\n  - {entry}\n")
    assert reason in str(refused.value)
    assert written() == ([], [], [])


def test_a_refused_keyword_leaves_loaded_rows_as_they_were():
    catalog.load(BASE + f"keyword_actions:\n  - {{{BUY}}}\n")
    before = written()
    with pytest.raises(catalog.CatalogError) as refused:
        catalog.load('billing_keys:\n  - {code: BK4, amount: "9.00"}\n'
                     "keyword_actions:\n  - {keyword: web, action: stop, billing_key: BK4}\n")
    assert "keyword_actions: 'billing_key': Only a purchase has this." in str(refused.value)
    assert str(refused.value).startswith("catalog:4: ")
    assert written() == before
    assert BillingKey.objects.get(code="BK4").amount == Decimal("4.00")
