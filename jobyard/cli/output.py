"""How answers are shown: aligned tables, short local times, JSON and YAML."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import typer
import yaml

from jobyard.cli.session import Output, Session

NONE = "-"


def show(
    session: Session,
    data: Any,
    table: Callable[[Any], str],
) -> None:
    """Print ``data`` as JSON or YAML when asked, else as ``table(data)``."""
    if session.output is Output.JSON:
        typer.echo(to_json(data))
    elif session.output is Output.YAML:
        typer.echo(to_yaml(data), nl=False)
    else:
        text = table(data)
        if text:
            typer.echo(text)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (scripts) as ``|`` blocks, keys in the API's order."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Plain columns separated by two spaces; the last column is never padded."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for column, value in enumerate(row):
            widths[column] = max(widths[column], len(value))
    lines = []
    for row in [list(headers), *cells]:
        padded = [value.ljust(widths[i]) for i, value in enumerate(row[:-1])]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    return " ".join(str(value).split())


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def local_time(text: str | None, now: datetime | None = None) -> str:
    """A server time in the local time zone, as short as still unambiguous."""
    moment = parse_time(text)
    if moment is None:
        return NONE
    local = moment.astimezone()
    today = (now or datetime.now().astimezone()).astimezone(local.tzinfo)
    if local.date() == today.date():
        return local.strftime("%H:%M:%S")
    if local.year == today.year:
        return local.strftime("%b %d %H:%M")
    return local.strftime("%Y-%m-%d %H:%M")


def full_time(text: str | None) -> str:
    """A server time in the local time zone with date and offset (for ``get``)."""
    moment = parse_time(text)
    if moment is None:
        return NONE
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def note(message: str) -> None:
    """Something for people, on stderr, so that stdout stays parseable."""
    typer.echo(message, err=True)
