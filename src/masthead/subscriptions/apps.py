from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SubscriptionsConfig(AppConfig):
    name = "masthead.subscriptions"
    label = "subscriptions"
    verbose_name = _("Subscriptions")

    def ready(self):
        from masthead.core import widgets
        from masthead.core.events import subscribe
        from masthead.subscriptions import catalog, events, services

        catalog.register()
        subscribe(events.SubscriptionShortened, services.close_gap)

        dashboard = [
            ("subscriptions.active", "active.html", active_context, 20),
            ("subscriptions.new", "new.html", new_context, 21),
            ("subscriptions.ending", "ending.html", ending_context, 22),
            ("subscriptions.total", "total.html", total_context, 23),
            ("subscriptions.graph", "graph.html", graph_context, 24),
            ("subscriptions.print_without_address", "print_without_address.html", print_context, 25),
        ]
        for name, template, context, priority in dashboard:
            widgets.register("admin.dashboard", name, template=f"subscriptions/widgets/{template}",
                             context=context, priority=priority)
        widgets.register("admin.user.detail", "subscriptions.user",
                         template="subscriptions/widgets/user_subscriptions.html", context=user_context, priority=100)
        widgets.register("frontend.home", "subscriptions.access", template="subscriptions/widgets/home_access.html",
                         context=home_context, priority=100)


# --- widget contexts (the numbers come from subscriptions.queries) --------------------------------

ENDING_DAYS_DEFAULT = 7
GRAPH = {"width": 360, "height": 150, "base": 122, "top": 14, "label_y": 140, "bar_width": 22}


def active_context(request, **_):
    from masthead.core import clock
    from masthead.subscriptions import queries

    return {"active": queries.active_subscribers(clock.now())}


def new_context(request, **_):
    from masthead.core import clock
    from masthead.subscriptions import queries

    return {"new": queries.new_subscriptions(clock.now())}


def ending_days(request) -> int:
    """The dashboard's ``?ending_days=N`` (1–366), else 7."""
    try:
        days = int(request.GET.get("ending_days", ENDING_DAYS_DEFAULT)) if request is not None else ENDING_DAYS_DEFAULT
    except (TypeError, ValueError):
        return ENDING_DAYS_DEFAULT
    return days if 1 <= days <= 366 else ENDING_DAYS_DEFAULT


def ending_context(request, **_):
    from masthead.core import clock
    from masthead.subscriptions import queries

    return {"ending": queries.ending_soon(clock.now(), days=ending_days(request))}


def total_context(request, **_):
    from masthead.subscriptions import queries

    return {"total": queries.total_subscriptions()}


def graph_context(request, **_):
    """Bar geometry for the inline SVG: 12 bars scaled to the busiest month."""
    from masthead.core import clock
    from masthead.subscriptions import queries

    months = queries.new_per_month(clock.now(), months=12)
    top = max((m["count"] for m in months), default=0) or 1
    slot = GRAPH["width"] / len(months)
    scale = GRAPH["base"] - GRAPH["top"]
    bars = []
    for index, month in enumerate(months):
        height = round(month["count"] * scale / top)
        x = round(index * slot + (slot - GRAPH["bar_width"]) / 2)
        bars.append({**month, "x": x, "y": GRAPH["base"] - height, "height": height,
                     "center": x + GRAPH["bar_width"] // 2, "value_y": GRAPH["base"] - height - 3})
    return {"graph": {**GRAPH, "bars": bars}}


def print_context(request, **_):
    from masthead.core import clock
    from masthead.subscriptions import queries

    return {"missing": queries.print_without_address(clock.now(), limit=10)}


def user_context(request, user_obj=None, **_):
    from masthead.core import clock
    from masthead.subscriptions import queries

    if user_obj is None or user_obj.pk is None:
        return None
    staff = getattr(request, "user", None)
    return {
        **queries.user_subscriptions(user_obj, clock.now()),
        "can_add": bool(staff and staff.has_perm("subscriptions.add_subscription")),
        "can_stop": bool(staff and staff.has_perm("subscriptions.change_subscription")),
    }


def home_context(request, **_):
    from masthead.core import clock
    from masthead.subscriptions import queries

    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    return {"access": queries.access_now(user, clock.now())}
