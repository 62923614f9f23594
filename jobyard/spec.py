"""The template spec: what a job template says, and the rules it must obey.

Pure: validation only, no I/O. pydantic does the checking so that the API,
the CLI and the store all enforce the same rules; a spec object is frozen.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from jobyard import cron
from jobyard.errors import InvalidSpec

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
RESERVED_ENV_PREFIX = "JOBYARD_"
MAX_SCRIPT_BYTES = 256 * 1024
MAX_REPLICAS = 100

InstanceType = Literal["default", "best-effort", "best-effort-first"]
ConcurrencyPolicy = Literal["Allow", "Forbid", "Replace"]
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
HttpProtocol = Literal["http", "https"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Name = Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)]


class EnvVar(Model):
    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)
    value: str = Field(default="", max_length=32 * 1024)


class ScriptDeployment(Model):
    """A shell script run by ``shell`` in the instance's working directory."""

    type: Literal["script"] = "script"
    script: str = Field(min_length=1)
    shell: str = Field(default="/bin/sh", pattern=r"^/\S*$", max_length=1024)

    @field_validator("script")
    @classmethod
    def _script_size(cls, script: str) -> str:
        if len(script.encode()) > MAX_SCRIPT_BYTES:
            raise ValueError(f"script is longer than {MAX_SCRIPT_BYTES} bytes")
        return script


DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
IMAGE_PATTERN = r"^[a-z0-9][a-z0-9._/:@-]*$"
Stack = Literal["python", "java", "node", "binary"]
PullPolicy = Literal["Always", "IfNotPresent", "Never"]
# Stacks that cannot start without a command: there is no single entry point.
_STACKS_NEEDING_COMMAND = ("python", "node")


class PackageDeployment(Model):
    """An uploaded code package (zip, tar.gz, jar or one executable) run on a stack.

    ``command`` is a command line split like a shell would (no shell runs it);
    ``args`` follow it. A java package without a command runs
    ``java $JAVA_OPTS -jar <jar>``; a binary package without one runs itself.
    """

    type: Literal["package"]
    package: str = Field(pattern=DIGEST_PATTERN, description="sha256:<hex> of an uploaded package")
    stack: Stack
    command: str = Field(default="", max_length=4096)
    args: list[str] = Field(default_factory=list, max_length=256)

    @model_validator(mode="after")
    def _command_when_needed(self) -> PackageDeployment:
        if self.stack in _STACKS_NEEDING_COMMAND and not self.command.strip():
            raise ValueError(f"a {self.stack} package needs a command, such as 'python main.py'")
        return self


class ImageDeployment(Model):
    """A container image run by the configured container engine (podman or docker)."""

    type: Literal["image"]
    image: str = Field(min_length=1, max_length=512, pattern=IMAGE_PATTERN)
    command: list[str] = Field(default_factory=list, max_length=256)
    args: list[str] = Field(default_factory=list, max_length=256)
    pull_policy: PullPolicy = "IfNotPresent"


def _deployment_type(data: object) -> str:
    """The tag of a deployment; an untagged one is a script (as before packages)."""
    if isinstance(data, dict):
        return str(data.get("type", "script"))
    return str(getattr(data, "type", "script"))


Deployment = Annotated[
    Annotated[ScriptDeployment, Tag("script")]
    | Annotated[PackageDeployment, Tag("package")]
    | Annotated[ImageDeployment, Tag("image")],
    Discriminator(
        _deployment_type,
        custom_error_type="deployment_type",
        custom_error_message="deployment.type must be one of: script, package, image",
    ),
]


class Resources(Model):
    cpu: float = Field(default=0.5, gt=0, le=64, description="cores per instance")
    memory_mb: int = Field(default=512, ge=16, le=262144, description="MiB per instance")


class CronTrigger(Model):
    type: Literal["cron"] = "cron"
    schedule: str = Field(min_length=1, max_length=256)
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    starting_deadline: int = Field(
        default=60, ge=1, le=86400, description="seconds a late firing may still start"
    )

    @model_validator(mode="after")
    def _valid_schedule(self) -> CronTrigger:
        try:
            cron.parse_schedule(self.schedule, self.timezone)
        except InvalidSpec as err:
            raise ValueError(str(err)) from None
        return self


class HttpSecurity(Model):
    mode: Literal["none", "referer", "ip"] = "none"
    referers: list[str] = Field(default_factory=list, max_length=100)
    ips: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("ips")
    @classmethod
    def _valid_networks(cls, ips: list[str]) -> list[str]:
        for ip in ips:
            try:
                ipaddress.ip_network(ip.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{ip!r} is not an IP address or CIDR block") from None
        return [ip.strip() for ip in ips]

    @field_validator("referers")
    @classmethod
    def _valid_domains(cls, referers: list[str]) -> list[str]:
        domain = re.compile(
            r"^(\*\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
        )
        for referer in referers:
            if not domain.match(referer.strip().lower()):
                raise ValueError(f"{referer!r} is not a domain name (or *.domain wildcard)")
        return [referer.strip().lower() for referer in referers]

    @model_validator(mode="after")
    def _mode_has_list(self) -> HttpSecurity:
        if self.mode == "referer" and not self.referers:
            raise ValueError("security mode 'referer' needs at least one domain in referers")
        if self.mode == "ip" and not self.ips:
            raise ValueError("security mode 'ip' needs at least one address or CIDR in ips")
        return self


def _both_protocols() -> list[HttpProtocol]:
    return ["http", "https"]


def _post_only() -> list[HttpMethod]:
    return ["POST"]


class HttpTrigger(Model):
    type: Literal["http"] = "http"
    protocols: list[HttpProtocol] = Field(default_factory=_both_protocols, min_length=1)
    methods: list[HttpMethod] = Field(default_factory=_post_only, min_length=1)
    security: HttpSecurity = Field(default_factory=HttpSecurity)


Trigger = Annotated[
    CronTrigger | HttpTrigger,
    Discriminator(
        "type",
        custom_error_type="trigger_type",
        custom_error_message="trigger.type must be one of: cron, http",
    ),
]


class Sharding(Model):
    enabled: bool = False
    shards: list[str] = Field(default_factory=list, max_length=10000)

    @field_validator("shards")
    @classmethod
    def _valid_shards(cls, shards: list[str]) -> list[str]:
        for shard in shards:
            if not shard or len(shard) > 256 or "," in shard or shard != shard.strip():
                raise ValueError(
                    f"shard name {shard!r} must be 1..256 characters, no comma, no outer spaces"
                )
        if len(set(shards)) != len(shards):
            raise ValueError("shard names must be unique")
        return shards

    @model_validator(mode="after")
    def _enabled_has_shards(self) -> Sharding:
        if self.enabled and not self.shards:
            raise ValueError("sharding is enabled but shards is empty")
        return self


def check_env_list(env: list[EnvVar]) -> list[EnvVar]:
    names = [var.name for var in env]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"env names must be unique; repeated: {', '.join(duplicates)}")
    reserved = [name for name in names if name.startswith(RESERVED_ENV_PREFIX)]
    if reserved:
        raise ValueError(f"env names starting with {RESERVED_ENV_PREFIX} are reserved: {reserved}")
    return env


class TemplateSpec(Model):
    """Everything a template says. Every edit stores a new immutable version."""

    name: Name
    description: str = Field(default="", max_length=1024)
    deployment: Deployment
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    resources: Resources = Field(default_factory=Resources)
    instance_type: InstanceType = "default"
    trigger: Trigger | None = None
    concurrency_policy: ConcurrencyPolicy = "Allow"
    timeout: int = Field(default=3600, ge=0, le=604800, description="seconds; 0 = no limit")
    retries: int = Field(default=3, ge=0, le=10)
    retry_backoff: int = Field(default=10, ge=0, le=3600, description="first retry delay, seconds")
    termination_grace_period: int = Field(default=10, ge=0, le=3600)
    sharding: Sharding = Field(default_factory=Sharding)
    env: list[EnvVar] = Field(default_factory=list, max_length=1000)

    _env_rules = field_validator("env")(check_env_list)


class RunOverrides(Model):
    """What one run may change for its own task only."""

    envs: list[EnvVar] = Field(default_factory=list, max_length=1000)
    replicas: int | None = Field(default=None, ge=1, le=MAX_REPLICAS)

    _env_rules = field_validator("envs")(check_env_list)


def parse_spec(data: object) -> TemplateSpec:
    """Validate stored or user JSON into a spec (raises pydantic.ValidationError)."""
    return TemplateSpec.model_validate(data)
