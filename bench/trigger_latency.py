"""Trigger to start: an HTTP trigger request -> the instance's first line runs, and
-> the task is recorded succeeded, over ``--count`` sequential triggers.

The template's script is bash, whose first line prints ``$EPOCHREALTIME`` (no
process spawned for the clock). "start" = that time minus the moment just before
the request was sent; "succeeded" = the task's ``finished_at`` minus the same
moment; "response" = the trigger's HTTP round trip. The floor is measured in the
same run: a bare ``subprocess.Popen`` of the same shell with the same first line.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

from _common import (
    TERMINAL,
    Server,
    add_common_args,
    emit,
    note,
    parse_time,
    running_server,
    script_template,
    summary_ms,
    target,
    workspace,
)

SHELL = "/bin/bash"
FIRST_LINE = 'printf "%s\\n" "$EPOCHREALTIME"'
START_P50_MS, START_P99_MS = 10.0, 30.0


def floor(count: int) -> list[float]:
    """A bare spawn of the same shell with the same first line."""
    starts = []
    for _ in range(count):
        sent = time.time()
        out = subprocess.run([SHELL, "-c", FIRST_LINE], capture_output=True, text=True, check=True)
        starts.append(float(out.stdout.split()[0]) - sent)
    return starts


def trigger_once(server: Server, url: str, poll: float) -> tuple[int, float, float]:
    """Trigger, wait for the end; return (task id, sent epoch, response seconds)."""
    sent = time.time()
    response = server.client.post(url)
    answered = time.time()
    if response.status_code != 202:
        raise RuntimeError(f"trigger: {response.status_code} {response.text[:300]}")
    task_id = response.json()["id"]
    while True:
        task = server.api("GET", f"/tasks/{task_id}")
        if task["status"] in TERMINAL:
            return task_id, sent, answered - sent
        time.sleep(poll)


def first_line_epoch(server: Server, task_id: int) -> float:
    instance = server.api("GET", f"/tasks/{task_id}/instances")[0]
    text = server.client.get(f"/api/v1/instances/{instance['id']}/logs").text
    return float(text.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="sequential triggers")
    parser.add_argument("--poll", type=float, default=0.01, help="seconds between task polls")
    parser.add_argument("--warmup", type=int, default=5, help="triggers before measuring")
    add_common_args(parser)
    args = parser.parse_args()
    with workspace(args) as space:
        floor_s = floor(args.count)
        with running_server(space, args) as server:
            spec = script_template(
                "latency",
                FIRST_LINE + "\n",
                trigger={"type": "http", "methods": ["POST"]},
            )
            spec["deployment"]["shell"] = SHELL
            url = server.create_templates([spec])[0]["trigger"]["url"]
            for _ in range(args.warmup):
                trigger_once(server, url, args.poll)
            runs = []
            for i in range(args.count):
                runs.append(trigger_once(server, url, args.poll))
                if (i + 1) % 200 == 0:
                    note(f"{i + 1} triggers")
            starts, succeeded, failed = [], [], 0
            for task_id, sent, _ in runs:
                task = server.api("GET", f"/tasks/{task_id}")
                failed += task["status"] != "succeeded"
                starts.append(first_line_epoch(server, task_id) - sent)
                finished = parse_time(task["finished_at"])
                succeeded.append((finished - datetime.fromtimestamp(sent, UTC)).total_seconds())
        figures: dict[str, Any] = {
            "start": summary_ms(starts),
            "succeeded": summary_ms(succeeded),
            "response": summary_ms([r for _, _, r in runs]),
            "floor_bare_spawn": summary_ms(floor_s),
            "not_succeeded": failed,
        }
        targets = [
            target("start p50 (ms)", figures["start"]["p50_ms"], START_P50_MS),
            target("start p99 (ms)", figures["start"]["p99_ms"], START_P99_MS),
            target("tasks not succeeded", failed, 0),
        ]
        emit("trigger_latency", space, {"count": args.count}, figures, targets)


if __name__ == "__main__":
    main()
