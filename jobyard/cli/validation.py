"""Local validation with the server's own rules (``jobyard.spec``), before any request.

Imported only by the commands that validate: pydantic models take a while to build,
and every other command should start fast.
"""

from __future__ import annotations

from typing import Any

import pydantic

from jobyard.cli.errors import UsageProblem
from jobyard.spec import RunOverrides, TemplateSpec


def template_spec(label: str, data: dict[str, Any]) -> TemplateSpec:
    try:
        return TemplateSpec.model_validate(data)
    except pydantic.ValidationError as err:
        raise UsageProblem(f"invalid template in {label}: {describe(err)}") from None


def same_spec(current: Any, wanted: TemplateSpec) -> bool:
    """Equal with defaults filled in, so a file that omits defaults stays unchanged."""
    try:
        return TemplateSpec.model_validate(current) == wanted
    except pydantic.ValidationError:
        # The server knows fields this client does not: compare what both know.
        return isinstance(current, dict) and all(
            current.get(key) == value for key, value in wanted.model_dump(mode="json").items()
        )


def run_overrides(body: dict[str, Any]) -> None:
    try:
        RunOverrides.model_validate(body)
    except pydantic.ValidationError as err:
        raise UsageProblem(f"invalid run overrides: {describe(err)}") from None


def describe(err: pydantic.ValidationError) -> str:
    """``field.path: message; ...`` in the words the API uses."""
    parts = []
    for error in err.errors():
        location = ""
        for part in error["loc"]:
            location += f"[{part}]" if isinstance(part, int) else (f".{part}" if location else part)
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{location or 'spec'}: {message}")
    return "; ".join(parts)
