"""After a restart (clean or a crash): account for every instance the database
says is live, before the controller makes any new decision."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from datetime import datetime

from sqlalchemy.engine import Connection

from jobyard.domain import Instance, InstanceStatus, NewEvent, Reason, SourceType
from jobyard.engine.events import instance_event
from jobyard.engine.exits import outcome, record_exits
from jobyard.engine.specs import SpecCache
from jobyard.errors import NotFound
from jobyard.runners.base import InstanceExit, Recovered, Runner
from jobyard.store import Store
from jobyard.store import events as event_store
from jobyard.store import instances as instance_store
from jobyard.store import tasks as task_store

logger = logging.getLogger(__name__)


def recover(store: Store, runner: Runner, specs: SpecCache, now: datetime) -> None:
    with store.read() as conn:
        live = instance_store.live_instances(conn)
    found = [(instance, runner.recover(instance.task_id, instance.id)) for instance in live]
    with store.write() as conn:
        for instance, recovered in found:
            _account(conn, instance, recovered, now)
        tally = Counter(recovered.state for _, recovered in found)
        if found:
            _summary(conn, tally, now)
    for instance, recovered in found:
        if recovered.state == "running" and instance.stop_requested:
            runner.stop(instance.id, _grace(store, specs, instance))
    _sweep(store, runner)


def _account(conn: Connection, instance: Instance, recovered: Recovered, now: datetime) -> None:
    try:
        task = task_store.get_task(conn, instance.task_id)
    except NotFound:
        return
    if recovered.state == "running":
        assert recovered.pid is not None
        if instance.status is InstanceStatus.PENDING:
            instance_store.mark_instance_running(conn, instance.id, recovered.pid, now)
            task_store.mark_task_running(conn, task.id, now)
        text = f"instance {instance.index} still runs (pid {recovered.pid}); watching it again"
        instance_event(conn, task, instance, Reason.INSTANCE_ADOPTED, text, now)
    elif recovered.state == "exited":
        exit = InstanceExit(instance.id, recovered.exit_code, instance.stop_requested)
        if recovered.exit is not None:  # with its OOM kill and usage
            exit = dataclasses.replace(recovered.exit, stopped=instance.stop_requested)
        record_exits(conn, [exit], now)
    elif instance.status is InstanceStatus.RUNNING:
        exit = InstanceExit(instance.id, None, instance.stop_requested)
        status, reason, message = outcome(exit, task, instance)
        if status is InstanceStatus.LOST:
            message = "its process was gone when the server restarted"
        instance_store.finish_instance(conn, instance.id, status, None, reason, message, now)
        instance_event(conn, task, instance, Reason.INSTANCE_LOST, message, now)


def _summary(conn: Connection, tally: Counter[str], now: datetime) -> None:
    text = (
        f"restart: {tally['running']} instance(s) still running and adopted, "
        f"{tally['exited']} ended while the server was down, {tally['gone']} gone"
    )
    logger.info(text)
    event = NewEvent(SourceType.SCHEDULER, "jobyard", Reason.RECOVERED, text)
    event_store.add_event(conn, event, now)


def _grace(store: Store, specs: SpecCache, instance: Instance) -> float:
    with store.read() as conn:
        task = task_store.get_task(conn, instance.task_id)
    return float(specs.get(task.template_id, task.template_version).termination_grace_period)


def _sweep(store: Store, runner: Runner) -> None:
    """Kill and remove what is on disk for tasks the database no longer has."""
    on_disk = runner.stored_task_ids()
    if not on_disk:
        return
    with store.read() as conn:
        known = task_store.existing_task_ids(conn, on_disk)
    for task_id in set(on_disk) - known:
        logger.info("discarding files and processes of deleted task %s", task_id)
        runner.discard_task(task_id)
