"""SMS in a real browser (simulated gateway): staff open a reader's page in the admin, send an SMS from
the form there and, once the dispatcher has run, see it delivered; a template's live preview."""

import re

import pytest
from playwright.sync_api import expect

from masthead.core import widgets
from masthead.messaging import admin as sms_admin
from masthead.messaging import dispatcher, gateways
from masthead.messaging.models import SmsMessage, SmsStatusChange, SmsTemplate
from masthead.users import services as user_services
from masthead.users.models import User
from tests.e2e.conftest import PASSWORD, admin_login

pytestmark = pytest.mark.e2e


@pytest.fixture
def simulated(settings, live_server):
    """The simulated gateway delivering at once, and the messaging widgets registered (once)."""
    settings.SMS_GATEWAY = "simulated"
    settings.SMS_SIMULATED_DELIVERY_SECONDS = 0
    settings.SMS_QUIET_HOURS = ""  # whatever the time the test runs at
    if "messaging.user" not in {w.name for w in widgets.widgets_for("admin.user.detail")}:
        sms_admin.register_widgets()
    gateway = gateways.get("simulated")
    gateway.reset()
    yield gateway
    gateway.reset()


def test_staff_sends_an_sms_from_the_user_page_and_sees_it_delivered(page, live_server, admin_user, simulated):
    reader = user_services.create_user(email="jana@example.com", password=PASSWORD, first_name="Jana",
                                       phone_number="+421908123456")
    stored = User.objects.values("first_name", "phone_number", "updated_at").get(pk=reader.pk)
    admin_login(page, "boss@example.com", PASSWORD)

    page.goto(f"/admin/users/user/{reader.pk}/change/")
    sms = page.locator('[data-placeholder="admin.user.detail"] [data-widget="messaging.user"]')
    expect(sms.locator("h2")).to_have_text("SMS messages (0)")
    expect(sms.locator("tbody tr")).to_have_text(["None."])

    # The form lives inside the user's page but posts on its own: the user's fields are not saved with it.
    page.fill("#id_first_name", "Changed but not saved")
    sms.get_by_test_id("sms-body").fill("Your print edition is on its way.")
    sms.get_by_test_id("sms-send").click()
    page.wait_for_load_state()

    expect(page).to_have_url(f"{live_server.url}/admin/users/user/{reader.pk}/change/")
    expect(page.locator("ul.messagelist li.success")).to_have_text("1 SMS queued.")
    message = SmsMessage.objects.get()
    assert (message.user_id, message.phone_number, message.body, message.created_by) == (
        reader.pk, "+421908123456", "Your print edition is on its way.", "boss@example.com")
    assert User.objects.values("first_name", "phone_number", "updated_at").get(pk=reader.pk) == stored
    row = sms.locator(f'tr[data-sms="{message.pk}"]')
    expect(row.locator("td").nth(3)).to_have_text("Your print edition is on its way.")

    # Whatever the worker has done by now (Huey runs tasks inline under pytest), a dispatcher run
    # leaves the message delivered, sent exactly once.
    dispatcher.run(budget_seconds=5)
    page.reload()
    row = page.locator(f'[data-widget="messaging.user"] tr[data-sms="{message.pk}"]')
    expect(row.get_by_test_id("sms-status")).to_have_text("delivered")
    expect(row).to_have_attribute("data-status", "delivered")
    expect(page.locator('[data-widget="messaging.user"] h2')).to_have_text("SMS messages (1)")
    message.refresh_from_db()
    assert (message.status, message.gateway, message.gateway_message_id) == (
        "delivered", "simulated", f"sim-{message.pk}")
    assert list(SmsStatusChange.objects.filter(message=message).values_list("new_status", flat=True)) == [
        "queued", "sending", "sent", "delivered"]
    assert simulated.sent == {message.pk: 1}

    # The message's own page shows the same, with its history.
    row.locator("td a").first.click()
    expect(page).to_have_url(f"{live_server.url}/admin/messaging/smsmessage/{message.pk}/change/")
    expect(page.locator(".field-status_display .readonly")).to_have_text("delivered")
    expect(page.locator("#history-group tbody tr.has_original")).to_have_count(4)


def test_template_preview_updates_as_staff_type(page, live_server, admin_user, simulated):
    admin_login(page, "boss@example.com", PASSWORD)
    page.goto("/admin/messaging/smstemplate/add/")
    page.fill("#id_code", "renewal")
    page.fill("#id_parameters", "first_name")
    page.fill("#id_sample_params", '{"first_name": "Jana"}')
    page.fill("#id_body", "Hi {{ first_name }}, your subscription ends soon.")
    preview = page.locator("#mh-sms-preview")
    expect(preview.get_by_test_id("preview-text")).to_have_text("Hi Jana, your subscription ends soon.")
    expect(preview.get_by_test_id("preview-info")).to_have_text("GSM-7, 37 characters, 1 segment")
    expect(preview.get_by_test_id("preview-error")).to_be_hidden()

    page.fill("#id_body", "Ahoj {{ first_name }} ✓ {{ nickname }}")
    expect(preview.get_by_test_id("preview-error")).to_have_text(
        "The template is not valid: unknown variables: nickname")
    page.fill("#id_body", "Ahoj {{ first_name }} ✓")
    preview.get_by_test_id("preview").click()
    expect(preview.get_by_test_id("preview-text")).to_have_text("Ahoj Jana ✓")
    expect(preview.get_by_test_id("preview-info")).to_have_text(re.compile(r"^UCS-2 \(Unicode\), 11 characters, 1 segment$"))
    expect(preview.get_by_test_id("preview-error")).to_be_hidden()
    assert not SmsTemplate.objects.exists()  # a preview saves nothing

    page.locator('input[name="_save"]').click()
    expect(page.locator("ul.messagelist li.success")).to_contain_text("renewal")
    template = SmsTemplate.objects.get()
    assert (template.code, template.body, template.parameters, template.sample_params) == (
        "renewal", "Ahoj {{ first_name }} ✓", ["first_name"], {"first_name": "Jana"})
