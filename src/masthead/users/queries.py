import uuid
from datetime import datetime, timedelta

from django.db import connection

from masthead.core import clock
from masthead.users.models import AccessToken, User

# Every user-token request runs this lookup, so it is plain SQL over the columns API handlers use
# (building the ORM query costs several times more than running it); the other columns load on
# access. Values are converted here the way the ORM would (SQLite has no uuid, bool or aware types).
_TOKEN_USER_FIELDS = ("id", "uuid", "email", "first_name", "last_name", "public_name", "locale", "is_active",
                      "is_staff", "is_superuser", "confirmed_at")
_USER_BY_TOKEN_SQL = """
    SELECT t.id, t.device_token_id,
           CASE WHEN t.last_used_at IS NULL OR t.last_used_at < %s THEN 1 ELSE 0 END,
           {columns}
    FROM users_accesstoken t JOIN users_user u ON u.id = t.user_id
    WHERE t.token_hash = %s AND t.revoked_at IS NULL
""".format(columns=", ".join(f"u.{name}" for name in _TOKEN_USER_FIELDS))
_PUBLIC_META_SQL = 'SELECT "key", "value" FROM users_usermeta WHERE user_id = %s AND is_public = %s'


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


def user_by_token_hash(token_hash: str, *, used_before: datetime) -> User | None:
    """The user of a live access token, with ``token_id``, ``token_device_id`` and ``token_stale``
    (last use older than ``used_before``) set on it; None for an unknown or revoked token."""
    with connection.cursor() as cursor:
        cursor.execute(_USER_BY_TOKEN_SQL, [connection.ops.adapt_datetimefield_value(used_before), token_hash])
        row = cursor.fetchone()
    if row is None:
        return None
    token_id, device_id, stale, pk, uid, email, first, last, public, locale, active, staff, superuser, confirmed = row
    values = dict(zip(_TOKEN_USER_FIELDS, (
        pk, uid if isinstance(uid, uuid.UUID) else uuid.UUID(uid), email, first, last, public, locale, bool(active),
        bool(staff), bool(superuser), clock.from_db_utc(confirmed)), strict=True))
    # from_db takes the values in the model's field order
    names = [f.attname for f in User._meta.concrete_fields if f.attname in values]
    user = User.from_db("default", names, [values[name] for name in names])
    user.token_id, user.token_device_id, user.token_stale = token_id, device_id, bool(stale)
    return user


def public_meta(user: User) -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(_PUBLIC_META_SQL, [user.pk, True])
        return dict(cursor.fetchall())
