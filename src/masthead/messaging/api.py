"""SMS API (``/api/v1/sms``)."""

from ninja import Router

router = Router(tags=["sms"])
