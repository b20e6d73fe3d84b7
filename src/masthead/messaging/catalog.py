"""Catalog sections of messaging: ``sms_templates`` (validated by services.save_template) and
``notification_rules`` (an event → a template; after the templates, so a rule can name one of them)."""

from __future__ import annotations

import re
from typing import Literal

from django.conf import settings
from pydantic import Field, field_validator

from masthead.core.catalog import CatalogError, Entry, apply_fields, register_section
from masthead.messaging import notifications, segments, services, templates
from masthead.messaging.models import NotificationRule, SmsTemplate

CODE = r"^[a-z0-9][a-z0-9_-]*$"
NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class SmsTemplateEntry(Entry):
    code: str = Field(pattern=CODE, max_length=100)
    locale: str = Field("", max_length=10)
    body: str = Field(min_length=1)
    parameters: list[str] = Field(default_factory=list)
    sample_params: dict[str, str | int | float] = Field(default_factory=dict)
    max_segments: int = Field(3, ge=1, le=segments.MAX_SEGMENTS)
    description: str = Field("", max_length=255)
    transactional: bool = False
    active: bool = True

    @field_validator("locale")
    @classmethod
    def _known_language(cls, value: str) -> str:
        known = [code for code, _name in settings.LANGUAGES]
        if value and value not in known:
            raise ValueError(f"unknown language '{value}' (known: {', '.join(known)}; empty: any language)")
        return value

    @field_validator("parameters")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(NAME, name):
                raise ValueError(f"'{name}' is not a parameter name (letters, digits, underscores)")
        if len(set(value)) != len(value):
            raise ValueError("a parameter is listed twice")
        return value


def load_sms_template(entry: SmsTemplateEntry) -> str:
    undeclared = sorted(set(entry.sample_params) - set(entry.parameters))
    if undeclared:
        raise CatalogError(f"sms_templates: 'sample_params': not in parameters: {', '.join(undeclared)}")
    try:
        _template, outcome = services.save_template(**entry.model_dump())
    except services.SmsError as exc:
        raise CatalogError(f"sms_templates: 'body': {exc.message}") from exc
    return outcome


class NotificationRuleEntry(Entry):
    code: str = Field(pattern=CODE, max_length=100)
    event: Literal[NotificationRule.SUBSCRIPTION_ENDING, NotificationRule.SUBSCRIPTION_STARTED,
                   NotificationRule.CHARGE_FAILED, NotificationRule.FAMILY_CODE_ACTIVATED]
    days: int | None = Field(None, ge=1, le=366)
    template_code: str = Field(pattern=CODE, max_length=100)
    transactional: bool = False
    urgent: bool = False
    active: bool = True


def load_notification_rule(entry: NotificationRuleEntry) -> str:
    if entry.event == NotificationRule.SUBSCRIPTION_ENDING and entry.days is None:
        raise CatalogError("notification_rules: 'days': required for subscription_ending")
    if entry.event != NotificationRule.SUBSCRIPTION_ENDING and entry.days is not None:
        raise CatalogError(f"notification_rules: 'days': only for subscription_ending, not {entry.event}")
    bodies = list(SmsTemplate.objects.filter(code=entry.template_code).values_list("locale", "body"))
    if not bodies:
        raise CatalogError(f"notification_rules: 'template_code': unknown SMS template '{entry.template_code}' "
                           f"(define it in sms_templates)")
    given = set(notifications.PARAMETERS[entry.event])
    for locale, body in bodies:
        try:
            missing = sorted(templates.variables(body) - given)
        except templates.TemplateProblem as exc:
            raise CatalogError(f"notification_rules: 'template_code': template '{entry.template_code}' "
                               f"({locale or 'any language'}): {exc}") from exc
        if missing:
            raise CatalogError(
                f"notification_rules: 'template_code': template '{entry.template_code}' "
                f"({locale or 'any language'}) uses {', '.join(missing)}, which {entry.event} does not give "
                f"(it gives: {', '.join(notifications.PARAMETERS[entry.event])})")
    values = entry.model_dump(exclude={"code"})
    rule = NotificationRule.objects.filter(code=entry.code).first()
    if rule is None:
        NotificationRule.objects.create(code=entry.code, **values)
        return "created"
    if apply_fields(rule, values):
        rule.save()
        return "updated"
    return "unchanged"


def register():
    register_section("sms_templates", SmsTemplateEntry, load_sms_template, order=40)
    register_section("notification_rules", NotificationRuleEntry, load_notification_rule, order=41)
