"""Payments API: a reader's recurring payments."""

from ninja import Router

router = Router(tags=["payments"])
