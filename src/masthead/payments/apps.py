from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "masthead.payments"
    label = "payments"
