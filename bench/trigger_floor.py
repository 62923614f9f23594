"""Trigger floor: how close to the no-op ceiling a durable HTTP trigger can come in
jobyard's framework on this machine, with nothing else running.

``bench/_floor_app.py`` is the least such a trigger can be (FastAPI on uvicorn, the
JSON body validated by pydantic, one row group-committed to SQLite before the 202).
The same clients as ``throughput.py`` (``--clients`` aiohttp connections) send
``--count`` requests to its no-op, then to its trigger, then to the no-op again.
The ratio of the trigger's rate to the no-op's is the most that throughput.py's
"acceptance / no-op ceiling" could reach if jobyard's own trigger cost nothing
beyond this, and ran no tasks meanwhile (bench/README.md, session 10).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
from _common import ROOT, add_common_args, emit, free_port, note, summary_ms, workspace
from throughput import Clients, Hammered, hammer, rate


@contextlib.contextmanager
def floor_app(data_dir: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    app = Path(__file__).with_name("_floor_app.py")
    command = [sys.executable, str(app), str(port), str(data_dir / "floor.db")]
    process = subprocess.Popen(command, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10000, help="requests of each kind")
    parser.add_argument("--clients", type=int, default=32, help="concurrent HTTP clients")
    add_common_args(parser)
    args = parser.parse_args()
    if args.database_url:
        parser.error("the floor writes to SQLite only (its app is SQLite's group commit)")
    with workspace(args) as space, floor_app(space.root) as (url, pid):

        async def noop(clients: Clients, number: int) -> int:
            return await clients.get("/healthz")

        async def trigger(clients: Clients, number: int) -> int:
            return await clients.post("/hooks/t", {"envs": [{"name": "N", "value": str(number)}]})

        def run(request: object) -> Hammered:
            return asyncio.run(hammer(Clients("aiohttp", url, args.clients), args.count, request))

        before = run(noop)
        server_cpu = psutil.Process(pid).cpu_times()
        triggers = run(trigger)
        used = psutil.Process(pid).cpu_times()
        after = run(noop)
    ceiling = round((rate(args.count, before.seconds) + rate(args.count, after.seconds)) / 2, 1)
    accepted = rate(len(triggers.accepted), triggers.seconds)
    note(f"floor: {accepted} durable triggers/s, no-op {ceiling}/s")
    cpu_ms = 1000 * (used.user + used.system - server_cpu.user - server_cpu.system) / args.count
    figures = {
        "triggers_accepted_per_s": accepted,
        "trigger_response": summary_ms(triggers.times),
        "noop_ceiling_per_s": ceiling,
        "noop_ceiling_before_after_per_s": [
            rate(args.count, before.seconds),
            rate(args.count, after.seconds),
        ],
        "floor_ratio": round(accepted / ceiling, 3),
        "server_cpu_ms_per_trigger": round(cpu_ms, 3),
        "refused": triggers.refused,
        "no_answer": triggers.broken + before.broken + after.broken,
    }
    # Not a target of the issue: this says whether throughput.py's can be reached.
    emit("trigger_floor", space, {"count": args.count, "clients": args.clients}, figures, [])


if __name__ == "__main__":
    main()
