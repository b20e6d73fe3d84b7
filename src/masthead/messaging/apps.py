from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "masthead.messaging"
    label = "messaging"
