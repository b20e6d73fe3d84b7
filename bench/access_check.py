#!/usr/bin/env python3
"""Access check: GET /api/v1/users/subscriptions against the trivial endpoint, same server, same run.

    .venv/bin/python bench/access_check.py [--seconds 10] [--connections 32] [--db postgres,sqlite]

Seeds 10,000 readers with 5 subscriptions each (past, current and future, over three types), and
one more reader with 5 subscriptions and a user token; then, like bench/api_baseline.py (same
options), serves Masthead under gunicorn with 2 workers and drives ``GET /api/v1/health`` and
``GET /api/v1/users/subscriptions`` with wrk. Goals: req/s ratio >= 0.6, p99 < 25 ms at 32 connections.
"""

import sys

import _common
import api_baseline

SEED = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "masthead.settings")
import django
django.setup()
from datetime import timedelta
from masthead.core import catalog, clock
from masthead.subscriptions import services
from masthead.subscriptions.models import Subscription
from masthead.users import services as users
from masthead.users.models import User

catalog.load("content_access:\\n  - name: web\\n  - name: mobile\\n  - name: print\\n")
types = [services.save_subscription_type(code=code, fields={"name": code, "user_label": code, "price": "9.90",
         "length": 30}, content_access=access, items=[])[0]
         for code, access in (("web", ["web"]), ("web_mobile", ["web", "mobile"]), ("print", ["web", "print"]))]
now = clock.now()
offsets = (-90, -40, -10, 20, 50)  # start offsets in days: two finished, one current, two future

def five(user_id):
    return [Subscription(user_id=user_id, subscription_type=types[k % 3], start_time=now + timedelta(days=d),
                         end_time=now + timedelta(days=d + 30), length=30, is_paid=True,
                         internal_status=services.status_at(now + timedelta(days=d), now + timedelta(days=d + 30), now))
            for k, d in enumerate(offsets)]

User.objects.bulk_create([User(email=f"seed{i}@example.com", password="!", source="bench") for i in range(10_000)],
                         batch_size=2000)
ids = list(User.objects.filter(source="bench").values_list("id", flat=True))
rows = [s for user_id in ids for s in five(user_id)]
Subscription.objects.bulk_create(rows, batch_size=5000)
reader = users.create_user(email=sys.argv[1], password=sys.argv[2], source="bench")
Subscription.objects.bulk_create(five(reader.pk))
token, _ = users.issue_access_token(user=reader, source="bench")
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("ANALYZE")  # a live database has statistics; a freshly bulk-loaded one has none yet
print("TOKEN=" + token)
"""


def _subscriptions_ok(body: dict, email: str) -> bool:
    # show_finished is off: the current one and the two future ones
    return body.get("status") == "ok" and len(body.get("subscriptions", [])) == 3


ENDPOINTS = (api_baseline.ENDPOINTS[0], ("users_subscriptions", "/api/v1/users/subscriptions", True, _subscriptions_ok))

if __name__ == "__main__":
    _common.PREFIX = "access_check"
    sys.exit(api_baseline.main(endpoints=ENDPOINTS, seed=SEED, description=__doc__))
