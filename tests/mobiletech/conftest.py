"""Premium SMS test plumbing: frozen time, reference data (templates, billing keys, a keyword that
buys a monthly subscription on the recurring SMS gateway), XML posting, a client that records
without reporting (the provider's reports then come through the webhook)."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine

from masthead.mobiletech import clients
from masthead.mobiletech.models import BillingKey, KeywordAction, Template
from masthead.subscriptions.models import ContentAccess
from masthead.subscriptions.services import ItemSpec, save_subscription_type

NOW = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)
WEBHOOK = "/api/v1/mobiletech/webhook"


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


class SilentClient:
    """Accepts every message with a sequential id and reports nothing."""

    sent: list = []

    def send(self, row):
        SilentClient.sent.append(row.pk)
        return clients.Answer(mobiletech_id=f"mt-{row.pk}")


@pytest.fixture
def silent(settings, monkeypatch):
    monkeypatch.setitem(clients.CLIENTS, "silent", SilentClient)
    settings.MOBILETECH_CLIENT = "silent"
    SilentClient.sent = []
    return SilentClient


@pytest.fixture
def catalog(db):
    ContentAccess.objects.get_or_create(name="web")
    monthly, _ = save_subscription_type(code="sms_month", fields={"name": "SMS month", "user_label": "Web month",
                                                                   "price": "4.00", "length": 30},
                                        content_access=["web"], items=[ItemSpec("Web", Decimal("4.00"), Decimal("20"))])
    Template.objects.create(code="bought", body="Thanks! {{ subscription_name }} is yours.")
    Template.objects.create(code="stop_confirmation", body="Stopped.")
    Template.objects.create(code="receipt", body="Receipt: {{ amount }} EUR for {{ subscription_name }}.")
    BillingKey.objects.create(code="FREE", amount=Decimal("0"))
    BillingKey.objects.create(code="BK4", amount=Decimal("4.00"))
    KeywordAction.objects.create(keyword="WEB", subscription_type=monthly, billing_key=BillingKey.objects.get(code="BK4"),
                                 template_code="bought", recurrent=True)
    KeywordAction.objects.create(keyword="STOP", action=KeywordAction.STOP, template_code="stop_confirmation")
    return monthly


def receive_xml(mid, sender="+421908123456", content="WEB", to="8866", operator="O"):
    return (f'<?xml version="1.0"?><message command="receive"><id>{mid}</id><serv_id>42</serv_id>'
            f"<project_id>7</project_id><from>{sender}</from><to>{to}</to><content>{content}</content>"
            f"<content_coding>text</content_coding><dcs>0</dcs><esm>0</esm><operator_type>{operator}</operator_type>"
            f"<receive_date>2405061200001</receive_date></message>")


def status_xml(mid, status):
    return f'<message command="status"><id>{mid}</id><status>{status}</status></message>'


def post_xml(client, body, **extra):
    return client.generic("POST", WEBHOOK, body.encode() if isinstance(body, str) else body,
                          content_type="application/xml", CONTENT_TYPE="application/xml", **extra)
