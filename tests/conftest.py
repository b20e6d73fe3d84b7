import os

import pytest
from django.test import Client

from masthead.users import services


def require_service(name: str, available: bool) -> None:
    """Skip a test whose service is missing, or fail it under CI=true (a missing service is a bug there)."""
    if available:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{name} is required under CI=true but is not available")
    pytest.skip(f"{name} not available")


@pytest.fixture
def client():
    return Client()


@pytest.fixture
def make_user(db):
    counter = iter(range(1, 10_000))

    def make(email=None, password="correct-horse-1", **fields):
        return services.create_user(email=email or f"reader{next(counter)}@example.com", password=password, **fields)

    return make


@pytest.fixture
def user(make_user):
    return make_user(email="jana@example.com", first_name="Jana", last_name="Novakova")


@pytest.fixture
def user_token(user):
    token, _ = services.issue_access_token(user=user, source="test")
    return token


@pytest.fixture
def api_token(db):
    """An API token allowed on every endpoint."""
    token, _ = services.create_api_token(name="all-endpoints", all_endpoints=True)
    return token


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}
