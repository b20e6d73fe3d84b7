from django.apps import AppConfig


class MobiletechConfig(AppConfig):
    name = "masthead.mobiletech"
    label = "mobiletech"
