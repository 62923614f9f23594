"""Job templates: the list of a namespace, one template's details, its versions."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from jobyard import cron
from jobyard.api.deps import EngineDep
from jobyard.cron_words import describe
from jobyard.domain import Template
from jobyard.engine.core import Engine
from jobyard.engine.templates import upcoming_fires
from jobyard.errors import InvalidSpec
from jobyard.spec import CronTrigger, HttpTrigger, PackageDeployment
from jobyard.web import package_views, session, views
from jobyard.web.rendering import render
from jobyard.web.routing import console_router

router = console_router()
TEMPLATES = "/namespaces/{namespace}/templates"
TEMPLATE = TEMPLATES + "/{name}"
LIST_LIMIT = 1000
RECENT_TASKS = 5


@router.get(TEMPLATES)
def template_list(
    request: Request,
    engine: EngineDep,
    namespace: str,
    q: str = "",
    trigger: str = "",
    state: str = "",
    last: str = "",
    part: str = "",
) -> Response:
    session.enter_namespace(request, namespace)
    if part == "capacity":
        node = views.node_capacity(engine)
        return render(request, "_capacity.html", {"namespace": namespace, "node": node})
    found = engine.templates.list_templates(namespace, LIST_LIMIT, 0, q.strip() or None)
    rows = [views.template_row(engine, template) for template in found]
    shown = [row for row in rows if _matches(row, trigger, state, last)]
    context: dict[str, Any] = {
        "namespace": namespace,
        "rows": shown,
        "total": len(rows),
        "filters": {"q": q, "trigger": trigger, "state": state, "last": last},
        "section": "templates",
    }
    if part != "rows":
        context["node"] = views.node_capacity(engine)
    page = "_template_rows.html" if part == "rows" else "templates.html"
    return render(request, page, context)


def _matches(row: views.TemplateRow, trigger: str, state: str, last: str) -> bool:
    if trigger and row.kind != trigger:
        return False
    if state == "suspended" and not row.template.suspended:
        return False
    if state == "active" and row.template.suspended:
        return False
    if state == "running" and row.running_instances == 0:
        return False
    last_status = row.last_task.status.value if row.last_task else "never"
    return not last or last == last_status


@router.get(TEMPLATE)
def template_details(request: Request, engine: EngineDep, namespace: str, name: str) -> Response:
    session.enter_namespace(request, namespace)
    template = engine.templates.get(namespace, name)
    return render(request, "template_details.html", details_context(engine, template))


def details_context(engine: Engine, template: Template) -> dict[str, Any]:
    spec = template.spec
    context: dict[str, Any] = {
        **template_context(engine, template, "details"),
        "spec": spec,
        "spec_text": views.spec_text(spec),
        "upcoming": [],
        "hook_url": None,
        "curl": "",
        "instance_types": views.INSTANCE_TYPES,
        "policies": views.CONCURRENCY_POLICIES,
        "tasks": engine.tasks.list_for_template(
            template.namespace, template.name, None, RECENT_TASKS, 0
        ),
        "impact": views.delete_impact(engine, template),
        "run": views.RunForm(),
        **deployment_context(engine, template),
    }
    if isinstance(spec.trigger, CronTrigger) and not template.suspended:
        context["upcoming"] = upcoming_fires(template, engine.clock.now())
    if isinstance(spec.trigger, HttpTrigger) and template.hook_token:
        url = f"{engine.settings.base_url}/hooks/{template.hook_token}"
        context["hook_url"] = url
        context["curl"] = views.curl_example(url, list(spec.trigger.methods))
    return context


def deployment_context(engine: Engine, template: Template) -> dict[str, Any]:
    """The deployment's details: its package, and what keeps it from running here."""
    deployment = template.spec.deployment
    packages = None
    if isinstance(deployment, PackageDeployment):
        packages = package_views.uploaded(engine, template.namespace)
    warn = getattr(engine.templates, "deployment_warnings", None)
    return {
        "package": package_views.find(packages, getattr(deployment, "package", "")),
        "packages_enabled": packages is not None,
        "stacks": views.STACKS,
        "pull_policies": views.PULL_POLICIES,
        "warnings": list(warn(template.spec)) if warn is not None else [],
    }


def template_context(engine: Engine, template: Template, section: str) -> dict[str, Any]:
    """What every page of one template shows in its header."""
    return {
        "namespace": template.namespace,
        "template": template,
        "row": views.template_row(engine, template),
        "section": section,
    }


@router.get(TEMPLATE + "/versions")
def versions_page(request: Request, engine: EngineDep, namespace: str, name: str) -> Response:
    session.enter_namespace(request, namespace)
    template = engine.templates.get(namespace, name)
    versions = engine.templates.versions(namespace, name)
    context = {
        **template_context(engine, template, "versions"),
        "versions": views.version_views(versions, template),
    }
    return render(request, "template_versions.html", context)


@router.get("/cron-preview")
def cron_preview(
    request: Request, engine: EngineDep, schedule: str = "", timezone: str = "UTC"
) -> Response:
    session.principal(request)
    context = {"preview": preview(engine, schedule, timezone)}
    return render(request, "_cron_preview.html", context)


def preview(engine: Engine, schedule: str, timezone: str) -> dict[str, Any]:
    """Plain words and the next five fire times, or why the expression is wrong."""
    zone = timezone.strip() or "UTC"
    context: dict[str, Any] = {"words": "", "fires": [], "problem": "", "zone": zone}
    if not schedule.strip():
        return context
    try:
        parsed = cron.parse_schedule(schedule, zone)
        context["fires"] = cron.next_fire_times(parsed, engine.clock.now(), 5)
        context["words"] = describe(schedule, zone)
    except InvalidSpec as err:
        context["problem"] = str(err)
    return context
