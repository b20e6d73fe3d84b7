from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class FamilyConfig(AppConfig):
    name = "masthead.family"
    label = "family"
    verbose_name = _("Family subscriptions")

    def ready(self):
        from masthead.core.events import subscribe
        from masthead.family import catalog, events, services  # services registers extend_family
        from masthead.payments import services as payment_services
        from masthead.subscriptions import events as subscription_events
        from masthead.subscriptions import queries as subscription_queries

        catalog.register()
        payment_services.register_item_provider(services.charge_items)  # R-FAM-30
        if services.family_type_ids not in subscription_queries.FAMILY_TYPE_PROVIDERS:  # R-EXT-7
            subscription_queries.FAMILY_TYPE_PROVIDERS.append(services.family_type_ids)
        # Synchronous, in the transaction that made the change (DESIGN: family codes are generated
        # with the subscription). Payments' SubscriptionCreated handler runs before ours.
        subscribe(subscription_events.SubscriptionCreated, services.on_subscription_created)
        subscribe(subscription_events.SubscriptionUpdated, services.on_subscription_updated)
        subscribe(subscription_events.SubscriptionShortened, services.on_subscription_shortened)
        subscribe(events.FamilyRequestAccepted, services.on_request_accepted)
        subscribe(events.FamilyRequestCanceled, services.on_request_canceled)

        # the widget contexts live with the admin
        from masthead.core import widgets
        from masthead.family import admin as family_admin

        widgets.register("admin.dashboard", "family.counts", template="family/widgets/counts.html",
                         context=family_admin.dashboard_context, priority=30)
        widgets.register("admin.dashboard", "family.abusive", template="family/widgets/abusive.html",
                         context=family_admin.abusive_context, priority=31)
        widgets.register("admin.user.detail", "family.user", template="family/widgets/user_family.html",
                         context=family_admin.user_context, priority=150)
