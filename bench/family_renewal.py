#!/usr/bin/env python3
"""Family renewal cost on PostgreSQL: a parent with 1,000 accepted children buys its next period.

    .venv/bin/python bench/family_renewal.py [--children 1000] [--repeat 3] [--profile] [--json out.json]

Migrates a fresh PostgreSQL database (``$DATABASE_URL`` when set, else a throwaway PostgreSQL 15
configured like ``scripts/services.sh``, removed at the end), then:

1. buys a parent subscription through ``payments.services`` (a ``copy`` family type with
   ``--children`` codes per parent, so generation makes the codes), and seeds ``--children``
   readers who hold them: readers, their child subscriptions (the parent's dates) and the accepted
   requests, with bulk inserts — what ``--children`` activations would have left, made quickly;
2. times the renewal: ``payments.services.confirm`` of the parent's next payment, one transaction
   that creates the master subscription, whose SubscriptionCreated handler generates its codes and
   re-activates every accepted child on one of them (R-FAM-22). Each ``--repeat`` renews the
   previous renewal (the parent type extends ``extend_same_type``, so each purchase starts where the
   last one ends and the chain grows by one period);
3. checks the result: every child of the previous parent accepted on the new one (same readers,
   new child subscriptions with the new parent's dates), no code left unused, the link meta written.

Every SQL statement of the renewal is counted (``connection.execute_wrapper``) and timed, grouped by
statement shape, so the database's share and the statements run per child show on stderr.
``--profile`` adds one more renewal under cProfile and prints the functions that dominate. The goal
(< 2 s on PostgreSQL) is checked against the median renewal; a wrong result exits 1.

Measurement lines go to stdout in the house format; progress and breakdowns go to stderr.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path

import _common
from _common import ROOT, BenchError, log, postgres_url

_common.PREFIX = "family_renewal"
GOAL_SECONDS = 2.0


# --- inside Django --------------------------------------------------------------------------------------


def setup_django(database_url: str, var_dir: Path) -> None:
    for name in ("REDIS_URL", "DJANGO_SETTINGS_MODULE"):
        os.environ.pop(name, None)
    os.environ.update(DATABASE_URL=database_url, MASTHEAD_VAR_DIR=str(var_dir), LOG_LEVEL="WARNING", DEBUG="0",
                      MASTHEAD_TESTING="0", DJANGO_SETTINGS_MODULE="masthead.settings")
    var_dir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "src"))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def family_types(children: int):
    """The parent type (``copy``, ``children`` codes per parent) and its child type."""
    from masthead.family.models import FamilySubscriptionType
    from masthead.subscriptions.models import ContentAccess
    from masthead.subscriptions.services import ItemSpec, save_subscription_type

    for name in ("web", "mobile"):
        ContentAccess.objects.get_or_create(name=name)
    child, _ = save_subscription_type(
        code="bench_family_child", fields={"name": "Family child", "user_label": "Family child", "price": "0",
                                           "length": 30},
        content_access=["web", "mobile"], items=[])
    parent, _ = save_subscription_type(
        code="bench_family_parent", fields={"name": "Family parent", "user_label": "Family", "price": "500.00",
                                            "length": 30, "extension_method": "extend_same_type"},
        content_access=["web", "mobile"], items=[ItemSpec("Family", "500.00", "20")])
    FamilySubscriptionType.objects.update_or_create(
        master_subscription_type=parent,
        defaults={"slave_subscription_type": child, "donation_method": FamilySubscriptionType.COPY,
                  "count": children, "is_paid": True})
    return parent, child


def buy(owner, parent_type):
    """The owner's next payment for the parent type; (payment, confirm) so the caller times confirm."""
    from masthead.payments import services as payment_services

    payment = payment_services.create_payment(user=owner, gateway="free", subscription_type=parent_type)
    return payment, lambda: payment_services.confirm(payment=payment)


def seed_children(parent, children: int) -> list[int]:
    """``children`` readers holding the parent's codes: users, child subscriptions, accepted requests."""
    from django.contrib.auth.hashers import make_password
    from django.db import connection, transaction

    from masthead.core import clock
    from masthead.family.models import FamilyRequest as R
    from masthead.subscriptions.models import Subscription
    from masthead.subscriptions.services import status_at
    from masthead.users.models import User

    now = clock.now()
    unusable = make_password(None)
    with transaction.atomic():
        requests = list(R.objects.filter(master_subscription=parent, status=R.CREATED).order_by("pk"))
        if len(requests) != children:
            raise BenchError(f"the parent carries {len(requests)} unused codes, expected {children}")
        users = User.objects.bulk_create(
            [User(email=f"bench-child-{parent.pk}-{k}@example.com", password=unusable, source="bench")
             for k in range(children)], batch_size=1000)
        subscriptions = Subscription.objects.bulk_create(
            [Subscription(user=user, subscription_type_id=request.subscription_type_id, type="family", is_paid=True,
                          is_recurrent=False, start_time=parent.start_time, end_time=parent.end_time,
                          length=parent.length, internal_status=status_at(parent.start_time, parent.end_time, now))
             for user, request in zip(users, requests, strict=True)], batch_size=1000)
        for k, (request, user, subscription) in enumerate(zip(requests, users, subscriptions, strict=True)):
            accepted = now - timedelta(seconds=children - k)
            request.status, request.slave_user, request.slave_subscription = R.ACCEPTED, user, subscription
            request.accepted_at = request.updated_at = accepted
            request.note = f"seat {k}" if k % 10 == 0 else ""
        R.objects.bulk_update(requests, ["status", "slave_user", "slave_subscription", "accepted_at", "updated_at",
                                         "note"], batch_size=1000)
    with connection.cursor() as cursor:
        for table in ("users_user", "subscriptions_subscription", "family_familyrequest"):
            cursor.execute(f"ANALYZE {table}")
    return [user.pk for user in users]


class QueryLog:
    """An execute wrapper: counts and times every statement; grouped by shape (literals and savepoint
    names stripped) only afterwards, so the timed renewal pays for a clock read and an append."""

    SHAPE = re.compile(r"'(?:[^']|'')*'|\"s\d+_x\d+\"|\b\d+\b|%s|\$\d+")

    def __init__(self):
        self.statements: list[tuple[str, float]] = []

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.statements.append((sql, time.perf_counter() - started))

    @property
    def count(self) -> int:
        return len(self.statements)

    @property
    def seconds(self) -> float:
        return sum(elapsed for _, elapsed in self.statements)

    def top(self, limit: int) -> list[tuple[str, int, float]]:
        by_shape: dict[str, list] = defaultdict(lambda: [0, 0.0])
        for sql, elapsed in self.statements:
            entry = by_shape[self.SHAPE.sub("?", " ".join(sql.split()))]
            entry[0] += 1
            entry[1] += elapsed
        rows = sorted(by_shape.items(), key=lambda kv: (-kv[1][0], -kv[1][1]))
        return [(shape, n, seconds) for shape, (n, seconds) in rows[:limit]]


def renew(parent, parent_type, *, profile: bool = False):
    """One timed renewal of ``parent``: (new parent, seconds, QueryLog, profile text or None)."""
    from django.db import connection

    from masthead.family.models import FamilyRequest as R

    owner = parent.user
    payment, confirm = buy(owner, parent_type)
    queries = QueryLog()
    profiler = cProfile.Profile() if profile else None
    with connection.execute_wrapper(queries):
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        payment = confirm()
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - started
    report = None
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(r"masthead", 30)
        stats.sort_stats("tottime").print_stats(15)
        report = out.getvalue()
    new_parent = payment.subscription
    if new_parent is None:
        raise BenchError(f"payment {payment.pk} made no subscription")
    if not R.objects.filter(master_subscription=new_parent).exists():
        raise BenchError(f"subscription {new_parent.pk} got no family codes")
    return new_parent, elapsed, queries, report


def check(previous, new_parent, children: int) -> dict:
    """R-FAM-22 after a renewal: every child of ``previous`` holds a seat of ``new_parent``."""
    from masthead.family.models import FamilyRequest as R
    from masthead.family.services import NEXT_PARENT_META
    from masthead.subscriptions.models import Subscription, SubscriptionMeta

    old = dict(R.objects.filter(master_subscription=previous, status=R.ACCEPTED).values_list("slave_user_id", "note"))
    new_rows = list(R.objects.filter(master_subscription=new_parent).values_list(
        "status", "slave_user_id", "slave_subscription_id", "note"))
    statuses = Counter(status for status, *_ in new_rows)
    accepted = {user: (sub, note) for status, user, sub, note in new_rows if status == R.ACCEPTED}
    child_subs = Subscription.objects.filter(pk__in=[sub for sub, _ in accepted.values()])
    dates_ok = set(child_subs.values_list("start_time", "end_time", "type")) == {
        (new_parent.start_time, new_parent.end_time, "family")}
    owners_ok = dict(child_subs.values_list("pk", "user_id")) == {sub: user for user, (sub, _) in accepted.items()}
    link = SubscriptionMeta.objects.filter(subscription=previous, key=NEXT_PARENT_META).values_list(
        "value", flat=True).first()
    result = {
        "accepted": statuses.get(R.ACCEPTED, 0),
        "created_left": statuses.get(R.CREATED, 0),
        "canceled": statuses.get(R.CANCELED, 0),
        "same_readers": set(accepted) == set(old),
        "notes_copied": all(accepted[user][1] == note for user, note in old.items() if user in accepted),
        "child_dates_ok": dates_ok,
        "child_owners_ok": owners_ok,
        "linked": link == str(new_parent.pk),
    }
    result["ok"] = (result["accepted"] == children and result["created_left"] == 0 and result["canceled"] == 0
                    and all(result[k] for k in ("same_readers", "notes_copied", "child_dates_ok", "child_owners_ok",
                                                "linked")))
    return result


def measure(args) -> dict:
    from django.db import connection, connections

    from masthead.users import services as user_services

    parent_type, _child_type = family_types(args.children)
    owner = user_services.create_user(email="bench-family-owner@example.com", source="bench")
    log("buying the first parent (generates its codes)")
    _payment, confirm = buy(owner, parent_type)
    parent = confirm().subscription
    log(f"seeding {args.children:,} accepted children (bulk inserts)")
    seed_children(parent, args.children)
    runs = []
    previous = parent
    for k in range(args.repeat):
        log(f"renewal {k + 1}/{args.repeat}: {args.children:,} children")
        new_parent, elapsed, queries, _ = renew(previous, parent_type)
        verdict = check(previous, new_parent, args.children)
        runs.append({"seconds": elapsed, "queries": queries.count, "sql_seconds": queries.seconds,
                     "check": verdict, "top": queries.top(12)})
        log(f"renewal {k + 1}: {elapsed:.3f} s, {queries.count:,} statements ({queries.seconds:.3f} s waiting on "
            f"PostgreSQL), check {'ok' if verdict['ok'] else verdict}")
        previous = new_parent
    profile = None
    if args.profile:
        log("one more renewal under cProfile")
        new_parent, elapsed, queries, profile = renew(previous, parent_type, profile=True)
        log(f"profiled renewal: {elapsed:.3f} s (cProfile overhead included)")
    log(f"server: PostgreSQL {connection.pg_version / 10000:.0f}, prepared statements "
        f"{'on' if connection.settings_dict.get('OPTIONS', {}).get('server_side_binding') else 'off'}")
    connections.close_all()
    return {"runs": runs, "profile": profile}


def print_breakdown(run: dict, children: int) -> None:
    """The statements of one renewal, most frequent first, with their count per child (stderr)."""
    log("statements of the fastest renewal, most frequent first (count, per child, total ms, shape):")
    for shape, n, seconds in run["top"]:
        log(f"  {n:6d}  {n / children:5.2f}/child  {seconds * 1000:8.1f} ms  {shape[:150]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=1000, help="accepted children of the parent (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed renewals, each renewing the last (default 3)")
    parser.add_argument("--profile", action="store_true", help="one more renewal under cProfile, printed to stderr")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    args = parser.parse_args(argv)
    if args.children < 1 or args.repeat < 1:
        parser.error("--children and --repeat must be positive")

    load_before = _common.load_average()
    try:
        with _common.guarded() as stack:
            database_url = postgres_url(stack)
            var_dir = Path(tempfile.mkdtemp(prefix="masthead-bench-family."))
            stack.callback(shutil.rmtree, var_dir, ignore_errors=True)
            setup_django(database_url, var_dir / "var")
            results = measure(args)
    except _common.Stopped as stop:
        return stop.code

    runs = results["runs"]
    n = args.children
    best = min(runs, key=lambda r: r["seconds"])
    seconds = [r["seconds"] for r in runs]
    median = statistics.median(seconds)
    print_breakdown(best, n)
    if results["profile"]:
        print(results["profile"], file=sys.stderr)
    name = f"{_common.PREFIX}.postgres"
    print(f"{name}.renewal_{n}: {median:.3f} s median of {len(runs)} (min {min(seconds):.3f}, max {max(seconds):.3f}) "
          f"for one renewal transaction of {n:,} children", flush=True)
    print(f"{name}.per_child: {median / n * 1000:.2f} ms (ratio {median / GOAL_SECONDS * 1000 / n:.2f} vs the goal's "
          f"{GOAL_SECONDS:.0f} ms per child, {GOAL_SECONDS:.0f} s for 1,000)", flush=True)
    print(f"{name}.queries: {best['queries']:,} statements ({best['queries'] / n:.1f} per child; "
          f"{best['sql_seconds']:.3f} s in PostgreSQL round trips, ratio {best['sql_seconds'] / best['seconds']:.2f} "
          f"vs the renewal time)", flush=True)
    verdict = "PASS" if median < GOAL_SECONDS else "FAIL"
    print(f"{name}.goal: {median:.3f} s vs goal < {GOAL_SECONDS:.0f} s on PostgreSQL -> {verdict}", flush=True)
    checks = [r["check"] for r in runs]
    ok = all(c["ok"] for c in checks)
    print(f"{name}.check: {', '.join(str(c['accepted']) for c in checks)} accepted on the new parent(s) of "
          f"{n:,} expected -> {'ok' if ok else 'WRONG ' + json.dumps(checks)}", flush=True)
    if args.json:
        doc = {"benchmark": _common.PREFIX, "config": {"children": n, "repeat": args.repeat, "cpus": os.cpu_count(),
                                                       "loadavg_before": [round(x, 2) for x in load_before]},
               "runs": [{k: v for k, v in r.items() if k != "top"} | {"top": [list(t) for t in r["top"]]}
                        for r in runs]}
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
