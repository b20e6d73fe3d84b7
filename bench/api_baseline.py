#!/usr/bin/env python3
"""API throughput baseline: gunicorn (2 sync workers) + wrk, on PostgreSQL and on SQLite.

    .venv/bin/python bench/api_baseline.py [--seconds 10] [--connections 32] [--json out.json]

For each database this migrates a fresh database, creates one user and one user access token
through ``masthead.users.services``, starts ``gunicorn masthead.wsgi:application --workers 2`` on a
free 127.0.0.1 port and drives, with ``wrk --latency``:

* ``GET /api/v1/health``      (no auth, no database)
* ``GET /api/v1/users/info``  (``Authorization: Bearer <user token>``)

PostgreSQL: ``$DATABASE_URL`` when set (the run adds a user and a token to that database);
otherwise a throwaway PostgreSQL 15 is started here, configured like ``scripts/services.sh``
(fsync/synchronous_commit/full_page_writes off), and removed at the end. SQLite: a fresh
temporary ``MASTHEAD_VAR_DIR``. ``REDIS_URL`` is ignored, so Huey stays on SQLite in a temp dir.

Measurement lines go to stdout in the house format; progress goes to stderr. Everything started
here (PostgreSQL, gunicorn, wrk) is stopped on exit, on error, on Ctrl-C and on SIGTERM.
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
from contextlib import ExitStack
from pathlib import Path

import _common
from _common import (MASTHEAD, PYTHON, BenchError, Server, app_env, gunicorn_extra_options,
                     http_get, log, parse_wrk, postgres_url, run, run_wrk)

_common.PREFIX = "api_baseline"



def _health_ok(body: dict, email: str) -> bool:
    return body.get("status") == "ok"


def _info_ok(body: dict, email: str) -> bool:
    return body.get("user", {}).get("email") == email


# (name, path, needs the user token, check of the JSON body before the load); the first is the baseline.
ENDPOINTS = (("health", "/api/v1/health", False, _health_ok), ("users_info", "/api/v1/users/info", True, _info_ok))


# --- PostgreSQL -----------------------------------------------------------------------------


# --- the app --------------------------------------------------------------------------------

CREATE_USER = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "masthead.settings")
import django
django.setup()
from masthead.users import services
user = services.create_user(email=sys.argv[1], password=sys.argv[2], first_name="Bench", last_name="Reader",
                            source="bench", confirmed=True)
token, _ = services.issue_access_token(user=user, source="bench")
print("TOKEN=" + token)
"""


def prepare_database(env: dict, seed: str) -> tuple[str, str]:
    """Migrate; run ``seed`` (argv: e-mail, password), which prints ``TOKEN=<user token>``."""
    run([*MASTHEAD, "manage", "migrate", "--no-input", "--verbosity", "0"], env=env, what="masthead manage migrate",
        timeout=180)
    email = f"bench-{secrets.token_hex(4)}@example.com"
    out = run([PYTHON, "-c", seed, email, secrets.token_urlsafe(16)], env=env, what="seed data and token",
              timeout=900)
    tokens = [line[6:] for line in out.splitlines() if line.startswith("TOKEN=")]
    if not tokens:
        raise BenchError(f"create user and token printed no token:\n{out}")
    return email, tokens[-1]


def check_responses(base: str, email: str, token: str, endpoints) -> None:
    """One request per endpoint before the load: each must answer 200 with the expected body."""
    for _name, path, auth, check in endpoints:
        status, body = http_get(base + path, {"Authorization": f"Bearer {token}"} if auth else {})
        try:
            ok = status == 200 and check(json.loads(body), email)
        except (ValueError, AttributeError, TypeError):
            ok = False
        if not ok:
            raise BenchError(f"GET {path} answered {status}: {body[:500]!r}")


# --- wrk ------------------------------------------------------------------------------------


def measure(wrk: str, base: str, token: str, args, endpoints) -> dict:
    results = {}
    for name, path, auth, _check in endpoints:
        headers = [f"Authorization: Bearer {token}"] if auth else []
        common = {"connections": args.connections, "threads": args.threads, "headers": headers}
        if args.warmup > 0:
            warm = parse_wrk(run_wrk(wrk, base + path, seconds=args.warmup, latency=True, **common))
            if warm["non_2xx_or_3xx"]:
                raise BenchError(f"{path}: {warm['non_2xx_or_3xx']} non-2xx responses during warm-up")
        output = run_wrk(wrk, base + path, seconds=args.seconds, latency=True, **common)
        figures = parse_wrk(output)
        if figures["non_2xx_or_3xx"]:
            raise BenchError(f"{path}: {figures['non_2xx_or_3xx']} of {figures['requests']} responses were not "
                             f"2xx/3xx\n{output}")
        errors = sum(figures["socket_errors"].values())
        if errors:
            log(f"warning: {path}: socket errors {figures['socket_errors']}")
        results[name] = figures
    return results


# --- report ---------------------------------------------------------------------------------


def fmt_ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def line(db: str, name: str, figures: dict, baseline: tuple[str, dict] | None = None) -> str:
    text = (f"{_common.PREFIX}.{db}.{name}: {figures['req_per_s']:.0f} req/s p50 {fmt_ms(figures['p50_ms'])} ms "
            f"p99 {fmt_ms(figures['p99_ms'])} ms")
    if baseline:
        text += f" (ratio {figures['req_per_s'] / baseline[1]['req_per_s']:.2f} vs {baseline[0]})"
    return text


def bench_database(db: str, args, wrk: str, gunicorn_extra: list[str], outer: ExitStack, endpoints,
                   seed: str) -> dict:
    # Everything for this database is stopped before the next one runs; ``outer`` still closes it
    # if we are interrupted half way (closing an ExitStack twice is harmless).
    stack = outer.enter_context(ExitStack())
    workdir = Path(tempfile.mkdtemp(prefix=f"masthead-bench-{db}."))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    database_url = postgres_url(stack) if db == "postgres" else None
    env = app_env(workdir / "var", database_url)
    log(f"{db}: migrating and seeding")
    email, token = prepare_database(env, seed)
    server = Server(env, workdir, args.workers, gunicorn_extra)
    stack.callback(server.stop)
    server.wait_ready()
    check_responses(server.base, email, token, endpoints)
    log(f"{db}: gunicorn ({args.workers} workers) on {server.base}; wrk {args.connections} connections, "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s per endpoint")
    results = measure(wrk, server.base, token, args, endpoints)
    stack.close()
    return results


def main(argv: list[str] | None = None, *, endpoints=ENDPOINTS, seed: str = CREATE_USER,
         description: str = __doc__) -> int:
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds per endpoint (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2, at most --connections)")
    parser.add_argument("--warmup", type=float, default=1, help="warm-up seconds per endpoint (default 1; 0: none)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--db", default="postgres,sqlite", help="databases, comma separated (default postgres,sqlite)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    parser.add_argument("--wrk", default=None, help="wrk binary (default: wrk on PATH or /usr/bin/wrk)")
    args = parser.parse_args(argv)
    args.threads = max(1, min(args.threads, args.connections))
    databases = [d.strip() for d in args.db.split(",") if d.strip()]
    if not databases or set(databases) - {"postgres", "sqlite"}:
        parser.error("--db takes postgres and/or sqlite")

    wrk = args.wrk or shutil.which("wrk") or ("/usr/bin/wrk" if os.access("/usr/bin/wrk", os.X_OK) else None)
    if not wrk or not (os.access(wrk, os.X_OK) or shutil.which(wrk)):
        print("error: wrk is not installed (needed to drive the load); install it with `apt-get install -y wrk`",
              file=sys.stderr)
        return 2

    load_before = _common.load_average()
    started = time.monotonic()
    base_name, subject = endpoints[0][0], endpoints[-1][0]
    results: dict[str, dict] = {}
    try:
        with _common.guarded() as stack:
            gunicorn_extra = gunicorn_extra_options()
            for db in databases:
                results[db] = bench_database(db, args, wrk, gunicorn_extra, stack, endpoints, seed)
                for name, *_ in endpoints:
                    baseline = None if name == base_name else (f"{db}.{base_name}", results[db][base_name])
                    print(line(db, name, results[db][name], baseline), flush=True)
    except _common.Stopped as stop:
        return stop.code

    ratios = {}
    if "postgres" in results and "sqlite" in results:
        ratio = results["postgres"][subject]["req_per_s"] / results["sqlite"][subject]["req_per_s"]
        ratios[f"{subject}.postgres_vs_sqlite"] = ratio
        print(f"{_common.PREFIX}.{subject}.postgres_vs_sqlite: ratio {ratio:.2f}", flush=True)
    for db, figures in results.items():
        ratios[f"{db}.{subject}_vs_{base_name}"] = figures[subject]["req_per_s"] / figures[base_name]["req_per_s"]
    elapsed = time.monotonic() - started
    log(f"done in {elapsed:.0f} s")
    if args.json:
        doc = {
            "benchmark": _common.PREFIX,
            "config": {"seconds": args.seconds, "warmup": args.warmup, "connections": args.connections,
                       "wrk_threads": args.threads, "gunicorn_workers": args.workers, "cpus": os.cpu_count(),
                       "postgres": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "throwaway 15",
                       "loadavg_before": [round(x, 2) for x in load_before],
                       "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
            "results": results,
            "ratios": ratios,
            "elapsed_s": round(elapsed, 1),
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        log(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
