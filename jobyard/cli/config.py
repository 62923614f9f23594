"""Where the client connects: flag > environment > config file > default.

Flags and environment variables are merged by click before a command runs
(each option declares its ``JOBYARD_*`` variable), so this module only adds
the config file and the defaults underneath them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from jobyard.cli.errors import UsageProblem

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_NAMESPACE = "default"
CONFIG_ENV = "JOBYARD_CONFIG"
KNOWN_KEYS = ("url", "token", "namespace", "ca_cert", "insecure")


@dataclass(frozen=True)
class ClientConfig:
    """What the config file says; every key is optional."""

    path: Path | None = None
    url: str | None = None
    token: str | None = None
    namespace: str | None = None
    ca_cert: str | None = None
    insecure: bool = False


@dataclass(frozen=True)
class Connection:
    """The resolved settings one command uses."""

    url: str
    token: str | None
    namespace: str
    ca_cert: Path | None
    insecure: bool


def config_path() -> tuple[Path, bool]:
    """The config file's path, and whether the user named it explicitly."""
    named = os.environ.get(CONFIG_ENV)
    if named:
        return Path(named).expanduser(), True
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "jobyard" / "config.yaml", False


def load_config() -> ClientConfig:
    path, named = config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        if named:
            raise UsageProblem(f"config file {path} ({CONFIG_ENV}) does not exist") from None
        return ClientConfig()
    except OSError as err:
        raise UsageProblem(f"cannot read config file {path}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UsageProblem(f"config file {path} is not valid YAML: {_one_line(err)}") from None
    return _parse(path, data or {})


def _parse(path: Path, data: Any) -> ClientConfig:
    if not isinstance(data, dict):
        raise UsageProblem(f"config file {path} must be a mapping of {', '.join(KNOWN_KEYS)}")
    unknown = sorted(str(key) for key in data if key not in KNOWN_KEYS)
    if unknown:
        raise UsageProblem(
            f"config file {path}: unknown key {unknown[0]!r} (known: {', '.join(KNOWN_KEYS)})"
        )
    for key in ("url", "token", "namespace", "ca_cert"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise UsageProblem(f"config file {path}: {key} must be a string")
    insecure = data.get("insecure", False)
    if not isinstance(insecure, bool):
        raise UsageProblem(f"config file {path}: insecure must be true or false")
    return ClientConfig(
        path=path,
        url=data.get("url"),
        token=data.get("token"),
        namespace=data.get("namespace"),
        ca_cert=data.get("ca_cert"),
        insecure=insecure,
    )


def resolve(
    url: str | None,
    token: str | None,
    namespace: str | None,
    ca_cert: Path | None,
    insecure: bool,
    config: ClientConfig,
) -> Connection:
    """Fill what flags and environment left empty from the config file, then defaults."""
    final_url = (url or config.url or DEFAULT_URL).rstrip("/")
    if not final_url.startswith(("http://", "https://")):
        raise UsageProblem(f"--url must start with http:// or https://, not {final_url!r}")
    cert = ca_cert or (Path(config.ca_cert).expanduser() if config.ca_cert else None)
    return Connection(
        url=final_url,
        token=token or config.token or None,
        namespace=namespace or config.namespace or DEFAULT_NAMESPACE,
        ca_cert=cert,
        insecure=insecure or config.insecure,
    )


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
