"""Segment counting and the status machine, as properties (hypothesis) and examples."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from masthead.messaging import segments, status

GSM_CHARS = sorted(segments.GSM7_BASIC | segments.GSM7_EXTENSION)


@pytest.mark.parametrize(("text", "encoding", "units", "count"), [
    ("a" * 160, "gsm7", 160, 1),
    ("a" * 161, "gsm7", 161, 2),
    ("a" * 306, "gsm7", 306, 2),
    ("a" * 307, "gsm7", 307, 3),
    ("€" * 80, "gsm7", 160, 1),       # extension characters count twice
    ("€" * 81, "gsm7", 162, 2),
    ("ž" * 70, "ucs2", 70, 1),
    ("ž" * 71, "ucs2", 71, 2),
    ("ž" * 134, "ucs2", 134, 2),
    ("ž" * 135, "ucs2", 135, 3),
    ("😀" * 35, "ucs2", 70, 1),       # outside the BMP: two UTF-16 units
    ("a" * 159 + "ž", "ucs2", 160, 3),
])
def test_segment_examples(text, encoding, units, count):
    assert segments.segment(text) == segments.Segmentation(encoding, units, count)


@given(st.text(alphabet=GSM_CHARS, max_size=2000))
def test_gsm7_segments(text):
    result = segments.segment(text)
    units = sum(2 if c in segments.GSM7_EXTENSION else 1 for c in text)
    assert (result.encoding, result.units) == ("gsm7", units)
    assert result.segments == (1 if units <= 160 else -(-units // 153))
    assert result.segments * result.per_segment >= units


@given(st.text(min_size=1, max_size=1000).filter(lambda t: not segments.is_gsm7(t)))
def test_ucs2_segments(text):
    result = segments.segment(text)
    units = len(text.encode("utf-16-be")) // 2
    assert (result.encoding, result.units) == ("ucs2", units)
    assert result.segments == (1 if units <= 70 else -(-units // 67))


@given(st.lists(st.sampled_from(status.ALL), max_size=30))
def test_no_illegal_transition_is_reachable(attempts):
    """Whatever writers try, in any order, the status only moves along TRANSITIONS and never leaves
    a final state (delivered, rejected, expired, canceled)."""
    current = status.QUEUED
    for wanted in attempts:
        if status.can(current, wanted):
            assert current not in status.FINAL
            assert wanted in status.TRANSITIONS[current]
            current = wanted
        assert current in status.ALL
    assert all(status.can(old, new) == (new in status.TRANSITIONS.get(old, ())) for old in status.ALL
               for new in status.ALL)


def test_machine_shape():
    assert status.allowed_from(status.DELIVERED) == (status.SENDING, status.SENT)
    assert not status.can(status.DELIVERED, status.SENT)  # a late "sent" never overwrites "delivered"
    assert all(not status.TRANSITIONS.get(final) for final in status.FINAL)
