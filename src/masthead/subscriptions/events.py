"""Subscription events. Handlers register in AppConfig.ready() (see core/events.py)."""

from dataclasses import dataclass
from datetime import datetime

from masthead.core.events import Event


@dataclass(frozen=True, kw_only=True)
class SubscriptionCreated(Event):
    subscription_id: int
    user_id: int
    subscription_type_id: int
    payment_id: int | None = None


@dataclass(frozen=True, kw_only=True)
class SubscriptionStarted(Event):
    subscription_id: int
    user_id: int


@dataclass(frozen=True, kw_only=True)
class SubscriptionEnded(Event):
    subscription_id: int
    user_id: int


@dataclass(frozen=True, kw_only=True)
class SubscriptionUpdated(Event):
    subscription_id: int
    user_id: int
    changed: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class SubscriptionShortened(Event):
    subscription_id: int
    user_id: int
    original_end: datetime


@dataclass(frozen=True, kw_only=True)
class SubscriptionMoved(Event):
    subscription_id: int
    user_id: int
    original_start: datetime
    original_end: datetime
