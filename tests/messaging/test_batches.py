"""Batches: validation, segment recipients, chunked fan-out with progress, cancel."""

from datetime import timedelta

import pytest

from masthead.messaging import batches, services
from masthead.messaging.models import OptOut, SmsBatch, SmsMessage
from masthead.subscriptions.models import ContentAccess
from masthead.subscriptions.services import create_subscription, save_subscription_type
from tests.messaging.conftest import NOW

pytestmark = pytest.mark.django_db


@pytest.fixture
def print_readers(make_user, clock):
    ContentAccess.objects.create(name="print")
    ContentAccess.objects.create(name="web")
    paper, _ = save_subscription_type(code="paper", fields={"name": "p", "user_label": "p", "price": "5",
                                                            "length": 30}, content_access=["print"], items=[])
    web, _ = save_subscription_type(code="web", fields={"name": "w", "user_label": "w", "price": "5",
                                                        "length": 30}, content_access=["web"], items=[])
    readers = [make_user(phone_number=f"+42190800{n:04d}", first_name=f"R{n}") for n in range(7)]
    for reader in readers[:5]:
        create_subscription(user=reader, subscription_type=paper)
    create_subscription(user=readers[5], subscription_type=web)
    create_subscription(user=make_user(), subscription_type=paper)  # no phone: not a recipient
    ended = readers[6]
    create_subscription(user=ended, subscription_type=paper, start=NOW - timedelta(days=40),
                        end=NOW - timedelta(days=10))
    return readers


def test_segment_is_active_print_readers_with_a_phone(print_readers):
    assert sorted(batches.segment("print").values_list("pk", flat=True)) == [r.pk for r in print_readers[:5]]


def test_fan_out_in_chunks_with_progress(print_readers):
    OptOut.objects.create(phone_number=print_readers[0].phone_number, created_at=NOW)
    services.save_template(code="promo", body="Hi {{ first_name }}, {{ offer }}", parameters=["first_name", "offer"],
                           sample_params={"first_name": "A", "offer": "B"})
    batch = batches.create_batch(name="Print promo", template_code="promo", params={"offer": "50 % off"},
                                 content_access="print", created_by="care@example.com")
    assert (batch.status, batch.total, batch.fanned_out) == ("fanning_out", 5, 0)
    assert batches.fan_out_chunk(batch.pk, size=2) is True
    batch.refresh_from_db()
    assert (batch.fanned_out, batch.skipped, batch.status) == (1, 1, "fanning_out")  # the first one opted out
    while batches.fan_out_chunk(batch.pk, size=2):
        pass
    batch.refresh_from_db()
    assert (batch.fanned_out, batch.skipped, batch.status, batch.finished_at) == (4, 1, "queued", NOW)
    bodies = sorted(SmsMessage.objects.filter(batch=batch).values_list("body", flat=True))
    assert bodies == [f"Hi R{n}, 50 % off" for n in range(1, 5)]
    assert set(SmsMessage.objects.filter(batch=batch).values_list("urgent", "created_by")) == {
        (False, "care@example.com")}
    assert batches.counts(batch)["queued"] == 4
    assert batches.fan_out_chunk(batch.pk) is False


def test_list_of_readers_and_cancel(print_readers):
    batch = batches.create_batch(name="Two", body="Hello", user_ids=[print_readers[5].pk, print_readers[6].pk])
    assert batch.total == 2
    batches.fan_out(batch.pk)
    assert batches.cancel_batch(batch=batch, by="care") == 2
    assert batches.counts(batch)["canceled"] == 2


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"body": "x", "template_code": "promo"}, "text_or_template"),
    ({"body": "x", "user_ids": [1], "content_access": "print"}, "users_or_segment"),
    ({"body": "x"}, "users_or_segment"),
    ({"body": "x", "content_access": "nope"}, "unknown_content_access"),
    ({"body": "x", "user_ids": [999999]}, "user_not_found"),
    ({"body": "x", "user_ids": [0]}, "invalid_user_ids"),
    ({"body": "a" * 2000, "content_access": "print"}, "message_too_long"),
    ({"template_code": "nope", "content_access": "print"}, "template_not_found"),
    ({"name": " ", "body": "x", "content_access": "print"}, "name_required"),
])
def test_invalid_batches_write_nothing(print_readers, kwargs, code):
    with pytest.raises(services.SmsError) as refused:
        batches.create_batch(**{"name": "b", **kwargs})
    assert refused.value.code == code
    assert not SmsBatch.objects.exists()
