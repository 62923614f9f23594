"""Code packages: receive uploads, keep their blobs, list and delete them.

A package is content-addressed: its digest is the sha256 of its bytes, and the
same bytes uploaded twice are one package. Blobs live once per digest under
``data_dir/packages/blobs/<hex>`` whatever the namespaces that hold them; a
namespace's row says it has the package. A blob goes when no namespace does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Connection

from jobyard.domain import NewEvent, Package, Reason, SourceType
from jobyard.engine.clock import Clock
from jobyard.errors import BadRequest, Conflict, InvalidSpec, NotFound, PayloadTooLarge
from jobyard.runners import archives, unpacking
from jobyard.runners.archives import ArchiveLimits
from jobyard.spec import PackageDeployment, TemplateSpec
from jobyard.store import Store
from jobyard.store import events as event_store
from jobyard.store import packages as package_store
from jobyard.store import templates as template_store

logger = logging.getLogger(__name__)

DIGEST = re.compile(r"^(sha256:)?([0-9a-f]{64})$")
HEAD_BYTES = 4096
MAX_FILENAME = 255
# Called after a delete: (namespace, digest, whether any namespace still has it).
OnDeleted = Callable[[str, str, bool], None]


@dataclass(frozen=True)
class PackageLayout:
    """Where package files live under ``data_dir/packages``."""

    root: Path

    def blob(self, hex_digest: str) -> Path:
        return self.root / "blobs" / hex_digest

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    def unpacked(self, hex_digest: str) -> Path:
        return self.root / "unpacked" / hex_digest

    def prepared(self, hex_digest: str) -> Path:
        return self.root / "prepared" / hex_digest

    def log(self, hex_digest: str) -> Path:
        return self.prepared(hex_digest) / "prepare.log"


@dataclass(frozen=True)
class PackageInfo:
    package: Package
    used_by: list[tuple[str, int]] = field(default_factory=list)  # (template, version)


def parse_digest(text: str) -> str:
    """``sha256:<hex>`` from that or a bare hex digest; NotFound for anything else."""
    match = DIGEST.match(text.strip().lower())
    if match is None:
        raise NotFound(f"no package {text!r}: a package is named by its digest, sha256:<64 hex>")
    return f"sha256:{match.group(2)}"


def hex_of(digest: str) -> str:
    return digest.removeprefix("sha256:")


def clean_filename(raw: str | None) -> str:
    """The upload's base name, with only characters that are safe in a path."""
    base = (raw or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    cleaned = re.sub(r"[^A-Za-z0-9._+-]", "_", base)[:MAX_FILENAME]
    if not cleaned.strip("._"):
        raise BadRequest("the uploaded file has no usable name; send it with its file name")
    return cleaned


class Upload:
    """One upload being received: a temporary file, hashed and counted as it is written."""

    def __init__(self, directory: Path, limit: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"upload-{uuid.uuid4().hex}"
        self._file = self.path.open("xb")
        self._hash = hashlib.sha256()
        self._limit = limit
        self.size = 0
        self.head = b""

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._limit:
            self.discard()
            raise PayloadTooLarge(
                f"the package is larger than {_mib(self._limit)}, this server's limit "
                "(--max-package-size)"
            )
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        self._hash.update(data)
        self._file.write(data)

    @property
    def digest(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"

    def finish(self) -> None:
        self._file.close()

    def discard(self) -> None:
        """Close and remove the temporary file (safe to call more than once)."""
        self._file.close()
        self.path.unlink(missing_ok=True)


class PackageService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        layout: PackageLayout,
        max_package_bytes: int,
        limits: ArchiveLimits,
        on_deleted: OnDeleted,
    ) -> None:
        self._store = store
        self._clock = clock
        self._layout = layout
        self._max_bytes = max_package_bytes
        self._limits = limits
        self._on_deleted = on_deleted
        # Placing a blob and removing one never interleave.
        self._blobs = threading.Lock()

    def sweep(self) -> None:
        """Remove what a stopped or crashed server left half done: uploads, unpacking."""
        leftovers = [*self._layout.uploads.glob("upload-*")]
        leftovers += self._layout.root.joinpath("unpacked").glob(".*")
        for path in leftovers:
            logger.info("removing the leftover %s", path)
            unpacking.remove_tree(path)

    def require_namespace(self, namespace: str) -> None:
        with self._store.read() as conn:
            template_store.require_namespace(conn, namespace)

    def new_upload(self) -> Upload:
        return Upload(self._layout.uploads, self._max_bytes)

    def finish_upload(
        self, namespace: str, upload: Upload, filename: str | None
    ) -> tuple[PackageInfo, bool]:
        """Check the received file and store it; True when the namespace did not have it."""
        try:
            upload.finish()
            name = clean_filename(filename)
            kind = archives.package_kind(name, upload.head)
            if kind in archives.ARCHIVE_KINDS:
                archives.check_archive(upload.path, kind, self._limits)
            self.require_namespace(namespace)
            package = Package(namespace, upload.digest, name, kind, upload.size, self._clock.now())
            return self._store_package(package, upload)
        finally:
            upload.discard()

    def _store_package(self, package: Package, upload: Upload) -> tuple[PackageInfo, bool]:
        blob = self._layout.blob(hex_of(package.digest))
        with self._blobs:
            if not blob.exists():
                blob.parent.mkdir(parents=True, exist_ok=True)
                os.replace(upload.path, blob)
                blob.chmod(0o444)
            with self._store.write() as conn:
                created = package_store.insert_package(conn, package)
                if created:
                    text = (
                        f"package {package.filename} uploaded "
                        f"({package.kind}, {package.size} bytes)"
                    )
                    _event(conn, package, Reason.PACKAGE_UPLOADED, text, self._clock)
                stored = package_store.get_package(conn, package.namespace, package.digest)
                users = package_store.package_users(conn, package.namespace, package.digest)
        if stored is None:  # the namespace was deleted meanwhile
            raise NotFound(f"namespace {package.namespace!r} does not exist")
        return PackageInfo(stored, users.get(stored.digest, [])), created

    def list(self, namespace: str) -> list[PackageInfo]:
        """The namespace's packages, newest first, with the template versions using each."""
        with self._store.read() as conn:
            template_store.require_namespace(conn, namespace)
            found = package_store.list_packages(conn, namespace)
            users = package_store.package_users(conn, namespace)
        return [PackageInfo(p, users.get(p.digest, [])) for p in found]

    def get(self, namespace: str, digest: str) -> PackageInfo:
        digest = parse_digest(digest)
        with self._store.read() as conn:
            package = _require(conn, namespace, digest)
            users = package_store.package_users(conn, namespace, digest)
        return PackageInfo(package, users.get(digest, []))

    def delete(self, namespace: str, digest: str) -> None:
        """Delete the namespace's package; 409 while a template version uses it."""
        digest = parse_digest(digest)
        with self._blobs:
            with self._store.write() as conn:
                package = package_store.lock_package(conn, namespace, digest)
                if package is None:
                    _require(conn, namespace, digest)
                    raise NotFound(f"no package {digest} in namespace {namespace!r}")
                users = package_store.package_users(conn, namespace, digest).get(digest, [])
                if users:
                    raise Conflict(_still_used(digest, users))
                package_store.delete_package(conn, namespace, digest)
                _event(conn, package, Reason.PACKAGE_DELETED, "package deleted", self._clock)
                kept = package_store.stored_anywhere(conn, digest)
            if not kept:
                self._layout.blob(hex_of(digest)).unlink(missing_ok=True)
        self._on_deleted(namespace, digest, kept)

    def log_path(self, namespace: str, digest: str) -> Path:
        """The preparation log of the namespace's package; NotFound until it is prepared."""
        package = self.get(namespace, digest).package
        path = self._layout.log(hex_of(package.digest))
        if not path.is_file():
            raise NotFound(
                f"package {package.digest} has not been prepared yet; "
                "it is prepared when an instance first needs it"
            )
        return path


def check_package_reference(conn: Connection, namespace: str, spec: TemplateSpec) -> None:
    """A template may deploy only a package its namespace has, on a stack that can run it.

    Runs in the template's write transaction, with the package row locked, so a
    concurrent delete either sees the new version or happens before it."""
    deployment = spec.deployment
    if not isinstance(deployment, PackageDeployment):
        return
    package = package_store.lock_package(conn, namespace, deployment.package)
    if package is None:
        raise InvalidSpec(
            f"package {deployment.package} is not uploaded in namespace {namespace!r}; "
            f"upload it first (jobyard package push FILE, or POST "
            f"/api/v1/namespaces/{namespace}/packages)",
            field="deployment.package",
        )
    problem = stack_problem(deployment, package)
    if problem:
        raise InvalidSpec(problem, field="deployment")


def refuse_if_packages_left(conn: Connection, namespace: str) -> None:
    """A namespace is deleted only once its packages are (as with its templates)."""
    left = package_store.list_packages(conn, namespace)
    if left:
        raise Conflict(
            f"namespace {namespace!r} still has {len(left)} package"
            f"{'s' if len(left) > 1 else ''}; delete them first"
        )


def stack_problem(deployment: PackageDeployment, package: Package) -> str | None:
    """Why this package cannot run on this stack as configured, or None."""
    has_command = bool(deployment.command.strip())
    if deployment.stack == "java" and package.kind == archives.KIND_EXECUTABLE:
        return (
            f"the java stack runs a .jar, and {package.filename} is a single executable; "
            "use the binary stack for it"
        )
    is_archive = package.kind != archives.KIND_EXECUTABLE
    if deployment.stack == "binary" and is_archive and not has_command:
        return (
            f"{package.filename} is an archive: a binary package that is an archive needs "
            "a command naming the executable in it, such as './bin/app'"
        )
    return None


def _require(conn: Connection, namespace: str, digest: str) -> Package:
    template_store.require_namespace(conn, namespace)
    package = package_store.get_package(conn, namespace, digest)
    if package is None:
        raise NotFound(f"no package {digest} in namespace {namespace!r}")
    return package


def _still_used(digest: str, users: list[tuple[str, int]]) -> str:
    by_template: dict[str, list[int]] = {}
    for name, version in users:
        by_template.setdefault(name, []).append(version)
    parts = [
        f"template {name!r} (version{'s' if len(vs) > 1 else ''} {', '.join(map(str, vs))})"
        for name, vs in by_template.items()
    ]
    return (
        f"package {digest} is still used by {' and '.join(parts)}; a template keeps the "
        "package of every version it has, so delete those templates first"
    )


def _event(conn: Connection, package: Package, reason: Reason, message: str, clock: Clock) -> None:
    logger.info("%s %s in %s: %s", reason, package.digest, package.namespace, message)
    event = NewEvent(
        source_type=SourceType.PACKAGE,
        source_name=package.digest,
        reason=reason,
        message=message,
        namespace=package.namespace,
    )
    event_store.add_event(conn, event, clock.now())


def _mib(count: int) -> str:
    return f"{count / (1024 * 1024):g} MiB"
