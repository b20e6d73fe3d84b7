from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MobiletechConfig(AppConfig):
    name = "masthead.mobiletech"
    label = "mobiletech"
    verbose_name = _("Premium SMS")

    def ready(self):
        from masthead.core.events import subscribe
        from masthead.mobiletech import admin, catalog, events, gateway, services
        from masthead.payments import events as payment_events
        from masthead.payments import gateways as payment_gateways
        from masthead.users import services as user_services

        catalog.register()
        admin.register_widgets()
        payment_gateways.register(gateway.MobiletechGateway)
        payment_gateways.register(gateway.MobiletechRecurrentGateway)
        subscribe(events.OutboundStatusUpdated, services.settle_payment)  # R-MT-9, in the report's transaction
        subscribe(payment_events.PaymentPaid, services.send_receipt, asynchronous=True)
        if services.login_resolver not in user_services.LOGIN_RESOLVERS:  # R-MT-14
            user_services.LOGIN_RESOLVERS.append(services.login_resolver)
