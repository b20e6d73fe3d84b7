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
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
MASTHEAD = [str(VENV_BIN / "masthead")] if (VENV_BIN / "masthead").exists() else [PYTHON, "-m", "masthead.cli"]
PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/local/bin", "/usr/bin")
PREFIX = "api_baseline"
ENDPOINTS = (("health", "/api/v1/health", False), ("users_info", "/api/v1/users/info", True))


class BenchError(Exception):
    pass


def log(message: str) -> None:
    print(f"[{PREFIX}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run(cmd: list[str], *, env: dict | None = None, timeout: float = 120, what: str) -> str:
    """Run a short setup command; BenchError with its output when it fails."""
    try:
        result = subprocess.run(cmd, check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                                start_new_session=True)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what}: timed out after {timeout:.0f} s") from exc
    except OSError as exc:
        raise BenchError(f"{what}: cannot run {cmd[0]}: {exc}") from exc
    if result.returncode != 0:
        raise BenchError(f"{what} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}".rstrip())
    return result.stdout


def stop_group(proc: subprocess.Popen, *, grace: float = 10) -> None:
    """SIGTERM a child started with start_new_session (and its whole group), then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# --- PostgreSQL -----------------------------------------------------------------------------


class ThrowawayPostgres:
    """The steps of scripts/services.sh start_postgres/stop_services, in Python."""

    def __init__(self):
        self.dir: Path | None = None
        self.data: Path | None = None
        self.bin: Path | None = None
        self.started = False

    def _as_pg(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def start(self) -> str:
        for d in PG_BIN_DIRS:
            if os.access(Path(d) / "initdb", os.X_OK):
                self.bin = Path(d)
                break
        else:
            raise BenchError("no PostgreSQL 15 found (initdb); install it with `apt-get install -y postgresql-15` "
                             "or set DATABASE_URL")
        self.dir = Path(tempfile.mkdtemp(prefix="masthead-bench-pg."))
        self.dir.chmod(0o755)
        self.data = self.dir / "data"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                run(["useradd", "--system", "--no-create-home", "postgres"], what="useradd postgres")
            shutil.chown(self.dir, user="postgres")
        port = free_port()
        run(self._as_pg([str(self.bin / "initdb"), "-D", str(self.data), "-U", "masthead", "--auth=trust",
                         "-E", "UTF8", "--locale=C.UTF-8"]), what="initdb")
        options = (f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                   f"-c full_page_writes=off -c max_connections=200")
        self.started = True  # from here on, stop() tries pg_ctl stop
        run(self._as_pg([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
                         "-t", "60", "-o", options, "start"]), what="pg_ctl start", timeout=90)
        run(self._as_pg([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "masthead",
                         "masthead"]), what="createdb")
        return f"postgresql://masthead@127.0.0.1:{port}/masthead"

    def stop(self) -> None:
        if self.started and self.data is not None and (self.data / "postmaster.pid").exists():
            subprocess.run(self._as_pg([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                                        "-t", "30", "stop"]), check=False, capture_output=True, start_new_session=True)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


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


def app_env(var_dir: Path, database_url: str | None) -> dict:
    # settings.py only creates VAR_DIR on the SQLite branch, yet SqliteHuey opens VAR_DIR/huey.sqlite3
    # at django.setup() with DATABASE_URL too, so create it here.
    var_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for name in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(MASTHEAD_VAR_DIR=str(var_dir), MASTHEAD_SERVE_STATIC="0", LOG_LEVEL="WARNING", DEBUG="0",
               PYTHONUNBUFFERED="1")
    return env


def prepare_database(env: dict) -> tuple[str, str]:
    """Migrate; create a user and a user token. Returns (email, token)."""
    run([*MASTHEAD, "manage", "migrate", "--no-input", "--verbosity", "0"], env=env, what="masthead manage migrate",
        timeout=180)
    email = f"bench-{secrets.token_hex(4)}@example.com"
    out = run([PYTHON, "-c", CREATE_USER, email, secrets.token_urlsafe(16)], env=env, what="create user and token")
    tokens = [line[6:] for line in out.splitlines() if line.startswith("TOKEN=")]
    if not tokens:
        raise BenchError(f"create user and token printed no token:\n{out}")
    return email, tokens[-1]


def gunicorn_extra_options() -> list[str]:
    """gunicorn >= 27 opens a control socket at ~/.gunicorn by default; two servers would collide."""
    try:
        text = subprocess.run([PYTHON, "-m", "gunicorn", "--help"], check=False, capture_output=True, text=True, cwd=ROOT,
                              timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return ["--no-control-socket"] if "--no-control-socket" in text else []


def http_get(url: str, headers: dict | None = None, timeout: float = 5) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Server:
    def __init__(self, env: dict, workdir: Path, workers: int, extra: list[str]):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "gunicorn.log"
        cmd = [PYTHON, "-m", "gunicorn", "masthead.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
               "--workers", str(workers), "--log-level", "warning", "--error-logfile", "-",
               "--graceful-timeout", "5", *extra]
        with open(self.log_path, "wb") as log_file:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log_file,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"gunicorn exited with {self.proc.returncode}:\n{tail(self.log_path)}")
            try:
                status, _ = http_get(self.base + "/api/v1/health", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise BenchError(f"gunicorn did not answer /api/v1/health within {timeout:.0f} s:\n{tail(self.log_path)}")

    def stop(self) -> None:
        stop_group(self.proc)


def check_responses(base: str, email: str, token: str) -> None:
    """One request per endpoint before the load: both must answer 200 with the expected body."""
    status, body = http_get(base + "/api/v1/health")
    try:
        health_status = json.loads(body).get("status")
    except (ValueError, AttributeError):
        health_status = None
    if status != 200 or health_status != "ok":
        raise BenchError(f"GET /api/v1/health answered {status}: {body[:500]!r}")
    status, body = http_get(base + "/api/v1/users/info", {"Authorization": f"Bearer {token}"})
    try:
        got = json.loads(body).get("user", {}).get("email")
    except (ValueError, AttributeError):
        got = None
    if status != 200 or got != email:
        raise BenchError(f"GET /api/v1/users/info answered {status} (expected 200 for {email}): {body[:500]!r}")


# --- wrk ------------------------------------------------------------------------------------

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def to_ms(value: str, unit: str) -> float:
    return float(value) * UNITS_MS[unit]


def parse_wrk(output: str) -> dict:
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", output, re.MULTILINE)
    p50 = re.search(r"^\s*50%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in", output, re.MULTILINE)
    if not (rps and p50 and p99 and total):
        raise BenchError(f"could not parse wrk output:\n{output}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "req_per_s": float(rps.group(1)),
        "p50_ms": to_ms(*p50.groups()),
        "p99_ms": to_ms(*p99.groups()),
        "requests": int(total.group(1)),
        "non_2xx_or_3xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups())))
        if sock else {"connect": 0, "read": 0, "write": 0, "timeout": 0},
    }


def run_wrk(wrk: str, url: str, *, seconds: float, connections: int, threads: int, headers: list[str],
            latency: bool) -> str:
    cmd = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "10s"]
    if latency:
        cmd.append("--latency")
    for header in headers:
        cmd += ["-H", header]
    cmd.append(url)
    # subprocess.run kills wrk if we are interrupted while waiting.
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=seconds + 60)
    if result.returncode != 0:
        raise BenchError(f"wrk failed (exit {result.returncode}): {result.stderr or result.stdout}")
    return result.stdout


def measure(wrk: str, base: str, token: str, args) -> dict:
    results = {}
    for name, path, auth in ENDPOINTS:
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
    text = (f"{PREFIX}.{db}.{name}: {figures['req_per_s']:.0f} req/s p50 {fmt_ms(figures['p50_ms'])} ms "
            f"p99 {fmt_ms(figures['p99_ms'])} ms")
    if baseline:
        text += f" (ratio {figures['req_per_s'] / baseline[1]['req_per_s']:.2f} vs {baseline[0]})"
    return text


def bench_database(db: str, args, wrk: str, gunicorn_extra: list[str], outer: ExitStack) -> dict:
    # Everything for this database is stopped before the next one runs; ``outer`` still closes it
    # if we are interrupted half way (closing an ExitStack twice is harmless).
    stack = outer.enter_context(ExitStack())
    workdir = Path(tempfile.mkdtemp(prefix=f"masthead-bench-{db}."))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    database_url = None
    if db == "postgres":
        database_url = os.environ.get("DATABASE_URL") or None
        if database_url:
            log("postgres: using $DATABASE_URL")
        else:
            pg = ThrowawayPostgres()
            stack.callback(pg.stop)
            log("postgres: starting a throwaway PostgreSQL 15")
            database_url = pg.start()
    env = app_env(workdir / "var", database_url)
    log(f"{db}: migrating and creating a user token")
    email, token = prepare_database(env)
    server = Server(env, workdir, args.workers, gunicorn_extra)
    stack.callback(server.stop)
    server.wait_ready()
    check_responses(server.base, email, token)
    log(f"{db}: gunicorn ({args.workers} workers) on {server.base}; wrk {args.connections} connections, "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s per endpoint")
    results = measure(wrk, server.base, token, args)
    stack.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)

    load_before = os.getloadavg()
    if load_before[0] > (os.cpu_count() or 1) * 0.5:
        log(f"warning: host already busy (load average {load_before[0]:.1f} on {os.cpu_count()} CPUs); "
            "figures will be noisy")
    started = time.monotonic()
    results: dict[str, dict] = {}
    stack = ExitStack()
    code = 0
    try:
        gunicorn_extra = gunicorn_extra_options()
        for db in databases:
            results[db] = bench_database(db, args, wrk, gunicorn_extra, stack)
            for name, _, _ in ENDPOINTS:
                baseline = None if name == "health" else (f"{db}.health", results[db]["health"])
                print(line(db, name, results[db][name], baseline), flush=True)
    except (BenchError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted; stopping servers", file=sys.stderr)
        code = 130
    finally:
        # A second Ctrl-C must not leave PostgreSQL or gunicorn behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.close()
    if code:
        return code

    ratios = {}
    if "postgres" in results and "sqlite" in results:
        ratio = results["postgres"]["users_info"]["req_per_s"] / results["sqlite"]["users_info"]["req_per_s"]
        ratios["users_info.postgres_vs_sqlite"] = ratio
        print(f"{PREFIX}.users_info.postgres_vs_sqlite: ratio {ratio:.2f}", flush=True)
    for db, figures in results.items():
        ratios[f"{db}.users_info_vs_health"] = figures["users_info"]["req_per_s"] / figures["health"]["req_per_s"]
    elapsed = time.monotonic() - started
    log(f"done in {elapsed:.0f} s")
    if args.json:
        doc = {
            "benchmark": PREFIX,
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
