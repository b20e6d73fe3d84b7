"""Webhooks of the SMS gateways (delivery reports and inbound messages)."""

app_name = "messaging"

urlpatterns: list = []
