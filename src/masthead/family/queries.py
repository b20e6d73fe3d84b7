"""Read side of family codes for the admin (R-FAM-33): dashboard figures, abusive readers, one
parent's codes and a reader's parents and seats.

A parent is a subscription of a master type (one with a ``FamilySubscriptionType`` row). Each function
runs a fixed number of queries whatever the table size: counting is done by the database, never by
loops over rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    Value,
    When,
)

from masthead.family.models import FamilyRequest
from masthead.subscriptions.models import Subscription

R = FamilyRequest
MASTER_TYPE = Q(subscription_type__family_master__isnull=False)


def _running(now: datetime, prefix: str = "") -> Q:
    return Q(**{f"{prefix}start_time__lte": now, f"{prefix}end_time__gt": now})


def status_counts(prefix: str = "") -> dict[str, Count]:
    """Aggregates of codes by status: ``total``, ``accepted``, ``unused`` (created), ``canceled``."""
    field = f"{prefix}status"
    return {"total": Count(f"{prefix}id"),
            "accepted": Count(f"{prefix}id", filter=Q(**{field: R.ACCEPTED})),
            "unused": Count(f"{prefix}id", filter=Q(**{field: R.CREATED})),
            "canceled": Count(f"{prefix}id", filter=Q(**{field: R.CANCELED}))}


def dashboard(now: datetime) -> dict:
    """R-FAM-33 (two queries): ``owners`` (distinct readers with a running parent), ``codes`` (created
    + accepted codes of running parents), ``accepted``, ``unused``, and ``paid_accesses`` (readers with a
    running paid subscription that is not a parent, plus the unused codes of running parents)."""
    readers = Subscription.objects.filter(_running(now)).aggregate(
        owners=Count("user", distinct=True, filter=MASTER_TYPE),
        paid=Count("user", distinct=True, filter=Q(is_paid=True, subscription_type__family_master__isnull=True)))
    codes = R.objects.filter(_running(now, "master_subscription__"),
                             master_subscription__subscription_type__family_master__isnull=False).aggregate(
        codes=Count("id", filter=Q(status__in=(R.CREATED, R.ACCEPTED))),
        accepted=Count("id", filter=Q(status=R.ACCEPTED)), unused=Count("id", filter=Q(status=R.CREATED)))
    return {"owners": readers["owners"], **codes, "paid_accesses": readers["paid"] + codes["unused"]}


def abusive(now: datetime, *, limit: int = 50) -> dict:
    """Readers with more than ``FAMILY_ABUSE_THRESHOLD`` codes within the last ``FAMILY_ABUSE_DAYS`` days
    (two queries, most codes first): ``parents`` by codes of parents created in the window, with their
    status counts (R-FAM-33), and ``children`` by codes they activated in the window (``held``: still in
    use, ``released``: canceled since)."""
    threshold, days = settings.FAMILY_ABUSE_THRESHOLD, settings.FAMILY_ABUSE_DAYS
    since = now - timedelta(days=days)
    parents = (R.objects.filter(created_at__gte=since, created_at__lte=now,
                                master_subscription__subscription_type__family_master__isnull=False)
               .values("master_user_id", "master_user__email").annotate(**status_counts())
               .filter(total__gt=threshold).order_by("-total", "master_user__email"))
    children = (R.objects.filter(accepted_at__gte=since, accepted_at__lte=now, slave_user__isnull=False)
                .values("slave_user_id", "slave_user__email")
                .annotate(total=Count("id"), held=Count("id", filter=Q(status=R.ACCEPTED)),
                          released=Count("id", filter=Q(status=R.CANCELED)))
                .filter(total__gt=threshold).order_by("-total", "slave_user__email"))
    return {"threshold": threshold, "days": days, "parents": list(parents[:limit]), "children": list(children[:limit])}


def parent_codes(parent: Subscription) -> dict:
    """All codes of one parent, in use first, then unused, then canceled (two queries), and their
    counts; ``usable`` = in use + unused."""
    order = Case(When(status=R.ACCEPTED, then=Value(0)), When(status=R.CREATED, then=Value(1)), default=Value(2),
                 output_field=IntegerField())
    codes = (R.objects.filter(master_subscription=parent)
             .select_related("subscription_type", "slave_user", "slave_subscription")
             .order_by(order, "accepted_at", "pk"))
    counts = R.objects.filter(master_subscription=parent).aggregate(**status_counts())
    return {"codes": list(codes), "counts": {**counts, "usable": counts["accepted"] + counts["unused"]}}


def is_parent(subscription: Subscription) -> bool:
    """A subscription of a master type, or one that carries codes (one query)."""
    return Subscription.objects.filter(pk=subscription.pk).filter(
        MASTER_TYPE | Exists(R.objects.filter(master_subscription=OuterRef("pk")))).exists()


def user_family(user, now: datetime) -> dict:
    """A reader's family subscriptions for the admin user page (two queries, R-FAM-33): ``parents``
    (newest end first, with status counts; ended parents without a seat in use are left out) and
    ``seats``, the accepted codes the reader holds as a child (newest child end first)."""
    parents = (Subscription.objects.filter(user=user)
               .filter(MASTER_TYPE | Exists(R.objects.filter(master_subscription=OuterRef("pk"))))
               .select_related("subscription_type").annotate(**status_counts("family_requests__"))
               .exclude(end_time__lte=now, accepted=0).order_by("-end_time", "-pk"))
    seats = (R.objects.filter(slave_user=user, status=R.ACCEPTED)
             .select_related("subscription_type", "slave_subscription", "master_user",
                             "master_subscription__subscription_type")
             .order_by(F("slave_subscription__end_time").desc(nulls_last=True), "-pk"))
    return {"parents": list(parents), "seats": list(seats)}
