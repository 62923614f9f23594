"""Archive safety: every attack is refused with a message that says why, at the check
(on what the archive declares) and again when unpacking (on what it really holds).

Real zip and tar.gz files are built in each test with the stdlib, byte for byte
as an attacker would build them.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from jobyard.errors import BadRequest
from jobyard.runners import archives, unpacking
from jobyard.runners.archives import ArchiveLimits

MIB = 1024 * 1024
LIMITS = ArchiveLimits()

# -- building archives -------------------------------------------------------------


def make_zip(path: Path, entries: list[tuple[str, bytes, int]]) -> Path:
    """(name, data, unix mode incl. type bits; 0 for a plain file)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (mode or (stat.S_IFREG | 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for member in members:
            content = data.get(member.name)
            if content is not None:
                member.size = len(content)
                archive.addfile(member, io.BytesIO(content))
            else:
                archive.addfile(member)
    return path


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = linkname
    member.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return member


def refused(path: Path, kind: str, limits: ArchiveLimits = LIMITS) -> str:
    """The check's message; and unpacking must refuse too, leaving only its new directory."""
    with pytest.raises(BadRequest) as checked:
        archives.check_archive(path, kind, limits)
    dest = path.parent / "out"
    with pytest.raises(BadRequest):
        unpacking.unpack(path, kind, dest, limits)
    unpacking.remove_tree(dest)
    return str(checked.value)


def symlink_mode() -> int:
    return stat.S_IFLNK | 0o777


# -- kinds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "head", "kind"),
    [
        ("app.zip", b"PK\x03\x04rest", "zip"),
        ("app.jar", b"PK\x03\x04rest", "jar"),
        ("app.tar.gz", b"\x1f\x8b\x08rest", "tar.gz"),
        ("app.TGZ", b"\x1f\x8b\x08rest", "tar.gz"),
        ("hello", b"\x7fELF\x02\x01", "executable"),
        ("run.sh", b"#!/bin/sh\necho hi\n", "executable"),
    ],
)
def test_accepted_kinds(filename: str, head: bytes, kind: str) -> None:
    assert archives.package_kind(filename, head) == kind


@pytest.mark.parametrize(
    ("filename", "head", "words"),
    [
        ("app.zip", b"not a zip", "it is not a zip archive"),
        ("app.jar", b"\x7fELF", "a jar must be a zip archive"),
        ("app.tar.gz", b"PK\x03\x04", "it is not gzip-compressed"),
        ("notes.txt", b"hello", "not a kind of package jobyard accepts"),
        ("app.tar", b"ustar", "not a kind of package jobyard accepts"),
        ("bundle", b"PK\x03\x04", "it looks like a zip archive: name it .zip or .jar"),
        ("app.py", b"", "is empty"),
    ],
)
def test_refused_kinds(filename: str, head: bytes, words: str) -> None:
    with pytest.raises(BadRequest) as refusal:
        archives.package_kind(filename, head)
    assert words in str(refusal.value)
    if "empty" not in words:
        assert ".zip, .tar.gz (or .tgz) or .jar archive, or a single executable" in str(
            refusal.value
        )


# -- names that leave the package ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("../evil.sh", "entry '../evil.sh' escapes the package"),
        ("app/../../evil.sh", "entry 'app/../../evil.sh' escapes the package"),
        ("..\\evil.sh", "escapes the package"),
        ("/etc/cron.d/evil", "entry '/etc/cron.d/evil' is an absolute path"),
        ("C:\\evil.exe", "is an absolute path"),
    ],
)
def test_zip_names_that_escape(tmp_path: Path, name: str, words: str) -> None:
    path = make_zip(tmp_path / "bad.zip", [("ok.txt", b"fine", 0), (name, b"boom", 0)])
    assert words in refused(path, "zip")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("../evil.sh", "entry '../evil.sh' escapes the package"),
        ("./a/../../evil.sh", "escapes the package"),
        ("/etc/passwd", "entry '/etc/passwd' is an absolute path"),
    ],
)
def test_tar_names_that_escape(tmp_path: Path, name: str, words: str) -> None:
    path = make_tar(tmp_path / "bad.tar.gz", [tar_member(name)], {name: b"boom"})
    assert words in refused(path, "tar.gz")


# -- links ---------------------------------------------------------------------------


def test_zip_symlink_out_of_the_package(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "bad.zip", [("data", b"../../../etc", symlink_mode())])
    assert "entry 'data' is a link to '../../../etc', outside the package" in refused(path, "zip")


def test_zip_symlink_to_an_absolute_path(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "bad.zip", [("passwd", b"/etc/passwd", symlink_mode())])
    message = refused(path, "zip")
    assert "entry 'passwd' is a link to the absolute path '/etc/passwd'" in message


@pytest.mark.parametrize(
    ("kind", "linkname", "words"),
    [
        (tarfile.SYMTYPE, "../../outside", "is a link to '../../outside', outside the package"),
        (tarfile.SYMTYPE, "/etc/shadow", "is a link to the absolute path '/etc/shadow'"),
        (tarfile.LNKTYPE, "../outside", "escapes the package"),
        (tarfile.LNKTYPE, "missing.txt", "hard link to 'missing.txt', which is not a file"),
    ],
)
def test_tar_links_out_of_the_package(
    tmp_path: Path, kind: bytes, linkname: str, words: str
) -> None:
    path = make_tar(tmp_path / "bad.tar.gz", [tar_member("link", kind, linkname)], {})
    assert words in refused(path, "tar.gz")


def test_a_chain_of_links_that_leads_out_is_refused(tmp_path: Path) -> None:
    # Each link alone looks harmless: 'here' is '.', and 'up' is 'here/..' (the root,
    # read as text) -- but followed for real, 'here/..' is the directory above.
    entries = [("here", b".", symlink_mode()), ("up", b"here/..", symlink_mode())]
    path = make_zip(tmp_path / "chain.zip", entries)
    assert "entry 'up' is a link to 'here/..', which leads outside the package" in refused(
        path, "zip"
    )


def test_an_entry_under_a_link_is_refused(tmp_path: Path) -> None:
    # Writing 'sub/x' would go wherever the link 'sub' points.
    entries = [("sub", b"elsewhere", symlink_mode()), ("sub/x", b"data", 0)]
    path = make_zip(tmp_path / "under.zip", entries)
    assert "entry 'sub/x' lies under 'sub', which is not a directory" in refused(path, "zip")


def test_links_inside_the_package_are_kept(tmp_path: Path) -> None:
    members = [
        tar_member("lib", tarfile.DIRTYPE),
        tar_member("lib/real.txt"),
        tar_member("current", tarfile.SYMTYPE, "lib"),
        tar_member("copy.txt", tarfile.LNKTYPE, "lib/real.txt"),
    ]
    path = make_tar(tmp_path / "ok.tar.gz", members, {"lib/real.txt": b"real"})
    dest = tmp_path / "out"
    unpacking.unpack(path, "tar.gz", dest, LIMITS)
    assert (dest / "current").is_symlink()
    assert (dest / "current" / "real.txt").read_bytes() == b"real"
    assert (dest / "copy.txt").read_bytes() == b"real"


# -- special files -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        (tarfile.CHRTYPE, "entry 'dev/evil' is a device file"),
        (tarfile.BLKTYPE, "entry 'dev/evil' is a device file"),
        (tarfile.FIFOTYPE, "entry 'dev/evil' is a FIFO"),
    ],
)
def test_tar_special_files(tmp_path: Path, kind: bytes, words: str) -> None:
    member = tar_member("dev/evil", kind)
    member.devmajor, member.devminor = 1, 3
    path = make_tar(tmp_path / "dev.tar.gz", [member], {})
    assert words in refused(path, "tar.gz")


def test_zip_device_file(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "dev.zip", [("null", b"", stat.S_IFCHR | 0o666)])
    assert "entry 'null' is a device file" in refused(path, "zip")


# -- bombs and sizes -----------------------------------------------------------------


def test_zip_bomb_by_ratio(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "bomb.zip", [("zeros", bytes(40 * MIB), 0)])
    message = refused(path, "zip")
    assert "the archive would expand more than 100 times" in message
    assert "zip bomb" in message


def test_tar_gz_bomb_by_ratio(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "bomb.tar.gz", [tar_member("zeros")], {"zeros": bytes(40 * MIB)})
    assert "would expand more than 100 times" in refused(path, "tar.gz")


def test_total_unpacked_size(tmp_path: Path) -> None:
    # Random bytes do not compress: no ratio problem, only size.
    data = [(f"part{i}", _random(MIB), 0) for i in range(3)]
    path = make_zip(tmp_path / "big.zip", data)
    limits = ArchiveLimits(max_unpacked_bytes=2 * MIB)
    assert "would unpack to more than 2 MiB" in refused(path, "zip", limits)


def test_too_many_entries(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "many.zip", [(f"f{i}", b"x", 0) for i in range(30)])
    assert "more than 20 entries" in refused(path, "zip", ArchiveLimits(max_entries=20))


def test_declared_sizes_that_lie_are_caught_while_unpacking(tmp_path: Path) -> None:
    """The check believes what the zip declares; unpacking counts what it holds."""
    path = make_zip(tmp_path / "liar.zip", [("data.bin", _random(64 * 1024), 0)])
    _declare_size(path, 10)
    archives.check_archive(path, "zip", LIMITS)  # 10 bytes declared: nothing to see
    with pytest.raises(BadRequest) as refusal:
        unpacking.unpack(path, "zip", tmp_path / "out", LIMITS)
    assert "entry 'data.bin' cannot be read" in str(refusal.value)


def test_duplicate_entries(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = make_zip(tmp_path / "dup.zip", [("a.txt", b"1", 0), ("a.txt", b"2", 0)])
    assert "entry 'a.txt' appears twice" in refused(path, "zip")


def test_not_an_archive_at_all(tmp_path: Path) -> None:
    path = tmp_path / "fake.zip"
    path.write_bytes(b"PK\x03\x04 and then nonsense")
    assert "not a valid zip archive" in refused(path, "zip")


# -- a good archive ------------------------------------------------------------------


def test_unpack_freeze_and_remove(tmp_path: Path) -> None:
    entries = [
        ("app/", b"", stat.S_IFDIR | 0o755),
        ("app/main.py", b"print('hi')\n", 0),
        ("app/run.sh", b"#!/bin/sh\n", stat.S_IFREG | 0o755),
        ("./README", b"read me", 0),
    ]
    path = make_zip(tmp_path / "good.zip", entries)
    summary = archives.check_archive(path, "zip", LIMITS)
    assert summary.entries == 4
    dest = tmp_path / "out"
    unpacking.unpack(path, "zip", dest, LIMITS)
    unpacking.freeze(dest)
    assert (dest / "app" / "main.py").read_text() == "print('hi')\n"
    assert (dest / "README").read_bytes() == b"read me"
    assert stat.S_IMODE((dest / "app" / "run.sh").stat().st_mode) == 0o555
    assert stat.S_IMODE((dest / "app" / "main.py").stat().st_mode) == 0o444
    assert stat.S_IMODE((dest / "app").stat().st_mode) == 0o555
    unpacking.remove_tree(dest)
    assert not dest.exists()


def _random(count: int) -> bytes:
    return os.urandom(count)


def _declare_size(path: Path, size: int) -> None:
    """Rewrite the uncompressed size a zip's headers declare for its only entry."""
    data = bytearray(path.read_bytes())
    local = data.index(b"PK\x03\x04")
    data[local + 22 : local + 26] = size.to_bytes(4, "little")
    central = data.index(b"PK\x01\x02")
    data[central + 24 : central + 28] = size.to_bytes(4, "little")
    path.write_bytes(bytes(data))
