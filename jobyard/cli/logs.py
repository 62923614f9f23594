"""``jobyard logs TASK [-f]``: the output of every instance of a task, or live.

Following: one worker thread per instance index streams that index's attempts
in order (``?follow=true`` ends when the attempt ends); the main thread polls
the task's instance list, hands new attempts (retries) to the workers, and
stops when the task is terminal.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from typing import Annotated, Any, TextIO

import typer

from jobyard.cli.client import Api
from jobyard.cli.output import note
from jobyard.cli.paths import instance_path, task_path
from jobyard.cli.session import Session

POLL_SECONDS = 0.3
TERMINAL = frozenset({"succeeded", "failed", "stopped"})


def logs(
    session: Session,
    task_id: Annotated[int, typer.Argument(metavar="TASK", help="task id", show_default=False)],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="stream live until the task ends")
    ] = False,
) -> None:
    """Print the logs of every instance (and every attempt) of a task."""
    if follow:
        follow_task(session.api, task_id, sys.stdout)
    else:
        print_logs(session.api, task_id, sys.stdout)


def attempt_header(instance: Any, with_status: bool = True) -> str:
    status = f" ({instance['status']})" if with_status else ""
    # Attempts count from 1 for people, as the events say.
    return f"==> instance {instance['index']} attempt {instance['attempt']}{status} <=="


def print_logs(api: Api, task_id: int, out: TextIO) -> None:
    instances = api.get(task_path(task_id) + "/instances")
    if not instances:
        note(f"task {task_id} has no instances yet")
    many = len(instances) > 1
    for number, instance in enumerate(instances):
        if many:
            out.write(("\n" if number else "") + attempt_header(instance) + "\n")
        text = api.text(instance_path(instance["id"]) + "/logs")
        out.write(text if not text or text.endswith("\n") else text + "\n")
    out.flush()


class _Printer:
    """Whole lines to one stream from several threads, prefixed with the index if asked."""

    def __init__(self, out: TextIO, prefixed: bool) -> None:
        self._out = out
        self._prefixed = prefixed
        self._lock = threading.Lock()

    def line(self, index: int, text: str) -> None:
        prefix = f"[{index}] " if self._prefixed else ""
        with self._lock:
            self._out.write(f"{prefix}{text}\n")
            self._out.flush()


class _IndexWorker:
    """Streams the attempts of one instance index, one after another."""

    def __init__(self, api: Api, index: int, printer: _Printer) -> None:
        self.index = index
        self.attempts: queue.Queue[Any] = queue.Queue()
        self.error: BaseException | None = None
        self._api = api
        self._printer = printer
        self._thread = threading.Thread(target=self._run, name=f"logs-{index}", daemon=True)
        self._thread.start()

    def finish(self) -> None:
        self.attempts.put(None)

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        followed = 0
        try:
            while (instance := self.attempts.get()) is not None:
                if followed:
                    self._printer.line(self.index, attempt_header(instance, with_status=False))
                self._stream(instance)
                followed += 1
        except BaseException as err:  # reported by the main thread
            self.error = err

    def _stream(self, instance: Any) -> None:
        path = instance_path(instance["id"]) + "/logs"
        with self._api.stream_lines(path, follow="true") as lines:
            for line in lines:
                self._printer.line(self.index, line)


def follow_task(api: Api, task_id: int, out: TextIO) -> Any:
    """Stream every attempt's log until the task is terminal; return the final task."""
    task = api.get(task_path(task_id))
    printer = _Printer(out, prefixed=task.get("instance_count", 1) > 1)
    workers: dict[int, _IndexWorker] = {}
    seen: set[int] = set()
    try:
        while True:
            task = api.get(task_path(task_id))
            for instance in api.get(task_path(task_id) + "/instances"):
                if instance["id"] in seen:
                    continue
                seen.add(instance["id"])
                index = instance["index"]
                if index not in workers:
                    workers[index] = _IndexWorker(api, index, printer)
                workers[index].attempts.put(instance)
            _raise_first(workers)
            if task["status"] in TERMINAL:
                break
            time.sleep(POLL_SECONDS)
    finally:
        for worker in workers.values():
            worker.finish()
    for worker in workers.values():
        worker.join()
    _raise_first(workers)
    return task


def _raise_first(workers: dict[int, _IndexWorker]) -> None:
    for worker in workers.values():
        if worker.error is not None:
            raise worker.error
