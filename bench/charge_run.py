#!/usr/bin/env python3
"""Recurring charge run throughput on PostgreSQL: 1 worker against N workers, and no double charges.

    .venv/bin/python bench/charge_run.py [--count 5000] [--workers 4] [--latency-ms 20]
                                         [--types thread,process] [--json out.json]

Migrates a fresh PostgreSQL database (``$DATABASE_URL`` when set, else a throwaway PostgreSQL 15
configured like ``scripts/services.sh``, removed at the end), then for each timed run:

1. seeds ``--count`` due recurrent payments, one per reader (reader, paid first payment with its
   items, active row due a minute ago, each with its own ``fake_card`` token) with bulk inserts — the
   rows a month of sales through ``payments.services`` would have left, made quickly;
2. runs ``payments.services.charge_due`` once and times it: first with 1 worker, then with
   ``--workers`` workers of each ``--types`` (threads, the charge run's default, then processes).
   ``fake_card`` sleeps ``--latency-ms`` per call, like a network round trip; every charge is approved.

Each charge does what production does: claim, build the payment and its items, call the gateway,
mark the payment paid, create the subscription and the next row, emit the events.

Afterwards it counts double charges in the database (paid charge payments beyond one per due row and
per reader, rows charged twice) and in the simulator of this process (charges beyond one per card,
repeated idempotency keys; charge processes have their own simulator); any double charge or
uncharged row is an error (exit 1).

Measurement lines go to stdout in the house format; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import _common
from _common import ROOT, BenchError, log, postgres_url

_common.PREFIX = "charge_run"
GOAL = 3.5


# --- inside Django --------------------------------------------------------------------------------------


def setup_django(database_url: str, var_dir: Path, latency_ms: int) -> None:
    for name in ("REDIS_URL", "DJANGO_SETTINGS_MODULE"):
        os.environ.pop(name, None)
    os.environ.update(DATABASE_URL=database_url, MASTHEAD_VAR_DIR=str(var_dir), FAKE_CARD_LATENCY_MS=str(latency_ms),
                      FAKE_CARD_DECLINES="", LOG_LEVEL="WARNING", DEBUG="0", MASTHEAD_TESTING="0",
                      DJANGO_SETTINGS_MODULE="masthead.settings")
    var_dir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "src"))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def subscription_type():
    from masthead.subscriptions.services import ItemSpec, save_subscription_type

    subscription_type, _ = save_subscription_type(
        code="bench-monthly", fields={"name": "Bench monthly", "user_label": "Monthly", "price": "9.90",
                                      "length": 31},
        content_access=[], items=[ItemSpec("Web", "4.90", "20"), ItemSpec("Print", "5.00", "10")])
    return subscription_type


def seed(count: int, tag: str, subscription_type) -> list[int]:
    """``count`` readers, each with a paid first payment and an active row due a minute ago."""
    from django.contrib.auth.hashers import make_password
    from django.db import transaction

    from masthead.core import clock
    from masthead.payments.models import Payment, PaymentGateway, PaymentItem, RecurrentPayment
    from masthead.users.models import User

    now = clock.now()
    gateway = PaymentGateway.objects.get(code="fake_card")
    taken = set(Payment.objects.values_list("variable_symbol", flat=True))
    symbols: list[str] = []
    while len(symbols) < count:
        symbol = f"{secrets.randbelow(10**10):010d}"
        if symbol not in taken:
            taken.add(symbol)
            symbols.append(symbol)
    unusable = make_password(None)
    items = list(subscription_type.items.all())
    with transaction.atomic():
        users = User.objects.bulk_create(
            [User(email=f"bench-{tag}-{k}@example.com", password=unusable, source="bench") for k in range(count)],
            batch_size=1000)
        payments = Payment.objects.bulk_create(
            [Payment(user=user, gateway=gateway, subscription_type=subscription_type, amount=subscription_type.price,
                     variable_symbol=symbol, status=Payment.PAID, paid_at=now - timedelta(days=31))
             for user, symbol in zip(users, symbols, strict=True)], batch_size=1000)
        PaymentItem.objects.bulk_create(
            [PaymentItem(payment=payment, name=item.name, amount=item.amount, vat=item.vat,
                         subscription_type=subscription_type) for payment in payments for item in items],
            batch_size=2000)
        rows = RecurrentPayment.objects.bulk_create(
            [RecurrentPayment(cid=f"card_4{ord(tag) % 10}{k:014d}", gateway=gateway,
                              charge_at=now - timedelta(minutes=1), parent_payment=payment, retries=4,
                              user_id=payment.user_id, subscription_type=subscription_type, state=RecurrentPayment.ACTIVE)
             for k, payment in enumerate(payments)], batch_size=1000)
    return [row.pk for row in rows]


def charge(workers: int, worker_type: str) -> tuple[float, dict]:
    from masthead.payments import services

    started, cpu = time.perf_counter(), time.process_time()
    result = services.charge_due(workers=workers, worker_type=worker_type)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    log(f"{workers} {worker_type} worker(s): {elapsed / max(result.claimed, 1) * 1000:.1f} ms wall and "
        f"{cpu / max(result.claimed, 1) * 1000:.1f} ms CPU of this process per charge")
    return elapsed, {"claimed": result.claimed, **result.outcomes}


def double_charges(row_ids: list[int], adapter) -> dict:
    """Everything that would mean a card was charged twice, or a due row not charged."""
    from masthead.payments.models import Payment, RecurrentPayment

    rows = RecurrentPayment.objects.filter(pk__in=row_ids)
    states = Counter(rows.values_list("state", flat=True))
    charge_payments = Payment.objects.filter(recurrent_charge=True, status=Payment.PAID)
    per_user = Counter(charge_payments.values_list("user_id", flat=True))
    per_row_payment = Counter(rows.values_list("payment_id", flat=True))
    keys = Counter(key for key, _token, _amount in adapter.charges)
    tokens = Counter(token for _key, token, _amount in adapter.charges)
    return {
        "db_payments_beyond_one_per_reader": sum(n - 1 for n in per_user.values() if n > 1),
        "db_paid_beyond_rows": max(0, charge_payments.count() - states.get("charged", 0)),
        "db_rows_sharing_a_payment": sum(n - 1 for p, n in per_row_payment.items() if p is not None and n > 1),
        "gateway_repeated_keys": sum(n - 1 for n in keys.values() if n > 1),
        "gateway_cards_charged_twice": sum(n - 1 for n in tokens.values() if n > 1),
        "uncharged_rows": len(row_ids) - states.get("charged", 0),
    }


def runs(args) -> list[tuple[str, int, str]]:
    """(label, workers, worker type) of each timed run: 1 worker, then N workers of each type asked for."""
    plural = {"thread": "threads", "process": "processes"}
    return [("workers_1", 1, "thread")] + [(f"workers_{args.workers}_{plural[kind]}", args.workers, kind)
                                          for kind in args.types]


def measure(args) -> dict:
    from django.db import connections

    from masthead.payments import gateways

    adapter = gateways.get("fake_card")
    adapter.reset()
    kind = subscription_type()
    results: dict = {}
    all_rows: list[int] = []
    for k, (label, workers, worker_type) in enumerate(runs(args)):
        log(f"seeding {args.count} due recurrent payments")
        rows = seed(args.count, "abcdefgh"[k], kind)
        all_rows += rows
        log(f"charge run with {workers} {worker_type} worker(s), fake_card latency {args.latency_ms} ms")
        elapsed, outcomes = charge(workers, worker_type)
        if outcomes.get("charged") != args.count:
            raise BenchError(f"{label}: expected {args.count} charges, got {outcomes}")
        results[label] = {"workers": workers, "worker_type": worker_type, "seconds": round(elapsed, 3),
                          "charges": outcomes["charged"], "charges_per_s": outcomes["charged"] / elapsed,
                          "outcomes": outcomes}
        log(f"{label}: {outcomes['charged']} charges in {elapsed:.1f} s")
    results["double_charges"] = double_charges(all_rows, adapter)
    results["gateway_calls_in_this_process"] = adapter.calls
    connections.close_all()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="due recurrent payments per run (default 5000)")
    parser.add_argument("--workers", type=int, default=4, help="workers of the second run (default 4)")
    parser.add_argument("--latency-ms", type=int, default=20, help="fake_card latency per call (default 20)")
    parser.add_argument("--types", default="thread,process",
                        help="worker types of the N-worker runs, comma separated (default thread,process)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    args = parser.parse_args(argv)
    args.types = [t.strip() for t in args.types.split(",") if t.strip()]
    if not args.types or set(args.types) - {"process", "thread"}:
        parser.error("--types takes process and/or thread")
    if args.count < 1 or args.workers < 2:
        parser.error("--count must be positive and --workers at least 2")

    load_before = _common.load_average()
    try:
        with _common.guarded() as stack:
            database_url = postgres_url(stack)
            var_dir = Path(tempfile.mkdtemp(prefix="masthead-bench-charge."))
            stack.callback(shutil.rmtree, var_dir, ignore_errors=True)
            setup_django(database_url, var_dir / "var", args.latency_ms)
            results = measure(args)
    except _common.Stopped as stop:
        return stop.code

    one = results["workers_1"]
    ratios = {}
    print(f"{_common.PREFIX}.postgres.workers_1: {one['charges_per_s']:.1f} charges/s", flush=True)
    for label, _workers, _kind in runs(args)[1:]:
        many = results[label]
        ratios[label] = many["charges_per_s"] / one["charges_per_s"]
        print(f"{_common.PREFIX}.postgres.{label}: {many['charges_per_s']:.1f} charges/s "
              f"(ratio {ratios[label]:.2f} vs {_common.PREFIX}.postgres.workers_1; goal >= {GOAL})", flush=True)
    doubles = sum(v for k, v in results["double_charges"].items() if k != "uncharged_rows")
    total = len(runs(args)) * args.count
    print(f"{_common.PREFIX}.postgres.double_charges: {doubles} charges (ratio {doubles / total:.4f} vs {total} due rows; "
          f"goal 0)", flush=True)
    if args.json:
        doc = {"benchmark": _common.PREFIX, "config": {"count": args.count, "workers": args.workers,
                                               "latency_ms": args.latency_ms, "cpus": os.cpu_count(),
                                               "loadavg_before": [round(x, 2) for x in load_before]},
               "results": results, "ratios": ratios}
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    bad = doubles or results["double_charges"]["uncharged_rows"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
