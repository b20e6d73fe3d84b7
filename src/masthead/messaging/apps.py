from importlib.util import find_spec

from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "masthead.messaging"
    label = "messaging"

    def ready(self):
        from masthead.core.events import subscribe
        from masthead.family import events as family_events
        from masthead.messaging import catalog, notifications
        from masthead.payments import events as payment_events
        from masthead.subscriptions import events as subscription_events

        catalog.register()
        # Asynchronous (a Huey task after commit): a failing SMS never touches the emitter's work.
        subscribe(subscription_events.SubscriptionStarted, notifications.on_subscription_started, asynchronous=True)
        subscribe(payment_events.RecurrentPaymentFailed, notifications.on_recurrent_charge_failed, asynchronous=True)
        subscribe(family_events.FamilyRequestAccepted, notifications.on_family_code_activated, asynchronous=True)
        # the "subscription ends in N days" rules: tasks.remind_ending_subscriptions, hourly

        if find_spec("masthead.messaging.admin") is not None:
            from masthead.messaging import admin

            if hasattr(admin, "register_widgets"):
                admin.register_widgets()
