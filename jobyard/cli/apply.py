"""``jobyard apply -f FILE``: create a template, or store a new version when it changed."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from jobyard.cli.client import Api
from jobyard.cli.errors import ApiError, UsageProblem
from jobyard.cli.output import show
from jobyard.cli.paths import template_path, templates_path
from jobyard.cli.session import Output, Session

if TYPE_CHECKING:
    from jobyard.spec import TemplateSpec


@dataclass(frozen=True)
class Document:
    """One template from the file, validated locally, with the namespace it goes to."""

    label: str
    namespace: str
    spec: TemplateSpec


def apply(
    session: Session,
    filename: Annotated[
        str,
        typer.Option(
            "--filename",
            "-f",
            help="YAML or JSON template spec; '-' reads stdin",
            show_default=False,
        ),
    ],
) -> None:
    """Create the template in FILE, or store a new version if it differs from the current one.

    The file is the JSON of POST /api/v1/namespaces/NS/templates (YAML works too; several
    YAML documents apply one after another). An optional top-level `namespace:` key says
    where the template goes.
    """
    documents = [_validate(session, label, data) for label, data in _read(filename)]
    results = []
    for document in documents:
        result = _apply_one(session.api, document)
        results.append(result)
        if session.output == Output.TABLE:  # as it goes: a later failure keeps these lines
            template = result["template"]
            typer.echo(
                f"template {template['name']} {result['action']} (version {template['version']})"
            )
    if session.output != Output.TABLE:
        show(session, results[0] if len(results) == 1 else results, str)


def _apply_one(api: Api, document: Document) -> dict[str, Any]:
    body = document.spec.model_dump(mode="json")
    path = template_path(document.namespace, document.spec.name)
    try:
        current = api.get(path)
    except ApiError as err:
        if err.status != 404 or err.code != "not_found":
            raise
        created = api.post(templates_path(document.namespace), body)
        return {"action": "created", "template": created}
    from jobyard.cli.validation import same_spec

    if same_spec(current.get("spec"), document.spec):
        return {"action": "unchanged", "template": current}
    return {"action": "updated", "template": api.put(path, body)}


def _read(filename: str) -> list[tuple[str, Any]]:
    name = "stdin" if filename == "-" else filename
    try:
        text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
    except FileNotFoundError:
        raise UsageProblem(f"file {filename} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageProblem(f"cannot read {name}: {getattr(err, 'strerror', None) or err}") from None
    documents = _parse(name, text)
    found = [data for data in documents if data is not None]
    if not found:
        raise UsageProblem(f"{name} holds no template")
    if len(found) == 1:
        return [(name, found[0])]
    return [(f"{name} (document {i})", data) for i, data in enumerate(found, start=1)]


def _parse(name: str, text: str) -> list[Any]:
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            where = f"line {err.lineno}, column {err.colno}"
            raise UsageProblem(f"cannot parse {name} as JSON: {err.msg} ({where})") from None
        return data if isinstance(data, list) else [data]
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as err:
        raise UsageProblem(f"cannot parse {name} as YAML: {_yaml_problem(err)}") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        return f"{err.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(err).split())


def _validate(session: Session, label: str, data: Any) -> Document:
    if not isinstance(data, dict):
        raise UsageProblem(f"{label} must be a mapping (a template spec), not {_kind(data)}")
    data = dict(data)
    namespace = _namespace(session, label, data.pop("namespace", None))
    from jobyard.cli.validation import template_spec

    return Document(label=label, namespace=namespace, spec=template_spec(label, data))


def _namespace(session: Session, label: str, in_file: Any) -> str:
    """The file's ``namespace:`` wins over env and config, but must agree with ``-n``."""
    if in_file is None:
        return session.namespace
    if not isinstance(in_file, str) or not in_file:
        raise UsageProblem(f"{label}: namespace must be a non-empty string")
    if session.namespace_from_command_line and session.namespace != in_file:
        raise UsageProblem(
            f"{label} says namespace {in_file!r} but --namespace says {session.namespace!r}"
        )
    return in_file


def _kind(data: Any) -> str:
    if isinstance(data, list):
        return "a list"
    return "a string" if isinstance(data, str) else type(data).__name__
