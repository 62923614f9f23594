"""How a package runs once prepared: what preparation answers, the argv and the env."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobyard.domain import Package, Reason
from jobyard.runners import archives
from jobyard.spec import PackageDeployment


@dataclass(frozen=True)
class Ready:
    """A prepared package: where it is and what its instances' PATH holds."""

    package: Package
    run_dir: Path  # shared, read-only: linked into each instance's working directory
    search_path: str
    bin_dirs: tuple[str, ...] = ()  # put before the search path (a venv's bin)
    env: Mapping[str, str] = field(default_factory=dict)
    runtime: str | None = None  # the stack's program (java, node, python3)


@dataclass(frozen=True)
class Waiting:
    """Still being prepared: the instance waits."""

    message: str


@dataclass(frozen=True)
class Refused:
    """It cannot run: the instance fails with ``reason``."""

    reason: Reason
    message: str


Outcome = Ready | Waiting | Refused


def package_argv(
    deployment: PackageDeployment, ready: Ready, env: Mapping[str, str], override: Any = None
) -> tuple[str, ...] | Refused:
    """``command`` split like a shell would, then ``args``; each stack's default otherwise.

    ``override`` is a command (a list) that replaces both, as SAE's ExecJob may give.
    """
    if override:
        return tuple(str(part) for part in override)
    if deployment.command.strip():
        try:
            return (*shlex.split(deployment.command), *deployment.args)
        except ValueError as err:
            return Refused(Reason.START_FAILED, f"deployment.command cannot be split: {err}")
    if deployment.stack == "java":
        jar = _jar_of(ready)
        if isinstance(jar, Refused):
            return jar
        java = ready.runtime or "java"
        options = env.get("JAVA_OPTS", "").split()
        return (java, *options, "-jar", str(jar), *deployment.args)
    if deployment.stack == "binary" and ready.package.kind == archives.KIND_EXECUTABLE:
        return (str(ready.run_dir / ready.package.filename), *deployment.args)
    return Refused(
        Reason.START_FAILED,
        f"the {deployment.stack} package {ready.package.filename} needs a command to run",
    )


def _jar_of(ready: Ready) -> Path | Refused:
    if ready.package.kind == archives.KIND_JAR:
        return ready.run_dir / ready.package.filename
    jars = sorted(path.name for path in ready.run_dir.glob("*.jar"))
    if len(jars) == 1:
        return ready.run_dir / jars[0]
    found = ", ".join(jars) if jars else "none"
    return Refused(
        Reason.START_FAILED,
        "a java package without a command needs exactly one .jar at its top level "
        f"(found: {found}); give a command such as 'java -jar app.jar'",
    )


def package_env(ready: Ready, env: Mapping[str, str]) -> dict[str, str]:
    """PATH with the stack's bin first, the package directory, and the stack's own variables."""
    path = env.get("PATH") or ready.search_path
    return {
        **ready.env,
        "PATH": ":".join([*ready.bin_dirs, path]),
        "JOBYARD_PACKAGE_DIR": str(ready.run_dir),
    }
