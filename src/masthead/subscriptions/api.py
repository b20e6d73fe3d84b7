"""REMP subscriptions API."""

from ninja import Router

router = Router(tags=["subscriptions"])
