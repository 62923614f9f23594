"""``jobyard instances TASK``: the instances of a task, every attempt."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from jobyard.cli.output import show, table
from jobyard.cli.paths import task_path
from jobyard.cli.session import Session


def instances(
    session: Session,
    task: Annotated[int, typer.Argument(help="the task's id", min=1, show_default=False)],
) -> None:
    """List a task's instances (every attempt): status, class, exit, peak memory, CPU."""
    found = session.api.get(task_path(task) + "/instances")
    show(session, found, instances_table)


def instances_table(found: list[Any]) -> str:
    rows = [
        (
            instance["id"],
            instance["index"],
            instance["attempt"],
            instance["status"],
            instance["run_as"],
            "" if instance["exit_code"] is None else instance["exit_code"],
            memory(instance.get("peak_memory_bytes")),
            cpu(instance.get("cpu_seconds")),
            instance.get("reason") or instance.get("waiting_reason") or "",
        )
        for instance in found
    ]
    headers = ("ID", "INDEX", "ATTEMPT", "STATUS", "RUN AS", "EXIT", "PEAK MEM", "CPU", "REASON")
    return table(headers, rows)


def memory(size: int | None) -> str:
    """Bytes in the largest binary unit that keeps the number at or above 1."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"


def cpu(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.2f} s"
