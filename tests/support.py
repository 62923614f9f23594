"""Helpers for tests that drive a real server: start, stop, crash, wait."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from jobyard.runners._cgroups import CgroupSet

T = TypeVar("T")
TERMINAL = {"succeeded", "failed", "stopped"}


# The signals an instance starts with at their defaults whatever the server ignores;
# others (real-time ones, say) are left as the server got them.
LOGIN_SIGNALS = (
    signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE,
    signal.SIGTERM, signal.SIGCHLD, signal.SIGXFSZ,
)  # fmt: skip


def ignored_login_signals(status_line: str) -> list[str]:
    """Of LOGIN_SIGNALS, those a ``SigIgn:`` line of /proc/<pid>/status marks ignored."""
    mask = int(status_line.split()[1], 16)
    return [s.name for s in LOGIN_SIGNALS if mask & (1 << (s - 1))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value: {last!r})")


class JobyardServer:
    """``python -m jobyard server`` as a child process, with an HTTP client."""

    def __init__(
        self,
        data_dir: Path,
        database_url: str,
        port: int,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        connect_host: str = "127.0.0.1",
        scheme: str = "http",
        verify: Any = True,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.port = port
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        host = f"[{connect_host}]" if ":" in connect_host else connect_host
        self.url = f"{scheme}://{host}:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(
            base_url=self.url, timeout=30, verify=verify, headers=dict(headers or {})
        )
        self.log_path = data_dir / "server.log"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBYARD_")}
        env.update(self.extra_env)
        command = [
            sys.executable, "-m", "jobyard", "server",
            "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--database-url", self.database_url,
            *self.extra_args,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for(self._healthy, timeout=60, interval=0.1)

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"server exited early:\n{self.log_path.read_text()}")
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def terminate(self) -> int | None:
        """SIGTERM, as a service manager would; return the exit code."""
        if self.process is None:
            return None
        self.process.terminate()
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    def crash(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def kill_instances(self) -> None:
        """Tests own their processes: kill every instance group still alive."""
        self.client.close()
        for pid_file in self.data_dir.glob("tasks/*/*/pid"):
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError, OSError):
                os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)
        for record in self.data_dir.glob("tasks/*/*/resources.json"):
            remove_cgroups(record)

    # -- API helpers ------------------------------------------------------------

    def api(self, method: str, path: str, expect: int | None = None, **kwargs: Any) -> Any:
        response = self.client.request(method, "/api/v1" + path, **kwargs)
        if expect is not None:
            assert response.status_code == expect, (response.status_code, response.text)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def create_template(self, spec: dict[str, Any], namespace: str = "default") -> Any:
        return self.api("POST", f"/namespaces/{namespace}/templates", expect=201, json=spec)

    def run(self, name: str, body: dict[str, Any] | None = None, namespace: str = "default") -> Any:
        path = f"/namespaces/{namespace}/templates/{name}/run"
        return self.api("POST", path, expect=201, json=body)

    def task(self, task_id: int) -> Any:
        return self.api("GET", f"/tasks/{task_id}", expect=200)

    def wait_task(self, task_id: int, timeout: float = 30.0) -> Any:
        def done() -> Any:
            task = self.task(task_id)
            return task if task["status"] in TERMINAL else None

        return wait_for(done, timeout=timeout)

    def instances(self, task_id: int) -> Any:
        return self.api("GET", f"/tasks/{task_id}/instances", expect=200)

    def log(self, instance_id: int) -> str:
        text = self.api("GET", f"/instances/{instance_id}/logs", expect=200)
        assert isinstance(text, str)
        return text

    def events(self, **params: Any) -> Any:
        return self.api("GET", "/events", expect=200, params=params)


def script_template(name: str, script: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "deployment": {"type": "script", "script": script},
        "retry_backoff": 0,
    }
    spec.update(extra)
    return spec


def processes_using(path: Path) -> list[Any]:
    """Live processes (zombies aside) whose command line, working directory or
    environment mention ``path``: what a test may have left running there."""
    import psutil  # here, so that this helper stays an append to the module

    needles = {str(path), str(path.resolve())}
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            texts = [*proc.cmdline(), proc.cwd(), *proc.environ().values()]
            if any(needle in text for text in texts for needle in needles):
                found.append(proc)
    return found


def instance_dir(server: JobyardServer, task_id: int, instance_id: int) -> Path:
    """The local runner's run directory of an instance (pid, exit, output.log)."""
    return server.data_dir / "tasks" / str(task_id) / str(instance_id)


def start_server(data_dir: Path, database_url: str | None = None, **options: Any) -> JobyardServer:
    """A started server (SQLite in ``data_dir`` by default); ``options`` go to
    JobyardServer (extra_args, env, connect_host, scheme, verify, headers).
    Pair with ``stop_server``."""
    url = database_url or f"sqlite:///{data_dir / 'jobyard.db'}"
    jobyard = JobyardServer(data_dir=data_dir, database_url=url, port=free_port(), **options)
    try:
        jobyard.start()
    except BaseException:
        stop_server(jobyard)
        raise
    return jobyard


@contextlib.contextmanager
def served(data_dir: Path, **options: Any) -> Iterator[JobyardServer]:
    """``start_server`` for the length of a ``with`` block."""
    jobyard = start_server(data_dir, **options)
    try:
        yield jobyard
    finally:
        stop_server(jobyard)


def stop_server(jobyard: JobyardServer) -> None:
    """SIGTERM the server (if it runs) and kill what its instances left behind.

    The client goes first: an idle keep-alive TLS connection would hold up the
    server's graceful shutdown for its whole timeout."""
    jobyard.client.close()
    with contextlib.suppress(ProcessLookupError):
        jobyard.terminate()
    jobyard.kill_instances()


def remove_cgroups(record: Path) -> None:
    """Remove an instance's cgroups, its server's idle ones and its server's
    parent, once empty: a killed server leaves them, and they would outlive
    the test run."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        cgroups = json.loads(record.read_text()).get("cgroups")
        if cgroups:
            group = CgroupSet.from_json(cgroups)
            group.remove_all()
            for path in group.unique_dirs:
                for idle in path.parent.glob("idle-*"):
                    with contextlib.suppress(OSError):
                        idle.rmdir()
                with contextlib.suppress(OSError):
                    path.parent.rmdir()
