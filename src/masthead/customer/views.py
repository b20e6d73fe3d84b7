"""Customer zone: the reader's own pages."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from masthead.core import clock
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
