"""Code package files: what kind an upload is, whether an archive is safe, and unpacking it.

An archive is refused when an entry would land outside the package (``..``, an
absolute path, a link whose target leaves the tree), when it holds device
files or FIFOs, or when it would unpack past a size, an expansion ratio or an
entry count (zip bombs). The checks run at upload on what the archive declares,
and again while unpacking, where the bytes actually written are counted.
Every refusal is a ``BadRequest`` whose message says why. (Unpacking itself
is in ``unpacking``.)

File code only: no processes, no database.
"""

from __future__ import annotations

import contextlib
import posixpath
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from jobyard.errors import BadRequest

KIND_ZIP = "zip"
KIND_TAR_GZ = "tar.gz"
KIND_JAR = "jar"
KIND_EXECUTABLE = "executable"
ARCHIVE_KINDS = (KIND_ZIP, KIND_TAR_GZ, KIND_JAR)
ACCEPTED = (
    "a .zip, .tar.gz (or .tgz) or .jar archive, or a single executable file "
    "(an ELF binary or a script starting with #!)"
)
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
GZIP_MAGIC = b"\x1f\x8b"
MIB = 1024 * 1024
CHUNK = 1024 * 1024
MAX_LINK_TARGET = 4096
MAX_LINK_HOPS = 40
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


@dataclass(frozen=True)
class ArchiveLimits:
    max_unpacked_bytes: int = 4096 * MIB
    max_ratio: float = 100.0
    max_entries: int = 100_000
    # Below this many unpacked bytes the ratio is not checked: a tiny archive of
    # repetitive text may compress 500 times without being a bomb.
    ratio_floor: int = MIB


@dataclass(frozen=True)
class Entry:
    """One archive member, its name made relative and '/'-separated."""

    name: str
    type: str  # file, dir, symlink or hardlink
    size: int = 0
    executable: bool = False
    target: str = ""  # a symlink's target as written; a hardlink's member name


@dataclass(frozen=True)
class ArchiveSummary:
    entries: int
    unpacked_bytes: int


# -- what was uploaded ------------------------------------------------------------------


def package_kind(filename: str, head: bytes) -> str:
    """The kind of an upload from its name and first bytes; BadRequest if not accepted."""
    if not head:
        raise BadRequest(f"'{filename}' is empty")
    lower = filename.lower()
    if lower.endswith(".jar"):
        _expect(head.startswith(ZIP_MAGIC), filename, "a jar must be a zip archive")
        return KIND_JAR
    if lower.endswith(".zip"):
        _expect(head.startswith(ZIP_MAGIC), filename, "it is not a zip archive")
        return KIND_ZIP
    if lower.endswith((".tar.gz", ".tgz")):
        _expect(head.startswith(GZIP_MAGIC), filename, "it is not gzip-compressed")
        return KIND_TAR_GZ
    if head.startswith((b"\x7fELF", b"#!")):
        return KIND_EXECUTABLE
    hint = ""
    if head.startswith(ZIP_MAGIC):
        hint = " (it looks like a zip archive: name it .zip or .jar)"
    elif head.startswith(GZIP_MAGIC):
        hint = " (it looks gzip-compressed: name it .tar.gz)"
    raise BadRequest(
        f"'{filename}' is not a kind of package jobyard accepts{hint}; upload {ACCEPTED}"
    )


def _expect(ok: bool, filename: str, problem: str) -> None:
    if not ok:
        raise BadRequest(f"'{filename}' cannot be used: {problem}; upload {ACCEPTED}")


# -- checking -------------------------------------------------------------------------


def check_archive(path: Path, kind: str, limits: ArchiveLimits) -> ArchiveSummary:
    """Check an archive on what it declares, without unpacking it."""
    entries = list(checked_entries(path, kind, limits))
    return ArchiveSummary(len(entries), sum(e.size for e in entries if e.type == "file"))


def checked_entries(path: Path, kind: str, limits: ArchiveLimits) -> Iterator[Entry]:
    """Every entry, checked one by one, then the links against the whole tree."""
    archive_bytes = max(1, path.stat().st_size)
    tree = _Tree()
    for entry in _entries(path, kind):
        if len(tree.entries) >= limits.max_entries:
            raise BadRequest(f"the archive has more than {limits.max_entries} entries")
        tree.add(entry)
        _check_size(tree.file_bytes, archive_bytes, limits)
        yield entry
    _check_links(tree.entries)


def _check_size(total: int, archive_bytes: int, limits: ArchiveLimits) -> None:
    if total > limits.max_unpacked_bytes:
        raise BadRequest(
            f"the archive would unpack to more than {size_words(limits.max_unpacked_bytes)}, "
            "the limit for unpacked packages"
        )
    if total > limits.ratio_floor and total / archive_bytes > limits.max_ratio:
        raise BadRequest(
            f"the archive would expand more than {limits.max_ratio:.0f} times "
            f"({size_words(total)} or more from {size_words(archive_bytes)}), the limit "
            "(is it a zip bomb?)"
        )


class _Tree:
    """The entries seen so far, to check each new one against."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.parents: set[str] = set()
        self.file_bytes = 0

    def add(self, entry: Entry) -> None:
        earlier = self.entries.get(entry.name)
        if earlier is not None and not (earlier.type == entry.type == "dir"):
            raise BadRequest(f"entry '{entry.name}' appears twice in the archive")
        if entry.type != "dir" and entry.name in self.parents:
            raise BadRequest(
                f"entry '{entry.name}' is not a directory, but other entries lie under it"
            )
        for parent in _parents(entry.name):
            above = self.entries.get(parent)
            if above is not None and above.type != "dir":
                raise BadRequest(
                    f"entry '{entry.name}' lies under '{parent}', which is not a directory"
                )
            self.parents.add(parent)
        if entry.type == "symlink":
            _check_symlink_target(entry)
        elif entry.type == "hardlink":
            self._check_hardlink(entry)
        elif entry.type == "file":
            self.file_bytes += entry.size
        self.entries[entry.name] = entry

    def _check_hardlink(self, entry: Entry) -> None:
        target = self.entries.get(entry.target)
        if target is None or target.type != "file":
            raise BadRequest(
                f"entry '{entry.name}' is a hard link to '{entry.target}', "
                "which is not a file earlier in the package"
            )


def _check_symlink_target(entry: Entry) -> None:
    target = entry.target
    if not target or len(target) > MAX_LINK_TARGET or "\x00" in target:
        raise BadRequest(f"entry '{entry.name}' is a link with an invalid target")
    if target.startswith("/"):
        raise BadRequest(
            f"entry '{entry.name}' is a link to the absolute path '{target}', outside the package"
        )
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(entry.name), target))
    if joined == ".." or joined.startswith("../"):
        raise BadRequest(f"entry '{entry.name}' is a link to '{target}', outside the package")


def _check_links(entries: dict[str, Entry]) -> None:
    """Follow each symlink through the others, as the kernel would: none may leave."""
    links = {name: e.target for name, e in entries.items() if e.type == "symlink"}
    for name in links:
        if not _resolves_inside(links, name):
            raise BadRequest(
                f"entry '{name}' is a link to '{links[name]}', which leads outside the package"
            )


def _resolves_inside(links: dict[str, str], link: str) -> bool:
    pending = [*_split(posixpath.dirname(link)), *links[link].split("/")]
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return False
            resolved.pop()
            continue
        here = "/".join([*resolved, part])
        if here in links:
            hops += 1
            if hops > MAX_LINK_HOPS:
                return False
            pending = [*links[here].split("/"), *pending]
            continue
        resolved.append(part)
    return True


# -- reading entries -------------------------------------------------------------------


def _entries(path: Path, kind: str) -> Iterator[Entry]:
    if kind in (KIND_ZIP, KIND_JAR):
        yield from _zip_entries(path)
    elif kind == KIND_TAR_GZ:
        yield from _tar_entries(path)
    else:
        raise ValueError(f"not an archive kind: {kind}")


def _zip_entries(path: Path) -> Iterator[Entry]:
    with _open_zip(path) as archive:
        for info in archive.infolist():
            entry = _zip_entry(archive, info)
            if entry is not None:
                yield entry


@contextlib.contextmanager
def _open_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as err:
        raise BadRequest(f"the package is not a valid zip archive: {err}") from None
    with archive:
        yield archive


def _zip_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Entry | None:
    name = safe_name(info.filename)
    mode = info.external_attr >> 16 if info.create_system == 3 else 0
    if name is None:
        return None
    if info.flag_bits & 0x1:
        raise BadRequest(f"entry '{name}' is encrypted; packages cannot be encrypted")
    if info.compress_type not in ZIP_METHODS:
        raise BadRequest(f"entry '{name}' uses a compression method jobyard cannot unpack")
    if stat.S_ISLNK(mode):
        if info.file_size > MAX_LINK_TARGET:
            raise BadRequest(f"entry '{name}' is a link with an invalid target")
        target = _read_zip(archive, info).decode("utf-8", "replace")
        return Entry(name, "symlink", target=target)
    _refuse_special(name, mode)
    if info.is_dir():
        return Entry(name, "dir")
    return Entry(name, "file", size=info.file_size, executable=bool(mode & 0o111))


def _read_zip(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as err:
        raise BadRequest(f"entry '{info.filename}' cannot be read: {err}") from None


def _tar_entries(path: Path) -> Iterator[Entry]:
    with _open_tar(path) as archive:
        for member in _members(archive):
            entry = _tar_entry(member)
            if entry is not None:
                yield entry


@contextlib.contextmanager
def _open_tar(path: Path) -> Iterator[tarfile.TarFile]:
    try:
        archive = tarfile.open(path, "r:gz")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise BadRequest(f"the package is not a valid .tar.gz archive: {err}") from None
    with archive:
        yield archive


def _members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Members one header at a time: a bomb is seen before its data is read."""
    while True:
        try:
            member = archive.next()
        except (tarfile.TarError, OSError, EOFError) as err:
            raise BadRequest(f"the package is not a valid .tar.gz archive: {err}") from None
        if member is None:
            return
        yield member


def _tar_entry(member: tarfile.TarInfo) -> Entry | None:
    name = safe_name(member.name)
    if name is None:
        return None
    if member.issym():
        return Entry(name, "symlink", target=member.linkname)
    if member.islnk():
        target = safe_name(member.linkname)
        if target is None:
            raise BadRequest(f"entry '{name}' is a hard link to the package's root")
        return Entry(name, "hardlink", target=target)
    if member.ischr() or member.isblk():
        raise BadRequest(f"entry '{name}' is a device file; packages may not hold device files")
    if member.isfifo():
        raise BadRequest(f"entry '{name}' is a FIFO; packages may not hold FIFOs")
    if member.isdir():
        return Entry(name, "dir")
    if member.isreg():
        return Entry(name, "file", size=member.size, executable=bool(member.mode & 0o111))
    raise BadRequest(f"entry '{name}' is of a type packages may not hold ({member.type!r})")


def _refuse_special(name: str, mode: int) -> None:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise BadRequest(f"entry '{name}' is a device file; packages may not hold device files")
    if stat.S_ISFIFO(mode):
        raise BadRequest(f"entry '{name}' is a FIFO; packages may not hold FIFOs")
    if stat.S_ISSOCK(mode):
        raise BadRequest(f"entry '{name}' is a socket; packages may not hold sockets")


def safe_name(raw: str) -> str | None:
    """The member name relative to the package root; None for the root itself."""
    if "\x00" in raw:
        raise BadRequest(f"entry {raw!r} has a NUL byte in its name")
    unified = raw.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise BadRequest(f"entry '{raw}' is an absolute path; entries must be relative")
    parts = _split(unified)
    if ".." in parts:
        raise BadRequest(f"entry '{raw}' escapes the package (its path contains '..')")
    return "/".join(parts) or None


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _parents(name: str) -> Iterator[str]:
    parts = name.split("/")
    for end in range(1, len(parts)):
        yield "/".join(parts[:end])


def size_words(count: int) -> str:
    for unit, size in (("GiB", 1024 * MIB), ("MiB", MIB), ("KiB", 1024)):
        if count >= size:
            return f"{count / size:.1f} {unit}".replace(".0 ", " ")
    return f"{count} bytes"


def file_streams(
    path: Path, kind: str, entries: dict[str, Entry]
) -> Iterator[tuple[str, IO[bytes]]]:
    if kind == KIND_TAR_GZ:
        with _open_tar(path) as tar:
            for member in _members(tar):
                name = safe_name(member.name)
                if name is not None and member.isreg() and entries[name].type == "file":
                    stream = tar.extractfile(member)
                    assert stream is not None
                    yield name, stream
        return
    with _open_zip(path) as archive:
        for info in archive.infolist():
            name = safe_name(info.filename)
            if name is not None and entries[name].type == "file":
                with archive.open(info) as stream:
                    yield name, stream
