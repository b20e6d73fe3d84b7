from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SubscriptionsConfig(AppConfig):
    name = "masthead.subscriptions"
    label = "subscriptions"
    verbose_name = _("Subscriptions")

    def ready(self):
        from masthead.core.events import subscribe
        from masthead.subscriptions import catalog, events, services

        catalog.register()
        subscribe(events.SubscriptionShortened, services.close_gap)
