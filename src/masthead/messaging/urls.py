"""Webhooks of the SMS gateways (delivery reports and inbound messages), mounted at ``/sms/``."""

from django.urls import path

from masthead.messaging import webhooks

app_name = "messaging"

urlpatterns: list = [
    path("kannel/dlr", webhooks.kannel_dlr, name="kannel-dlr"),
    path("kannel/mo", webhooks.kannel_mo, name="kannel-mo"),
    path("http/dlr", webhooks.http_dlr, name="http-dlr"),
    path("http/mo", webhooks.http_mo, name="http-mo"),
]
