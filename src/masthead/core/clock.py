"""The one place Masthead reads the time (house rule 6). Tests move it with time-machine."""

from datetime import UTC, datetime

from django.utils import timezone


def now() -> datetime:
    """Aware UTC "now", truncated to whole seconds (R-GEN-4)."""
    return timezone.now().replace(microsecond=0)


def localtime(value: datetime | None = None) -> datetime:
    """``value`` (default now) in ``settings.TIME_ZONE``."""
    return timezone.localtime(value or now())


def rfc3339(value: datetime | None) -> str | None:
    """API date output: ISO-8601 with offset in the installation time zone, no fraction (R-GEN-3)."""
    if value is None:
        return None
    return timezone.localtime(value).replace(microsecond=0).isoformat()


def from_db_utc(value: datetime | None) -> datetime | None:
    """A datetime read with plain SQL: SQLite gives naive UTC values, PostgreSQL aware ones."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
