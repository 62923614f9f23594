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
    # deployment.package named a local file: uploaded first, its digest put in the spec.
    package_file: Path | None = None


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
    where the template goes. A package deployment may name a local file as its
    `package:` (relative to FILE): it is uploaded first and its digest used.
    """
    base = Path.cwd() if filename == "-" else Path(filename).parent
    documents = [_validate(session, label, data, base) for label, data in _read(filename)]
    results = []
    for document in documents:
        document = _with_uploaded_package(session, document)
        result = _apply_one(session.api, document)
        results.append(result)
        if session.output == Output.TABLE:  # as it goes: a later failure keeps these lines
            template = result["template"]
            typer.echo(
                f"template {template['name']} {result['action']} (version {template['version']})"
            )
    if session.output != Output.TABLE:
        show(session, results[0] if len(results) == 1 else results, str)


def _with_uploaded_package(session: Session, document: Document) -> Document:
    """Upload the local package file the document names, and use its digest."""
    if document.package_file is None:
        return document
    from jobyard.cli.packages import upload_package

    uploaded = upload_package(session.api, document.namespace, document.package_file)
    if session.output == Output.TABLE:
        typer.echo(f"package {document.package_file} uploaded as {uploaded['digest']}")
    deployment = document.spec.deployment.model_copy(update={"package": uploaded["digest"]})
    spec = document.spec.model_copy(update={"deployment": deployment})
    return Document(document.label, document.namespace, spec)


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


def _validate(session: Session, label: str, data: Any, base: Path) -> Document:
    if not isinstance(data, dict):
        raise UsageProblem(f"{label} must be a mapping (a template spec), not {_kind(data)}")
    data = dict(data)
    namespace = _namespace(session, label, data.pop("namespace", None))
    data, package_file = _local_package(label, data, base)
    from jobyard.cli.validation import template_spec

    spec = template_spec(label, data)
    return Document(label=label, namespace=namespace, spec=spec, package_file=package_file)


# Stands in for a local file's digest while the spec is checked, before the upload.
_PLACEHOLDER_DIGEST = "sha256:" + "0" * 64


def _local_package(
    label: str, data: dict[str, Any], base: Path
) -> tuple[dict[str, Any], Path | None]:
    """A package deployment whose ``package`` is a path, not a digest: the file it names."""
    deployment = data.get("deployment")
    if not isinstance(deployment, dict) or deployment.get("type") != "package":
        return data, None
    value = deployment.get("package")
    if not isinstance(value, str) or not value or value.startswith("sha256:"):
        return data, None
    path = base / Path(value).expanduser()
    if not path.is_file():
        raise UsageProblem(
            f"{label}: deployment.package {value!r} is neither a digest (sha256:...) "
            f"nor a file ({path} {'is not a file' if path.exists() else 'does not exist'})"
        )
    return {**data, "deployment": {**deployment, "package": _PLACEHOLDER_DIGEST}}, path


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
