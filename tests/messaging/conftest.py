"""Messaging test plumbing: frozen time, readers with phone numbers, a staff member, the simulated
gateway emptied per test."""

from datetime import UTC, datetime

import pytest
import time_machine

from masthead.messaging import gateways

NOW = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)  # 12:00 in Bratislava: outside quiet hours


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def simulated(settings):
    settings.SMS_GATEWAY = "simulated"
    settings.SMS_SIMULATED_DELIVERY_SECONDS = 0
    gateway = gateways.get("simulated")
    gateway.reset()
    yield gateway
    gateway.reset()


@pytest.fixture
def reader(make_user):
    return make_user(email="reader@example.com", phone_number="+421908123456", first_name="Jana")


@pytest.fixture
def staff(make_user):
    return make_user(email="care@example.com", phone_number="+421905111222", is_staff=True)
