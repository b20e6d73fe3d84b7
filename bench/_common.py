"""Shared pieces of the benchmarks: a throwaway PostgreSQL, Masthead under gunicorn, wrk parsing.

Each script sets ``_common.PREFIX`` to its name for the progress lines on stderr.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
MASTHEAD = [str(VENV_BIN / "masthead")] if (VENV_BIN / "masthead").exists() else [PYTHON, "-m", "masthead.cli"]
PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/local/bin", "/usr/bin")
PREFIX = "bench"


class BenchError(Exception):
    pass


def log(message: str) -> None:
    print(f"[{PREFIX}] {message}", file=sys.stderr, flush=True)



class Stopped(Exception):
    """A bench run ended early: ``code`` is the exit status (1 error, 130 interrupted)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def load_average() -> tuple[float, float, float]:
    """The load average before measuring, with a warning when the host is already busy."""
    load = os.getloadavg()
    if load[0] > (os.cpu_count() or 1) * 0.5:
        log(f"warning: host already busy (load average {load[0]:.1f} on {os.cpu_count()} CPUs); "
            "figures will be noisy")
    return load


@contextmanager
def guarded() -> Iterator[ExitStack]:
    """The body of a bench: Ctrl-C, SIGTERM and SIGHUP interrupt it, and everything put on the yielded
    stack (servers, databases, temp dirs) is stopped at the end, which a second Ctrl-C cannot skip.
    A BenchError or OSError is printed; either way ending early raises Stopped with the exit code."""
    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    stack = ExitStack()
    try:
        yield stack
    except (BenchError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise Stopped(1) from exc
    except KeyboardInterrupt:
        print("interrupted; stopping", file=sys.stderr)
        raise Stopped(130) from None
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.close()


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


def postgres_url(stack) -> str:
    """``$DATABASE_URL`` when set, else a throwaway PostgreSQL 15 that ``stack`` (an ExitStack) stops."""
    database_url = os.environ.get("DATABASE_URL")
    if database_url:
        log("postgres: using $DATABASE_URL")
        return database_url
    pg = ThrowawayPostgres()
    stack.callback(pg.stop)
    log("postgres: starting a throwaway PostgreSQL 15")
    return pg.start()
