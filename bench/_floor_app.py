"""The least a durable HTTP trigger can be in jobyard's framework: the floor that
``bench/trigger_floor.py`` measures against the bare no-op.

FastAPI on uvicorn, as the server runs them. ``POST /hooks/{token}`` reads the JSON
body, validates it with pydantic, and hands one row to a thread that writes every
row waiting in one SQLite transaction (WAL, ``synchronous=NORMAL``, as jobyard's
store); the request is answered 202 once its row has committed. Nothing else: no
template, no token, no instances, no events, no controller, nothing run.
``GET /healthz`` is the no-op. Run as ``python bench/_floor_app.py PORT DB``.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import sys
import threading
from concurrent.futures import Future

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class Env(BaseModel):
    name: str
    value: str


class Overrides(BaseModel):
    envs: list[Env] = []


class GroupCommit:
    """One writer thread; each row's future is answered once its transaction commits."""

    def __init__(self, path: str) -> None:
        self._queue: queue.SimpleQueue[tuple[str, Future[int]]] = queue.SimpleQueue()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, body TEXT)")
        threading.Thread(target=self._run, daemon=True).start()

    def submit(self, body: str) -> Future[int]:
        answer: Future[int] = Future()
        self._queue.put((body, answer))
        return answer

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < 64:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._db.execute("BEGIN IMMEDIATE")
            insert = "INSERT INTO tasks (body) VALUES (?)"
            ids = [self._db.execute(insert, (body,)).lastrowid for body, _ in batch]
            self._db.execute("COMMIT")
            for (_, answer), row_id in zip(batch, ids, strict=True):
                answer.set_result(row_id or 0)


def app(path: str) -> FastAPI:
    writes = GroupCommit(path)
    api = FastAPI()

    @api.post("/hooks/{token}", status_code=202)
    async def hook(token: str, request: Request) -> JSONResponse:
        overrides = Overrides.model_validate_json(await request.body())
        row_id = await asyncio.wrap_future(writes.submit(overrides.model_dump_json()))
        return JSONResponse({"id": row_id, "status": "pending"}, status_code=202)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return api


if __name__ == "__main__":
    port, path = int(sys.argv[1]), sys.argv[2]
    sys.setswitchinterval(0.001)  # as the server
    uvicorn.run(app(path), host="127.0.0.1", port=port, log_level="warning")
