"""The engine: store, runner, scheduler and controller wired together."""

from __future__ import annotations

import logging
from pathlib import Path

from jobyard.config import Settings
from jobyard.engine.admission import Admitter, node_capacity
from jobyard.engine.batching import LaunchBatcher
from jobyard.engine.clock import Clock, SystemClock
from jobyard.engine.controller import Controller
from jobyard.engine.hooks import HookedTemplates
from jobyard.engine.launches import Launcher
from jobyard.engine.packages import PackageLayout, PackageService
from jobyard.engine.preparing import Preparer
from jobyard.engine.recovery import recover
from jobyard.engine.scheduler import Scheduler
from jobyard.engine.specs import SpecCache
from jobyard.engine.tasks import TaskService
from jobyard.engine.templates import TemplateService
from jobyard.engine.tokens import TokenService
from jobyard.runners.archives import ArchiveLimits
from jobyard.runners.base import InstanceExit, Runner
from jobyard.runners.containers import detect_engine, engine_prefix
from jobyard.runners.local import LocalRunner
from jobyard.runners.stacks import Toolbox, default_search_path
from jobyard.store import Store
from jobyard.store import templates as template_store

logger = logging.getLogger(__name__)


class Engine:
    """Owns every long-lived part; ``start`` recovers and begins, ``stop`` ends cleanly."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.resolved_database_url)
        self.specs = SpecCache(self.store)
        self.runner: Runner = LocalRunner(
            settings.data_dir, self._on_exit, settings.resource_limits
        )
        self.admitter = Admitter(node_capacity(settings))
        self.containers = detect_engine(settings.container_engine, engine_prefix(settings.data_dir))
        self.preparer, self.packages = self._package_parts(settings)
        self.launcher = Launcher(self.specs, self.containers, self.preparer)
        self.controller = Controller(
            self.store,
            self.runner,
            self.clock,
            self.specs,
            self.launcher,
            self.admitter,
            settings.resync_seconds,
        )
        self.scheduler = Scheduler(self.store, self.clock, self.controller.wake)
        self.templates = TemplateService(
            self.store, self.clock, self.scheduler, self.controller, self.containers
        )
        # Woken after the commit, so that the controller's read finds the tasks.
        self.launches = LaunchBatcher(self.store, self.clock, self.controller.wake)
        self.tasks = TaskService(
            self.store, self.clock, self.controller, self.runner, self.specs, self.launches
        )
        self.hooked = HookedTemplates(self.store)
        self.tokens = TokenService(self.store, self.clock, settings.admin_token)

    def _on_exit(self, exit: InstanceExit) -> None:
        self.controller.on_exit(exit)

    def _package_parts(self, settings: Settings) -> tuple[Preparer, PackageService]:
        layout = PackageLayout(settings.data_dir / "packages")
        limits = ArchiveLimits(max_unpacked_bytes=settings.max_unpacked_bytes)
        toolbox = Toolbox(
            settings.runtime_path or default_search_path(), settings.prepare_timeout_seconds
        )
        # The controller is made after the launcher that needs the preparer: wake it late.
        preparer = Preparer(
            self.store, self.clock, layout, toolbox, limits, lambda: self.controller.wake()
        )
        packages = PackageService(
            self.store, self.clock, layout, settings.max_package_bytes, limits, preparer.forget
        )
        logger.info("package runtimes are looked up in %s", toolbox.search_path)
        return preparer, packages

    def start(self) -> None:
        self.store.migrate()
        with self.store.write() as conn:
            template_store.ensure_namespace(
                conn, template_store.DEFAULT_NAMESPACE, self.clock.now(), "the default namespace"
            )
        recover(self.store, self.runner, self.specs, self.clock.now())
        self.packages.sweep()
        self.controller.start()
        self.scheduler.start()
        self.controller.wake()
        logger.info("engine started: database %s, data in %s", self.store.dialect, self.data_dir)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def stop(self) -> None:
        """Stop scheduling and watching; running instances keep running and are
        adopted by the next start."""
        self.scheduler.stop()
        self.launches.close()
        self.preparer.close()
        self.controller.stop()
        self.runner.close()
        self.store.close()
        logger.info("engine stopped")
