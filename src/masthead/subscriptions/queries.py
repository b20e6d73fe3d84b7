"""Read-side helpers for subscriptions."""

from datetime import datetime

from masthead.subscriptions import periods
from masthead.subscriptions.models import ContentAccess, Subscription, SubscriptionType


def access_at(user, when: datetime) -> set[str]:
    """Names of the content access ``user`` holds at ``when``."""
    return set(
        ContentAccess.objects.filter(subscription_types__subscriptions__user=user,
                                     subscription_types__subscriptions__start_time__lte=when,
                                     subscription_types__subscriptions__end_time__gt=when)
        .values_list("name", flat=True).distinct()
    )


def type_spec(subscription_type: SubscriptionType) -> periods.TypeSpec:
    return periods.TypeSpec(
        id=subscription_type.pk,
        length=subscription_type.length,
        extension_method=subscription_type.extension_method,
        length_method=subscription_type.length_method,
        extending_length=subscription_type.extending_length,
        fixed_start=subscription_type.fixed_start,
        fixed_end=subscription_type.fixed_end,
        content_access=frozenset(subscription_type.content_access.values_list("name", flat=True)),
    )


def existing_periods(user) -> list[periods.Existing]:
    """The user's subscriptions as the date math sees them (one query for rows, one for access)."""
    rows = list(Subscription.objects.filter(user=user).values_list("subscription_type_id", "start_time", "end_time"))
    access: dict[int, set[str]] = {}
    type_ids = {r[0] for r in rows}
    for type_id, name in SubscriptionType.content_access.through.objects.filter(
            subscriptiontype_id__in=type_ids).values_list("subscriptiontype_id", "contentaccess__name"):
        access.setdefault(type_id, set()).add(name)
    return [periods.Existing(type_id=t, start=s, end=e, content_access=frozenset(access.get(t, ())))
            for t, s, e in rows]
