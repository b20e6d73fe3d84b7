"""Family events. Handlers register in FamilyConfig.ready() (see core/events.py)."""

from dataclasses import dataclass

from masthead.core.events import Event


@dataclass(frozen=True, kw_only=True)
class FamilyRequestCreated(Event):
    request_id: int
    master_subscription_id: int


@dataclass(frozen=True, kw_only=True)
class FamilyRequestAccepted(Event):
    request_id: int
    master_subscription_id: int
    slave_user_id: int
    slave_subscription_id: int
    subscription_type_id: int
    renewal: bool = False  # carried over from the previous parent by a renewal (R-FAM-22)


@dataclass(frozen=True, kw_only=True)
class FamilyRequestCanceled(Event):
    request_id: int
    master_subscription_id: int
    slave_user_id: int | None
    subscription_type_id: int
