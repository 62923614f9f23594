"""Container images on the local runner, through a container engine's CLI.

An image instance is an ordinary local instance whose process is
``podman run`` (or ``docker run``) in the foreground: its stdout and stderr
are the container's, its exit code is the container's, and a SIGTERM to it is
passed on to the container (``--sig-proxy``, on by default). What survives a
SIGKILL of the CLI is removed by the launch's cleanup command.

The engine is found once at server start (``<engine> info``); without one
that answers, image instances cannot run and say so.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

ENGINE_CHOICES = ("auto", "podman", "docker", "none")
# In the order "auto" tries them.
ENGINES = ("podman", "docker")
INFO_TIMEOUT_SECONDS = 20.0
# Where the triggering request's payload is bind-mounted (read-only) inside a container.
PAYLOAD_MOUNT = "/run/jobyard/payload.json"
PULL_FLAGS = {"Always": "always", "IfNotPresent": "missing", "Never": "never"}

# What ``<engine> info`` reports, as one line (Go templates of each CLI).
_INFO_FORMATS = {
    "podman": "{{.Version.Version}} (runtime {{.Host.OCIRuntime.Name}}, "
    "cgroup {{.Host.CgroupsVersion}})",
    "docker": "{{.ServerVersion}} (runtime {{.DefaultRuntime}}, cgroup {{.CgroupVersion}})",
}


@dataclass(frozen=True)
class ContainerEngine:
    """The container engine image instances run through, as found at start.

    ``name`` is None when none works; ``detail`` then says why. ``prefix``
    starts every container name, so two servers on one host never collide.
    """

    name: str | None
    path: str | None
    detail: str
    prefix: str = "jobyard"

    @property
    def works(self) -> bool:
        return self.name is not None and self.path is not None

    def container_name(self, instance_id: int) -> str:
        return f"{self.prefix}-{instance_id}"

    def report(self) -> dict[str, str | None]:
        """For GET /api/v1/info."""
        return {"engine": self.name, "detail": self.detail}


@dataclass(frozen=True)
class ContainerRun:
    """One container to run for one instance: what its engine CLI is told."""

    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    pull_policy: str = "IfNotPresent"
    # Passed by name only: the values come from the CLI's own environment,
    # which is the instance's, so they never show in a command line.
    env_names: tuple[str, ...] = ()
    cpu: float | None = None
    memory_bytes: int | None = None
    labels: dict[str, str] = field(default_factory=dict)


def engine_prefix(data_dir: Path) -> str:
    """``jobyard-<8 hex of the data directory>``: container names of this server."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return f"jobyard-{digest}"


def detect_engine(
    choice: str, prefix: str = "jobyard", timeout: float = INFO_TIMEOUT_SECONDS
) -> ContainerEngine:
    """The first engine of ``choice`` ("auto": podman, then docker) that answers."""
    if choice not in ENGINE_CHOICES:
        raise ValueError(f"container engine must be one of {', '.join(ENGINE_CHOICES)}")
    if choice == "none":
        return ContainerEngine(None, None, "disabled by configuration (container engine: none)")
    problems = []
    for name in ENGINES if choice == "auto" else (choice,):
        found = _probe(name, prefix, timeout)
        if isinstance(found, ContainerEngine):
            logger.info("container engine: %s %s", name, found.detail)
            return found
        problems.append(found)
    detail = "; ".join(problems)
    logger.warning("no container engine, image templates cannot run: %s", detail)
    return ContainerEngine(None, None, detail, prefix)


def _probe(name: str, prefix: str, timeout: float) -> ContainerEngine | str:
    """The engine if ``name info`` answers; otherwise why not, in one phrase."""
    path = shutil.which(name)
    if path is None:
        return f"{name} is not installed (not found on PATH)"
    argv = [path, "info", "--format", _INFO_FORMATS[name]]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        why = f"no answer in {timeout:g} s"
        return f"{name} is installed but its engine does not answer ({name} info: {why})"
    except OSError as exc:
        return f"{name} is installed but cannot be run: {exc}"
    if done.returncode != 0:
        why = _first_line(done.stderr) or f"exit code {done.returncode}"
        return f"{name} is installed but its engine does not answer ({name} info: {why})"
    return ContainerEngine(name, path, f"{name} {_first_line(done.stdout)}", prefix)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


def run_argv(engine: ContainerEngine, run: ContainerRun) -> list[str]:
    """``<engine> run`` in the foreground for ``run``, removed when it ends.

    Swap is set equal to memory: no swap, as on Kubernetes.
    """
    if engine.path is None:
        raise ValueError("no container engine to run with")
    argv = [engine.path, "run", "--rm", "--name", run.name, f"--pull={PULL_FLAGS[run.pull_policy]}"]
    for key, value in sorted(run.labels.items()):
        argv += ["--label", f"{key}={value}"]
    if run.cpu is not None:
        argv += ["--cpus", f"{run.cpu:g}"]
    if run.memory_bytes is not None:
        memory = f"{run.memory_bytes}b"
        argv += ["--memory", memory, "--memory-swap", memory]
    for name in run.env_names:
        argv += ["--env", name]
    return argv


def run_script(engine: ContainerEngine, run: ContainerRun) -> str:
    """A /bin/sh script that execs the engine CLI (so signals reach it directly).

    It mounts the payload file read-only at PAYLOAD_MOUNT when the instance
    has one: its host path is known only once the run directory exists.
    """
    options = shlex.join(run_argv(engine, run))
    tail = shlex.join([run.image, *run.command, *run.args])
    return (
        f"# instance container {run.name}: image {run.image} through {engine.name}\n"
        "set --\n"
        'if [ -n "${JOBYARD_PAYLOAD_FILE:-}" ]; then\n'
        f'  set -- --volume "$JOBYARD_PAYLOAD_FILE:{PAYLOAD_MOUNT}:ro"'
        f" --env JOBYARD_PAYLOAD_FILE={PAYLOAD_MOUNT}\n"
        "fi\n"
        f'exec {options} "$@" {tail}\n'
    )


def cleanup_argv(engine: ContainerEngine, name: str) -> tuple[str, ...]:
    """Remove the container at once, running or not; a no-op when it is gone.

    Its output goes to the instance's log, so the bare name the engine prints
    for a container it had to remove becomes a sentence that says why.
    """
    if engine.path is None or engine.name is None:
        raise ValueError("no container engine to clean up with")
    rm = [engine.path, "rm", "--force"]
    if engine.name == "podman":
        rm += ["--time", "0"]  # docker's rm kills at once anyway and has no --time
    return ("/bin/sh", "-c", _CLEANUP_SCRIPT, engine.name, *rm, name)


_CLEANUP_SCRIPT = (
    'removed=$("$@") || exit\n'
    '[ -z "$removed" ] || echo "jobyard: container $removed outlived $0 run; removed it"\n'
)
