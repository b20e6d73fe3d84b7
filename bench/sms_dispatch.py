#!/usr/bin/env python3
"""SMS dispatch throughput through the real Kannel and its fake operator, against Kannel's raw ceiling.

    .venv/bin/python bench/sms_dispatch.py [--count 20000] [--runs 3] [--db postgres,sqlite]
                                           [--concurrency 256] [--batch-size 1000] [--rate 0]
                                           [--raw-runs 3] [--raw-seconds 10] [--profile] [--json out.json]

1. Starts a private Kannel (``../shared/kannel/start.sh``: own state dir, free ports on 127.0.0.1)
   and a small DLR sink (asyncio, a separate process) that answers every delivery report 200: the
   reports are our webhook's business and are measured by ``bench/dlr_ingest.py``; here they only
   must not slow Kannel down.
2. Raw ceilings against that same Kannel:
   - ``kannel_raw``: ``../shared/kannel/bench.py --use-running`` (16 Python threads on keep-alive
     connections, no delivery reports), ``--raw-runs`` runs of ``--count`` requests; the median
     sendsms 202/s. The figure the goal names.
   - ``kannel_raw_dlr``: wrk (a client in C, next to no CPU) at ``--concurrency`` connections for
     ``--raw-seconds``, with requests shaped like ours: dlr-mask 19 and a ``dlr-url`` with its own
     ref per message, to the same sink. Kannel's ceiling for the traffic we send.
3. Ours, for each database (PostgreSQL: ``$DATABASE_URL`` or a throwaway PostgreSQL 15; SQLite: a
   fresh file): a child process migrates, then ``--runs`` times seeds ``--count`` due messages (bulk
   insert of the rows and history that ``messaging.services.queue_sms`` leaves, one number each,
   7-bit text) and times ``messaging.dispatcher.run`` on the ``kannel`` gateway (``SMS_CONCURRENCY``,
   ``SMS_BATCH_SIZE``, ``SMS_RATE_PER_SECOND`` from the options) until every message is accepted.
   Every message asks for delivery reports, as in production.

Prints messages/s accepted by Kannel from our dispatcher (the median of the runs) and its ratio to
both ceilings (goal >= 0.8 of ``kannel_raw`` on PostgreSQL), and checks that each message was sent
once: accepted by Kannel (status ``sent``, one attempt) and logged once by fakesmsc. ``--profile``
prints the dispatcher thread's top functions (cProfile) to stderr. Measurement lines go to stdout;
progress to stderr. Everything started here is stopped on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import _common
from _common import PYTHON, ROOT, BenchError, log, postgres_url, stop_group

_common.PREFIX = "sms_dispatch"
GOAL = 0.8
RECIPE = Path(os.environ.get("KANNEL_RECIPE_DIR") or next(
    (p for p in (ROOT.parent / "shared" / "kannel", Path("/work/shared/kannel")) if (p / "start.sh").exists()),
    ROOT.parent / "shared" / "kannel"))
SECRET = "bench-dlr-secret"
TEXT = "Masthead: your morning edition is ready, read it at example.com/today"

SINK = r"""
import asyncio, sys

count = 0

class Sink(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        global count
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            if head.startswith(b"GET /count "):
                body = str(count).encode()
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            else:
                count += 1
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

async def main():
    server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


# --- Kannel ------------------------------------------------------------------------------------------


class Kannel:
    def __init__(self, work: Path, mo_url: str):
        if not (RECIPE / "start.sh").is_file():
            raise BenchError(f"no Kannel recipe at {RECIPE} (set KANNEL_RECIPE_DIR)")
        self.state = work / "kannel"
        self.env = dict(os.environ, KANNEL_STATE_DIR=str(self.state), KANNEL_ADMIN_PORT="0", KANNEL_SMSBOX_PORT="0",
                        KANNEL_FAKE_PORT="0", KANNEL_SENDSMS_PORT="0", KANNEL_MO_URL=mo_url, KANNEL_LOG_LEVEL="1")
        self.started = False

    def start(self) -> None:
        self.started = True
        _common.run([str(RECIPE / "start.sh")], env=self.env, what="kannel start.sh", timeout=600)
        values = dict(line.strip().split("=", 1) for line in (self.state / "run" / "kannel.env").read_text()
                      .splitlines() if "=" in line)
        self.sendsms_url = f"http://127.0.0.1:{values['KANNEL_SENDSMS_PORT']}/cgi-bin/sendsms"
        self.username, self.password = values["KANNEL_SENDSMS_USER"], values["KANNEL_SENDSMS_PASS"]

    def stop(self) -> None:
        if self.started:
            subprocess.run([str(RECIPE / "stop.sh")], env=self.env, capture_output=True, timeout=60, check=False)

    def mt_count(self) -> int:
        path = self.state / "log" / "fakesmsc.out"
        with open(path, "rb") as f:
            return sum(1 for line in f if b"Got message" in line)

    def wait_mts(self, expected: int, timeout: float = 60) -> int:
        """Wait until fakesmsc logged ``expected`` MTs in all (it logs up to ~1 s late), or stalls 5 s."""
        deadline, last, last_change = time.monotonic() + timeout, -1, time.monotonic()
        while time.monotonic() < deadline:
            n = self.mt_count()
            if n >= expected:
                return n
            if n != last:
                last, last_change = n, time.monotonic()
            elif time.monotonic() - last_change > 5:
                return n
            time.sleep(0.2)
        return self.mt_count()


def raw_ceiling(kannel: Kannel, args) -> dict:
    """Kannel's own bench.py against the same running instance; the median sendsms 202/s."""
    cmd = [sys.executable, str(RECIPE / "bench.py"), "--use-running", "--runs", str(args.raw_runs),
           "--max-requests", str(args.count), "--duration", "60", "--concurrency", "16"]
    out = _common.run(cmd, env=kannel.env, what="kannel bench.py", timeout=args.raw_runs * 150 + 60)
    for line in out.splitlines():
        log(f"bench.py: {line}")
    found = re.search(r"^sendsms 202/s: min (\d+) median (\d+) max (\d+)", out, re.M)
    mts = re.search(r"^MT/s at fakesmsc: min (\d+) median (\d+) max (\d+)", out, re.M)
    if not found:
        raise BenchError(f"could not read bench.py's output:\n{out}")
    return {"req_per_s": {"min": int(found[1]), "median": int(found[2]), "max": int(found[3])},
            "mt_per_s": {"min": int(mts[1]), "median": int(mts[2]), "max": int(mts[3])} if mts else None,
            "output": out}


WRK_SCRIPT = """
tid, sent = 0, 0
local next_tid = 0
function setup(thread) thread:set("tid", next_tid); next_tid = next_tid + 1 end
function request()
  sent = sent + 1
  return wrk.format("GET", "%(prefix)s" .. (900000000 + tid * 10000000 + sent) .. "%(suffix)s")
end
function done(s)
  io.write(string.format("WRK requests=%%d status_errors=%%d socket_errors=%%d\\n", s.requests,
    s.errors.status, s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout))
end
"""


def raw_with_reports(kannel: Kannel, sink_url: str, work: Path, args) -> dict:
    """Kannel's ceiling for MTs shaped like ours (dlr-mask 19, a dlr-url with its own ref per message, to
    the same sink) from wrk, a client in C that costs next to no CPU: ``--concurrency`` keep-alive
    connections on 2 threads for ``--raw-seconds``."""
    if not shutil.which("wrk"):
        raise BenchError("wrk not found (apt-get install -y wrk), or run with --raw-runs 0")
    query = urlencode({"username": kannel.username, "password": kannel.password, "from": "Masthead",
                       "to": "+4915199999999", "text": TEXT, "charset": "UTF-8", "dlr-mask": "19"},
                      quote_via=quote, safe="")
    dlr = f"{sink_url}/sms/kannel/dlr?secret={SECRET}&ref=\x00&status=%d&answer=%A&ts=%T"
    before, after = (quote(part, safe="") for part in dlr.split("\x00"))
    script = work / "raw_dlr.lua"
    script.write_text(WRK_SCRIPT % {"prefix": f"/cgi-bin/sendsms?{query}&dlr-url={before}", "suffix": after})
    mts_before = kannel.mt_count()
    out = _common.run(["wrk", "-t2", f"-c{args.concurrency}", f"-d{args.raw_seconds}s", "--timeout", "30s",
                       "-s", str(script), kannel.sendsms_url], what="wrk", timeout=args.raw_seconds + 60)
    found = re.search(r"^WRK requests=(\d+) status_errors=(\d+) socket_errors=(\d+)", out, re.M)
    took = re.search(r"^\s*\d+ requests in ([\d.]+)(ms|s|m)\b", out, re.M)
    if not found or not took:
        raise BenchError(f"could not read wrk's output:\n{out}")
    elapsed = float(took[1]) * {"ms": 0.001, "s": 1, "m": 60}[took[2]]
    accepted, errors = int(found[1]) - int(found[2]), int(found[2]) + int(found[3])
    mts = kannel.wait_mts(mts_before + accepted) - mts_before
    figures = {"accepted": accepted, "errors": errors, "seconds": elapsed, "per_s": accepted / elapsed,
               "mts_at_fakesmsc": mts}
    log(f"raw with reports: {accepted} accepted ({errors} errors) in {elapsed:.1f} s = "
        f"{figures['per_s']:.0f}/s from wrk at {args.concurrency} connections; fakesmsc got {mts} MTs")
    return figures


# --- the child: Django, seed, dispatch ---------------------------------------------------------------


def child_main(args) -> int:
    config = json.loads(args.child)
    os.environ.pop("REDIS_URL", None)
    if config["database_url"]:
        os.environ["DATABASE_URL"] = config["database_url"]
    else:
        os.environ.pop("DATABASE_URL", None)
    os.environ.update(
        MASTHEAD_VAR_DIR=config["var_dir"], LOG_LEVEL="WARNING", DEBUG="0", MASTHEAD_TESTING="0",
        HUEY_IMMEDIATE="0", DJANGO_SETTINGS_MODULE="masthead.settings", SMS_GATEWAY="kannel",
        KANNEL_SENDSMS_URL=config["sendsms_url"], KANNEL_USERNAME=config["username"],
        KANNEL_PASSWORD=config["password"], KANNEL_TIMEOUT_SECONDS="10", SMS_PUBLIC_URL=config["public_url"],
        SMS_WEBHOOK_SECRET=SECRET, SMS_CONCURRENCY=str(config["concurrency"]),
        SMS_BATCH_SIZE=str(config["batch_size"]), SMS_RATE_PER_SECOND=str(config["rate"]), SMS_QUIET_HOURS="",
        SMS_DISPATCH_SECONDS="600")
    Path(config["var_dir"]).mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "src"))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from collections import Counter

    from masthead.messaging import dispatcher
    from masthead.messaging.models import SmsMessage

    profiler = None
    if config["profile"]:
        import cProfile

        profiler = cProfile.Profile()
    for _run in range(config["runs"]):
        ids = seed(config["count"])
        if profiler is not None:
            profiler.enable()
        started, cpu = time.perf_counter(), time.process_time()
        result = dispatcher.run(budget_seconds=config["budget"], gateway_code="kannel")
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        if profiler is not None:
            profiler.disable()
        statuses = Counter(SmsMessage.objects.filter(pk__in=ids).values_list("status", flat=True))
        attempts = Counter(SmsMessage.objects.filter(pk__in=ids).values_list("attempts", flat=True))
        print("RESULT " + json.dumps({
            "seconds": elapsed, "cpu_seconds": cpu, "claimed": result.claimed, "outcomes": result.outcomes,
            "statuses": dict(statuses), "attempts": {str(k): v for k, v in attempts.items()},
            "accepted": result.outcomes.get("sent", 0)}), flush=True)
    if profiler is not None:
        import io
        import pstats

        for order, lines in (("cumulative", 35), ("tottime", 25)):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(lines)
            print(out.getvalue(), file=sys.stderr)
    return 0


def seed(count: int) -> list[int]:
    """``count`` due messages, as ``queue_sms`` leaves them (row + "queued" history), in bulk."""
    from datetime import timedelta

    from django.db import transaction

    from masthead.core import clock
    from masthead.messaging import segments
    from masthead.messaging.models import SmsMessage, SmsStatusChange

    now = clock.now()
    seg = segments.segment(TEXT)
    with transaction.atomic():
        rows = SmsMessage.objects.bulk_create(
            [SmsMessage(phone_number=f"+49151{k:08d}", body=TEXT, status=SmsMessage.QUEUED, transactional=False,
                        urgent=True, next_attempt_at=now, valid_until=now + timedelta(hours=48),
                        encoding=seg.encoding, segments=seg.segments, created_by="bench") for k in range(count)],
            batch_size=2000)
        SmsStatusChange.objects.bulk_create(
            [SmsStatusChange(message_id=row.pk, old_status="", new_status=SmsMessage.QUEUED, created_at=now)
             for row in rows], batch_size=2000)
    return [row.pk for row in rows]


def run_child(db: str, database_url: str | None, kannel: Kannel, sink_url: str, work: Path, args) -> dict:
    config = {"database_url": database_url, "var_dir": str(work / f"var-{db}"), "sendsms_url": kannel.sendsms_url,
              "username": kannel.username, "password": kannel.password, "public_url": sink_url,
              "concurrency": args.concurrency, "batch_size": args.batch_size, "rate": args.rate,
              "count": args.count, "budget": args.budget, "profile": args.profile, "runs": args.runs}
    log(f"{db}: migrating, seeding {args.count} due messages, dispatching through Kannel "
        f"(concurrency {args.concurrency}, batch {args.batch_size}, rate {args.rate or 'unlimited'}/s)")
    mts_before = kannel.mt_count()
    proc = subprocess.Popen([PYTHON, __file__, "--child", json.dumps(config)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=None, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=args.budget + 600)
    except subprocess.TimeoutExpired as exc:
        stop_group(proc)
        raise BenchError(f"{db}: the dispatch run did not finish") from exc
    finally:
        stop_group(proc)
    runs = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or len(runs) != args.runs:
        raise BenchError(f"{db}: the dispatch runs failed (exit {proc.returncode}):\n{out[-2000:]}")
    mts = kannel.wait_mts(mts_before + args.count * args.runs) - mts_before
    for n, run in enumerate(runs, 1):
        run["per_s"] = run["accepted"] / run["seconds"]
        log(f"{db} run {n}: {run['accepted']} accepted in {run['seconds']:.1f} s = {run['per_s']:.0f}/s; dispatcher "
            f"CPU {run['cpu_seconds'] / run['seconds'] * 100:.0f}% of a core; outcomes {run['outcomes']}")
    log(f"{db}: fakesmsc got {mts} MTs from {args.runs} runs of {args.count}")
    speeds = sorted(run["per_s"] for run in runs)
    return {"runs": runs, "per_s": statistics.median(speeds), "min": speeds[0], "max": speeds[-1],
            "mts_at_fakesmsc": mts}


# --- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000, help="messages per database (default 20000)")
    parser.add_argument("--db", default="postgres,sqlite", help="databases, comma separated (default postgres,sqlite)")
    parser.add_argument("--concurrency", type=int, default=256, help="SMS_CONCURRENCY (default 256)")
    parser.add_argument("--batch-size", type=int, default=1000, help="SMS_BATCH_SIZE (default 1000)")
    parser.add_argument("--rate", type=float, default=0, help="SMS_RATE_PER_SECOND (default 0: unlimited)")
    parser.add_argument("--runs", type=int, default=3, help="dispatch runs per database (default 3; the median)")
    parser.add_argument("--raw-runs", type=int, default=3, help="runs of Kannel's bench.py (default 3; 0: skip)")
    parser.add_argument("--raw-seconds", type=int, default=10, help="seconds of wrk with delivery reports (default 10)")
    parser.add_argument("--budget", type=float, default=300, help="at most this many seconds of dispatching")
    parser.add_argument("--profile", action="store_true", help="print the dispatcher's profile to stderr")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    databases = [d.strip() for d in args.db.split(",") if d.strip()]
    if not databases or set(databases) - {"postgres", "sqlite"}:
        parser.error("--db takes postgres and/or sqlite")
    if not 1 <= args.count <= 100_000 or not 1 <= args.concurrency <= 256 or args.budget > 1800 \
            or not 1 <= args.raw_seconds <= 60 or not 1 <= args.runs <= 10:
        parser.error("--count 1..100000, --concurrency 1..256, --budget at most 1800, --raw-seconds 1..60, --runs 1..10")

    load_before = _common.load_average()
    results: dict = {}
    try:
        with _common.guarded() as stack:
            work = Path(tempfile.mkdtemp(prefix="masthead-bench-sms."))
            stack.callback(shutil.rmtree, work, ignore_errors=True)
            sink = subprocess.Popen([PYTHON, "-c", SINK], stdout=subprocess.PIPE, text=True, start_new_session=True)
            stack.callback(stop_group, sink)
            sink_port = int(sink.stdout.readline().strip() or 0)
            if not sink_port:
                raise BenchError("the DLR sink did not start")
            sink_url = f"http://127.0.0.1:{sink_port}"
            kannel = Kannel(work, f"{sink_url}/mo")
            stack.callback(kannel.stop)
            log("starting a private Kannel")
            kannel.start()
            if args.raw_runs > 0:
                log(f"raw ceiling: Kannel's bench.py, {args.raw_runs} runs of {args.count} requests")
                results["raw"] = raw_ceiling(kannel, args)
                log(f"raw ceiling with delivery reports: {args.count} requests shaped like ours")
                results["raw_dlr"] = raw_with_reports(kannel, sink_url, work, args)
            for db in databases:
                database_url = postgres_url(stack) if db == "postgres" else None
                results[db] = run_child(db, database_url, kannel, sink_url, work, args)
            status, body = _common.http_get(f"{sink_url}/count")
            results["dlr_callbacks_at_sink"] = int(body or 0) if status == 200 else None
    except _common.Stopped as stop:
        return stop.code

    raw = results.get("raw", {}).get("req_per_s", {}).get("median")
    raw_dlr = results.get("raw_dlr", {}).get("per_s")
    if raw:
        spread = results["raw"]["req_per_s"]
        print(f"{_common.PREFIX}.kannel_raw: {raw:.0f} sendsms/s (median of {args.raw_runs} runs of bench.py, "
              f"16 connections, no delivery reports; min {spread['min']} max {spread['max']})", flush=True)
        print(f"{_common.PREFIX}.kannel_raw_dlr: {raw_dlr:.0f} sendsms/s (wrk, {args.concurrency} connections, "
              f"dlr-mask 19 like ours) (ratio {raw_dlr / raw:.2f} vs {_common.PREFIX}.kannel_raw)", flush=True)
    bad = False
    for db in databases:
        figures = results[db]
        line = (f"{_common.PREFIX}.{db}: {figures['per_s']:.0f} messages/s accepted by Kannel (median of {args.runs} "
                f"runs of {args.count}, min {figures['min']:.0f} max {figures['max']:.0f}; concurrency "
                f"{args.concurrency}, batch {args.batch_size})")
        if raw:
            line += (f" (ratio {figures['per_s'] / raw:.2f} vs {_common.PREFIX}.kannel_raw; goal >= {GOAL})"
                     f" (ratio {figures['per_s'] / raw_dlr:.2f} vs {_common.PREFIX}.kannel_raw_dlr)")
        print(line, flush=True)
        for n, run in enumerate(figures["runs"], 1):
            if run["accepted"] != args.count or run["statuses"] != {"sent": args.count} \
                    or run["attempts"] != {"1": args.count}:
                bad = True
                print(f"error: {db} run {n}: expected {args.count} messages sent once, got statuses {run['statuses']}, "
                      f"attempts {run['attempts']}", file=sys.stderr)
        if figures["mts_at_fakesmsc"] != args.count * args.runs:
            bad = True
            print(f"error: {db}: fakesmsc got {figures['mts_at_fakesmsc']} MTs, expected {args.count * args.runs}",
                  file=sys.stderr)
    if args.json:
        doc = {"benchmark": _common.PREFIX, "config": {k: v for k, v in vars(args).items() if k != "child"},
               "cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before], "results": results}
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
