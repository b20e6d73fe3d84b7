"""Catalog sections ``sms_templates`` and ``notification_rules``: load, update, unchanged; every
refused entry names its line and writes nothing; the demo catalog loads and its texts work."""

import pytest

from masthead.core import catalog, clock
from masthead.messaging import services
from masthead.messaging.models import NotificationRule, SmsMessage, SmsTemplate
from masthead.subscriptions.models import SubscriptionType
from masthead.subscriptions.services import create_subscription
from masthead.users.services import find_user_by_email

pytestmark = pytest.mark.django_db

TEMPLATE = """\
sms_templates:
  - code: ending
    locale: sk
    body: "Dobry den {{ first_name }}, predplatne konci {{ end_date }}."
    parameters: [first_name, end_date]
    sample_params: {first_name: Jana, end_date: "13.05.2024"}
    max_segments: 1
    description: Reminder
"""
RULE = """\
notification_rules:
  - {code: ending_7, event: subscription_ending, days: 7, template_code: ending}
"""


def templates():
    return list(SmsTemplate.objects.values_list("code", "locale", "body", "parameters", "sample_params",
                                                "max_segments", "description", "transactional", "active"))


def rules():
    return list(NotificationRule.objects.values_list("code", "event", "days", "template_code", "transactional",
                                                     "urgent", "active"))


def test_load_update_and_unchanged():
    report = catalog.load(TEMPLATE + RULE)
    assert (report.counts["sms_templates"], report.counts["notification_rules"]) == (
        {"created": 1, "updated": 0, "unchanged": 0}, {"created": 1, "updated": 0, "unchanged": 0})
    assert templates() == [("ending", "sk", "Dobry den {{ first_name }}, predplatne konci {{ end_date }}.",
                            ["first_name", "end_date"], {"first_name": "Jana", "end_date": "13.05.2024"}, 1,
                            "Reminder", False, True)]
    assert rules() == [("ending_7", "subscription_ending", 7, "ending", False, False, True)]

    again = catalog.load(TEMPLATE + RULE)
    assert (again.counts["sms_templates"], again.counts["notification_rules"]) == (
        {"created": 0, "updated": 0, "unchanged": 1}, {"created": 0, "updated": 0, "unchanged": 1})

    changed = catalog.load(TEMPLATE.replace("max_segments: 1", "max_segments: 2\n    transactional: true")
                           + RULE.replace("days: 7, template_code: ending",
                                          "days: 3, template_code: ending, urgent: true, active: false"))
    assert (changed.counts["sms_templates"], changed.counts["notification_rules"]) == (
        {"created": 0, "updated": 1, "unchanged": 0}, {"created": 0, "updated": 1, "unchanged": 0})
    assert [t[5:] for t in templates()] == [(2, "Reminder", True, True)]
    assert rules() == [("ending_7", "subscription_ending", 3, "ending", False, True, False)]


def test_a_rule_may_use_a_template_loaded_before():
    catalog.load(TEMPLATE)
    assert catalog.load(RULE).counts["notification_rules"] == {"created": 1, "updated": 0, "unchanged": 0}


@pytest.mark.parametrize(("text", "error"), [
    (TEMPLATE.replace("    description: Reminder", "    colour: red"),
     "catalog:8: sms_templates: 'colour': unknown key"),
    (TEMPLATE.replace("{{ end_date }}.", "{{ end_date }."),
     "catalog:2: sms_templates: 'body': syntax error: unexpected '}'"),
    (TEMPLATE.replace("{{ end_date }}.", "{{ end_date }} {{ amount }}."),
     "catalog:2: sms_templates: 'body': unknown variables: amount"),
    (TEMPLATE.replace("predplatne", "predplatne " + "x" * 150),
     "catalog:2: sms_templates: 'body': 2 segments with the sample parameters, at most 1"),
    (TEMPLATE.replace("max_segments: 1", "max_segments: 11"),
     "catalog:7: sms_templates: 'max_segments': Input should be less than or equal to 10"),
    (TEMPLATE.replace("locale: sk", "locale: de"),
     "catalog:3: sms_templates: 'locale': Value error, unknown language 'de' (known: en, sk; empty: any language)"),
    (TEMPLATE.replace("[first_name, end_date]", "[first_name, end-date]"),
     ("catalog:5: sms_templates: 'parameters': Value error, 'end-date' is not a parameter name"
      " (letters, digits, underscores)")),
    (TEMPLATE.replace("end_date: \"13.05.2024\"}", "end_date: \"13.05.2024\", amount: 1}"),
     "catalog:2: sms_templates: 'sample_params': not in parameters: amount"),
    (TEMPLATE.replace("code: ending", "code: Ending!"),
     "catalog:2: sms_templates: 'code': String should match pattern '^[a-z0-9][a-z0-9_-]*$'"),
    (TEMPLATE + RULE.replace("template_code: ending", "template_code: nope"),
     "catalog:10: notification_rules: 'template_code': unknown SMS template 'nope' (define it in sms_templates)"),
    (TEMPLATE + RULE.replace("days: 7, ", ""),
     "catalog:10: notification_rules: 'days': required for subscription_ending"),
    (TEMPLATE + RULE.replace("event: subscription_ending", "event: subscription_started"),
     "catalog:10: notification_rules: 'days': only for subscription_ending, not subscription_started"),
    (TEMPLATE + RULE.replace("event: subscription_ending", "event: payment_paid"),
     ("catalog:10: notification_rules: 'event': Input should be 'subscription_ending', 'subscription_started',"
      " 'recurrent_charge_failed' or 'family_code_activated'")),
    (TEMPLATE + RULE.replace("days: 7", "days: 0"),
     "catalog:10: notification_rules: 'days': Input should be greater than or equal to 1"),
    (TEMPLATE + RULE.replace("event: subscription_ending, days: 7", "event: recurrent_charge_failed"),
     ("catalog:10: notification_rules: 'template_code': template 'ending' (sk) uses end_date, which "
      "recurrent_charge_failed does not give (it gives: first_name, last_name, subscription_type, amount)")),
    (TEMPLATE + RULE.replace("template_code: ending}", "template_code: ending, when: now}"),
     "catalog:10: notification_rules: 'when': unknown key"),
])
def test_bad_entries_write_nothing(text, error):
    with pytest.raises(catalog.CatalogError) as refused:
        catalog.load(text)
    assert str(refused.value).startswith(error)
    assert not SmsTemplate.objects.exists()
    assert not NotificationRule.objects.exists()


def test_a_refused_update_keeps_the_old_rows():
    catalog.load(TEMPLATE + RULE)
    before = (templates(), rules())
    with pytest.raises(catalog.CatalogError):
        catalog.load(TEMPLATE.replace("Dobry den", "Ahoj") + RULE.replace("template_code: ending", "template_code: x"))
    assert (templates(), rules()) == before


def test_demo_catalog_loads_and_its_texts_render(django_capture_on_commit_callbacks):
    report = catalog.load_file(catalog.DEMO_CATALOG)
    assert report.counts["sms_templates"] == {"created": 10, "updated": 0, "unchanged": 0}
    assert report.counts["notification_rules"] == {"created": 4, "updated": 0, "unchanged": 0}
    assert rules() == [
        ("family_code_activated", "family_code_activated", None, "family_code_activated", False, False, True),
        ("recurrent_charge_failed", "recurrent_charge_failed", None, "recurrent_charge_failed", True, False, True),
        ("subscription_ending_7_days", "subscription_ending", 7, "subscription_ending", False, False, True),
        ("subscription_welcome", "subscription_started", None, "subscription_welcome", False, False, True),
    ]
    locales = {code: sorted(SmsTemplate.objects.filter(code=code).values_list("locale", flat=True))
               for code in SmsTemplate.objects.values_list("code", flat=True)}
    assert locales == {"family_code_activated": ["en", "sk"], "recurrent_charge_failed": ["en", "sk"],
                       "subscription_ending": ["en", "sk"], "subscription_welcome": ["en", "sk"],
                       "sms_stop_confirmation": [""], "sms_start_confirmation": [""]}
    for template in SmsTemplate.objects.all():  # GSM-7 and within their segments with the samples
        _text, segmentation = services.compose(template=template, params=template.sample_params)
        assert segmentation.encoding == "gsm7", template
        assert segmentation.segments <= template.max_segments, template
    assert catalog.load_file(catalog.DEMO_CATALOG).counts["sms_templates"] == {
        "created": 0, "updated": 0, "unchanged": 10}

    # the demo reader (Slovak) gets the Slovak welcome; a STOP gets the demo confirmation
    reader = find_user_by_email("reader@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        subscription = create_subscription(user=reader, subscription_type=SubscriptionType.objects.get(code="web_month"))
    end = clock.localtime(subscription.end_time).strftime("%d.%m.%Y")
    assert list(SmsMessage.objects.values_list("phone_number", "body", "notification")) == [
        ("+421908123456", f"Vitajte Jana! Vase predplatne Digital, one month plati do {end}. Dakujeme, ze nas citate.",
         "subscription_welcome")]
    services.opt_out(phone_number="+421908123456", source="test")
    assert SmsMessage.objects.order_by("-pk").values_list("body", "transactional").first() == (
        ("Uz vam nebudeme posielat spravy, na obnovenie poslite START. You will get no more messages from us, "
         "send START to resume."), True)
