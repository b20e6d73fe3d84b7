from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class PaymentsConfig(AppConfig):
    name = "masthead.payments"
    label = "payments"
    verbose_name = _("Payments")

    def ready(self):
        from masthead.core import widgets
        from masthead.core.events import subscribe
        from masthead.payments import services
        from masthead.subscriptions import events as subscription_events

        # R-PAY-6: registered before the apps after us in INSTALLED_APPS (family), so their
        # SubscriptionCreated handlers already find Payment.subscription set.
        subscribe(subscription_events.SubscriptionCreated, services.link_subscription)
        subscribe(subscription_events.SubscriptionMoved, services.shift_charge_on_move)  # R-REC-14

        widgets.register("admin.user.detail", "payments.user", template="payments/widgets/user_payments.html",
                         context=user_widget_context, priority=200)


def user_widget_context(request, **context):
    """The admin user page's payments widget (its queries live with the admin)."""
    from masthead.payments.admin import user_widget_context as payments_of_user

    return payments_of_user(request, **context)
