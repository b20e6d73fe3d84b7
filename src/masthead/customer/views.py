"""Customer zone: the reader's own pages."""

from decimal import Decimal

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone, translation
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.utils.translation import pgettext
from django.views.decorators.http import require_http_methods, require_POST

from masthead.core import clock
from masthead.core.money import to_money
from masthead.payments import services as payment_services
from masthead.payments.models import Payment, RecurrentPayment
from masthead.subscriptions import queries as subscription_queries
from masthead.users import services


@login_required
def home(request):
    return render(request, "customer/home.html")


@login_required
@require_http_methods(["GET", "POST"])
def account(request):
    """The reader's language (it also picks the language of SMS sent to them)."""
    if request.method == "POST":
        try:
            services.update_profile(user=request.user, locale=request.POST.get("locale", ""))
        except services.UserError as exc:
            messages.error(request, exc.message)
        else:
            with translation.override(request.user.locale):
                messages.success(request, _("Saved."))
            return redirect("customer:account")
    return render(request, "customer/account.html")


@login_required
def subscriptions(request):
    """My subscriptions: running and future ones; the finished ones with ``?show=all``."""
    show_all = request.GET.get("show") == "all"
    data = subscription_queries.customer_subscriptions(request.user, clock.now(), finished=show_all)
    return render(request, "customer/subscriptions.html", {**data, "show_all": show_all})


# --- my recurring payments (R-REC-15..17) ---------------------------------------------------------------

RP = RecurrentPayment
#: what the reader sees: the cards being charged, in flight, or stopped by the reader
RECURRING_STATES = (RP.ACTIVE, RP.PENDING, RP.USER_STOP)


def _state_label(state: str) -> str:
    return {RP.ACTIVE: pgettext("recurring payment", "active"),
            RP.PENDING: pgettext("recurring payment", "processing"),
            RP.USER_STOP: pgettext("recurring payment", "stopped")}[state]


def _next_charge(row: RecurrentPayment) -> tuple:
    """The type the next charge buys (R-REC-20) and its amount (R-REC-21): the attempt's payment if it
    already has one, else the items the charge run would put on it."""
    subscription_type = payment_services.next_subscription_type(row)
    if row.payment_id is not None:
        return subscription_type, row.payment.amount
    try:
        items, _additional, _kind = payment_services.charge_items(row, subscription_type)
        amount = sum((item.total for item in items), Decimal(0))
    except payment_services.PaymentError:
        amount = row.custom_amount if row.custom_amount is not None else subscription_type.price
    return subscription_type, to_money(amount)


@login_required
def recurring(request):
    """My recurring payments: each card being charged (or stopped by me), with Stop and Reactivate."""
    now = clock.now()
    rows = (RP.objects.filter(user=request.user, state__in=RECURRING_STATES)
            .select_related("gateway", "parent_payment", "payment", "subscription_type__next_subscription_type",
                            "next_subscription_type")
            .order_by("charge_at", "pk"))
    entries = []
    for row in rows:
        subscription_type, amount = _next_charge(row)
        entries.append({
            "row": row, "subscription_type": subscription_type, "amount": amount, "state": _state_label(row.state),
            "next_charge": row.charge_at if row.state != RP.USER_STOP else None,
            "can_stop": row.state == RP.ACTIVE and payment_services.can_stop(row, by_user=True),
            "can_reactivate": row.state == RP.USER_STOP and row.charge_at >= now,
        })
    return render(request, "customer/recurring.html", {"entries": entries})


def _my_recurring(request, pk: int) -> RecurrentPayment:
    """One of the reader's own rows; any other id is a 404."""
    return get_object_or_404(RP.objects.select_related("gateway", "parent_payment"), pk=pk, user=request.user)


@login_required
@require_POST
def recurring_stop(request, pk: int):
    """R-REC-16: the reader stops an active recurring payment (R-REC-15 decides whether they may)."""
    row = _my_recurring(request, pk)
    try:
        payment_services.stop_by_user(recurrent_payment=row)
    except payment_services.PaymentError as exc:
        if exc.code == "recurrent_payment_not_active":
            messages.error(request, _("This recurring payment is not active, so there is nothing to stop."))
        elif row.parent_payment_id is not None and row.parent_payment.status == Payment.PREPAID:
            messages.error(request, _("This recurring payment was prepaid and cannot be stopped."))
        else:
            messages.error(request, _("This recurring payment cannot be stopped online. Please contact us."))
    else:
        messages.success(request, _("The recurring payment is stopped: you will not be charged again. "
                                    "Your subscription lasts until its end."))
    return redirect("customer:recurring")


@login_required
@require_POST
def recurring_reactivate(request, pk: int):
    """R-REC-17: a recurring payment the reader stopped runs again, if its charge time has not passed."""
    row = _my_recurring(request, pk)
    try:
        row = payment_services.reactivate_by_user(recurrent_payment=row)
    except payment_services.PaymentError as exc:
        if exc.code == "recurrent_payment_next_charge_in_past":
            messages.error(request, _("This recurring payment cannot be reactivated: its charge date has passed."))
        else:
            messages.error(request, _("Only a recurring payment you stopped can be reactivated."))
    else:
        messages.success(request, _("The recurring payment is active again. Next charge: %(date)s")
                         % {"date": date_format(timezone.localtime(row.charge_at), "DATETIME_FORMAT")})
    return redirect("customer:recurring")
