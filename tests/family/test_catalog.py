"""Catalog section ``family_types`` (R-FAM-1): loads, updates, and refuses bad entries writing nothing."""

import pytest

from masthead.core import catalog
from masthead.family.models import FamilySubscriptionType

pytestmark = pytest.mark.django_db

TYPES = """\
subscription_types:
  - {code: team, name: Team, user_label: Team, price: "50", length: 30}
  - {code: team_member, name: Member, user_label: Member, price: "0", length: 30}
"""


def test_load_update_and_unchanged():
    report = catalog.load(TYPES + "family_types:\n  - {master: team, slave: team_member, count: 3}\n")
    assert report.counts["family_types"] == {"created": 1, "updated": 0, "unchanged": 0}
    row = FamilySubscriptionType.objects.get()
    assert (row.slave_subscription_type.code, row.donation_method, row.count, row.is_paid) == (
        "team_member", "copy", 3, True)
    again = catalog.load(TYPES + "family_types:\n  - {master: team, slave: team_member, count: 3}\n")
    assert again.counts["family_types"] == {"created": 0, "updated": 0, "unchanged": 1}
    changed = catalog.load(TYPES + "family_types:\n  - {master: team, count: 0, is_paid: false}\n")
    assert changed.counts["family_types"] == {"created": 0, "updated": 1, "unchanged": 0}
    row.refresh_from_db()
    assert (row.slave_subscription_type, row.count, row.is_paid) == (None, 0, False)


@pytest.mark.parametrize(("entry", "reason"), [
    ("{master: nope, slave: team_member}", "unknown subscription type 'nope'"),
    ("{master: team, slave: nope}", "unknown subscription type 'nope'"),
    ("{master: team, slave: team}", "the child type must differ"),
    ("{master: team, donation_method: fixed_days}", "fixed_days needs days"),
    ("{master: team, donation_method: sideways}", "donation_method"),
    ("{master: team, count: -1}", "count"),
    ("{master: team, colour: red}", "colour"),
])
def test_bad_entries_write_nothing(entry, reason):
    with pytest.raises(catalog.CatalogError) as refused:
        catalog.load(TYPES + f"family_types:\n  - {entry}\n")
    assert reason in str(refused.value)
    assert not FamilySubscriptionType.objects.exists()
