from django.apps import AppConfig


class FamilyConfig(AppConfig):
    name = "masthead.family"
    label = "family"
