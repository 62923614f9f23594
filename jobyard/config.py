"""Server settings: one frozen record, filled by the CLI from flags and JOBYARD_* env."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    # How often the controller re-reads all active tasks even without a wake-up.
    resync_seconds: float = 10.0
    # The base of trigger URLs shown to users; default: from host and port.
    public_url: str | None = None
    # Proxies whose X-Forwarded-For / X-Real-IP / X-Forwarded-Proto are believed.
    trusted_proxies: tuple[str, ...] = field(default_factory=tuple)
    max_body_bytes: int = 1024 * 1024
    # What instances may request in all (None: this machine's cores / memory).
    capacity_cpu: float | None = None
    capacity_memory_mb: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # A bootstrap admin token accepted besides the stored ones (JOBYARD_ADMIN_TOKEN).
    admin_token: str | None = None
    # What runs image templates: auto (podman, then docker), podman, docker or none.
    container_engine: str = "auto"
    # How instances' CPU and memory are enforced: auto (cgroups where the host
    # allows, else a psutil watch), cgroup, psutil or off.
    resource_limits: str = "auto"
    # Code packages: the largest upload, the most an archive may unpack to, where
    # runtimes (python3, java, node, npm) are found (None: the server's PATH less
    # its own virtual environment), and how long one preparation step may take.
    max_package_bytes: int = 512 * 1024 * 1024
    max_unpacked_bytes: int = 4096 * 1024 * 1024
    runtime_path: str | None = None
    prepare_timeout_seconds: float = 1800.0

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def on_loopback(self) -> bool:
        if self.host in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir.resolve() / 'jobyard.db'}"
