"""Throughput: ``--count`` tasks of a one-line script triggered over HTTP by
``--clients`` concurrent clients.

Figures: tasks completed per second end to end (first request sent -> last task's
``finished_at``), trigger requests accepted per second and their p99 response time,
and the ceiling: the same clients on the server's bare no-op endpoint (``GET
/healthz``, a plain FastAPI route) in the same run, before the triggers and again
after every task has ended; the ratio is to the mean of the two. Every
request carries its number in an env override, so a lost or doubled task shows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import httpx
import psutil
from _common import (
    Server,
    add_common_args,
    emit,
    note,
    parse_time,
    running_server,
    script_template,
    summary_ms,
    target,
    transactions,
    wait_until,
    workspace,
)

TASKS_PER_S_TARGET = 300.0
ACCEPT_RATIO_TARGET = 0.4


@dataclass
class Hammered:
    """What ``count`` requests from ``clients`` workers came to."""

    seconds: float = 0.0
    times: list[float] = field(default_factory=list)  # of the requests answered
    accepted: set[int] = field(default_factory=set)  # the numbers answered 2xx
    refused: int = 0  # answered, but not 2xx
    broken: int = 0  # no answer: the connection failed (counted, not retried)


class Clients:
    """``clients`` concurrent keep-alive connections of one HTTP client library: a
    ``get`` and a ``post`` that return the status code, and the library's transport
    errors. aiohttp by default: httpx, the first load generator, spends about twenty
    times the CPU per request, and the clients share the cores with the server
    (bench/README.md, session 10)."""

    def __init__(self, kind: str, base_url: str, clients: int) -> None:
        self.kind, self.base_url, self.clients = kind, base_url, clients
        self.transport_errors: tuple[type[Exception], ...] = (
            (aiohttp.ClientError, asyncio.TimeoutError)
            if kind == "aiohttp"
            else (httpx.TransportError,)
        )

    async def __aenter__(self) -> Clients:
        if self.kind == "aiohttp":
            connector = aiohttp.TCPConnector(limit=self.clients)
            timeout = aiohttp.ClientTimeout(total=120)
            self._session = aiohttp.ClientSession(
                self.base_url, connector=connector, timeout=timeout
            )
        else:
            limits = httpx.Limits(
                max_connections=self.clients, max_keepalive_connections=self.clients
            )
            self._client = httpx.AsyncClient(base_url=self.base_url, timeout=120, limits=limits)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.kind == "aiohttp":
            await self._session.close()
        else:
            await self._client.aclose()

    async def get(self, path: str) -> int:
        if self.kind == "httpx":
            return (await self._client.get(path)).status_code
        async with self._session.get(path) as response:
            await response.read()
            return response.status

    async def post(self, path: str, body: Any) -> int:
        if self.kind == "httpx":
            return (await self._client.post(path, json=body)).status_code
        async with self._session.post(path, json=body) as response:
            await response.read()
            return response.status


async def hammer(clients: Clients, count: int, request: Any) -> Hammered:
    numbers = iter(range(count))
    done = Hammered()
    async with clients:

        async def worker() -> None:
            for number in numbers:
                began = time.perf_counter()
                try:
                    status = await request(clients, number)
                except clients.transport_errors as err:
                    note(f"request {number}: no answer ({type(err).__name__})")
                    done.broken += 1
                    continue
                done.times.append(time.perf_counter() - began)
                if 200 <= status < 300:
                    done.accepted.add(number)
                else:
                    done.refused += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients.clients)))
        done.seconds = time.perf_counter() - began
        return done


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def all_done(server: Server, name: str) -> bool:
    path = f"/namespaces/default/templates/{name}/tasks"
    return not any(
        server.api("GET", path, params={"status": status, "limit": 1})
        for status in ("pending", "running")
    )


def cpu_seconds(server_pid: int, database_url: str) -> dict[str, float]:
    server = psutil.Process(server_pid).cpu_times()
    clients = psutil.Process().cpu_times()
    used = {
        "server": server.user + server.system,
        "instances": server.children_user + server.children_system,
        "clients": clients.user + clients.system,
    }
    if database_url.startswith("postgresql"):
        used["database"] = postgres_cpu_seconds()
    return used


def postgres_cpu_seconds() -> float:
    """Every PostgreSQL process on this machine: its backends (the server's pool keeps
    its connections for the run) and its own writers. SQLite works in the server's
    threads, so it is in the server's figure."""
    total = 0.0
    for process in psutil.process_iter(["name", "cpu_times"]):
        times = process.info["cpu_times"]
        if process.info["name"] == "postgres" and times is not None:
            total += times.user + times.system
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10000, help="tasks to trigger")
    parser.add_argument("--clients", type=int, default=32, help="concurrent HTTP clients")
    parser.add_argument("--script", default=":", help="the one-line script")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the tasks")
    parser.add_argument(
        "--cpu",
        type=float,
        default=0.01,
        help="the template's CPU request in cores (the default 0.01: 200 at once on 2 cores)",
    )
    parser.add_argument(
        "--client",
        choices=("aiohttp", "httpx"),
        default="aiohttp",
        help="the HTTP client library of the load generator",
    )
    parser.add_argument("--memory-mb", type=int, default=16, help="the template's memory request")
    add_common_args(parser)
    args = parser.parse_args()
    with workspace(args) as space, running_server(space, args) as server:
        name = "throughput"
        spec = script_template(
            name,
            args.script,
            trigger={"type": "http", "methods": ["POST"]},
            resources={"cpu": args.cpu, "memory_mb": args.memory_mb},
        )
        hook = server.create_templates([spec])[0]["trigger"]["url"]

        async def noop(clients: Clients, number: int) -> int:
            return await clients.get("/healthz")

        async def trigger(clients: Clients, number: int) -> int:
            return await clients.post(hook, {"envs": [{"name": "BENCH_N", "value": str(number)}]})

        def clients() -> Clients:
            return Clients(args.client, server.url, args.clients)

        ceiling = asyncio.run(hammer(clients(), args.count, noop))
        note(f"no-op ceiling: {rate(args.count, ceiling.seconds)} requests/s")
        xacts_before = transactions(server.database_url)
        cpu_before = cpu_seconds(server.pid, server.database_url)
        began = datetime.now(UTC)
        triggers = asyncio.run(hammer(clients(), args.count, trigger))
        accepted = len(triggers.accepted)
        note(f"triggers: {rate(accepted, triggers.seconds)} accepted/s; waiting for the tasks")
        done = wait_until(lambda: all_done(server, name), args.timeout, interval=0.5)
        xacts_after = transactions(server.database_url)
        cpu_used = {
            k: v - cpu_before[k] for k, v in cpu_seconds(server.pid, server.database_url).items()
        }
        tasks = server.tasks_of(name)
        # The ceiling again once every task has ended: on a shared host the machine's
        # speed drifts within a run, and the ratio is taken to the mean of the two.
        after = asyncio.run(hammer(clients(), args.count, noop))
        note(f"no-op ceiling after: {rate(args.count, after.seconds)} requests/s")
    numbers = Counter(int(t["overrides"]["envs"][0]["value"]) for t in tasks)
    succeeded = [t for t in tasks if t["status"] == "succeeded"]
    last = max((parse_time(t["finished_at"]) for t in succeeded), default=began)
    end_to_end_s = (last - began).total_seconds()
    before_after = [rate(args.count, ceiling.seconds), rate(args.count, after.seconds)]
    ceiling_rate = round(sum(before_after) / 2, 1)
    accept_rate = rate(accepted, triggers.seconds)
    figures: dict[str, Any] = {
        "tasks_completed_per_s": rate(len(succeeded), end_to_end_s),
        "end_to_end_s": round(end_to_end_s, 2),
        "triggers_accepted_per_s": accept_rate,
        "trigger_response": summary_ms(triggers.times),
        "noop_ceiling_per_s": ceiling_rate,
        "noop_ceiling_before_after_per_s": before_after,
        "noop_response": summary_ms(ceiling.times + after.times),
        "accept_to_ceiling_ratio": round(accept_rate / ceiling_rate, 3),
        "refused": triggers.refused,
        # Requests whose connection was cut before an answer: not accepted, so not
        # counted as lost; the no-op's are counted too. Expected 0 since the server
        # outwaits the clients' keep-alive (bench/README.md, session 8).
        "no_answer": {"triggers": triggers.broken, "noop": ceiling.broken + after.broken},
        "tasks": len(tasks),
        "succeeded": len(succeeded),
        # An accepted trigger whose task is missing.
        "lost": sum(1 for n in triggers.accepted if n not in numbers),
        "duplicated": sum(c - 1 for c in numbers.values()),
        "all_ended_in_time": done,
        # CPU per task in the trigger phase (to the last task's end, and the
        # polls for it): the server's own threads, the instances it reaped (each
        # a wrapper and its script), this benchmark's HTTP clients, and on
        # PostgreSQL the database's processes. The machine cannot complete more
        # tasks per second than cores / their sum.
        "cpu_ms_per_task": {k: round(1000 * v / args.count, 2) for k, v in cpu_used.items()},
        "cpu_bound_tasks_per_s": rate(args.count * (os.cpu_count() or 1), sum(cpu_used.values())),
        # PostgreSQL only: every transaction of the trigger phase (a few are the
        # benchmark's own "all done?" polls, 2 every 0.5 s), per task.
        "db_transactions_per_task": None
        if xacts_before is None or xacts_after is None
        else round((xacts_after - xacts_before) / args.count, 2),
    }
    targets = [
        target(
            "tasks completed per s", figures["tasks_completed_per_s"], TASKS_PER_S_TARGET, False
        ),
        target(
            "acceptance / no-op ceiling",
            figures["accept_to_ceiling_ratio"],
            ACCEPT_RATIO_TARGET,
            False,
        ),
        target("lost", figures["lost"], 0),
        target("duplicated", figures["duplicated"], 0),
    ]
    sizes = {
        "count": args.count,
        "clients": args.clients,
        "cpu": args.cpu,
        "memory_mb": args.memory_mb,
        "client": args.client,
    }
    emit("throughput", space, sizes, figures, targets)


if __name__ == "__main__":
    main()
