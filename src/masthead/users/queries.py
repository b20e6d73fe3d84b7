from datetime import timedelta

from masthead.core import clock
from masthead.users.models import AccessToken, User


def user_counts() -> dict:
    today = clock.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "total": User.objects.count(),
        "active": User.objects.filter(is_active=True).count(),
        "staff": User.objects.filter(is_staff=True).count(),
        "new_today": User.objects.filter(created_at__gte=today).count(),
        "new_7_days": User.objects.filter(created_at__gte=today - timedelta(days=6)).count(),
    }


def token_summary(user) -> dict | None:
    if user is None or user.pk is None:
        return None
    live = AccessToken.objects.filter(user=user, revoked_at__isnull=True).order_by("-created_at")
    return {"live_tokens": list(live[:10]), "live_count": live.count()}


def roles(user: User) -> list[str]:
    """Admin roles, as REMP's login answer lists them."""
    if not user.is_staff:
        return []
    names = sorted(user.groups.values_list("name", flat=True))
    return (["superadmin"] if user.is_superuser else []) + names


def public_meta(user: User) -> dict[str, str]:
    return dict(user.meta.filter(is_public=True).values_list("key", "value"))
