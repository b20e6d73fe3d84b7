#!/usr/bin/env python3
"""Delivery-report ingestion: Kannel-style DLR callbacks to our webhook under gunicorn, with duplicates.

    .venv/bin/python bench/dlr_ingest.py [--messages 10000] [--duplicates 0.3] [--connections 32]
                                         [--workers 4] [--db postgres] [--json out.json]

For each database (PostgreSQL: ``$DATABASE_URL`` or a throwaway PostgreSQL 15; SQLite: a fresh
file) this migrates, seeds ``--messages`` messages as the dispatcher leaves them after Kannel took
them (status ``sent``, gateway ``kannel``, history queued → sending → sent; bulk insert), starts
``gunicorn masthead.wsgi:application`` (``--workers`` sync workers) on a free 127.0.0.1 port and
replays, with ``wrk`` over ``--connections`` connections, the reports Kannel would call
``GET /sms/kannel/dlr?secret=…&ref=<id>&status=<bit>&answer=…&ts=…`` with:

* one final report per message: 1 (delivered) for 90 %, 2 (failed) for 10 %;
* ``--duplicates`` of all requests (default 30 %) repeating a report of a random message: half an
  exact repeat of its final report, half a late 8 (SMSC accepted) that must not move it back.

The requests are shuffled (fixed seed), so repeats and late reports arrive in any order. Prints the
webhook's requests/s (goal >= 1,000 on PostgreSQL) and then checks every message in the database:
final status (delivered or failed as reported), delivered_at / error from its report, and exactly
one history row for its move. Any wrong message, or any answer other than 200, is an error (exit 1).
Measurement lines go to stdout; progress to stderr. Everything started here is stopped on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlencode

import _common
from _common import (MASTHEAD, PYTHON, BenchError, Server, app_env, gunicorn_extra_options, log, parse_wrk,
                     postgres_url, run, stop_group)

_common.PREFIX = "dlr_ingest"
GOAL = 1000.0
SECRET = "bench-dlr-secret"
TS = 1767225600  # 2026-01-01 00:00:00 UTC: the time stamped on every final report

SEED = """
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "masthead.settings")
import django
django.setup()
from datetime import timedelta
from django.db import transaction
from django.db.models import CharField
from django.db.models.functions import Cast
from masthead.core import clock
from masthead.messaging.models import SmsMessage as M, SmsStatusChange as H
count = int(sys.argv[1])
now = clock.now()
with transaction.atomic():
    rows = M.objects.bulk_create(
        [M(phone_number=f"+49151{k:08d}", body="Your morning edition is ready", status=M.SENT, urgent=True,
          next_attempt_at=now, valid_until=now + timedelta(hours=48), attempts=1, sent_at=now, gateway="kannel",
          created_by="bench") for k in range(count)], batch_size=2000)
    ids = [r.pk for r in rows]
    M.objects.filter(pk__in=ids).update(gateway_message_id=Cast("id", CharField()))
    H.objects.bulk_create([H(message_id=pk, old_status=old, new_status=new, created_at=now) for pk in ids
                           for old, new in (("", "queued"), ("queued", "sending"), ("sending", "sent"))],
                          batch_size=6000)
print("IDS " + json.dumps(ids))
"""

CHECK = """
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "masthead.settings")
import django
django.setup()
from collections import Counter
from datetime import datetime, UTC
from masthead.messaging.models import SmsMessage as M, SmsStatusChange as H
expected = json.loads(open(sys.argv[1]).read())  # id -> "delivered" | "failed"
at = datetime.fromtimestamp(int(sys.argv[2]), UTC)
rows = M.objects.filter(pk__in=[int(k) for k in expected]).values_list("pk", "status", "delivered_at", "error_message")
wrong = []
for pk, status, delivered_at, error in rows:
    want = expected[str(pk)]
    ok = status == want and ((delivered_at == at and error == "") if want == "delivered"
                             else (delivered_at is None and error == "kannel dlr 2: NACK/bench"))
    if not ok:
        wrong.append([pk, want, status, str(delivered_at), error])
moves = Counter(H.objects.filter(message_id__in=[int(k) for k in expected]).exclude(
    new_status__in=["queued", "sending"]).exclude(old_status="sending").values_list("message_id", "new_status"))
history_wrong = sum(1 for (pk, new), n in moves.items() if n != 1 or new != expected[str(pk)])
history_missing = len(expected) - len(moves)
statuses = Counter(M.objects.filter(pk__in=[int(k) for k in expected]).values_list("status", flat=True))
print("CHECK " + json.dumps({"messages": len(rows), "wrong": len(wrong), "examples": wrong[:5],
                             "history_wrong": history_wrong, "history_missing": history_missing,
                             "statuses": dict(statuses)}))
"""

LUA = """
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } dlr_timespec;
           int clock_gettime(int clk, dlr_timespec *tp); ]]
local clock = ffi.new("dlr_timespec")
local function now()  -- CLOCK_MONOTONIC, as Python's time.monotonic()
  ffi.C.clock_gettime(1, clock)
  return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) / 1e9
end
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  step = %(threads)d
  idx = tid + 1
  issued = false
end
-- each thread sends its share of the reports, then the cheap health check until stopped; when its
-- share is out it leaves a marker with the time of its first request
function request()
  if started == nil then  -- wrk may build a thread's first request without sending it: make it a spare one
    started = now()
    return wrk.format("GET", filler)
  end
  local p = paths[idx]
  idx = idx + step
  if p == nil then
    p = filler
    if not issued then
      issued = true
      local f = io.open(marker_dir .. "/issued-" .. tid, "w")
      f:write(string.format("%%.6f\\n", started))
      f:close()
    end
  end
  return wrk.format("GET", p)
end
"""


def report_path(ref: int, bit: int, answer: str, ts: int) -> str:
    return "/sms/kannel/dlr?" + urlencode({"secret": SECRET, "ref": ref, "status": bit, "answer": answer, "ts": ts})


def build_requests(ids: list[int], duplicates: float, rng: random.Random) -> tuple[list[str], dict[str, str]]:
    expected: dict[str, str] = {}
    finals: dict[int, str] = {}
    requests = []
    for pk in ids:
        failed = rng.random() < 0.10
        expected[str(pk)] = "failed" if failed else "delivered"
        finals[pk] = report_path(pk, 2, "NACK/bench", TS) if failed else report_path(pk, 1, "", TS)
        requests.append(finals[pk])
    total = round(len(ids) / (1 - duplicates)) if duplicates < 1 else len(ids)
    for k in range(total - len(ids)):
        pk = rng.choice(ids)
        requests.append(finals[pk] if k % 2 == 0 else report_path(pk, 8, "ACK/", TS - 1))
    rng.shuffle(requests)
    return requests, expected


def lua_script(requests: list[str], filler: str, threads: int, marker_dir: Path) -> str:
    table = "paths = {\n" + ",\n".join(json.dumps(p) for p in requests) + "\n}\n"
    return (table + f"filler = {json.dumps(filler)}\nmarker_dir = {json.dumps(str(marker_dir))}\n"
            + LUA % {"threads": threads})


def final_count(env: dict) -> int:
    """Messages already in a final state (delivered or failed), straight from the database."""
    if env.get("DATABASE_URL"):
        import psycopg

        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM messaging_smsmessage WHERE status IN ('delivered', 'failed')"
                                ).fetchone()[0]
    import sqlite3

    with sqlite3.connect(Path(env["MASTHEAD_VAR_DIR"]) / "masthead.sqlite3", timeout=20) as conn:
        return conn.execute("SELECT count(*) FROM messaging_smsmessage WHERE status IN ('delivered', 'failed')"
                            ).fetchone()[0]


def run_reports(cmd: list[str], env: dict, markers: Path, threads: int, messages: int,
                max_seconds: float) -> tuple[str, float]:
    """Run wrk until every thread has sent its share and every message shows its final report in the
    database (the repeats still in flight then change nothing), then stop it with SIGINT (wrk
    prints its summary). Returns wrk's output and the seconds from the first report sent."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + max_seconds
    end = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(markers.glob("issued-*"))) >= threads and final_count(env) >= messages:
                end = time.monotonic()
                break
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        stop_group(proc)
    if end is None:
        errors = [line for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line]
        raise BenchError(f"the final reports were not all applied within {max_seconds:.0f} s "
                         f"({final_count(env)} of {messages}); wrk: {errors or 'no errors'}")
    first = min(float(f.read_text().split()[0]) for f in markers.glob("issued-*"))
    return out, end - first


def bench_database(db: str, args, wrk: str, gunicorn_extra: list[str], outer: ExitStack) -> dict:
    stack = outer.enter_context(ExitStack())
    workdir = Path(tempfile.mkdtemp(prefix=f"masthead-bench-dlr-{db}."))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    database_url = postgres_url(stack) if db == "postgres" else None
    env = app_env(workdir / "var", database_url)
    env.update(SMS_WEBHOOK_SECRET=SECRET, SMS_GATEWAY="kannel", HUEY_IMMEDIATE="0")
    log(f"{db}: migrating and seeding {args.messages} sent messages")
    run([*MASTHEAD, "manage", "migrate", "--no-input", "--verbosity", "0"], env=env, what="migrate", timeout=300)
    out = run([PYTHON, "-c", SEED, str(args.messages)], env=env, what="seed messages", timeout=600)
    ids = json.loads(next(line[4:] for line in out.splitlines() if line.startswith("IDS ")))
    requests, expected = build_requests(ids, args.duplicates, random.Random(args.seed))
    threads = max(1, min(args.threads, args.connections))
    script, markers = workdir / "reports.lua", workdir / "markers"
    markers.mkdir()
    script.write_text(lua_script(requests, "/api/v1/health", threads, markers))
    (workdir / "expected.json").write_text(json.dumps(expected))

    server = Server(env, workdir, args.workers, gunicorn_extra)
    stack.callback(server.stop)
    server.wait_ready()
    status, body = _common.http_get(server.base + report_path(ids[0], 4, "", TS))
    if (status, body) != (200, b"ok: no change\n"):
        raise BenchError(f"the webhook answered {status} {body[:200]!r} to a buffered report")
    log(f"{db}: gunicorn ({args.workers} workers) on {server.base}; wrk {args.connections} connections, "
        f"{len(requests)} reports ({len(requests) - len(ids)} repeats or late)")
    cmd = [wrk, "-t", str(threads), "-c", str(args.connections), "-d", f"{args.max_seconds}s", "--timeout", "10s",
           "--latency", "-s", str(script), server.base + "/sms/kannel/dlr"]
    try:
        output, seconds = run_reports(cmd, env, markers, threads, len(ids), args.max_seconds)
    except BenchError as exc:
        server.stop()
        check_out = run([PYTHON, "-c", CHECK, str(workdir / "expected.json"), str(TS)], env=env, what="check")
        raise BenchError(f"{exc}\n{check_out.strip()}") from exc
    figures = parse_wrk(output)
    figures["wrk_req_per_s"] = figures["req_per_s"]  # wrk divides by its whole -d duration
    figures["req_per_s"] = len(requests) / seconds
    figures["seconds"] = round(seconds, 3)
    figures["reports"] = len(requests)
    if figures["requests"] < len(requests):
        raise BenchError(f"wrk answered {figures['requests']} requests for {len(requests)} reports:\n{output}")
    if figures["non_2xx_or_3xx"] or any(figures["socket_errors"].values()):
        raise BenchError(f"{figures['non_2xx_or_3xx']} answers were not 2xx, socket errors "
                         f"{figures['socket_errors']}:\n{output}\n{_common.tail(server.log_path)}")
    server.stop()
    check_out = run([PYTHON, "-c", CHECK, str(workdir / "expected.json"), str(TS)], env=env, what="check",
                    timeout=600)
    figures["check"] = json.loads(next(line[6:] for line in check_out.splitlines() if line.startswith("CHECK ")))
    log(f"{db}: {len(requests)} reports applied in {seconds:.2f} s = {figures['req_per_s']:.0f} req/s; "
        f"check {figures['check']}")
    stack.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10000, help="messages reported on (default 10000)")
    parser.add_argument("--duplicates", type=float, default=0.3, help="share of repeated/late reports (default 0.3)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers (default 4)")
    parser.add_argument("--db", default="postgres", help="databases, comma separated (default postgres; or sqlite)")
    parser.add_argument("--max-seconds", type=int, default=120, help="at most this long per database (default 120)")
    parser.add_argument("--seed", type=int, default=6, help="random seed of the report order")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    args = parser.parse_args(argv)
    databases = [d.strip() for d in args.db.split(",") if d.strip()]
    if not databases or set(databases) - {"postgres", "sqlite"}:
        parser.error("--db takes postgres and/or sqlite")
    if not 1 <= args.messages <= 200_000 or not 0 <= args.duplicates < 1 or not 1 <= args.max_seconds <= 600:
        parser.error("--messages 1..200000, --duplicates 0..<1, --max-seconds 1..600")
    wrk = shutil.which("wrk") or ("/usr/bin/wrk" if os.access("/usr/bin/wrk", os.X_OK) else None)
    if not wrk:
        print("error: wrk is not installed; install it with `apt-get install -y wrk`", file=sys.stderr)
        return 2

    load_before = _common.load_average()
    results: dict = {}
    try:
        with _common.guarded() as stack:
            extra = gunicorn_extra_options()
            for db in databases:
                results[db] = bench_database(db, args, wrk, extra, stack)
    except _common.Stopped as stop:
        return stop.code

    bad = False
    for db in databases:
        f = results[db]
        check = f["check"]
        print(f"{_common.PREFIX}.{db}: {f['req_per_s']:.0f} req/s p50 {f['p50_ms']:.1f} ms p99 {f['p99_ms']:.1f} ms "
              f"({f['reports']} reports, {args.duplicates:.0%} repeated or late, {args.connections} connections, "
              f"{args.workers} workers) (ratio {f['req_per_s'] / GOAL:.2f} vs goal {GOAL:.0f} req/s)", flush=True)
        wrong = check["wrong"] + check["history_wrong"] + check["history_missing"]
        print(f"{_common.PREFIX}.{db}.wrong_final_status: {wrong} messages (ratio {wrong / args.messages:.4f} vs "
              f"{args.messages} messages; goal 0; statuses {check['statuses']})", flush=True)
        bad = bad or wrong > 0 or check["messages"] != args.messages
    if args.json:
        doc = {"benchmark": _common.PREFIX, "config": vars(args), "cpus": os.cpu_count(),
               "loadavg_before": [round(x, 2) for x in load_before], "results": results}
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
