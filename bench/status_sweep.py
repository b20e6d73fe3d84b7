#!/usr/bin/env python3
"""Status sweep cost: 1,000,000 subscriptions on PostgreSQL, 100,000 of them due.

    .venv/bin/python bench/status_sweep.py [--total 1000000] [--due 100000]

Loads the rows with set-based SQL (users, one type, subscriptions of every status), then times
``subscriptions.services.sweep_statuses()`` with the due rows (half start, half end) and again with
none due. The second figure shows the sweep reads only due rows (indexes on status + start/end),
so its cost follows the transitions, not the table. PostgreSQL: ``$DATABASE_URL`` or a throwaway
server started here. Prints ``NAME: value unit (ratio R vs BASELINE)`` lines.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import _common
from _common import PYTHON, BenchError, app_env, log, postgres_url, run

_common.PREFIX = "status_sweep"

INNER = r"""
import json, os, sys, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "masthead.settings")
import django
django.setup()
from datetime import timedelta
from django.db import connection
from masthead.core import catalog, clock
from masthead.subscriptions import services
from masthead.subscriptions.models import Subscription

total, due, users = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
catalog.load("content_access:\n  - name: web\n")
sub_type, _ = services.save_subscription_type(code="bench", fields={"name": "Bench", "user_label": "Bench",
    "price": "1.00", "length": 30}, content_access=["web"], items=[])
now = clock.now()
with connection.cursor() as c:
    c.execute('''INSERT INTO users_user (password, email, uuid, public_name, first_name, last_name, phone_number,
        locale, is_active, is_staff, is_superuser, source, note, created_at, updated_at)
        SELECT '!', 'bench' || g || '@example.com', gen_random_uuid(), '', '', '', '', 'en', true, false, false,
        'bench', '', %s, %s FROM generate_series(1, %s) g''', [now, now, users])
    c.execute("SELECT min(id) FROM users_user WHERE source = 'bench'")
    first_user = c.fetchone()[0]
    half = due // 2
    # id ranges: [0, half) start now; [half, due) end now; the rest split between settled statuses
    c.execute('''INSERT INTO subscriptions_subscription (user_id, subscription_type_id, type, is_paid, is_recurrent,
        start_time, end_time, length, internal_status, note, created_at, updated_at)
        SELECT %s + (g %% %s), %s, 'regular', true, false,
          CASE WHEN g < %s THEN %s - interval '1 hour'
               WHEN g < %s THEN %s - interval '30 days'
               WHEN g %% 2 = 0 THEN %s - interval '10 days'
               ELSE %s - interval '90 days' END,
          CASE WHEN g < %s THEN %s + interval '29 days'
               WHEN g < %s THEN %s - interval '1 hour'
               WHEN g %% 2 = 0 THEN %s + interval '20 days'
               ELSE %s - interval '60 days' END,
          30,
          CASE WHEN g < %s THEN 'before_start' WHEN g < %s THEN 'active'
               WHEN g %% 2 = 0 THEN 'active' ELSE 'after_end' END,
          '', %s, %s
        FROM generate_series(0, %s - 1) g''',
        [first_user, users, sub_type.pk, half, now, due, now, now, now, half, now, due, now, now, now, half, due,
         now, now, total])
    c.execute("ANALYZE subscriptions_subscription")

t = time.perf_counter()
result = services.sweep_statuses()
due_seconds = time.perf_counter() - t
t = time.perf_counter()
again = services.sweep_statuses()
idle_seconds = time.perf_counter() - t
counts = dict(Subscription.objects.values_list("internal_status").annotate(n=django.db.models.Count("id")))
print("RESULT=" + json.dumps({"due_seconds": due_seconds, "idle_seconds": idle_seconds, "started": result.started,
      "ended": result.ended, "again": [again.started, again.ended], "counts": counts}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    stack = ExitStack()
    try:
        database_url = postgres_url(stack)
        with tempfile.TemporaryDirectory(prefix="masthead-bench-") as tmp:
            env = app_env(Path(tmp) / "var", database_url)
            run([PYTHON, "-m", "masthead.cli", "manage", "migrate", "--no-input", "-v", "0"], env=env,
                what="migrate", timeout=180)
            log(f"loading {args.total:,} subscriptions ({args.due:,} due) and sweeping")
            out = run([PYTHON, "-c", INNER, str(args.total), str(args.due), str(args.users)], env=env,
                      what="load and sweep", timeout=1800)
        figures = json.loads(next(line[7:] for line in out.splitlines() if line.startswith("RESULT=")))
    except BenchError as exc:
        print(f"status_sweep: error: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.close()
    due, idle = figures["due_seconds"], figures["idle_seconds"]
    transitions = figures["started"] + figures["ended"]
    print(f"status_sweep.due: {due:.2f} s for {transitions:,} transitions in {args.total:,} rows "
          f"({due / max(transitions, 1) * 1e6:.0f} us per transition; goal < 20 s)")
    print(f"status_sweep.none_due: {idle * 1000:.1f} ms (ratio {idle / due:.4f} vs status_sweep.due)")
    ok = transitions == args.due and figures["again"] == [0, 0]
    print(f"status_sweep.check: started {figures['started']:,}, ended {figures['ended']:,}, second sweep "
          f"{figures['again']}, statuses {figures['counts']} -> {'ok' if ok else 'WRONG'}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
