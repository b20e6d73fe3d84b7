"""Catalog sections of premium SMS (reference data of R-MT-6/10/18): ``mobiletech_templates`` (order 50),
``billing_keys`` (51) and ``keyword_actions`` (52, after subscription types, templates and billing keys,
so a keyword can name them).

The checks live here and the admin's forms call them too, so a file and a form refuse the same input
with the same words:

* :func:`template_preview` renders a body with sample parameters (a variable without a sample value
  stands for its name) and says what is wrong with it: a syntax error, a rendering error, or a text
  longer than one premium SMS (160 characters; the send job would cut it, R-MT-7).
* :func:`keyword_problems` checks a keyword action: a purchase needs a subscription type, a billing key
  and an existing reply template; a stop takes none of the first three; the reply template may use only
  the parameters its action gives (a purchase: ``subscription_name`` and ``price``; a stop: ``stopped``).

:func:`register` adds the sections; the premium SMS app config calls it from ``ready()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from django.utils.translation import gettext
from pydantic import Field, field_validator

from masthead.core.catalog import CatalogError, Entry, apply_fields, register_section
from masthead.messaging import templates as sandbox
from masthead.mobiletech.models import BillingKey, KeywordAction, Template
from masthead.mobiletech.services import MAX_CONTENT
from masthead.subscriptions.models import SubscriptionType

TEMPLATE_CODE = r"^[A-Za-z0-9_-]+$"  # a slug, as Template.code
BILLING_KEY_CODE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
KEYWORD = re.compile(r"^\S+$")  # one word: services.handle_inbound matches the first word of the text
#: what the reply of each action is rendered with (services._buy → type_params, services._stop)
ACTION_PARAMETERS = {KeywordAction.BUY: ("subscription_name", "price"), KeywordAction.STOP: ("stopped",)}
SECTIONS = ("mobiletech_templates", "billing_keys", "keyword_actions")


# --- checks shared with the admin ------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """A template body rendered with sample parameters; ``error`` is empty when the body is acceptable."""

    text: str
    length: int
    error: str
    limit: int = MAX_CONTENT

    @property
    def ok(self) -> bool:
        return not self.error


def template_preview(body: str, sample: dict | None = None) -> Preview:
    """Render ``body`` with ``sample`` (a variable without a sample value stands for its name)."""
    try:
        names = sandbox.variables(body)
    except sandbox.TemplateProblem as exc:
        return Preview("", 0, gettext("The text is not a valid template: %(problem)s") % {"problem": exc})
    params = {**{name: name for name in names}, **(sample or {})}
    try:
        text = sandbox.render(body, params)
    except Exception as exc:  # noqa: BLE001 (TemplateProblem, and e.g. a TypeError of ``{{ name + 1 }}``)
        return Preview("", 0, gettext("The text cannot be rendered with the sample parameters: %(problem)s")
                       % {"problem": exc})
    if len(text) > MAX_CONTENT:
        return Preview(text, len(text), gettext(
            "The text has %(length)d characters with the sample parameters; a premium SMS has at most %(limit)d.")
            % {"length": len(text), "limit": MAX_CONTENT})
    return Preview(text, len(text), "")


def normalize_keyword(raw: str) -> str:
    """The keyword as stored and matched: upper case, one word; ValueError otherwise."""
    keyword = (raw or "").strip().upper()
    if not KEYWORD.match(keyword):
        raise ValueError(gettext("A keyword is one word without spaces."))
    return keyword


def keyword_problems(*, action: str, subscription_type: SubscriptionType | None, billing_key: BillingKey | None,
                     template_code: str, recurrent: bool) -> dict[str, str]:
    """What is wrong with a keyword action, by field (empty: nothing)."""
    problems: dict[str, str] = {}
    if action == KeywordAction.BUY:
        required = gettext("A purchase needs this.")
        if subscription_type is None:
            problems["subscription_type"] = required
        if billing_key is None:
            problems["billing_key"] = required
        if not template_code:
            problems["template_code"] = required
    else:
        only_buy = gettext("Only a purchase has this.")
        if subscription_type is not None:
            problems["subscription_type"] = only_buy
        if billing_key is not None:
            problems["billing_key"] = only_buy
        if recurrent:
            problems["recurrent"] = only_buy
    if template_code:
        body = Template.objects.filter(code=template_code).values_list("body", flat=True).first()
        if body is None:
            problems["template_code"] = gettext("Unknown premium SMS template '%(code)s'.") % {"code": template_code}
        else:
            given = ACTION_PARAMETERS.get(action, ())
            try:
                missing = sorted(sandbox.variables(body) - set(given))
            except sandbox.TemplateProblem as exc:
                problems["template_code"] = gettext("The template '%(code)s' is not valid: %(problem)s") % {
                    "code": template_code, "problem": exc}
            else:
                if missing:
                    problems["template_code"] = gettext(
                        "The template '%(code)s' uses %(missing)s, which this action does not give (it gives: "
                        "%(given)s).") % {"code": template_code, "missing": ", ".join(missing),
                                          "given": ", ".join(given) or "—"}
    return problems


# --- sections ----------------------------------------------------------------------------------------------


def _upsert(model, lookup: dict, values: dict) -> str:
    row = model.objects.filter(**lookup).first()
    if row is None:
        model.objects.create(**lookup, **values)
        return "created"
    if apply_fields(row, values):
        row.save()
        return "updated"
    return "unchanged"


class TemplateEntry(Entry):
    code: str = Field(pattern=TEMPLATE_CODE, max_length=100)
    body: str = Field(min_length=1)
    description: str = Field("", max_length=255)
    sample_params: dict[str, str | int | float] = {}  # for the check only, not stored


def load_template(entry: TemplateEntry) -> str:
    preview = template_preview(entry.body, entry.sample_params)
    if not preview.ok:
        raise CatalogError(f"mobiletech_templates: 'body': {preview.error}")
    return _upsert(Template, {"code": entry.code}, {"body": entry.body, "description": entry.description})


class BillingKeyEntry(Entry):
    code: str = Field(pattern=BILLING_KEY_CODE, max_length=50)
    amount: Decimal = Field(ge=0, max_digits=10, decimal_places=2)
    description: str = Field("", max_length=255)
    active: bool = True


def load_billing_key(entry: BillingKeyEntry) -> str:
    return _upsert(BillingKey, {"code": entry.code}, entry.model_dump(exclude={"code"}))


class KeywordActionEntry(Entry):
    keyword: str = Field(max_length=40)
    action: str = Field(KeywordAction.BUY, pattern=f"^({KeywordAction.BUY}|{KeywordAction.STOP})$")
    subscription_type: str | None = Field(None, max_length=100)
    billing_key: str | None = Field(None, max_length=50)
    template_code: str = Field("", max_length=100)
    recurrent: bool = False
    active: bool = True

    @field_validator("keyword")
    @classmethod
    def _one_word(cls, value: str) -> str:
        return normalize_keyword(value)


KEYWORD_FIELDS = ("keyword", "action", "subscription_type", "billing_key", "template_code", "recurrent", "active")


def load_keyword_action(entry: KeywordActionEntry) -> str:
    subscription_type = billing_key = None
    if entry.subscription_type:
        subscription_type = SubscriptionType.objects.filter(code=entry.subscription_type).first()
        if subscription_type is None:
            raise CatalogError(f"keyword_actions: 'subscription_type': "
                               f"unknown subscription type '{entry.subscription_type}'")
    if entry.billing_key:
        billing_key = BillingKey.objects.filter(code=entry.billing_key).first()
        if billing_key is None:
            raise CatalogError(f"keyword_actions: 'billing_key': unknown billing key '{entry.billing_key}' "
                               f"(define it in billing_keys)")
    problems = keyword_problems(action=entry.action, subscription_type=subscription_type, billing_key=billing_key,
                                template_code=entry.template_code, recurrent=entry.recurrent)
    for name in KEYWORD_FIELDS:
        if name in problems:
            raise CatalogError(f"keyword_actions: '{name}': {problems[name]}")
    return _upsert(KeywordAction, {"keyword": entry.keyword}, {
        "action": entry.action, "subscription_type": subscription_type, "billing_key": billing_key,
        "template_code": entry.template_code, "recurrent": entry.recurrent, "active": entry.active})


def register() -> None:
    """Add the sections (idempotent: registering again replaces them)."""
    register_section("mobiletech_templates", TemplateEntry, load_template, order=50)
    register_section("billing_keys", BillingKeyEntry, load_billing_key, order=51)
    register_section("keyword_actions", KeywordActionEntry, load_keyword_action, order=52)
