"""Customer zone: the reader's own pages."""

from collections import defaultdict
from contextlib import suppress
from decimal import Decimal

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.utils.translation import pgettext
from django.views.decorators.http import require_http_methods, require_POST

from masthead.core import clock
from masthead.core.money import to_money
from masthead.customer.forms import SignupForm
from masthead.family import services as family_services
from masthead.family.models import FamilyRequest, FamilySubscriptionType
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
    """My subscriptions: running and future ones; the finished ones with ``?show=all``. A row that is a
    family seat names who shares it; each running or upcoming family subscription lists its codes."""
    show_all = request.GET.get("show") == "all"
    data = subscription_queries.customer_subscriptions(request.user, clock.now(), finished=show_all)
    rows = data["current"] + (data["finished"] or [])
    sharers = _sharers([row.subscription.pk for row in rows])

    def entries(rows):
        return [{"row": row, "shared_by": sharers.get(row.subscription.pk)} for row in rows]

    return render(request, "customer/subscriptions.html", {
        "current": entries(data["current"]), "finished": entries(data["finished"]) if show_all else None,
        "finished_count": data["finished_count"], "show_all": show_all,
        "family": _family_sections(request, [row.subscription for row in data["current"]])})


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


# --- family codes: the parent's seats (R-FAM-5, R-FAM-16) and a code's landing page (R-FAM-15) -----------

FR = FamilyRequest


def _sharers(subscription_ids: list[int]) -> dict[int, str]:
    """{child subscription id: the name (or e-mail) of the reader who shares it}."""
    seats = FR.objects.filter(slave_subscription_id__in=subscription_ids).select_related("master_user")
    return {seat.slave_subscription_id: seat.master_user.get_full_name() for seat in seats}


def _family_sections(request, subscriptions: list) -> list[dict]:
    """Each family (parent) subscription among ``subscriptions`` with its usable codes. The codes are
    generated here if missing (R-FAM-5); a parent whose codes cannot be worked out shows none."""
    master_ids = set(FamilySubscriptionType.objects.filter(
        master_subscription_type_id__in={s.subscription_type_id for s in subscriptions})
        .values_list("master_subscription_type_id", flat=True))
    parents = [s for s in subscriptions if s.subscription_type_id in master_ids]
    for parent in parents:
        with suppress(family_services.FamilyConfigError):
            family_services.generate_requests(parent=parent)
    seats = defaultdict(list)
    for seat in (FR.objects.filter(master_subscription__in=parents, status__in=(FR.CREATED, FR.ACCEPTED))
                 .select_related("slave_user").order_by("pk")):
        seats[seat.master_subscription_id].append({
            "seat": seat, "url": request.build_absolute_uri(reverse("customer:family_activate", args=[seat.code])),
            "holder": seat.slave_user.get_full_name() if seat.slave_user_id else None})
    return [{"subscription": parent, "seats": seats[parent.pk],
             "in_use": sum(1 for entry in seats[parent.pk] if entry["seat"].status == FR.ACCEPTED)}
            for parent in parents]


@login_required
@require_POST
def family_revoke(request, code: str):
    """R-FAM-16: the parent takes a seat back; its holder's access ends now and a new code replaces it."""
    try:
        family_services.revoke(parent_user=request.user, code=code)
    except family_services.FamilyError as exc:
        if exc.code == "family_request_not_found":
            messages.error(request, _("This code is not one of yours."))
        elif exc.code == "family_request_wrong_status":
            messages.error(request, _("This code is not in use, so there is nothing to revoke."))
        else:
            messages.error(request, exc.message)
    else:
        messages.success(request, _("The seat is free again: its holder no longer has access. "
                                    "A new code replaces the old one."))
    return redirect("customer:subscriptions")


def masked_email(email: str) -> str:
    """``jana@example.com`` → ``j***@example.com``: who used a code, without giving the address away."""
    local, _at, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def _activation_state(seat: FamilyRequest, user, now) -> str:
    """Which page a code's landing shows (R-FAM-15), checked in this order."""
    if seat.status == FR.CANCELED:
        return "canceled"
    if seat.status == FR.ACCEPTED:
        return "success" if seat.slave_user_id == user.pk else "used"
    if seat.master_subscription.end_time <= now or (seat.expires_at is not None and seat.expires_at <= now):
        return "expired"
    return "confirm" if user.is_authenticated else "signup"


def _activation_error(code: str) -> str:
    """The heading of the error page for a refused activation (R-FAM-11 codes)."""
    return {"family_request_one_per_user": _("You already hold a seat of this subscription."),
            "family_request_self_use_forbidden": _("This code cannot be used on the account that shares it."),
            "family_request_user_inactive": _("Your account is not active."),
            "family_request_wrong_status": _("This code has already been used."),
            "family_request_expired": _("This code has expired.")}.get(code, _("The code could not be activated."))


@require_http_methods(["GET", "POST"])
def family_activate(request, code: str):
    """A code's landing page, for readers logged in or not. An unused code is confirmed by a logged-in
    reader (POST ``action=activate``); an anonymous reader logs in or creates an account here
    (POST ``action=signup``) and then confirms."""
    seat = (FR.objects.select_related("master_user", "master_subscription", "slave_user", "slave_subscription",
                                      "subscription_type").filter(code=code).first())
    if seat is None:
        return render(request, "customer/family_activate.html", {"state": "not_found"}, status=404)
    if request.method == "GET":
        family_services.mark_opened(request=seat)
    state = _activation_state(seat, request.user, clock.now())
    context = {"state": state, "seat": seat, "sharer": seat.master_user.get_full_name(), "form": SignupForm()}
    if request.method == "POST" and state in ("confirm", "signup"):
        action = request.POST.get("action")
        if action == "activate" and state == "signup":
            return redirect_to_login(request.path)
        if action == "activate":
            try:
                family_services.activate(user=request.user, code=code)
            except family_services.FamilyError as exc:
                context.update(state="error", error=_activation_error(exc.code), message=exc.message)
                return render(request, "customer/family_activate.html", context, status=exc.status)
            return redirect("customer:family_activate", code=code)
        if action == "signup" and state == "signup":
            form = SignupForm(request.POST)
            user = form.save(source="family") if form.is_valid() else None
            if user is not None:
                login(request, user)
                return redirect("customer:family_activate", code=code)
            context["form"] = form
    if state == "used":
        context["used_by"] = masked_email(seat.slave_user.email)
    if state in ("success", "confirm", "signup"):  # what the seat gives: its child type's access
        context["access"] = subscription_queries.access_names([seat.subscription_type_id]).get(
            seat.subscription_type_id, [])
    return render(request, "customer/family_activate.html", context)
