"""Scale: ``--instances`` instances running at once (``sleep``), and separately, on a
fresh server, ``--cron-templates`` cron templates.

For each: the server's resident memory, its CPU (while the instances sleep; while
idle with the templates, none due during the measurement), and the latency of the
template-list and task-list API (``--samples`` requests each, one page of 100).
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from _common import (
    Server,
    add_common_args,
    cpu_percent_of,
    emit,
    note,
    rss_mb,
    running_server,
    script_template,
    summary_ms,
    target,
    wait_until,
    workspace,
)

IDLE_CPU_TARGET = 2.0  # percent of one core, with 100,000 templates
MAX_REPLICAS = 100
# A yearly firing in the far future of any run: nothing is due while we measure.
QUIET_SCHEDULE = "0 0 1 1 *"


def list_latency(server: Server, path: str, samples: int, **params: Any) -> dict[str, Any]:
    times = []
    for _ in range(samples):
        began = time.perf_counter()
        server.api("GET", path, params={"limit": 100, **params})
        times.append(time.perf_counter() - began)
    return summary_ms(times)


def running_count(server: Server, task_ids: list[int]) -> int:
    return sum(
        1
        for task_id in task_ids
        for instance in server.api("GET", f"/tasks/{task_id}/instances")
        if instance["status"] == "running"
    )


def instances_part(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    replicas = min(MAX_REPLICAS, args.instances)
    tasks = math.ceil(args.instances / replicas)
    spec = script_template("sleepers", f"sleep {args.sleep}", replicas=replicas)
    server.create_templates([spec])
    base_rss = rss_mb(server.pid)
    began = time.monotonic()
    task_ids = [
        server.api("POST", "/namespaces/default/templates/sleepers/run", expect=201)["id"]
        for _ in range(tasks)
    ]
    total = tasks * replicas
    all_running = wait_until(lambda: running_count(server, task_ids) >= total, args.sleep, 0.5)
    to_running_s = time.monotonic() - began
    note(f"{total} instances running: {all_running} after {to_running_s:.1f} s")
    figures: dict[str, Any] = {
        "instances": total,
        "all_running": all_running,
        "seconds_to_all_running": round(to_running_s, 2),
        "rss_mb_before": base_rss,
        "rss_mb_running": rss_mb(server.pid),
        "cpu_pct_while_running": cpu_percent_of(server.pid, args.cpu_seconds),
        "task_list": list_latency(
            server, "/namespaces/default/templates/sleepers/tasks", args.samples
        ),
        "template_list": list_latency(server, "/templates", args.samples),
    }
    server.api("POST", "/namespaces/default/templates/sleepers/stop", expect=None)
    return figures


def templates_part(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    trigger = {"type": "cron", "schedule": QUIET_SCHEDULE, "timezone": "UTC"}
    specs = [
        script_template(f"quiet-{i:06d}", ":", trigger=trigger) for i in range(args.cron_templates)
    ]
    base_rss = rss_mb(server.pid)
    began = time.monotonic()
    server.create_templates(specs, threads=args.create_threads)
    created_s = time.monotonic() - began
    note(f"{args.cron_templates} templates in {created_s:.1f} s; idling {args.idle_seconds} s")
    time.sleep(2)  # let the last writes and the pool settle
    idle = cpu_percent_of(server.pid, args.idle_seconds)
    return {
        "templates": args.cron_templates,
        "templates_created_per_s": round(args.cron_templates / created_s, 1),
        "rss_mb_before": base_rss,
        "rss_mb_with_templates": rss_mb(server.pid),
        "idle_cpu_pct_one_core": idle,
        "template_list_first_page": list_latency(
            server, "/namespaces/default/templates", args.samples
        ),
        "template_list_last_page": list_latency(
            server, "/namespaces/default/templates", args.samples, offset=args.cron_templates - 100
        ),
        "template_list_search": list_latency(
            server, "/namespaces/default/templates", args.samples, q="quiet-0001"
        ),
        "task_list_one_template": list_latency(
            server, "/namespaces/default/templates/quiet-000000/tasks", args.samples
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=2000, help="0 skips this part")
    parser.add_argument("--sleep", type=int, default=30, help="seconds each instance sleeps")
    parser.add_argument("--cron-templates", type=int, default=100000, help="0 skips this part")
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--cpu-seconds", type=float, default=5, help="CPU sample while running")
    parser.add_argument("--samples", type=int, default=50, help="requests per list latency")
    parser.add_argument("--create-threads", type=int, default=16)
    add_common_args(parser)
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    targets = []
    with workspace(args) as space:
        if args.instances > 0:
            with running_server(space, args, "instances") as server:
                figures["instances"] = instances_part(server, args)
            targets.append(
                target(
                    "all instances running at once",
                    float(figures["instances"]["all_running"]),
                    1.0,
                    False,
                )
            )
        if args.cron_templates > 0:
            with running_server(space, args, "templates") as server:
                figures["cron_templates"] = templates_part(server, args)
            idle = figures["cron_templates"]["idle_cpu_pct_one_core"]
            targets.append(target("idle CPU % of one core", idle, IDLE_CPU_TARGET))
        sizes = {
            "instances": args.instances,
            "sleep": args.sleep,
            "cron_templates": args.cron_templates,
        }
        emit("scale", space, sizes, figures, targets)


if __name__ == "__main__":
    main()
