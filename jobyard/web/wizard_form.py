"""The three-step template form: what was typed, the spec it makes, and its errors.

Pure. A ``FormState`` holds exactly what the user typed (strings), so that a
page re-rendered after an error shows it all again; ``validate`` turns it into
a ``TemplateSpec`` or into one message per form field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from jobyard import cron
from jobyard.errors import InvalidSpec
from jobyard.spec import (
    CronTrigger,
    HttpTrigger,
    ImageDeployment,
    PackageDeployment,
    Resources,
    ScriptDeployment,
    TemplateSpec,
)

STEPS = ("Basic information", "Task settings", "Advanced settings")
# What each deployment method's fields are called in the form (the spec's names
# repeat across methods: "command" is a string for a package, a list for an image).
DEPLOYMENT_FIELDS = {
    "script": {"script": "script", "shell": "shell"},
    "package": {"package": "package", "stack": "stack"}
    | {"command": "package_command", "args": "package_args"},
    "image": {"image": "image", "pull_policy": "pull_policy"}
    | {"command": "image_command", "args": "image_args"},
}
# Where an error about the deployment as a whole is shown.
DEPLOYMENT_MAIN = {"script": "script", "package": "package_command", "image": "image"}
STEP_FIELDS = (
    {"name", "namespace", "description", "deployment", "instance_type"}
    | {key for names in DEPLOYMENT_FIELDS.values() for key in names.values()}
    | {"cpu", "memory_mb", "replicas"},
    {"trigger_type", "schedule", "timezone", "request_type", "methods", "security_mode"}
    | {"referers", "ips", "concurrency_policy", "timeout", "retries", "sharding", "shards"},
    {"env", "retry_backoff", "termination_grace_period", "starting_deadline"},
)
SCALARS = (
    "name", "namespace", "description", "deployment", "script", "shell", "package", "stack",
    "package_command", "package_args", "image", "image_command", "image_args", "pull_policy",
    "instance_type",
    "cpu", "memory_mb", "replicas", "trigger_type", "schedule", "timezone", "request_type",
    "security_mode", "referers", "ips", "concurrency_policy", "timeout", "retries", "sharding",
    "retry_backoff", "termination_grace_period", "starting_deadline",
)  # fmt: skip
NUMBERS = {
    "replicas": "replicas",
    "timeout": "timeout",
    "retries": "retries",
    "retry_backoff": "retry_backoff",
    "termination_grace_period": "termination_grace_period",
}
PROTOCOLS = {"http": ["http"], "https": ["https"], "both": ["http", "https"]}


@dataclass
class FormState:
    fields: dict[str, str]
    methods: list[str] = field(default_factory=list)
    env: list[tuple[str, str]] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def step_errors(self, step: int) -> dict[str, str]:
        return {key: text for key, text in self.errors.items() if step_of(key) == step}


def step_of(key: str) -> int:
    base = key.split(".", 1)[0]
    return next((i + 1 for i, names in enumerate(STEP_FIELDS) if base in names), 1)


def _default(model: Any, name: str) -> str:
    return str(model.model_fields[name].default)


def blank(namespace: str) -> FormState:
    """A new template's form, with the spec's defaults filled in."""
    fields = {name: "" for name in SCALARS}
    fields.update(
        namespace=namespace,
        deployment="script",
        shell=_default(ScriptDeployment, "shell"),
        stack="python",
        pull_policy=_default(ImageDeployment, "pull_policy"),
        instance_type=_default(TemplateSpec, "instance_type"),
        cpu=_default(Resources, "cpu"),
        memory_mb=_default(Resources, "memory_mb"),
        trigger_type="cron",
        timezone=_default(CronTrigger, "timezone"),
        request_type="both",
        security_mode="none",
        concurrency_policy=_default(TemplateSpec, "concurrency_policy"),
        starting_deadline=_default(CronTrigger, "starting_deadline"),
    )
    for name in NUMBERS:
        fields[name] = _default(TemplateSpec, name)
    return FormState(fields=fields, methods=["POST"])


def from_spec(spec: TemplateSpec, namespace: str) -> FormState:
    """The form of an existing template, for editing."""
    state = blank(namespace)
    fields = state.fields
    fields.update(
        name=spec.name,
        description=spec.description,
        instance_type=spec.instance_type,
        cpu=f"{spec.resources.cpu:g}",
        memory_mb=str(spec.resources.memory_mb),
        concurrency_policy=spec.concurrency_policy,
        sharding="on" if spec.sharding.enabled else "",
    )
    for name in NUMBERS:
        fields[name] = str(getattr(spec, name))
    _deployment_fields(fields, spec)
    state.env = [(var.name, var.value) for var in spec.env]
    state.shards = list(spec.sharding.shards)
    _trigger_fields(state, spec)
    return state


def _deployment_fields(fields: dict[str, str], spec: TemplateSpec) -> None:
    deployment = spec.deployment
    fields["deployment"] = deployment.type
    if isinstance(deployment, ScriptDeployment):
        fields.update(script=deployment.script, shell=deployment.shell)
    elif isinstance(deployment, PackageDeployment):
        fields.update(
            package=deployment.package,
            stack=deployment.stack,
            package_command=deployment.command,
            package_args="\n".join(deployment.args),
        )
    elif isinstance(deployment, ImageDeployment):
        fields.update(
            image=deployment.image,
            image_command="\n".join(deployment.command),
            image_args="\n".join(deployment.args),
            pull_policy=deployment.pull_policy,
        )


def _trigger_fields(state: FormState, spec: TemplateSpec) -> None:
    trigger, fields = spec.trigger, state.fields
    if isinstance(trigger, CronTrigger):
        fields.update(
            trigger_type="cron",
            schedule=trigger.schedule,
            timezone=trigger.timezone,
            starting_deadline=str(trigger.starting_deadline),
        )
    elif isinstance(trigger, HttpTrigger):
        both = set(trigger.protocols) == {"http", "https"}
        fields.update(
            trigger_type="http",
            request_type="both" if both else trigger.protocols[0],
            security_mode=trigger.security.mode,
            referers="\n".join(trigger.security.referers),
            ips="\n".join(trigger.security.ips),
        )
        state.methods = list(trigger.methods)
    else:
        fields["trigger_type"] = "manual"


def from_form(form: Mapping[str, Any], getlist: Any) -> FormState:
    """What the browser posted (``getlist`` reads repeated fields)."""
    fields = {name: str(form.get(name, "")) for name in SCALARS}
    for name in ("script", "package_args", "image_command", "image_args"):
        fields[name] = fields[name].replace("\r\n", "\n")
    names, values = getlist("env_name"), getlist("env_value")
    env = [(str(n).strip(), str(v)) for n, v in zip(names, values, strict=False)]
    shards = [str(s).strip() for s in getlist("shard")]
    return FormState(
        fields=fields,
        methods=[str(m) for m in getlist("methods")],
        env=[(n, v) for n, v in env if n or v],
        shards=[s for s in shards if s],
    )


def spec_data(state: FormState) -> dict[str, Any]:
    """The spec as JSON-like data, for pydantic to check."""
    f = state.fields
    data: dict[str, Any] = {
        "name": f["name"].strip(),
        "description": f["description"],
        "deployment": _deployment_data(f),
        "instance_type": f["instance_type"] or "default",
        "resources": _given(cpu=f["cpu"].strip(), memory_mb=f["memory_mb"].strip()),
        "concurrency_policy": f["concurrency_policy"] or "Allow",
        "sharding": {"enabled": f["sharding"] == "on", "shards": state.shards},
        "env": [{"name": n, "value": v} for n, v in state.env],
    }
    for name, key in NUMBERS.items():
        if f[name].strip():
            data[key] = f[name].strip()
    trigger = _trigger_data(state)
    if trigger is not None:
        data["trigger"] = trigger
    return data


def _deployment_data(f: dict[str, str]) -> dict[str, Any]:
    kind = f["deployment"] or "script"
    if kind == "package":
        return {
            **_given(type=kind, package=f["package"].strip(), stack=f["stack"].strip()),
            "command": f["package_command"].strip(),
            "args": arg_lines(f["package_args"]),
        }
    if kind == "image":
        return {
            **_given(type=kind, image=f["image"].strip(), pull_policy=f["pull_policy"]),
            "command": arg_lines(f["image_command"]),
            "args": arg_lines(f["image_args"]),
        }
    return _given(type=kind, script=f["script"], shell=f["shell"].strip())


def arg_lines(text: str) -> list[str]:
    """One argument per line, outer spaces dropped (an argument may hold spaces)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def _given(**values: str) -> dict[str, str]:
    """The values that were filled in; the spec's defaults stand for the rest."""
    return {key: value for key, value in values.items() if value}


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]


def _trigger_data(state: FormState) -> dict[str, Any] | None:
    f = state.fields
    if f["trigger_type"] == "cron":
        cron_data = {"type": "cron", "schedule": f["schedule"].strip()}
        cron_data["timezone"] = f["timezone"].strip() or "UTC"
        if f["starting_deadline"].strip():
            cron_data["starting_deadline"] = f["starting_deadline"].strip()
        return cron_data
    if f["trigger_type"] == "http":
        mode = f["security_mode"]
        security: dict[str, Any] = {"mode": mode}
        if mode == "referer":
            security["referers"] = _lines(f["referers"])
        if mode == "ip":
            security["ips"] = _lines(f["ips"])
        protocols = PROTOCOLS.get(f["request_type"], [f["request_type"]])
        return {
            "type": "http",
            "protocols": protocols,
            "methods": state.methods,
            "security": security,
        }
    return None


def validate(state: FormState) -> TemplateSpec | None:
    """The spec, or None with ``state.errors`` filled in, one message per field."""
    try:
        return TemplateSpec.model_validate(spec_data(state))
    except ValidationError as err:
        state.errors = field_errors(err.errors(), state)
        return None


def field_errors(errors: Sequence[Any], state: FormState) -> dict[str, str]:
    found: dict[str, str] = {}
    for error in errors:
        key = form_key(_untagged(tuple(error.get("loc", ()))), state)
        found.setdefault(key, plain_message(key, error))
    return found


def _untagged(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """pydantic names the deployment's tag in the location: ("deployment", "image", "image")."""
    if loc[:1] == ("deployment",) and len(loc) > 1 and loc[1] in DEPLOYMENT_FIELDS:
        return ("deployment", *loc[2:])
    return loc


def plain_message(key: str, error: Mapping[str, Any]) -> str:
    """pydantic's message for the form field ``key``, in the words of the form."""
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "string_pattern_mismatch":
        message = _PATTERNS.get(key.split(".", 1)[0], message)
    return _PLAINER.get(message, message)


_PATTERNS = {
    "name": "Use lowercase letters, digits and '-', starting and ending with a letter or digit.",
    "env": "A name is letters, digits and '_', and does not start with a digit.",
    "shell": "Give the shell as an absolute path, such as /bin/sh or /bin/bash.",
    "package": "Choose an uploaded package (its digest is sha256: and 64 hex digits).",
    "image": "An image reference is lowercase, such as docker.io/library/alpine:3.20.",
}
_PLAINER = {
    "String should have at least 1 character": "This is required.",
    "Field required": "This is required.",
    "List should have at least 1 item after validation, not 0": "Choose at least one.",
}


def form_key(loc: tuple[Any, ...], state: FormState) -> str:
    """The form field a pydantic error location points at."""
    parts = [str(p) for p in loc]
    if parts[:1] == ["trigger"] and parts[1:2] in (["cron"], ["http"]):
        parts = ["trigger", *parts[2:]]
    head, rest = (parts[0] if parts else "name"), parts[1:]
    if head == "deployment":
        return _deployment_key(rest, state)
    if head == "resources":
        return rest[0] if rest else "cpu"
    if head == "sharding":
        return "shards"
    if head == "env":
        return f"env.{rest[0]}" if rest else "env"
    if head == "trigger":
        return _trigger_key(rest, state)
    return head


def _deployment_key(rest: list[str], state: FormState) -> str:
    kind = state.fields["deployment"] or "script"
    names = DEPLOYMENT_FIELDS.get(kind)
    if names is None:
        return "deployment"
    return names.get(rest[0], DEPLOYMENT_MAIN[kind]) if rest else DEPLOYMENT_MAIN[kind]


def _trigger_key(rest: list[str], state: FormState) -> str:
    if not rest:
        return _cron_key(state) if state.fields["trigger_type"] == "cron" else "trigger_type"
    if rest[0] == "protocols":
        return "request_type"
    if rest[0] == "security":
        if len(rest) > 1 and rest[1] in ("referers", "ips"):
            return rest[1]
        mode = state.fields["security_mode"]
        return {"referer": "referers", "ip": "ips"}.get(mode, "security_mode")
    return rest[0]


def _cron_key(state: FormState) -> str:
    """Whether a cron error is about the expression or the time zone."""
    try:
        cron.parse_schedule(state.fields["schedule"], state.fields["timezone"] or "UTC")
    except InvalidSpec as err:
        return "timezone" if err.field == "trigger.timezone" else "schedule"
    return "schedule"
