"""schemathesis over the OpenAPI schema: whatever it sends, no endpoint answers 5xx."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from masthead.wsgi import application

# ninja emits OpenAPI 3.1, which schemathesis 3 tests as an experimental feature
schema = schemathesis.from_wsgi("/api/v1/openapi.json", application, force_schema_version="30")

USER_TOKEN_OPERATIONS = {"users_info", "user_info", "users_logout"}


@pytest.fixture(autouse=True)
def keep_test_connection():
    """Requests go through the raw WSGI app, whose request signals would close the test's connection
    (inside its transaction) on PostgreSQL; Django's own test client disconnects them the same way."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
@pytest.mark.django_db
def test_no_server_errors(case, api_token, user_token):
    token = user_token if case.operation.definition.raw.get("operationId") in USER_TOKEN_OPERATIONS else api_token
    response = case.call_wsgi(headers={"Authorization": f"Bearer {token}"})
    case.validate_response(response, checks=(not_a_server_error,))


@schema.parametrize()
@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@pytest.mark.django_db
def test_no_server_errors_without_credentials(case):
    response = case.call_wsgi()
    case.validate_response(response, checks=(not_a_server_error,))
