"""Scale: ``--instances`` instances running at once (``sleep``), and separately, on a
fresh server, ``--cron-templates`` cron templates.

For each: the server's resident memory, its CPU (while the instances sleep; while
idle with the templates, none due during the measurement), and the latency of the
template-list and task-list API (``--samples`` requests each, one page of 100: the
first page, a deep page and searches).

The templates are seeded (``--seed``) either in process before the server starts,
through jobyard's own store functions in transactions of ``SEED_BATCH`` — the rows
``POST /namespaces/default/templates`` writes (template, version 1, next fire time,
its ``Created`` event) — and the server then reads them as after a restart; or over
the API (``--seed api``, ``--create-threads`` concurrent clients).
"""

from __future__ import annotations

import argparse
import math
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
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
    workspace,
)
from sqlalchemy.sql.expression import ClauseElement

from jobyard.domain import Reason, Template
from jobyard.engine.events import template_event
from jobyard.engine.templates import next_fire_after
from jobyard.spec import TemplateSpec, parse_spec
from jobyard.store import Store
from jobyard.store import templates as template_store
from jobyard.store.tables import template_versions, templates

IDLE_CPU_TARGET = 2.0  # percent of one core, with 100,000 templates
MAX_REPLICAS = 100
SEED_BATCH = 1000  # templates per seeding transaction
SEED_THREADS = 4  # seeding transactions at once on PostgreSQL
MANUAL_RUNS = 20  # tasks of one template, for the task list beside the templates
# A yearly firing in the far future of any run: nothing is due while we measure.
QUIET_SCHEDULE = "0 0 1 1 *"
QUIET_TRIGGER = {"type": "cron", "schedule": QUIET_SCHEDULE, "timezone": "UTC"}
# Small requests, so that the node's capacity admits every instance at once; the
# memory a `sleep` under its wrapper really uses is a few MB (16 is the smallest request).
SLEEPER_RESOURCES = {"cpu": 0.01, "memory_mb": 16}


def list_latency(server: Server, path: str, samples: int, **params: Any) -> dict[str, Any]:
    times = []
    for _ in range(samples):
        began = time.perf_counter()
        found = server.api("GET", path, params={"limit": 100, **params})
        times.append(time.perf_counter() - began)
    return {**summary_ms(times), "rows": len(found)}


def running_count(server: Server, task_ids: list[int]) -> int:
    return sum(
        1
        for task_id in task_ids
        for instance in server.api("GET", f"/tasks/{task_id}/instances")
        if instance["status"] == "running"
    )


# -- 2,000 instances ----------------------------------------------------------


def capacity_args(instances: int) -> list[str]:
    cpu = instances * SLEEPER_RESOURCES["cpu"] * 2
    memory = instances * SLEEPER_RESOURCES["memory_mb"] * 2
    return ["--capacity-cpu", f"{cpu:g}", "--capacity-memory-mb", str(int(memory))]


def instances_part(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    replicas = min(MAX_REPLICAS, args.instances)
    tasks = math.ceil(args.instances / replicas)
    spec = script_template(
        "sleepers", f"sleep {args.sleep}", replicas=replicas, resources=SLEEPER_RESOURCES
    )
    server.create_templates([spec])
    base_rss = rss_mb(server.pid)
    began = time.monotonic()
    task_ids = [
        server.api("POST", "/namespaces/default/templates/sleepers/run", expect=201)["id"]
        for _ in range(tasks)
    ]
    total = tasks * replicas
    timeline, peak = _running_timeline(server, task_ids, total, began, args.sleep + 60)
    all_at = timeline.get(total)
    note(f"{total} instances: running over time {timeline}")
    # The first instance ends `sleep` seconds after it started: sample before that.
    window = args.sleep - (time.monotonic() - began) - 1.0
    cpu_seconds = max(0.0, min(args.cpu_seconds, window))
    figures: dict[str, Any] = {
        "instances": total,
        "resources_per_instance": SLEEPER_RESOURCES,
        "server_args": server.extra_args,
        "all_running": all_at is not None,
        "seconds_to_all_running": all_at,
        "seconds_to_running": timeline,
        "peak_running_seen": peak,
        "rss_mb_before": base_rss,
        "rss_mb_running": rss_mb(server.pid),
        "server_threads": _threads(server.pid),
        "server_open_fds": _open_fds(server.pid),
        "cpu_sample_seconds": round(cpu_seconds, 1),
        "cpu_pct_while_running": (
            cpu_percent_of(server.pid, cpu_seconds) if cpu_seconds >= 1 else None
        ),
        "task_list": list_latency(
            server, "/namespaces/default/templates/sleepers/tasks", args.samples
        ),
        "template_list": list_latency(server, "/templates", args.samples),
        "running_after_lists": running_count(server, task_ids),
    }
    server.api("POST", "/namespaces/default/templates/sleepers/stop", expect=None)
    return figures


def _running_timeline(
    server: Server, task_ids: list[int], total: int, began: float, timeout: float
) -> tuple[dict[int, float], int]:
    """Seconds from the first run request until 25 %, 50 %, 75 % and all were running;
    the most seen running at once."""
    marks = sorted({total // 4, total // 2, 3 * total // 4, total})
    reached: dict[int, float] = {}
    peak = 0
    while time.monotonic() - began < timeout and len(reached) < len(marks):
        running = running_count(server, task_ids)
        if running < peak and peak < total:
            break  # instances end before the rest started: never all at once
        peak = max(peak, running)
        for mark in marks:
            if running >= mark and mark not in reached:
                reached[mark] = round(time.monotonic() - began, 2)
        time.sleep(0.2)
    return reached, peak


def _threads(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).num_threads())


def _open_fds(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).num_fds())


# -- 100,000 cron templates -----------------------------------------------------


def quiet_spec(index: int) -> dict[str, Any]:
    return script_template(f"quiet-{index:06d}", ":", trigger=QUIET_TRIGGER)


def seed_in_process(database_url: str, count: int) -> None:
    """What ``TemplateService.create`` writes for each template, ``SEED_BATCH`` at a time.

    On PostgreSQL ``SEED_THREADS`` transactions run at once (SQLite has one writer),
    and the tables are analyzed at the end.
    """
    store = Store(database_url)
    try:
        store.migrate()
        with store.write() as conn:
            template_store.ensure_namespace(conn, "default", datetime.now(UTC))
        threads = 1 if store.dialect == "sqlite" else SEED_THREADS
        with ThreadPoolExecutor(threads) as pool:
            starts = range(0, count, SEED_BATCH)
            for done in pool.map(lambda start: _seed_batch(store, start, count), starts):
                if done % 20000 == 0:
                    note(f"seeded {done} templates")
        if store.dialect == "postgresql":
            # What autovacuum does within a minute of so many inserts: without it the
            # planner takes the tables for empty (a server running for a while has them).
            with store.write() as conn:
                conn.exec_driver_sql("ANALYZE")
    finally:
        store.close()


def _seed_batch(store: Store, start: int, count: int) -> int:
    end = min(count, start + SEED_BATCH)
    with store.write() as conn:
        now = datetime.now(UTC)
        for index in range(start, end):
            _seed_one(conn, parse_spec(quiet_spec(index)), now)
    return end


def _seed_one(conn: sa.Connection, spec: TemplateSpec, now: datetime) -> None:
    next_fire_at = next_fire_after(spec, now)
    template_id = template_store.insert_template(conn, "default", spec, now, next_fire_at)
    template = Template(
        id=template_id,
        namespace="default",
        name=spec.name,
        version=1,
        spec=spec,
        suspended=False,
        created_at=now,
        updated_at=now,
        next_fire_at=next_fire_at,
        hook_token=None,
    )
    template_event(conn, template, Reason.CREATED, "created version 1", now)


def query_plans(database_url: str, count: int) -> dict[str, list[str]]:
    """EXPLAIN the statements of a firing batch of 500 and of a template-list page."""
    store = Store(database_url)
    try:
        with store.read() as conn:
            ids = [row.id for row in conn.execute(sa.select(templates.c.id).limit(500))]
            return {
                name: _plan(conn, statement) for name, statement in _statements(ids, count).items()
            }
    finally:
        store.close()


def _statements(ids: list[str], count: int) -> dict[str, ClauseElement]:
    current = sa.and_(
        template_versions.c.template_id == templates.c.id,
        template_versions.c.version == templates.c.version,
    )
    return {
        # As the scheduler's batch runs them (store/templates.py).
        "firing_lock_and_read_500": sa.select(templates)
        .where(templates.c.id.in_(ids))
        .order_by(templates.c.id)
        .with_for_update(key_share=True),
        "firing_current_specs_500": sa.select(
            templates.c.id, templates.c.version, template_versions.c.spec
        )
        .select_from(templates.join(template_versions, current))
        .where(templates.c.id.in_(ids)),
        "firing_set_next_fires_500": templates.update()
        .where(templates.c.id.in_(ids))
        .values(next_fire_at=datetime(2100, 1, 1, tzinfo=UTC)),
        "list_first_page": template_store.template_page_query("default", 100, 0),
        "list_deep_page": template_store.template_page_query("default", 100, count - 100),
        "list_search": template_store.template_page_query("default", 100, 0, "quiet-0001"),
    }


def _plan(conn: sa.Connection, statement: ClauseElement) -> list[str]:
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()
        return [str(row[-1]) for row in rows]
    text = f"EXPLAIN {compiled}".replace("%", "%%")
    return [str(row[0]) for row in conn.exec_driver_sql(text).all()]


def templates_part(space: Any, args: argparse.Namespace) -> dict[str, Any]:
    count = args.cron_templates
    url = space.database("templates")
    seeded_s = 0.0
    if args.seed == "store":
        began = time.monotonic()
        seed_in_process(url, count)
        seeded_s = time.monotonic() - began
        note(f"seeded {count} templates in process in {seeded_s:.1f} s")
        plans = query_plans(url, count)
        for name, lines in plans.items():
            note(f"plan of {name}:\n    " + "\n    ".join(lines))
    began = time.monotonic()
    with running_server(space, args, "templates", database_url=url) as server:
        started_s = time.monotonic() - began
        if args.seed == "api":
            began = time.monotonic()
            server.create_templates([quiet_spec(i) for i in range(count)], args.create_threads)
            seeded_s = time.monotonic() - began
            note(f"created {count} templates over the API in {seeded_s:.1f} s")
        figures = _measure_templates(server, args, seeded_s, started_s)
    if args.seed == "store":
        figures["query_plans"] = plans
    return figures


def _measure_templates(
    server: Server, args: argparse.Namespace, seeded_s: float, started_s: float
) -> dict[str, Any]:
    count = args.cron_templates
    time.sleep(2)  # let the last writes and the pool settle
    rss_idle = rss_mb(server.pid)
    note(f"server up in {started_s:.1f} s, RSS {rss_idle} MB; idling {args.idle_seconds} s")
    idle = cpu_percent_of(server.pid, args.idle_seconds)
    task_ids = [
        server.api("POST", "/namespaces/default/templates/quiet-000000/run", expect=201)["id"]
        for _ in range(MANUAL_RUNS)
    ]
    path = "/namespaces/default/templates"
    deep = max(0, count - 100)
    figures = {
        "templates": count,
        "seeded_by": args.seed,
        "seconds_to_seed": round(seeded_s, 1),
        "templates_seeded_per_s": round(count / seeded_s, 1) if seeded_s else None,
        "seconds_to_start_server": round(started_s, 1),
        "rss_mb_with_templates": rss_idle,
        "idle_cpu_pct_one_core": idle,
        "template_list_first_page": list_latency(server, path, args.samples),
        "template_list_deep_page": list_latency(server, path, args.samples, offset=deep),
        "template_list_search_100_hits": list_latency(server, path, args.samples, q="quiet-0001"),
        "template_list_search_last": list_latency(server, path, args.samples, q=f"{count - 1:06d}"),
        "template_list_all_namespaces": list_latency(server, "/templates", args.samples),
        "task_list_one_template": list_latency(server, f"{path}/quiet-000000/tasks", args.samples),
        "rss_mb_after_lists": rss_mb(server.pid),
    }
    note(f"{len(task_ids)} manual runs of quiet-000000 listed; done")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=2000, help="0 skips this part")
    parser.add_argument("--sleep", type=int, default=30, help="seconds each instance sleeps")
    parser.add_argument("--cron-templates", type=int, default=100000, help="0 skips this part")
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--cpu-seconds", type=float, default=5, help="CPU sample while running")
    parser.add_argument("--samples", type=int, default=50, help="requests per list latency")
    parser.add_argument(
        "--seed",
        choices=["store", "api"],
        default="store",
        help="store: the API's rows written in process before the server starts "
        "(default); api: POST each template",
    )
    parser.add_argument("--create-threads", type=int, default=16, help="clients for --seed api")
    add_common_args(parser)
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    targets = []
    with workspace(args) as space:
        if args.cron_templates > 0:
            figures["cron_templates"] = templates_part(space, args)
            idle = figures["cron_templates"]["idle_cpu_pct_one_core"]
            targets.append(target("idle CPU % of one core", idle, IDLE_CPU_TARGET))
        if args.instances > 0:
            extra = capacity_args(args.instances)
            note(f"server capacity for the instances: {' '.join(extra)}")
            with running_server(space, args, "instances", extra_args=extra) as server:
                figures["instances"] = instances_part(server, args)
            running = float(figures["instances"]["all_running"])
            targets.append(target("all instances running at once", running, 1.0, False))
        sizes = {
            "instances": args.instances,
            "sleep": args.sleep,
            "cron_templates": args.cron_templates,
        }
        emit("scale", space, sizes, figures, targets)


if __name__ == "__main__":
    main()
