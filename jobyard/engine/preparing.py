"""Preparing packages for their stack, on a small thread pool, never on the controller.

A package is prepared when an instance first needs it, and once per cache key:

- unpacked once per digest into ``packages/unpacked/<hex>/`` and made read-only
  (a jar or a single executable is placed there under its file name);
- python with a requirements.txt: a virtual environment per (digest, Python
  version) in ``packages/prepared/<hex>/venv-python<X.Y>/``;
- node with a package.json: a copy of the package with its node_modules
  (``npm ci --omit=dev``) in ``packages/prepared/<hex>/node/``.

Each finished step leaves its result on disk (a renamed directory or a
``.ready`` marker), so a restarted server finds it. All output goes to
``packages/prepared/<hex>/prepare.log``. While a preparation runs the instance
waits (``Waiting``); when it ends an event is written and the controller woken.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from jobyard.domain import Instance, NewEvent, Package, Reason, Severity, SourceType, Task
from jobyard.engine.clock import Clock
from jobyard.engine.package_runs import Outcome, Ready, Refused, Waiting
from jobyard.engine.packages import PackageLayout, hex_of
from jobyard.errors import JobyardError
from jobyard.runners import archives, unpacking
from jobyard.runners.archives import ArchiveLimits
from jobyard.runners.stacks import PrepareError, Toolbox
from jobyard.spec import PackageDeployment
from jobyard.store import Store
from jobyard.store import events as event_store
from jobyard.store import packages as package_store

logger = logging.getLogger(__name__)

RUNTIMES = {"python": "python3", "java": "java", "node": "node"}
UNPACKED_KINDS = (archives.KIND_ZIP, archives.KIND_TAR_GZ)
LOG_TAIL_LINES = 12
LOG_TAIL_CHARS = 3000


Key = tuple[str, str, str]  # (hex digest, file name of a single-file package, target)


@dataclass(frozen=True)
class _Job:
    key: Key
    package: Package
    stack: str
    runtime: str | None
    python_version: str | None
    requester: Task


@dataclass(frozen=True)
class _Failure:
    at: datetime
    reason: Reason
    message: str


class Preparer:
    """Decides whether a package is ready, and prepares it in the background if not."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        layout: PackageLayout,
        toolbox: Toolbox,
        limits: ArchiveLimits,
        wake: Callable[[], None],
        workers: int = 2,
    ) -> None:
        self._store = store
        self._clock = clock
        self._layout = layout
        self._toolbox = toolbox
        self._limits = limits
        self._wake = wake
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jobyard-prepare")
        self._lock = threading.Lock()
        self._running: set[Key] = set()
        self._failures: dict[Key, _Failure] = {}
        self._digest_locks: dict[str, threading.Lock] = {}
        self._packages: dict[tuple[str, str], Package] = {}
        self._closed = False

    # -- asked by the launcher (controller thread) ------------------------------------

    def prepare(self, task: Task, instance: Instance, deployment: PackageDeployment) -> Outcome:
        package = self._package(task.namespace, deployment.package)
        if package is None:
            text = f"package {deployment.package} is not uploaded in namespace {task.namespace!r}"
            return Refused(Reason.START_FAILED, text)
        runtime = self._runtime(deployment.stack)
        if isinstance(runtime, Refused):
            return runtime
        version = None
        if deployment.stack == "python" and runtime is not None:
            version = self._toolbox.python_version(runtime)
        found = self._on_disk(package, deployment.stack, runtime, version)
        if found is not None:
            return found
        key = _key(package, deployment.stack, version)
        job = _Job(key, package, deployment.stack, runtime, version, task)
        return self._start_or_report(job, instance)

    def _runtime(self, stack: str) -> str | Refused | None:
        program = RUNTIMES.get(stack)
        if program is None:
            return None
        found = self._toolbox.which(program)
        if found is None:
            return Refused(Reason.RUNTIME_MISSING, self._missing(stack, program))
        return found

    def _missing(self, stack: str, program: str) -> str:
        return (
            f"the {stack} stack needs {program}, and {program} is not installed on this host "
            f"(searched {self._toolbox.search_path})"
        )

    def _start_or_report(self, job: _Job, instance: Instance) -> Outcome:
        with self._lock:
            failure = self._failures.get(job.key)
            if failure is not None and instance.created_at <= failure.at:
                return Refused(failure.reason, failure.message)
            if job.key not in self._running and not self._closed:
                self._running.add(job.key)
                self._pool.submit(self._work, job)
        package = job.package
        return Waiting(
            f"preparing package {package.digest} ({package.filename}) for the {job.stack} "
            f"stack; its log: /api/v1/namespaces/{package.namespace}/packages/"
            f"{package.digest}/log"
        )

    def _package(self, namespace: str, digest: str) -> Package | None:
        with self._lock:
            cached = self._packages.get((namespace, digest))
        if cached is not None:
            return cached
        with self._store.read() as conn:
            found = package_store.get_package(conn, namespace, digest)
        if found is not None:
            with self._lock:
                self._packages[(namespace, digest)] = found
        return found

    def _on_disk(
        self, package: Package, stack: str, runtime: str | None, version: str | None
    ) -> Ready | Refused | None:
        """The prepared package if every step it needs is done; None if one is not."""
        unpacked = self._layout.unpacked(hex_of(package.digest))
        if not unpacked.is_dir() or not (unpacked / _entry_file(package)).exists():
            return None
        ready = Ready(package, unpacked, self._toolbox.search_path, runtime=runtime)
        if stack == "python" and (unpacked / "requirements.txt").is_file():
            venv = self._venv(package, version or "")
            if not _marker(venv).exists():
                return None
            bin_dir = str(venv / "bin")
            python = str(venv / "bin" / "python")
            return Ready(package, unpacked, ready.search_path, (bin_dir,), _venv_env(venv), python)
        if stack == "node" and (unpacked / "package.json").is_file():
            app = self._node_app(package)
            if _marker(app).exists():
                return Ready(package, app, ready.search_path, runtime=runtime)
            if self._toolbox.which("npm") is None:
                return Refused(Reason.RUNTIME_MISSING, self._missing("node", "npm"))
            return None
        return ready

    # -- the work (pool threads) -----------------------------------------------------

    def _work(self, job: _Job) -> None:
        started = time.monotonic()
        failure: _Failure | None = None
        try:
            with self._digest_lock(job.key[0]), self._open_log(job) as log:
                try:
                    self._steps(job, log)
                    log.write(b"== prepared\n")
                except (JobyardError, OSError) as err:
                    failure = self._failed(job, err, log)
        except Exception as err:  # never lose the running mark: the instance would wait forever
            logger.exception("preparing %s failed unexpectedly", job.package.digest)
            failure = _Failure(self._clock.now(), Reason.PREPARE_FAILED, f"internal error: {err}")
        self._finish(job, failure, time.monotonic() - started)

    def _steps(self, job: _Job, log: BinaryIO) -> None:
        unpacked = self._unpack(job.package, log)
        if job.stack == "python" and (unpacked / "requirements.txt").is_file():
            assert job.runtime is not None and job.python_version is not None
            self._build_venv(job, unpacked, log)
        if job.stack == "node" and (unpacked / "package.json").is_file():
            self._install_node_modules(job.package, unpacked, log)

    def _unpack(self, package: Package, log: BinaryIO) -> Path:
        hex_digest = hex_of(package.digest)
        final = self._layout.unpacked(hex_digest)
        blob = self._layout.blob(hex_digest)
        if (final / _entry_file(package)).exists():
            return final
        if not blob.is_file():
            raise PrepareError(f"package {package.digest} is no longer stored")
        if package.kind in UNPACKED_KINDS:
            log.write(f"unpacking {package.filename} ({package.kind})\n".encode())
            staging = final.with_name(f".{hex_digest}.{uuid.uuid4().hex}")
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                unpacking.unpack(blob, package.kind, staging, self._limits)
                unpacking.freeze(staging)
                os.rename(staging, final)
            finally:
                unpacking.remove_tree(staging)
            return final
        log.write(f"placing {package.filename} ({package.kind})\n".encode())
        if final.is_dir():
            unpacking.thaw(final)
        executable = package.kind == archives.KIND_EXECUTABLE
        unpacking.place_file(blob, final, package.filename, executable)
        unpacking.freeze(final)
        return final

    def _build_venv(self, job: _Job, unpacked: Path, log: BinaryIO) -> None:
        venv = self._venv(job.package, job.python_version or "")
        if _marker(venv).exists():
            return
        unpacking.remove_tree(venv)
        assert job.runtime is not None
        log.write(f"building a virtual environment with Python {job.python_version}\n".encode())
        requirements = unpacked / "requirements.txt"
        self._toolbox.build_venv(job.runtime, venv, requirements, unpacked, log)
        _marker(venv).touch()

    def _install_node_modules(self, package: Package, unpacked: Path, log: BinaryIO) -> None:
        app = self._node_app(package)
        if _marker(app).exists():
            return
        npm = self._toolbox.which("npm")
        if npm is None:
            raise PrepareError(self._missing("node", "npm"), runtime_missing=True)
        unpacking.remove_tree(app)
        log.write(b"copying the package to install its node modules\n")
        shutil.copytree(unpacked, app, symlinks=True)
        unpacking.thaw(app)
        self._toolbox.install_node_modules(npm, app, log)
        unpacking.freeze(app)
        _marker(app).touch()

    def _failed(self, job: _Job, err: Exception, log: BinaryIO) -> _Failure:
        log.write(f"== failed: {err}\n".encode())
        missing = isinstance(err, PrepareError) and err.runtime_missing
        reason = Reason.RUNTIME_MISSING if missing else Reason.PREPARE_FAILED
        return _Failure(self._clock.now(), reason, str(err))

    def _finish(self, job: _Job, failure: _Failure | None, seconds: float) -> None:
        with self._lock:
            self._running.discard(job.key)
            closed = self._closed
            if failure is None:
                self._failures.pop(job.key, None)
            elif not closed:
                tail = _tail(self._layout.log(job.key[0]))
                failure = _Failure(failure.at, failure.reason, f"{failure.message}{tail}")
                self._failures[job.key] = failure
        if closed:
            logger.info("preparation of %s stopped: the server is stopping", job.package.digest)
            return
        self._record(job, failure, seconds)
        self._wake()

    def _record(self, job: _Job, failure: _Failure | None, seconds: float) -> None:
        package = job.package
        what = f"package {package.digest} ({package.filename}) for the {job.stack} stack"
        if failure is None:
            text = f"prepared {what} in {seconds:.1f} s"
            reason, severity = Reason.PACKAGE_PREPARED, Severity.NORMAL
        else:
            text = f"preparing {what} failed: {failure.message}"
            reason, severity = Reason.PREPARE_FAILED, Severity.ERROR
        level = logging.INFO if failure is None else logging.WARNING
        logger.log(level, "%s", text)
        task = job.requester
        event = NewEvent(
            source_type=SourceType.PACKAGE,
            source_name=package.digest,
            reason=reason,
            message=text,
            severity=severity,
            namespace=task.namespace,
            template_name=task.template_name,
            task_id=task.id,
        )
        try:
            with self._store.write() as conn:
                event_store.add_event(conn, event, self._clock.now())
        except JobyardError:
            logger.exception("could not record the preparation of %s", package.digest)

    # -- forgetting (after a delete) -------------------------------------------------

    def forget(self, namespace: str, digest: str, kept: bool) -> None:
        """A namespace deleted the package; without ``kept``, no namespace has it any more."""
        with self._lock:
            self._packages.pop((namespace, digest), None)
        if not kept and not self._closed:
            self._pool.submit(self._remove_files, digest)

    def _remove_files(self, digest: str) -> None:
        hex_digest = hex_of(digest)
        with self._digest_lock(hex_digest):
            with self._store.read() as conn:
                if package_store.stored_anywhere(conn, digest):
                    return  # uploaded again meanwhile
            with self._lock:
                for key in [k for k in self._failures if k[0] == hex_digest]:
                    del self._failures[key]
            for path in (self._layout.unpacked(hex_digest), self._layout.prepared(hex_digest)):
                unpacking.remove_tree(path)
        logger.info("removed the unpacked and prepared files of %s", digest)

    def close(self) -> None:
        """Stop: kill running preparation commands, drop what is queued."""
        with self._lock:
            self._closed = True
        self._toolbox.close()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- paths and locks -------------------------------------------------------------

    def _venv(self, package: Package, version: str) -> Path:
        return self._layout.prepared(hex_of(package.digest)) / f"venv-python{version}"

    def _node_app(self, package: Package) -> Path:
        return self._layout.prepared(hex_of(package.digest)) / "node"

    def _digest_lock(self, hex_digest: str) -> threading.Lock:
        with self._lock:
            return self._digest_locks.setdefault(hex_digest, threading.Lock())

    def _open_log(self, job: _Job) -> BinaryIO:
        path = self._layout.log(job.key[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        log = path.open("ab", buffering=0)
        package = job.package
        stamp = self._clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        header = f"== {stamp} preparing {package.digest} ({package.filename}) for {job.stack}\n"
        log.write(header.encode())
        return log


def _key(package: Package, stack: str, version: str | None) -> Key:
    single = "" if package.kind in UNPACKED_KINDS else package.filename
    target = f"python{version}" if stack == "python" else stack
    return (hex_of(package.digest), single, target)


def _entry_file(package: Package) -> str:
    """What must exist in the unpacked directory: the file itself for single files."""
    return "." if package.kind in UNPACKED_KINDS else package.filename


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".ready")


def _venv_env(venv: Path) -> dict[str, str]:
    return {"VIRTUAL_ENV": str(venv)}


def _tail(log: Path) -> str:
    """The last lines of a preparation log, for the PrepareFailed event."""
    try:
        with log.open("rb") as file:
            file.seek(max(0, log.stat().st_size - 64 * 1024))
            text = file.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()][-LOG_TAIL_LINES:]
    tail = "\n".join(lines)[-LOG_TAIL_CHARS:]
    return f"\nlast lines of the log:\n{tail}" if tail else ""
