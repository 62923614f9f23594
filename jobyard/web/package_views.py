"""Code packages as the console shows them: the namespace's list, and the wizard's choices.

The packages themselves are kept by the engine's package service
(``engine.packages``); this module only reads it and puts it in words.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobyard.domain import Package
from jobyard.engine.core import Engine
from jobyard.engine.packages import PackageInfo, PackageService

SHORT_DIGEST = len("sha256:") + 12
UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def short_digest(digest: str) -> str:
    """``sha256:`` and the first 12 hex digits: enough to tell packages apart."""
    return digest[:SHORT_DIGEST]


def size_words(size: int | None) -> str:
    """Bytes in binary units: 512 B, 12.3 KiB, 2 MiB, 1.5 GiB."""
    if size is None:
        return "—"
    value, unit = float(size), 0
    while value >= 1024 and unit < len(UNITS) - 1:
        value, unit = value / 1024, unit + 1
    number = f"{value:.0f}" if unit == 0 else f"{value:.1f}".removesuffix(".0")
    return f"{number} {UNITS[unit]}"


def service(engine: Engine) -> PackageService | None:
    """The engine's package service, when this server has one."""
    found = getattr(engine, "packages", None)
    return found if isinstance(found, PackageService) else None


def uploaded(engine: Engine, namespace: str) -> list[PackageInfo] | None:
    """The namespace's packages, newest first; None without a package service."""
    packages = service(engine)
    if packages is None:
        return None
    found = packages.list(namespace)
    return sorted(found, key=lambda info: info.package.created_at, reverse=True)


@dataclass(frozen=True)
class PackageChoice:
    digest: str
    label: str


def choices(packages: list[PackageInfo], current: str) -> list[PackageChoice]:
    """The wizard's package choices; the current digest stays choosable even when it
    is not (or no longer) among the namespace's packages."""
    found = [PackageChoice(info.package.digest, _label(info.package)) for info in packages]
    if current and current not in {choice.digest for choice in found}:
        found.append(PackageChoice(current, f"{short_digest(current)} · not in this namespace"))
    return found


def _label(package: Package) -> str:
    return f"{short_digest(package.digest)} · {package.filename} ({size_words(package.size)})"


def find(packages: list[PackageInfo] | None, digest: str) -> Package | None:
    return next((i.package for i in packages or [] if i.package.digest == digest), None)


def used_by_words(used_by: list[tuple[str, int]]) -> list[tuple[str, str]]:
    """(template, "v1, v3") for each template that deploys a package."""
    versions: dict[str, list[int]] = {}
    for name, version in used_by:
        versions.setdefault(name, []).append(version)
    return [(name, ", ".join(f"v{v}" for v in vs)) for name, vs in versions.items()]
