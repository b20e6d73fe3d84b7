"""Catalog as code: idempotent, all-or-nothing, errors name the line."""

import pytest

from masthead.core import catalog
from masthead.subscriptions.models import ContentAccess
from masthead.users.models import User

pytestmark = pytest.mark.django_db

GOOD = """\
content_access:
  - name: web
    description: Web access
    sorting: 10
  - name: print
    description: Print
users:
  - email: staff@example.com
    password: long-enough-1
    staff: true
    phone_number: "0908 123 456"
"""


def snapshot():
    return (
        sorted(ContentAccess.objects.values_list("name", "description", "sorting", "updated_at")),
        sorted(User.objects.values_list("email", "is_staff", "phone_number", "password", "updated_at")),
    )


def test_load_creates_then_is_idempotent():
    report = catalog.load(GOOD)
    assert report.counts == {"content_access": {"created": 2, "updated": 0, "unchanged": 0},
                             "users": {"created": 1, "updated": 0, "unchanged": 0}}
    assert sorted(ContentAccess.objects.values_list("name", "description", "sorting")) == [
        ("print", "Print", 100), ("web", "Web access", 10)]
    staff = User.objects.get(email="staff@example.com")
    assert staff.is_staff and staff.phone_number == "+421908123456" and staff.check_password("long-enough-1")
    before = snapshot()

    again = catalog.load(GOOD)

    assert again.counts == {"content_access": {"created": 0, "updated": 0, "unchanged": 2},
                            "users": {"created": 0, "updated": 0, "unchanged": 1}}
    assert snapshot() == before


def test_load_updates_changed_entries_only():
    catalog.load(GOOD)
    report = catalog.load(GOOD.replace("description: Print", "description: Printed edition"))
    assert report.counts["content_access"] == {"created": 0, "updated": 1, "unchanged": 1}
    assert ContentAccess.objects.get(name="print").description == "Printed edition"


def test_catalog_never_overwrites_an_existing_password():
    catalog.load(GOOD)
    catalog.load(GOOD.replace("long-enough-1", "other-password-2"))
    assert User.objects.get(email="staff@example.com").check_password("long-enough-1")


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("content_access:\n  - name: web\nplans:\n  - x: 1\n", 3, "unknown section 'plans'"),
        ("content_access:\n  - name: web\n    colour: red\n", 3, "'colour': unknown key"),
        ("content_access:\n  - name: web\n  - name: Not A Slug\n", 3, "'name'"),
        ("content_access:\n  - name: web\n    sorting: many\n", 4 - 1, "'sorting'"),
        ("content_access:\n  - name: web\n    name: again\n", 3, "duplicate key 'name'"),
        ("content_access: [\n", 2, "not valid YAML"),
        ("content_access:\n  name: web\n", 1, "must be a list"),
        ("- web\n", 1, "must be a mapping of sections"),
        ("users:\n  - email: x@example.com\n    phone_number: '12'\n", 3, "'phone_number'"),
        ("users:\n  - email: not-an-email\n", 2, "Invalid email"),
        ('content_access:\n  - name: web\n    description: "a\\0b"\n', 3, "must not contain NUL"),
    ],
)
def test_errors_name_the_line_and_write_nothing(text, line, fragment):
    valid_head = "content_access:\n  - name: club\n"
    with pytest.raises(catalog.CatalogError) as exc:
        catalog.load(text, "cat.yaml")
    assert exc.value.line == line, str(exc.value)
    assert fragment in str(exc.value)
    assert str(exc.value).startswith(f"cat.yaml:{line}: ")
    assert not ContentAccess.objects.exists()
    assert not User.objects.exists()
    # a valid section before a broken one is rolled back too
    with pytest.raises(catalog.CatalogError):
        catalog.load(valid_head + "users:\n  - email: not-an-email\n")
    assert not ContentAccess.objects.exists()


def test_demo_catalog_loads_twice_unchanged():
    first = catalog.load_file(catalog.DEMO_CATALOG)
    assert first.counts["content_access"]["created"] == 4
    second = catalog.load_file(catalog.DEMO_CATALOG)
    assert all(c["created"] == 0 and c["updated"] == 0 for c in second.counts.values())


def test_missing_file_is_a_clean_error(tmp_path):
    with pytest.raises(catalog.CatalogError) as exc:
        catalog.load_file(tmp_path / "nope.yaml")
    assert "cannot read file" in str(exc.value)
