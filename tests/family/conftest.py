"""Family test plumbing: frozen time, a family type (5 codes of a web child type), parents bought
through payments like readers buy them."""

from datetime import UTC, datetime

import pytest
import time_machine

from masthead.family.models import FamilySubscriptionType
from masthead.payments import services as payment_services
from masthead.subscriptions.models import ContentAccess
from masthead.subscriptions.services import ItemSpec, save_subscription_type

NOW = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def make_type(code, *, price="10.00", length=30, access=("web",), items=None, **fields):
    for name in access:
        ContentAccess.objects.get_or_create(name=name)
    subscription_type, _ = save_subscription_type(
        code=code, fields={"name": code, "user_label": code, "price": price, "length": length, **fields},
        content_access=list(access), items=[ItemSpec(*i) for i in (items or [(code, price, "20")])])
    return subscription_type


@pytest.fixture
def child_type(db):
    return make_type("family_child", price="0", items=[], access=("web", "mobile"))


@pytest.fixture
def parent_type(db, child_type):
    parent = make_type("family_parent", price="50.00", access=("web", "mobile"))
    FamilySubscriptionType.objects.create(master_subscription_type=parent, slave_subscription_type=child_type,
                                          donation_method="copy", count=5, is_paid=True)
    return parent


def buy(user, subscription_type, *, items=None, meta=None, gateway="free", **fields):
    """A confirmed payment for ``subscription_type`` (and its subscription)."""
    payment = payment_services.create_payment(user=user, gateway=gateway, subscription_type=subscription_type,
                                              items=items, meta=meta, allow_zero_amount=True, **fields)
    return payment_services.confirm(payment=payment)


@pytest.fixture
def parent(make_user, parent_type, clock):
    """A running parent subscription with 5 unused codes."""
    owner = make_user(email="parent@example.com")
    return buy(owner, parent_type).subscription
