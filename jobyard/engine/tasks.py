"""Use cases on tasks: run, stop, read, delete; and the event search."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from functools import partial
from pathlib import Path

from sqlalchemy.engine import Connection

from jobyard.domain import Event, Instance, Reason, Task, Template, TriggerKind
from jobyard.engine.batching import LaunchBatcher
from jobyard.engine.clock import Clock
from jobyard.engine.controller import Controller, Orphans
from jobyard.engine.events import task_event
from jobyard.engine.hooks import locked_as_seen
from jobyard.engine.launching import Launched, TaskRequest
from jobyard.engine.specs import SpecCache
from jobyard.runners.base import Runner
from jobyard.spec import RunOverrides
from jobyard.store import Store
from jobyard.store import events as event_store
from jobyard.store import instances as instance_store
from jobyard.store import tasks as task_store
from jobyard.store import templates as template_store


class TaskService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        controller: Controller,
        runner: Runner,
        specs: SpecCache,
        launches: LaunchBatcher,
    ) -> None:
        self._launches = launches
        self._store = store
        self._clock = clock
        self._controller = controller
        self._runner = runner
        self._specs = specs

    def run(
        self,
        namespace: str,
        name: str,
        overrides: RunOverrides,
        trigger: TriggerKind = TriggerKind.MANUAL,
        event_id: str | None = None,
    ) -> Launched:
        """Start a task now (raises ConcurrencyForbidden under Forbid)."""
        request = TaskRequest(trigger=trigger, overrides=overrides, event_id=event_id)
        return self._launches.launch(partial(_locked, namespace, name), request)

    def run_by_id(self, template_id: str, request: TaskRequest) -> Launched:
        """Start a task of the template with this id (HTTP triggers, SAE ExecJob)."""
        return self._launches.launch(partial(_locked_by_id, template_id), request)

    def submit_as_seen(self, template: Template, request: TaskRequest) -> Future[Launched]:
        """Start a task of ``template`` as the caller saw it (HTTP triggers, which
        keep templates between requests); TemplateChanged if it has changed since.

        Returns at once: the future is answered once the task is written.
        """
        seen = (template.id, template.version, template.hook_token, template.suspended)
        return self._launches.submit(partial(locked_as_seen, template), request, seen)

    def stop_task(self, task_id: int) -> Task:
        now = self._clock.now()
        with self._store.write() as conn:
            task = task_store.get_task(conn, task_id)
            if task_store.begin_ending(conn, task.id, Reason.STOPPED, "stopped by request"):
                task_event(conn, task, Reason.STOPPING, "stop requested", now)
            task = task_store.get_task(conn, task_id)
        self._controller.wake()
        return task

    def stop_template(self, namespace: str, name: str) -> list[Task]:
        now = self._clock.now()
        with self._store.write() as conn:
            template = template_store.get_template(conn, namespace, name)
            stopping = []
            for task in task_store.active_tasks(conn, template.id):
                if task_store.begin_ending(conn, task.id, Reason.STOPPED, "stopped by request"):
                    task_event(conn, task, Reason.STOPPING, "stop requested", now)
                stopping.append(task_store.get_task(conn, task.id))
        self._controller.wake()
        return stopping

    def delete_task(self, task_id: int) -> None:
        """Delete the task record and its logs; a live task's processes are killed."""
        with self._store.write() as conn:
            task = task_store.get_task(conn, task_id)
            live = [i for i in instance_store.instances_of(conn, [task_id]) if i.is_live]
            task_store.delete_task(conn, task_id)
        grace = float(
            self._specs.get(task.template_id, task.template_version).termination_grace_period
        )
        self._controller.discard(Orphans([(task_id, i.id, grace) for i in live], [task_id]))

    # -- reading --------------------------------------------------------------

    def get(self, task_id: int) -> Task:
        with self._store.read() as conn:
            return task_store.get_task(conn, task_id)

    def list_for_template(
        self, namespace: str, name: str, statuses: Sequence[str] | None, limit: int, offset: int
    ) -> list[Task]:
        with self._store.read() as conn:
            template = template_store.get_template(conn, namespace, name)
            return task_store.list_tasks(conn, template.id, statuses, limit, offset)

    def instances(self, task_id: int) -> list[Instance]:
        with self._store.read() as conn:
            task_store.get_task(conn, task_id)
            return instance_store.instances_of(conn, [task_id])

    def instance(self, instance_id: int) -> Instance:
        with self._store.read() as conn:
            return instance_store.get_instance(conn, instance_id)

    def log_path(self, instance: Instance) -> Path:
        return self._runner.log_path(instance.task_id, instance.id)

    def events(self, query: event_store.EventQuery) -> list[Event]:
        with self._store.read() as conn:
            return event_store.search_events(conn, query)


def _locked(namespace: str, name: str, conn: Connection) -> Template:
    return template_store.locked_template(conn, namespace, name)


def _locked_by_id(template_id: str, conn: Connection) -> Template:
    return template_store.locked_template_by_id(conn, template_id)
