"""Shared by the benchmarks: a real server, a fresh database, percentiles, the JSON line.

The benchmarks are run by hand (see bench/README.md), never by the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from _leftovers import end_left_instance, remove_cgroups_of

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"succeeded", "failed", "stopped"}


# -- arguments ----------------------------------------------------------------


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server URL (postgresql://user@host:port/db): a fresh database "
        "jobyard_bench_<random> is created on it and dropped at the end; "
        "default: a fresh SQLite file in a temporary directory",
    )
    parser.add_argument(
        "--server-log-level",
        default="warning",
        help="the server's --log-level (default warning: no access log per request)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data directory")


# -- databases ----------------------------------------------------------------


@dataclass
class Workspace:
    """A temporary directory and the fresh databases made for one benchmark run."""

    admin_url: str | None
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jobyard-bench-")))
    created: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "sqlite" if self.admin_url is None else "postgresql"

    def database(self, label: str) -> str:
        """A fresh, empty database URL (jobyard's spelling: sqlite:/// or postgresql://)."""
        if self.admin_url is None:
            return f"sqlite:///{self.root / label}.db"
        import psycopg

        name = f"jobyard_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(_libpq(self.admin_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return f"{self.admin_url.rsplit('/', 1)[0]}/{name}"

    def close(self, keep: bool = False) -> None:
        if self.admin_url is not None and self.created:
            import psycopg

            with psycopg.connect(_libpq(self.admin_url), autocommit=True) as conn:
                for name in self.created:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


def _libpq(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def sqlalchemy_url(url: str) -> str:
    """The same database for SQLAlchemy with the psycopg 3 driver."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


@contextlib.contextmanager
def workspace(args: argparse.Namespace) -> Iterator[Workspace]:
    space = Workspace(admin_url=args.database_url)
    try:
        yield space
    finally:
        space.close(keep=args.keep)
        if args.keep:
            print(f"kept {space.root}", file=sys.stderr)


# -- the server ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``python -m jobyard server`` as a child process with its own data dir and port."""

    def __init__(
        self,
        data_dir: Path,
        database_url: str,
        log_level: str = "warning",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        self.client = httpx.Client(base_url=self.url, timeout=120, limits=limits)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBYARD_")}
        command = [
            sys.executable, "-m", "jobyard", "server",
            "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--database-url", self.database_url,
            "--log-level", self.log_level,
            *self.extra_args,
        ]  # fmt: skip
        with (self.data_dir / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early: {self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if self.client.get("/healthz").status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"server did not become healthy: {self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        path = self.data_dir / "server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM the server, then end every instance it left running and remove the
        cgroups of those it did not see end: a stopped server leaves both to the next
        server on its data directory, and none comes."""
        self.client.close()
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        run_dirs = list(self.data_dir.glob("tasks/*/*/"))
        for run_dir in run_dirs:
            end_left_instance(run_dir)
        remove_cgroups_of(run_dirs)  # of those, and of those that ended unwatched

    # -- API --------------------------------------------------------------------

    def api(self, method: str, path: str, expect: int | None = 200, **kwargs: Any) -> Any:
        response = self.client.request(method, "/api/v1" + path, **kwargs)
        if expect is not None and response.status_code != expect:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def create_templates(self, specs: Sequence[dict[str, Any]], threads: int = 16) -> list[Any]:
        """POST the templates concurrently; return the created templates, in order."""

        def create(spec: dict[str, Any]) -> Any:
            return self.api("POST", "/namespaces/default/templates", expect=201, json=spec)

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(create, specs))

    def tasks_of(self, name: str, page: int = 1000) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            params = {"limit": page, "offset": len(found)}
            batch = self.api("GET", f"/namespaces/default/templates/{name}/tasks", params=params)
            found.extend(batch)
            if len(batch) < page:
                return found

    def tasks_of_many(self, names: Iterable[str], threads: int = 8) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(threads) as pool:
            return [task for tasks in pool.map(self.tasks_of, names) for task in tasks]


@contextlib.contextmanager
def running_server(
    space: Workspace,
    args: argparse.Namespace,
    label: str = "jobyard",
    database_url: str | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[Server]:
    """A started server; on ``database_url`` if given (e.g. seeded before), else a fresh one."""
    url = database_url if database_url is not None else space.database(label)
    server = Server(space.root / label, url, args.server_log_level, extra_args)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def script_template(name: str, script: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "deployment": {"type": "script", "script": script},
        "retries": 0,
        "timeout": 0,
    }
    spec.update(extra)
    return spec


# -- figures ------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50, p99, max and mean of durations, in milliseconds."""

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    return {
        "count": len(seconds),
        "p50_ms": ms(percentile(seconds, 50)),
        "p99_ms": ms(percentile(seconds, 99)),
        "max_ms": ms(max(seconds) if seconds else None),
        "mean_ms": ms(sum(seconds) / len(seconds) if seconds else None),
    }


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def target(name: str, value: float | None, limit: float, at_most: bool = True) -> dict[str, Any]:
    met = value is not None and (value <= limit if at_most else value >= limit)
    return {"name": name, "value": value, "limit": limit, "at_most": at_most, "met": met}


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "jobyard"], cwd=ROOT, capture_output=True, text=True
    )
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def emit(
    benchmark: str,
    space: Workspace,
    sizes: dict[str, Any],
    figures: dict[str, Any],
    targets: list[dict[str, Any]],
) -> None:
    """The one JSON line every benchmark ends with."""
    line = {
        "benchmark": benchmark,
        "sizes": sizes,
        "figures": figures,
        "targets": targets,
        "all_targets_met": all(t["met"] for t in targets),
        "cores": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "database": space.kind,
        "commit": commit(),
        "python": platform.python_version(),
        "rcu_expedited": rcu_expedited(),
        "when": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    print(json.dumps(line), flush=True)


def rcu_expedited() -> str | None:
    """The host's /sys/kernel/rcu_expedited: on cgroup v1 it decides whether an
    instance joining its cgroup waits for an RCU grace period (docs/resources.md)."""
    try:
        return Path("/sys/kernel/rcu_expedited").read_text().strip()
    except OSError:
        return None


def note(text: str) -> None:
    """Progress, on stderr so that stdout ends with the JSON line alone."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def cpu_percent_of(pid: int, seconds: float, with_children: bool = False) -> float:
    """CPU used by a process over ``seconds``, as a percentage of one core."""
    proc = psutil.Process(pid)

    def used() -> float:
        times = proc.cpu_times()
        total = times.user + times.system
        if with_children:
            total += times.children_user + times.children_system
        return total

    before, start = used(), time.monotonic()
    time.sleep(seconds)
    return round(100 * (used() - before) / (time.monotonic() - start), 2)


def rss_mb(pid: int) -> float:
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False


def transactions(database_url: str) -> int | None:
    """Commits plus rollbacks so far in a PostgreSQL database (None on SQLite)."""
    if not database_url.startswith("postgresql"):
        return None
    import psycopg

    time.sleep(1.0)  # backends report their counters at most about once a second
    with psycopg.connect(_libpq(database_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    return None if row is None else int(row[0])
