"""The processes that prepare a package for its stack: find runtimes, build a
Python virtual environment, install node modules.

Runtimes are looked up on one search PATH (by default the server's own, less
the server's virtual environment), the same PATH the instances get. Each
command's output goes to the preparation's log; a command that runs past the
timeout is killed with its whole process group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from jobyard.errors import JobyardError

logger = logging.getLogger(__name__)

FALLBACK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VERSION_TTL = 60.0  # seconds a probed Python version is trusted
# The server's own settings and secrets never reach package code (setup.py runs code).
_HIDDEN_ENV_PREFIXES = ("JOBYARD_",)
_HIDDEN_ENV = ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "__PYVENV_LAUNCHER__")
_QUIET_TOOLS = {
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_NO_INPUT": "1",
    "npm_config_update_notifier": "false",
    "npm_config_fund": "false",
    "npm_config_audit": "false",
}


class PrepareError(JobyardError):
    """A preparation step failed; ``runtime_missing`` when a needed program is absent."""

    def __init__(self, message: str, runtime_missing: bool = False) -> None:
        super().__init__(message)
        self.runtime_missing = runtime_missing


def default_search_path() -> str:
    """The server's PATH without the server's own virtual environment."""
    own = {str(Path(sys.prefix) / "bin")} if sys.prefix != sys.base_prefix else set()
    parts = [p for p in os.environ.get("PATH", FALLBACK_PATH).split(os.pathsep) if p]
    kept = [p for p in parts if p.rstrip("/") not in own]
    return os.pathsep.join(kept) or FALLBACK_PATH


class Toolbox:
    """Finds runtimes and runs the preparation commands. Thread-safe."""

    def __init__(self, search_path: str, timeout: float) -> None:
        self.search_path = search_path
        self._timeout = timeout
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._versions: dict[str, tuple[str, float]] = {}
        self._closed = False

    def which(self, program: str) -> str | None:
        return shutil.which(program, path=self.search_path)

    def python_version(self, python: str) -> str:
        """``major.minor`` of the interpreter at ``python`` (probed, then cached briefly)."""
        with self._lock:
            cached = self._versions.get(python)
        if cached is not None and time.monotonic() - cached[1] < VERSION_TTL:
            return cached[0]
        probe = "import sys; print('%d.%d' % sys.version_info[:2])"
        try:
            result = subprocess.run(
                [python, "-c", probe],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise PrepareError(f"{python} does not run: {err}") from None
        version = result.stdout.decode(errors="replace").strip()
        if result.returncode != 0 or not version:
            problem = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise PrepareError(f"{python} does not run: {' '.join(problem) or 'no output'}")
        with self._lock:
            self._versions[python] = (version, time.monotonic())
        return version

    def environment(self) -> dict[str, str]:
        """What preparation commands see: the server's environment, cleaned."""
        env = {
            name: value
            for name, value in os.environ.items()
            if name not in _HIDDEN_ENV and not name.startswith(_HIDDEN_ENV_PREFIXES)
        }
        env.update(_QUIET_TOOLS)
        env["PATH"] = self.search_path
        return env

    def build_venv(
        self, python: str, venv: Path, requirements: Path, cwd: Path, log: BinaryIO
    ) -> None:
        """``python -m venv`` then ``pip install -r requirements.txt`` into it."""
        self.run([python, "-m", "venv", str(venv)], cwd, log)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-input"]
        self.run([*pip, "-r", str(requirements)], cwd, log)

    def install_node_modules(self, npm: str, app: Path, log: BinaryIO) -> None:
        """``npm ci --omit=dev`` (``npm install`` when the package has no lockfile)."""
        lockfiles = ("package-lock.json", "npm-shrinkwrap.json")
        locked = any((app / name).is_file() for name in lockfiles)
        verb = "ci" if locked else "install"
        self.run([npm, verb, "--omit=dev", "--no-audit", "--no-fund"], app, log)

    def run(self, argv: Sequence[str], cwd: Path, log: BinaryIO) -> None:
        """Run one command with its output in ``log``; PrepareError unless it exits 0."""
        command = shlex.join(argv)
        log.write(f"$ {command}\n".encode())
        log.flush()
        process = self._spawn(argv, cwd, log)
        try:
            code = process.wait(timeout=self._timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise PrepareError(
                f"'{command}' did not finish within {self._timeout:.0f} s and was killed"
            ) from None
        finally:
            with self._lock:
                self._running.discard(process)
        if self._closed:
            raise PrepareError("the server is stopping")
        if code != 0:
            raise PrepareError(f"'{command}' failed with exit code {code}")

    def _spawn(self, argv: Sequence[str], cwd: Path, log: BinaryIO) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._closed:
                raise PrepareError("the server is stopping")
            try:
                process = subprocess.Popen(
                    list(argv),
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.environment(),
                    start_new_session=True,
                )
            except OSError as err:
                raise PrepareError(f"cannot run {argv[0]}: {err.strerror or err}") from None
            self._running.add(process)
        return process

    def close(self) -> None:
        """Kill every preparation command still running (the server stops)."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        for process in running:
            _kill_group(process)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
