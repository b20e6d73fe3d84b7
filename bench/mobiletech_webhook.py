#!/usr/bin/env python3
"""Mobiletech webhook throughput on PostgreSQL, with duplicates, and a stored-once check.

    .venv/bin/python bench/mobiletech_webhook.py [--requests 10000] [--connections 32] [--duplicates 0.3]

Our webhook (``POST /api/v1/mobiletech/webhook``) under ``gunicorn --workers 2`` on PostgreSQL
(``$DATABASE_URL``, else a throwaway PostgreSQL 15 started here). Huey stays the default SqliteHuey in
a temp dir with no consumer: the webhook only enqueues the inbound handler, which is what it does
on the request path. MOBILETECH_CLIENT=mock.

Three runs of ``--requests`` requests each over ``--connections`` concurrent connections (an
asyncio client in this process, HTTP/1.1, a new connection whenever gunicorn's sync worker closes
one):

* ``health``  ``GET /api/v1/health``, the baseline for the ratios;
* ``receive`` XML ``receive`` messages; ``--duplicates`` of them (30 %) repeat an earlier id, half
  of those a very recent one, so an original and its repeat are often in flight at once;
* ``status``  XML ``status`` reports for outbound messages seeded beforehand through
  ``mobiletech.services.send`` (mock client: a UUID id and one ``D1`` report each); 30 % repeat an
  earlier report, which R-MT-3 applies again.

Checks, per message id, in the database: every ``receive`` id has exactly one inbound row (and no
other bench row exists); every outbound message has exactly 1 + (reports posted for it) rows of
status history. Every request must answer 200 with its own id. Measurement lines go to stdout in the
house format, progress to stderr; everything started here is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import _common
from _common import (
    MASTHEAD,
    PYTHON,
    BenchError,
    Server,
    app_env,
    gunicorn_extra_options,
    log,
    postgres_url,
    run,
)

_common.PREFIX = "mobiletech_webhook"
WEBHOOK = "/api/v1/mobiletech/webhook"
RECENT = 64  # "recent" duplicates repeat one of the last RECENT fresh ids

SEED = r"""
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "masthead.settings")
import django
django.setup()
from decimal import Decimal
from masthead.mobiletech import services
from masthead.mobiletech.models import BillingKey, OutboundMessage, Template

start, count = int(sys.argv[1]), int(sys.argv[2])
Template.objects.get_or_create(code="bench", defaults={"body": "Bench message {{ n }}"})
BillingKey.objects.get_or_create(code="FREE", defaults={"amount": Decimal("0")})
pks = []
for n in range(start, start + count):
    row = services.send(template_code="bench", billkey="FREE", phone=f"+421908{n:06d}", params={"n": n})
    pks.append(row.pk)
ids = list(OutboundMessage.objects.filter(pk__in=pks).exclude(mobiletech_id=None).values_list("mobiletech_id", flat=True))
print("IDS=" + json.dumps(ids))
"""

CHECK = r"""
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "masthead.settings")
import django
django.setup()
from collections import Counter
from django.db.models import Count
from masthead.mobiletech.models import InboundMessage, OutboundMessage, OutboundStatus

kind, path = sys.argv[1], sys.argv[2]
expected = json.loads(open(path).read())  # id -> rows expected
if kind == "receive":
    prefix = sys.argv[3]
    rows = dict(InboundMessage.objects.filter(mobiletech_id__startswith=prefix).values_list("mobiletech_id")
                .annotate(n=Count("id")))
    total = InboundMessage.objects.filter(mobiletech_id__startswith=prefix).count()
else:
    rows = dict(OutboundStatus.objects.filter(outbound__mobiletech_id__in=list(expected))
                .values_list("outbound__mobiletech_id").annotate(n=Count("id")))
    total = OutboundStatus.objects.filter(outbound__mobiletech_id__in=list(expected)).count()
    last = Counter(OutboundMessage.objects.filter(mobiletech_id__in=list(expected)).values_list("status", flat=True))
wrong = {k: [v, rows.get(k, 0)] for k, v in expected.items() if rows.get(k, 0) != v}
extra = sorted(set(rows) - set(expected))
out = {"rows": total, "ids": len(rows), "wrong": dict(list(wrong.items())[:10]), "wrong_count": len(wrong),
       "extra": extra[:10], "extra_count": len(extra)}
if kind == "status":
    out["last_status"] = dict(last)
print("CHECK=" + json.dumps(out))
"""


# --- the client -------------------------------------------------------------------------------


class Conn:
    """One HTTP/1.1 connection that reopens itself when the server closed it."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.lower() == "close":
                close = True
        answer = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, answer


def http_head(method: str, path: str, host: str, body: bytes, content_type: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def drive(host: str, port: int, jobs: list[tuple[bytes, bytes, bytes]], connections: int) -> dict:
    """Send every (head, body, expected-in-answer) over ``connections`` connections at once."""
    results: list[tuple[int, bool, float] | None] = [None] * len(jobs)
    errors: list[str] = []

    async def worker(index: int) -> None:
        conn = Conn(host, port)
        try:
            for k in range(index, len(jobs), connections):
                head, body, expect = jobs[k]
                began = time.perf_counter()
                try:
                    status, answer = await conn.request(head, body)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    await conn.close()
                    results[k] = (0, False, time.perf_counter() - began)
                    continue
                results[k] = (status, status == 200 and expect in answer, time.perf_counter() - began)
        finally:
            await conn.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(connections)))
    elapsed = time.perf_counter() - began
    latencies = sorted(r[2] for r in results)
    bad = Counter(r[0] for r in results if not r[1])
    return {"requests": len(jobs), "seconds": elapsed, "req_per_s": len(jobs) / elapsed,
            "p50_ms": latencies[len(latencies) // 2] * 1000, "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
            "not_ok": dict(bad), "errors": errors[:5], "error_count": len(errors)}


# --- the workload -----------------------------------------------------------------------------


def with_duplicates(fresh: list[str], share: float, rng: random.Random) -> list[str]:
    """``fresh`` ids in order, with exactly ``share`` of the result repeating an earlier id (half of
    the repeats one of the last RECENT)."""
    total = round(len(fresh) / (1 - share))
    repeat_at = set(rng.sample(range(1, total), total - len(fresh)))
    out, seen = [], []
    source = iter(fresh)
    for position in range(total):
        if position in repeat_at:
            pool = seen[-RECENT:] if rng.random() < 0.5 else seen
            out.append(rng.choice(pool))
        else:
            seen.append(next(source))
            out.append(seen[-1])
    return out


def receive_body(mid: str, n: int) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<message command="receive"><id>{mid}</id><serv_id>1</serv_id>'
            f"<project_id>1</project_id><from>+421908{n % 1_000_000:06d}</from><to>8866</to>"
            f"<content>HELLO {n}</content><content_coding>text</content_coding><dcs>0</dcs><esm>0</esm>"
            f"<operator_type>O</operator_type><receive_date>2405061200001</receive_date></message>").encode()


def status_body(mid: str, code: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<message command="status"><id>{mid}</id>'
            f"<status>{code}</status></message>").encode()


def seed_outbound(env: dict, count: int, processes: int) -> list[str]:
    """``count`` outbound messages through ``services.send`` (mock client, sent inline), in parallel."""
    env = dict(env, HUEY_IMMEDIATE="1", MOBILETECH_SERV_ID="1", MOBILETECH_SHORT_NUMBER="8866")
    # one process first creates the template and the key; the others then only read them
    chunks = [count // processes + (1 if k < count % processes else 0) for k in range(processes)]
    starts = [sum(chunks[:k]) for k in range(processes)]
    ids: list[str] = []
    out = run([PYTHON, "-c", SEED, str(starts[0]), str(chunks[0])], env=env, what="seed outbound messages",
              timeout=3600)
    ids += json.loads(next(line[4:] for line in out.splitlines() if line.startswith("IDS=")))
    if processes > 1:
        procs = [subprocess.Popen([PYTHON, "-c", SEED, str(starts[k]), str(chunks[k])], env=env, cwd=_common.ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
                 for k in range(1, processes)]
        try:
            for proc in procs:
                stdout, stderr = proc.communicate(timeout=3600)
                if proc.returncode != 0:
                    raise BenchError(f"seed outbound messages failed (exit {proc.returncode}):\n{stderr[-2000:]}")
                ids += json.loads(next(line[4:] for line in stdout.splitlines() if line.startswith("IDS=")))
        finally:
            for proc in procs:
                _common.stop_group(proc)
    if len(ids) != count or len(set(ids)) != count:
        raise BenchError(f"seeding made {len(set(ids))} sent outbound messages, not {count}")
    return ids


def check(env: dict, kind: str, expected: Counter, workdir: Path, *extra: str) -> dict:
    path = workdir / f"expected-{kind}.json"
    path.write_text(json.dumps(dict(expected)))
    out = run([PYTHON, "-c", CHECK, kind, str(path), *extra], env=env, what=f"count check ({kind})", timeout=600)
    return json.loads(next(line[6:] for line in out.splitlines() if line.startswith("CHECK=")))


def figures_line(name: str, figures: dict, connections: int, baseline: dict | None) -> str:
    text = (f"{_common.PREFIX}.postgres.{name}: {figures['req_per_s']:.0f} req/s p50 {figures['p50_ms']:.1f} ms "
            f"p99 {figures['p99_ms']:.1f} ms ({figures['requests']} requests, {connections} connections)")
    if baseline:
        text += f" (ratio {figures['req_per_s'] / baseline['req_per_s']:.2f} vs postgres.health)"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10000, help="requests per run (default 10000)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--duplicates", type=float, default=0.3, help="share of repeated messages (default 0.3)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--seed-processes", type=int, default=2, help="processes seeding outbound messages")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    args = parser.parse_args(argv)
    if not 0 <= args.duplicates < 1 or args.requests < 10:
        parser.error("--duplicates must be in [0, 1) and --requests at least 10")

    rng = random.Random(7)
    fresh_count = round(args.requests * (1 - args.duplicates))
    code = 0
    try:
        with _common.guarded() as stack:
            workdir = Path(tempfile.mkdtemp(prefix="masthead-bench-mobiletech."))
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            env = app_env(workdir / "var", postgres_url(stack))
            env["MOBILETECH_CLIENT"] = "mock"
            env.pop("MOBILETECH_WEBHOOK_SECRET", None)
            env.pop("MOBILETECH_ALLOWED_IPS", None)
            log("migrating")
            run([*MASTHEAD, "manage", "migrate", "--no-input", "--verbosity", "0"], env=env, what="migrate", timeout=300)
            log(f"seeding {fresh_count} outbound messages through mobiletech.services.send (mock client)")
            started = time.monotonic()
            outbound_ids = seed_outbound(env, fresh_count, max(1, args.seed_processes))
            log(f"seeded in {time.monotonic() - started:.0f} s")
            server = Server(env, workdir, args.workers, gunicorn_extra_options())
            stack.callback(server.stop)
            server.wait_ready()
            host, port = "127.0.0.1", server.port
            hostport = f"{host}:{port}"

            # workloads
            prefix = f"bench-{uuid.uuid4().hex[:8]}-"
            receive_ids = with_duplicates([f"{prefix}{n}" for n in range(fresh_count)], args.duplicates, rng)
            receive_jobs = []
            for n, mid in enumerate(receive_ids):
                body = receive_body(mid, n)
                receive_jobs.append((http_head("POST", WEBHOOK, hostport, body, "text/xml; charset=UTF-8"), body,
                                     f"<id>{mid}</id>".encode()))
            status_ids = with_duplicates(list(outbound_ids), args.duplicates, rng)
            status_jobs = []
            for n, mid in enumerate(status_ids):
                body = status_body(mid, "D1" if n % 2 else "A0")
                status_jobs.append((http_head("POST", WEBHOOK, hostport, body, "text/xml; charset=UTF-8"), body,
                                    f"<id>{mid}</id>".encode()))
            health_head = http_head("GET", "/api/v1/health", hostport, b"")
            health_jobs = [(health_head, b"", b'"ok"')] * args.requests
            warm_ids = [f"warm-{uuid.uuid4().hex[:8]}-{n}" for n in range(200)]
            warm_jobs = [(http_head("POST", WEBHOOK, hostport, receive_body(m, n), "text/xml"), receive_body(m, n),
                          f"<id>{m}</id>".encode()) for n, m in enumerate(warm_ids)]

            log(f"gunicorn ({args.workers} workers) on {server.base}; {args.requests} requests per run over "
                f"{args.connections} connections, {args.duplicates:.0%} duplicates")
            asyncio.run(drive(host, port, health_jobs[:500] + warm_jobs, args.connections))  # warm-up
            results = {}
            for name, jobs in (("health", health_jobs), ("receive", receive_jobs), ("status", status_jobs)):
                figures = asyncio.run(drive(host, port, jobs, args.connections))
                if figures["not_ok"] or figures["error_count"]:
                    raise BenchError(f"{name}: {sum(figures['not_ok'].values())} requests not answered 200 with their "
                                     f"id {figures['not_ok']}; errors {figures['errors']}\n{_common.tail(server.log_path)}")
                results[name] = figures
                print(figures_line(name, figures, args.connections, None if name == "health" else results["health"]), flush=True)

            # stored once
            receive_expected = Counter({mid: 1 for mid in receive_ids})
            got = check(env, "receive", receive_expected, workdir, prefix)
            ok_receive = got["wrong_count"] == 0 and got["extra_count"] == 0 and got["rows"] == len(receive_expected)
            print(f"{_common.PREFIX}.postgres.receive.stored_once: {got['rows']} inbound rows for {len(receive_expected)} "
                  f"distinct ids in {len(receive_ids)} posts ({len(receive_ids) - len(receive_expected)} duplicates) -> "
                  f"{'ok' if ok_receive else 'WRONG ' + json.dumps(got)}", flush=True)
            status_expected = Counter(status_ids)
            for mid in outbound_ids:
                status_expected[mid] += 1  # the mock client's own D1 at seeding
            got = check(env, "status", status_expected, workdir)
            ok_status = got["wrong_count"] == 0 and got["rows"] == len(outbound_ids) + len(status_ids)
            print(f"{_common.PREFIX}.postgres.status.history: {got['rows']} status rows = {len(outbound_ids)} seeded + "
                  f"{len(status_ids)} posts ({len(status_ids) - len(outbound_ids)} repeated) for {got['ids']} messages, "
                  f"per message exact -> {'ok' if ok_status else 'WRONG ' + json.dumps(got)}", flush=True)
            results["checks"] = {"receive": ok_receive, "status": ok_status}
            if not (ok_receive and ok_status):
                code = 1
            if args.json:
                Path(args.json).write_text(json.dumps({"benchmark": _common.PREFIX, "config": vars(args),
                                                       "results": results}, indent=2) + "\n")
    except _common.Stopped as stop:
        return stop.code
    return code


if __name__ == "__main__":
    sys.exit(main())
