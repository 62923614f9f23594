"""The web console, driven in headless Chromium as a user would.

Debian's Chromium (/usr/bin/chromium) is used through Playwright, never a
downloaded browser. Each page is saved as a screenshot in a temporary folder
(its path is printed); with JOBYARD_CONSOLE_SCREENSHOT=<file.png> the template
details page is also saved there (that is how docs/console.png is made).
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect, sync_playwright

from tests.support import (
    JobyardServer,
    script_template,
    start_server,
    stop_server,
    wait_for,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BROWSER_ZONE = "Europe/Berlin"
NAME = "nightly-report"
# The instance waits for the test to create {release}, so that its log is seen live.
SCRIPT = (
    'echo "hello $GREETING from instance $JOBYARD_INSTANCE_INDEX, shards $JOBYARD_SHARDS"\n'
    "while [ ! -e {release} ]; do sleep 0.1; done\n"
    "echo bye"
)
TIMEOUT_MS = 20_000


class Screens:
    """Numbered full-page screenshots of every page the test sees."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    def __call__(self, page: Page, name: str, full_page: bool = True) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path


@pytest.fixture
def jobyard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobyardServer]:
    server = start_server(tmp_path_factory.mktemp("console-data"))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the console tests need Debian's Chromium "
            "(as root: apt-get update && apt-get install -y chromium)"
        )
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
            timezone_id=BROWSER_ZONE,
            locale="en-GB",
        )
        context.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def screens(tmp_path_factory: pytest.TempPathFactory) -> Screens:
    folder = tmp_path_factory.mktemp("console-screenshots")
    print(f"\nconsole screenshots: {folder}")
    return Screens(folder)


def test_a_cron_template_from_creation_to_deletion(
    jobyard: JobyardServer, browser: BrowserContext, screens: Screens
) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("console", lambda msg: errors.extend(unexpected(msg.type, msg.text)))
    page.goto(jobyard.url + "/")
    expect(page.locator("h1")).to_have_text("Job templates")
    expect(page.locator("[data-local-zone]")).to_have_text(BROWSER_ZONE)
    screens(page, "templates-empty")

    release = jobyard.data_dir / "release"
    create_through_three_steps(page, screens, SCRIPT.format(release=release))
    task_url = run_with_env_override(page, screens, release)
    edit_to_version_two(page, screens)
    roll_back_to_version_one(page, screens)
    task_history_and_events(page, screens, task_url)
    delete_template(page, screens)
    assert errors == [], errors


def deployment_choice(page: Page, title: str) -> Locator:
    """A "Task deployment method" card's radio button (its name starts with the title)."""
    return page.get_by_role("radio", name=re.compile("^" + re.escape(title)))


def unexpected(kind: str, text: str) -> list[str]:
    """Console errors (a Content-Security-Policy violation, a failed request), except
    the 422 or 409 of a form sent back with its errors, which is intended."""
    if kind != "error" or "status of 422" in text or "status of 409" in text:
        return []
    return [text]


def create_through_three_steps(page: Page, screens: Screens, script: str) -> None:
    page.locator(".page-head").get_by_role("link", name="Create job template").click()
    expect(page.locator(".stepper .current")).to_contain_text("Basic information")
    expect(deployment_choice(page, "Shell script")).to_be_checked()
    page.locator("[name=name]").fill("Not A Name")
    page.locator("[name=script]").fill(script)
    page.get_by_role("button", name="Next: Task settings").click()
    # The error shows beside the name; what was typed is still there.
    expect(page.locator("#err-name")).to_be_visible()
    expect(page.locator("[name=name]")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("[name=script]")).to_have_value(script)
    screens(page, "create-step1-error")
    page.locator("[name=name]").fill(NAME)
    page.get_by_role("button", name="Next: Task settings").click()

    expect(page.locator(".stepper .current")).to_contain_text("Task settings")
    fill_schedule_with_generation_tool(page)
    page.get_by_label("Forbid").check()
    page.locator("[name=timeout]").fill("600")
    page.locator("[name=retries]").fill("1")
    page.get_by_label("Enable task sharding").check()
    page.locator("[data-bulk-shards]").fill("north, south\neast")
    page.get_by_role("button", name="Add these").click()
    expect(page.locator("[name=shard]")).to_have_count(3)
    screens(page, "create-step2")
    page.get_by_role("button", name="Next: Advanced settings").click()

    expect(page.locator(".stepper .current")).to_contain_text("Advanced settings")
    page.get_by_role("button", name="+ Add variable").click()
    page.locator("[name=env_name]").last.fill("GREETING")
    page.locator("[name=env_value]").last.fill("world")
    page.locator("[name=retry_backoff]").fill("0")
    screens(page, "create-step3")
    page.get_by_role("button", name="Create", exact=True).click()

    expect(page.locator(".flash-ok")).to_contain_text(f"Created job template {NAME}")
    expect(page.locator("h1")).to_contain_text(NAME)
    expect(page.locator(".page-head")).to_contain_text("every day at 09:30 (Asia/Shanghai)")
    expect(page.locator("ol.fires li")).to_have_count(5)
    screens(page, "template-details")


def fill_schedule_with_generation_tool(page: Page) -> None:
    page.locator("[name=timezone]").fill("Asia/Shanghai")
    page.get_by_text("Use generation tool").click()
    page.get_by_label("How often").select_option("daily")
    page.get_by_label("Time of day").fill("09:30")
    expect(page.locator("[data-gen-out]")).to_have_text("30 9 * * *")
    page.get_by_role("button", name="Use this expression").click()
    expect(page.locator("[name=schedule]")).to_have_value("30 9 * * *")
    preview = page.locator("#cron-preview")
    expect(preview).to_contain_text("every day at 09:30 (Asia/Shanghai)")
    expect(preview.locator("li")).to_have_count(5)
    expect(preview.locator("li").first).to_contain_text("09:30:00 CST")


def run_with_env_override(page: Page, screens: Screens, release: Path) -> str:
    page.get_by_role("link", name="Run job manually").click()
    dialog = page.locator("#run-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="+ Add override").click()
    dialog.locator("[name=env_name]").fill("GREETING")
    dialog.locator("[name=env_value]").fill("console")
    screens(page, "run-dialog", full_page=False)
    dialog.get_by_role("button", name="Run", exact=True).click()

    expect(page.locator(".flash-ok")).to_contain_text("Started task")
    page.evaluate("window.notReloaded = true")
    summary, log = page.locator("#task-summary"), page.locator("#log")
    # The instance runs (it waits for the release file) and its log is followed live.
    expect(log).to_contain_text("hello console from instance 0, shards north,south,east")
    expect(summary).to_have_attribute("data-task-status", "running")
    expect(page.locator("[data-log-state]")).to_have_text("following live…")
    screens(page, "task-record-running")
    release.touch()
    expect(summary).to_have_attribute("data-task-status", "succeeded")
    expect(log).to_contain_text("bye")
    expect(page.locator("[data-log-state]")).to_have_text("ended")
    assert page.evaluate("window.notReloaded") is True, "the page was reloaded"
    row = summary.locator("tbody tr").first
    expect(row).to_contain_text("succeeded")
    expect(row.locator("td").nth(3)).to_have_text("0")
    expect(row.locator(".chip")).to_have_text(["north", "south", "east"])
    expect(summary.locator("thead")).to_contain_text("Peak memory")
    expect(summary).to_contain_text("GREETING=console")
    screens(page, "task-record")
    return page.url


def edit_to_version_two(page: Page, screens: Screens) -> None:
    page.get_by_role("link", name="Details", exact=True).click()
    page.get_by_role("link", name="Edit job template").click()
    expect(page.locator("[name=name]")).to_have_value(NAME)
    page.locator("[name=description]").fill("Sends the nightly report")
    page.locator(".stepper button", has_text="Task settings").click()
    page.locator("[name=timeout]").fill("9999999")
    page.get_by_role("button", name="Save as version 2").click()
    # Refused: the error is beside the timeout, and the description typed is kept.
    expect(page.locator("#err-timeout")).to_contain_text("604800")
    expect(page.locator("[name=timeout]")).to_have_value("9999999")
    expect(page.locator("[name=description]")).to_have_value("Sends the nightly report")
    screens(page, "edit-error")
    page.locator("[name=timeout]").fill("1200")
    page.get_by_role("button", name="Save as version 2").click()
    expect(page.locator(".flash-ok")).to_contain_text("version 2")
    expect(page.locator(".badge-version")).to_have_text("v2")
    expect(page.locator(".kvs").first).to_contain_text("Sends the nightly report")


def roll_back_to_version_one(page: Page, screens: Screens) -> None:
    page.get_by_role("link", name="Roll back to historical version").click()
    version_one = page.locator(".version").filter(has_text="Version 1")
    expect(version_one.locator(".diff-remove")).to_contain_text(["Sends the nightly report"])
    expect(version_one.locator(".diff-add")).to_contain_text(["timeout: 600"])
    screens(page, "versions")
    version_one.get_by_role("radio").check()
    page.get_by_role("button", name="OK").click()
    expect(page.locator(".flash-ok")).to_contain_text("Rolled back to version 1")
    expect(page.locator(".badge-version")).to_have_text("v3")
    expect(page.locator(".kvs").first).not_to_contain_text("Sends the nightly report")
    expect(page.locator("#recent-tasks tr")).to_have_count(1)
    screens(page, "details-after-rollback")


def task_history_and_events(page: Page, screens: Screens, task_url: str) -> None:
    page.get_by_role("link", name="Task history", exact=True).click()
    rows = page.locator("#task-rows tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("succeeded")
    page.get_by_label("Status").select_option("failed")
    expect(page.locator("#task-rows")).to_contain_text("No task matches these filters")
    page.get_by_label("Status").select_option("succeeded")
    expect(rows.first.get_by_role("link")).to_have_attribute("href", urlsplit(task_url).path)
    screens(page, "task-history")

    page.get_by_role("link", name="Event information", exact=True).click()
    page.get_by_label("Reason").fill("RolledBack")
    page.get_by_role("button", name="Search").click()
    events = page.locator("table.events tbody tr")
    expect(events).to_have_count(1)
    expect(events.first).to_contain_text("created version 3 (a copy of version 1)")
    screens(page, "template-events")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Events").click()
    page.get_by_label("Source name").fill(f"{NAME}/task-")
    page.get_by_label("Severity").select_option("normal")
    events = page.locator("table.events tbody tr")
    expect(events.filter(has_text="TaskSucceeded")).to_have_count(1)
    expect(events.filter(has_text="RolledBack")).to_have_count(0)
    times = events.locator("time").evaluate_all("els => els.map(e => Date.parse(e.dateTime))")
    assert times == sorted(times, reverse=True), "events are not newest first"
    screens(page, "events")


def delete_template(page: Page, screens: Screens) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Job templates").click()
    page.get_by_role("link", name=NAME, exact=True).click()
    page.get_by_role("link", name="Delete job template").click()
    dialog = page.locator("#delete-dialog")
    expect(dialog).to_contain_text("3 versions")
    expect(dialog).to_contain_text("1 task record")
    screens(page, "delete-dialog", full_page=False)
    dialog.get_by_role("button", name=f"Delete {NAME}").click()
    expect(page.locator(".flash-ok")).to_contain_text(f"Deleted job template {NAME}")
    expect(page.locator("#template-rows")).to_contain_text("No job templates")
    screens(page, "templates-after-delete")


def test_template_list_and_an_http_trigger_url(
    jobyard: JobyardServer, browser: BrowserContext, screens: Screens
) -> None:
    showcase(jobyard)
    page = browser.new_page()
    page.goto(jobyard.url + "/namespaces/default/templates")
    rows = page.locator("#template-rows tr")
    expect(rows).to_have_count(3)
    report = rows.filter(has_text="daily-report")
    expect(report).to_contain_text("at 09:00 on weekdays (Monday to Friday) (Asia/Shanghai)")
    expect(report.locator("time").first).to_have_attribute("datetime", re.compile(r"T01:00:00"))
    expect(report.locator(".badge-succeeded")).to_be_visible()
    expect(rows.filter(has_text="cleanup").locator(".badge-failed")).to_be_visible()
    screens(page, "templates")
    page.get_by_label("Last task").select_option("failed")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("cleanup")
    page.goto(jobyard.url + "/namespaces/default/templates?q=tags")
    expect(rows).to_have_count(1)

    rows.first.get_by_role("link", name="refresh-tags").click()
    url = page.locator("#hook-url").input_value()
    assert url.startswith(jobyard.url + "/hooks/")
    expect(page.locator("#curl-example")).to_contain_text(f"'{url}'")
    browser.grant_permissions(["clipboard-read", "clipboard-write"], origin=jobyard.url)
    page.get_by_role("button", name="Copy", exact=True).click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == url
    accepted = httpx.post(url, json={"Envs": [{"name": "aaa", "value": "bbb"}]}, timeout=30)
    assert accepted.status_code == 202, accepted.text
    # The task the request started appears in "Recent tasks" without a reload.
    expect(page.locator("#recent-tasks")).to_contain_text("http")
    screens(page, "http-template")

    page.goto(jobyard.url + "/namespaces/default/templates/daily-report")
    expect(page.locator("#recent-tasks tr")).to_have_count(2)
    screens(page, "cron-template")
    target = os.environ.get("JOBYARD_CONSOLE_SCREENSHOT")
    if target:
        page.screenshot(path=target)


def showcase(jobyard: JobyardServer) -> None:
    """Three templates as a user might have them: cron, HTTP, manual; some tasks run."""
    report = script_template(
        "daily-report",
        'echo "report for $REGION, shards $JOBYARD_SHARDS"',
        description="Builds the daily revenue report",
        replicas=2,
        trigger={"type": "cron", "schedule": "0 9 * * MON-FRI", "timezone": "Asia/Shanghai"},
        sharding={"enabled": True, "shards": ["a", "b", "c", "d", "e"]},
        env=[{"name": "REGION", "value": "east"}],
        concurrency_policy="Forbid",
        timeout=600,
        retries=2,
    )
    hook = {"type": "http", "methods": ["POST"], "protocols": ["http", "https"]}
    jobyard.create_template(report)
    jobyard.create_template(script_template("refresh-tags", "echo refreshed", trigger=hook))
    jobyard.create_template(script_template("cleanup", "echo cleaning; exit 3", retries=0))
    for name, body in (("daily-report", {"envs": [{"name": "REGION", "value": "west"}]}),
                       ("daily-report", None), ("cleanup", None)):  # fmt: skip
        jobyard.wait_task(jobyard.run(name, body)["id"])


def test_sign_in_with_a_token_kept_in_an_http_only_cookie(
    jobyard: JobyardServer, browser: BrowserContext, screens: Screens
) -> None:
    viewer = jobyard.api("POST", "/tokens", expect=201, json={"name": "v", "role": "viewer"})
    page = browser.new_page()
    page.goto(jobyard.url + "/namespaces/default/templates")
    expect(page).to_have_url(jobyard.url + "/login?next=%2Fnamespaces%2Fdefault%2Ftemplates")
    page.get_by_label("API token").fill("jy_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".field-error")).to_have_text("This token is not valid.")
    page.get_by_label("API token").fill(viewer["token"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("h1")).to_have_text("Job templates")
    expect(page.locator(".who")).to_contain_text("v · viewer")
    expect(page.locator(".actions [aria-disabled=true]")).to_have_text("Create job template")
    screens(page, "viewer-signed-in")
    cookie = next(c for c in browser.cookies() if c["name"] == "jobyard_token")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(jobyard.url + "/login")
    assert not [c for c in browser.cookies() if c["name"] == "jobyard_token"]


# -- deployment methods, packages, instance usage and capacity --------------------------------


def test_package_and_image_templates_through_the_wizard(
    jobyard: JobyardServer, browser: BrowserContext, screens: Screens, tmp_path: Path
) -> None:
    page, errors = watched_page(browser)
    page.on("dialog", lambda dialog: dialog.accept())  # the delete confirmation
    archive = small_zip(tmp_path / "report-app.zip")
    digest = "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()
    page.goto(jobyard.url + "/namespaces/default/templates")
    upload_packages(page, screens, archive, tmp_path / "notes.txt")
    create_package_template(page, screens, digest)
    package_in_use(page, screens, digest)
    create_image_template(page, screens, jobyard)
    edit_image_template(page, screens)
    assert errors == [], errors


def watched_page(browser: BrowserContext) -> tuple[Page, list[str]]:
    """A new page, and the list its script errors and failed requests are put in."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("console", lambda msg: errors.extend(unexpected(msg.type, msg.text)))
    return page, errors


def small_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("main.py", "import sys\nprint('report', sys.argv[1:])\n")
    return path


def upload_packages(page: Page, screens: Screens, archive: Path, not_a_package: Path) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Code packages").click()
    expect(page.locator("h1")).to_have_text("Code packages")
    expect(page.locator("#packages")).to_contain_text("No package has been uploaded")
    not_a_package.write_text("just some notes\n")
    page.get_by_label("Package file").set_input_files(str(not_a_package))
    page.get_by_role("button", name="Upload").click()
    expect(page.locator(".flash-error")).to_contain_text("'notes.txt' is not a kind of package")
    page.get_by_label("Package file").set_input_files(str(archive))
    page.get_by_role("button", name="Upload").click()
    expect(page.locator(".flash-ok")).to_contain_text("Uploaded report-app.zip as sha256:")
    rows = page.locator("#packages tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td").nth(1)).to_have_text("report-app.zip")
    expect(rows.first.locator("td").nth(2)).to_have_text("zip")
    expect(rows.first.locator("[data-used-by]")).to_have_text("no template")
    # The same bytes again are the same package.
    page.get_by_label("Package file").set_input_files(str(archive))
    page.get_by_role("button", name="Upload").click()
    expect(page.locator(".flash-ok")).to_contain_text("Already uploaded: report-app.zip")
    expect(rows).to_have_count(1)
    screens(page, "packages")


def create_package_template(page: Page, screens: Screens, digest: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Job templates").click()
    page.locator(".page-head").get_by_role("link", name="Create job template").click()
    page.locator("[name=name]").fill("zip-report")
    expect(page.locator("[name=package]")).to_be_hidden()
    deployment_choice(page, "Code package").check()
    expect(page.locator("[name=script]")).to_be_hidden()
    page.locator("select[name=package]").select_option(digest)
    page.locator("select[name=stack]").select_option("binary")
    page.locator("[name=package_args]").fill("--title\nQ3 report")
    page.get_by_role("button", name="Next: Task settings").click()
    page.get_by_label("Manual only").check()
    page.get_by_role("button", name="Next: Advanced settings").click()
    page.get_by_role("button", name="Create", exact=True).click()
    # The server knows the package is a zip: a binary stack needs the command in it.
    expect(page.locator(".stepper .current")).to_contain_text("Basic information")
    expect(page.locator("#err-stack")).to_contain_text("report-app.zip is an archive")
    page.locator("select[name=stack]").select_option("python")
    page.get_by_role("button", name="Next: Task settings").click()
    # A python package needs a command: the error is beside it, the rest is kept.
    expect(page.locator("#err-package_command")).to_contain_text("needs a command")
    expect(page.locator("select[name=package]")).to_have_value(digest)
    expect(page.locator("[name=package_args]")).to_have_value("--title\nQ3 report")
    screens(page, "create-package-error")
    page.locator("[name=package_command]").fill("python main.py")
    page.get_by_role("button", name="Next: Task settings").click()
    expect(page.get_by_label("Manual only")).to_be_checked()
    page.get_by_role("button", name="Next: Advanced settings").click()
    page.get_by_role("button", name="Create", exact=True).click()

    expect(page.locator(".flash-ok")).to_contain_text("Created job template zip-report")
    deployment = page.locator("[data-deployment=package]")
    expect(deployment.locator("[data-digest]")).to_have_text(digest[: len("sha256:") + 12])
    expect(deployment).to_contain_text("report-app.zip (zip,")
    expect(deployment).to_contain_text("Python")
    expect(deployment.locator(".command-line")).to_have_text("python main.py --title 'Q3 report'")
    screens(page, "package-template")

    page.get_by_role("link", name="Edit job template").click()
    expect(deployment_choice(page, "Code package")).to_be_checked()
    expect(page.locator("select[name=package]")).to_have_value(digest)
    expect(page.locator("[name=package_command]")).to_have_value("python main.py")
    expect(page.locator("[name=package_args]")).to_have_value("--title\nQ3 report")


def package_in_use(page: Page, screens: Screens, digest: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Code packages").click()
    row = page.locator(f"#packages tr[data-digest='{digest}']")
    expect(row.locator("[data-used-by]")).to_have_text("zip-report (v1)")
    row.get_by_role("button", name="Delete").click()
    expect(page.locator(".flash-error")).to_contain_text(
        f"Not deleted: package {digest} is still used by template 'zip-report' (version 1)"
    )
    expect(row).to_be_visible()
    screens(page, "package-in-use")


def create_image_template(page: Page, screens: Screens, jobyard: JobyardServer) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Job templates").click()
    page.locator(".page-head").get_by_role("link", name="Create job template").click()
    page.locator("[name=name]").fill("alpine-hello")
    deployment_choice(page, "Image").check()
    page.locator("[name=image]").fill("Alpine:3.20")
    page.locator("[name=image_command]").fill("sh\n-c\necho hello from alpine")
    page.get_by_label("Pull policy").select_option("Never")
    page.locator("[name=instance_type][value=best-effort]").check()
    page.get_by_role("button", name="Next: Task settings").click()
    expect(page.locator("#err-image")).to_contain_text("lowercase")
    expect(page.locator("[name=image_command]")).to_have_value("sh\n-c\necho hello from alpine")
    expect(page.get_by_label("Pull policy")).to_have_value("Never")
    screens(page, "create-image-error")
    page.locator("[name=image]").fill("docker.io/library/alpine:3.20")
    page.get_by_role("button", name="Next: Task settings").click()
    page.get_by_label("Manual only").check()
    page.get_by_role("button", name="Next: Advanced settings").click()
    page.get_by_role("button", name="Create", exact=True).click()

    expect(page.locator(".flash-ok")).to_contain_text("Created job template alpine-hello")
    deployment = page.locator("[data-deployment=image]")
    expect(deployment.locator("[data-image]")).to_have_text("docker.io/library/alpine:3.20")
    expect(deployment.locator(".command-line")).to_have_text("sh -c 'echo hello from alpine'")
    expect(deployment).to_contain_text("Never")
    expect(page.locator("[data-instance-type]")).to_contain_text("best-effort")
    # Without a working container engine the page says why each run would fail.
    warnings = jobyard.api("GET", "/namespaces/default/templates/alpine-hello")["warnings"]
    expect(page.locator(".notice-warn")).to_have_count(len(warnings))
    for warning in warnings:
        expect(page.locator(".notice-warn").first).to_contain_text(warning[1:])
    screens(page, "image-template")


def edit_image_template(page: Page, screens: Screens) -> None:
    page.get_by_role("link", name="Edit job template").click()
    expect(deployment_choice(page, "Image")).to_be_checked()
    expect(page.locator("[name=image]")).to_have_value("docker.io/library/alpine:3.20")
    expect(page.locator("[name=image_command]")).to_have_value("sh\n-c\necho hello from alpine")
    expect(page.get_by_label("Pull policy")).to_have_value("Never")
    expect(page.locator("[name=instance_type][value=best-effort]")).to_be_checked()
    page.locator("[name=image_args]").fill("first\nsecond arg")
    screens(page, "edit-image")
    page.get_by_role("button", name="Save as version 2").click()
    expect(page.locator(".flash-ok")).to_contain_text("version 2")
    arguments = page.locator("[data-deployment=image] .command-line").nth(1)
    expect(arguments).to_have_text("first 'second arg'")


@pytest.fixture
def small_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobyardServer]:
    """A server whose node has room for one CPU: a default instance of 1 CPU must
    preempt any best-effort instance to start."""
    data_dir = tmp_path_factory.mktemp("console-small-node")
    server = start_server(data_dir, extra_args=["--capacity-cpu", "1"])
    try:
        yield server
    finally:
        stop_server(server)


def test_usage_best_effort_preemption_and_capacity(
    small_node: JobyardServer, browser: BrowserContext, screens: Screens
) -> None:
    jobyard = small_node
    hog_release, usage_release = jobyard.data_dir / "hog-release", jobyard.data_dir / "go"
    wait_script = "while [ ! -e {} ]; do sleep 0.1; done"
    jobyard.create_template(
        script_template(
            "hog",
            wait_script.format(hog_release),
            instance_type="best-effort",
            resources={"cpu": 0.5, "memory_mb": 256},
        )
    )
    # 80 MiB allocated and some CPU burnt, then it waits to be released.
    burn = (
        "import time; block = bytearray(80 * 1024 * 1024); start = time.process_time()\n"
        "while time.process_time() - start < 0.3: sum(range(1000))"
    )
    script = f'python3 -c "{burn}"\n' + wait_script.format(usage_release)
    jobyard.create_template(script_template("usage", script, resources={"cpu": 1}))

    page, errors = watched_page(browser)
    hog = jobyard.run("hog")["id"]
    wait_for(lambda: running(jobyard, hog))
    page.goto(f"{jobyard.url}/tasks/{hog}")
    first = page.locator("#task-summary tbody tr").first
    expect(first.locator(".badge-running")).to_be_visible()
    expect(first.locator(".badge-best-effort")).to_have_text("best-effort")
    screens(page, "task-best-effort")
    page.goto(jobyard.url + "/namespaces/default/templates")
    capacity = page.locator("#capacity")
    expect(capacity.locator("[data-held-instances]")).to_have_text("0 default, 1 best-effort")
    cpu = capacity.locator("[data-resource=cpu]")
    expect(cpu.locator("[data-held-best-effort]")).to_have_text("0.5 cores")
    expect(cpu.locator("[data-capacity]")).to_have_text("1 core")
    screens(page, "capacity")

    usage = jobyard.run("usage")["id"]
    wait_for(lambda: running(jobyard, usage))
    # The best-effort instance made room and waits, best-effort again, for it to come back.
    page.goto(f"{jobyard.url}/tasks/{hog}")
    rows = page.locator("#task-summary tbody tr")
    expect(rows.filter(has=page.locator(".badge-preempted"))).to_have_count(1)
    waiting = rows.filter(has=page.locator(".badge-pending"))
    expect(waiting.locator("[data-waiting]")).to_contain_text("waiting: InsufficientCapacity")
    expect(waiting.locator(".badge-best-effort")).to_be_visible()
    screens(page, "task-preempted")
    expect(capacity_of(page, jobyard)).to_have_text("1 default, 0 best-effort")

    usage_release.touch()
    assert jobyard.wait_task(usage)["status"] == "succeeded"
    hog_release.touch()
    assert jobyard.wait_task(hog)["status"] == "succeeded"
    instance_usage(page, screens, jobyard, usage)
    out_of_memory(page, screens, jobyard)
    assert errors == [], errors


def running(jobyard: JobyardServer, task_id: int) -> bool:
    return any(i["status"] == "running" for i in jobyard.instances(task_id))


def capacity_of(page: Page, jobyard: JobyardServer) -> Locator:
    page.goto(jobyard.url + "/namespaces/default/templates")
    return page.locator("#capacity [data-held-instances]")


def instance_usage(page: Page, screens: Screens, jobyard: JobyardServer, task_id: int) -> None:
    """Peak memory and CPU time of an ended instance, as the runner measured them."""
    (measured,) = jobyard.instances(task_id)
    page.goto(f"{jobyard.url}/tasks/{task_id}")
    row = page.locator("#task-summary tbody tr").first
    expect(row.locator(".badge-succeeded")).to_be_visible()
    expect(row.locator(".badge-best-effort")).to_have_count(0)
    peak, cpu = row.locator("[data-peak-memory]"), row.locator("[data-cpu-seconds]")
    screens(page, "task-usage")
    assert measured["peak_memory_bytes"] is not None, "the runner measured no peak memory"
    assert measured["cpu_seconds"] is not None, "the runner measured no CPU time"
    assert measured["peak_memory_bytes"] >= 80 * 1024 * 1024
    assert measured["cpu_seconds"] >= 0.3
    expect(peak).to_have_text(re.compile(r"^\d+(\.\d)? (MiB|GiB)$"))
    expect(cpu).to_have_text(re.compile(r"^(\d+ ms|\d+\.\d s|\d+ min \d+ s)$"))


def out_of_memory(page: Page, screens: Screens, jobyard: JobyardServer) -> None:
    """An instance that allocates past its memory limit is killed, and the record says so."""
    allocate = 'python3 -c "block = bytearray(300 * 1024 * 1024)"'
    spec = script_template("greedy", allocate, retries=0, resources={"memory_mb": 64})
    jobyard.create_template(spec)
    task_id = jobyard.run("greedy")["id"]
    assert jobyard.wait_task(task_id)["status"] == "failed"
    page.goto(f"{jobyard.url}/tasks/{task_id}")
    row = page.locator("#task-summary tbody tr").first
    expect(row.locator(".badge-failed")).to_be_visible()
    expect(row.locator(".instance-reason.is-oom")).to_contain_text("OOMKilled")
    screens(page, "task-oom-killed")
