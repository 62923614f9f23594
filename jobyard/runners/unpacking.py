"""Unpacking a checked archive into a read-only directory, and such directories' upkeep.

``unpack`` runs every check of ``archives`` again, then writes the files while
counting the bytes actually written (a zip's declared sizes may lie). Links are
made last, so nothing is ever written through one, and are then resolved for
real: none may lead outside the package.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import IO

from jobyard.errors import BadRequest
from jobyard.runners import archives
from jobyard.runners.archives import ArchiveLimits, Entry

CHUNK = 1024 * 1024


def unpack(path: Path, kind: str, dest: Path, limits: ArchiveLimits) -> None:
    """Unpack an archive into the new directory ``dest``, checking everything again.

    Links are made last, so nothing is ever written through one; afterwards
    each link is resolved for real and must stay inside ``dest``.
    """
    entries = {e.name: e for e in archives.checked_entries(path, kind, limits)}
    dest.mkdir(mode=0o755)
    written = _Counter(limits.max_unpacked_bytes)
    for name, stream in archives.file_streams(path, kind, entries):
        _write_file(dest, entries[name], stream, written)
    for entry in entries.values():
        if entry.type == "dir":
            (dest / entry.name).mkdir(mode=0o755, parents=True, exist_ok=True)
        elif entry.type == "hardlink":
            _make_parent(dest, entry.name)
            os.link(dest / entry.target, dest / entry.name)
    for entry in entries.values():
        if entry.type == "symlink":
            _make_parent(dest, entry.name)
            os.symlink(entry.target, dest / entry.name)
    _verify_links(dest)


class _Counter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0

    def add(self, count: int) -> None:
        self.total += count
        if self.total > self.limit:
            raise BadRequest(
                f"the archive unpacks to more than {archives.size_words(self.limit)}, "
                "the limit for unpacked packages"
            )


def _write_file(dest: Path, entry: Entry, stream: IO[bytes], written: _Counter) -> None:
    _make_parent(dest, entry.name)
    mode = 0o755 if entry.executable else 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(dest / entry.name, flags, mode)
    size = 0
    with os.fdopen(fd, "wb") as out:
        while True:
            try:
                chunk = stream.read(CHUNK)
            except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as err:
                raise BadRequest(f"entry '{entry.name}' cannot be read: {err}") from None
            if not chunk:
                break
            size += len(chunk)
            if size > entry.size:
                raise BadRequest(f"entry '{entry.name}' holds more bytes than it declares")
            written.add(len(chunk))
            out.write(chunk)


def _make_parent(dest: Path, name: str) -> None:
    parent = (dest / name).parent
    parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    if not parent.resolve().is_relative_to(dest.resolve()):
        raise BadRequest(f"entry '{name}' escapes the package")


def _verify_links(dest: Path) -> None:
    root = dest.resolve()
    for directory, dirnames, filenames in os.walk(dest):
        for name in (*dirnames, *filenames):
            path = Path(directory, name)
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                relative = path.relative_to(dest)
                raise BadRequest(f"entry '{relative}' is a link that leads outside the package")


def place_file(blob: Path, dest: Path, filename: str, executable: bool) -> None:
    """A single-file package: copied into ``dest`` under its name (appearing whole)."""
    dest.mkdir(mode=0o755, parents=True, exist_ok=True)
    partial = dest / f".{filename}.partial"
    shutil.copyfile(blob, partial)
    partial.chmod(0o755 if executable else 0o644)
    os.replace(partial, dest / filename)


# -- read-only trees -----------------------------------------------------------------


def freeze(root: Path) -> None:
    """chmod a-w, the whole tree (links themselves have no mode of their own)."""
    for directory, dirnames, filenames in os.walk(root):
        for name in filenames:
            _drop_write(Path(directory, name))
        for name in dirnames:
            _drop_write(Path(directory, name))
    _drop_write(root)


def _drop_write(path: Path) -> None:
    mode = path.lstat().st_mode
    if not stat.S_ISLNK(mode):
        path.chmod(stat.S_IMODE(mode) & ~0o222)


def thaw(root: Path) -> None:
    """Make a frozen tree's directories writable again (to add to it or remove it)."""
    for directory, dirnames, _ in os.walk(root):
        for name in dirnames:
            path = Path(directory, name)
            if not path.is_symlink():
                path.chmod(0o755)
    if root.is_dir() and not root.is_symlink():
        root.chmod(0o755)


def remove_tree(root: Path) -> None:
    """rm -rf of a (possibly frozen) tree; a missing one is fine."""
    if not root.exists() and not root.is_symlink():
        return
    if root.is_dir() and not root.is_symlink():
        thaw(root)
        shutil.rmtree(root)
    else:
        root.unlink()
