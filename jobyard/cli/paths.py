"""The API's routes, with every name quoted into one path segment."""

from __future__ import annotations

from jobyard.cli.client import segment


def templates_path(namespace: str) -> str:
    return f"/namespaces/{segment(namespace)}/templates"


def template_path(namespace: str, name: str) -> str:
    return f"{templates_path(namespace)}/{segment(name)}"


def task_path(task_id: int) -> str:
    return f"/tasks/{segment(task_id)}"


def instance_path(instance_id: int) -> str:
    return f"/instances/{segment(instance_id)}"
