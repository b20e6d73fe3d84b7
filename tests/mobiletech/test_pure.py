"""Status codes (R-MT-4), number conversion (R-MT-15/6) and operators by prefix (R-MT-8)."""

import pytest

from masthead.mobiletech import numbers, statuses


@pytest.mark.parametrize(("code", "operator", "meaning", "success"), [
    ("_OPERATOR_CHANGE", None, "operator_changed", False),
    ("A0", None, "billed", True),
    ("A1", None, "error", False),
    ("A1023", None, "error", False),
    ("A1024", None, "not_delivered", False),
    ("A99999", None, "not_delivered", False),
    ("D1", None, "delivered", True),
    ("D0", None, "not_delivered", False),
    ("D0", "O", "not_delivered", False),
    ("D0", "2", "delivered", True),
    ("D2", None, "error", False),
    ("X1", None, "error", False),
    ("A123456", None, "error", False),
    ("a0", None, "error", False),
    ("", None, "error", False),
    ("A", None, "error", False),
])
def test_status_codes(code, operator, meaning, success):
    assert statuses.meaning(code, operator) == meaning
    assert statuses.is_success(code, operator) is success


@pytest.mark.parametrize(("raw", "local"), [("0908123456", "0908123456"), ("+421908123456", "0908123456"),
                                            ("00421908123456", "0908123456"), ("0908 123 456", "0908123456")])
def test_to_local(raw, local):
    assert numbers.to_local(raw) == local


@pytest.mark.parametrize("raw", ["00420908123456", "+420908123456", "jana@example.com", "090812345", ""])
def test_not_slovak(raw):
    with pytest.raises(numbers.NotSlovak):
        numbers.to_local(raw)


@pytest.mark.parametrize(("number", "operator"), [("+421901000000", "T"), ("0914000000", "T"), ("+421905000000", "O"),
                                                  ("+421945000000", "O"), ("+421940000000", "2"),
                                                  ("+421949000000", "2"), ("+421950000000", "S"),
                                                  ("+421913000000", None), ("+420601000000", None)])
def test_operator_by_prefix(number, operator):
    assert numbers.operator_by_prefix(number) == operator


def test_to_international():
    assert numbers.to_international("0908123456") == "+421908123456"
    assert numbers.to_international("+421908123456") == "+421908123456"
