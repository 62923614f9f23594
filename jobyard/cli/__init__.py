"""The ``jobyard`` command: ``jobyard server`` and the client commands.

Client commands talk to a server over the REST API (``/api/v1``). Each takes the
connection and output options (see ``session.py``); settings resolve as
flag > ``JOBYARD_*`` environment > config file (``~/.config/jobyard/config.yaml``
or ``$JOBYARD_CONFIG``) > default. Every failure is one ``error: ...`` line on
stderr: exit 1 when the server refused or a task failed, 2 for usage mistakes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import typer

from jobyard.cli import apply, instances, logs, packages, tasks, templates, tokens
from jobyard.cli.errors import EXIT_FAILURE
from jobyard.cli.server import server
from jobyard.cli.session import client_command, is_usage_error

TEMPLATES = "Templates"
TASKS = "Tasks"
SERVER = "Server"

app = typer.Typer(
    name="jobyard",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
app.command(rich_help_panel=SERVER)(server)

TEMPLATE_COMMANDS: list[Callable[..., None]] = [
    apply.apply,
    templates.templates,
    templates.get,
    templates.versions,
    templates.rollback,
    templates.suspend,
    templates.resume,
    templates.delete,
]
TASK_COMMANDS: list[Callable[..., None]] = [
    tasks.run,
    tasks.tasks,
    instances.instances,
    logs.logs,
    tasks.stop,
    tasks.events,
]
for command in TEMPLATE_COMMANDS:
    app.command(rich_help_panel=TEMPLATES)(client_command(command))
for command in TASK_COMMANDS:
    app.command(rich_help_panel=TASKS)(client_command(command))

token_app = typer.Typer(
    name="token", help="Create, list and revoke API tokens.", no_args_is_help=True
)
token_app.command("create")(client_command(tokens.create))
token_app.command("list")(client_command(tokens.list_tokens))
token_app.command("revoke")(client_command(tokens.revoke))
app.add_typer(token_app, rich_help_panel=SERVER)

package_app = typer.Typer(
    name="package", help="Upload, list and delete code packages.", no_args_is_help=True
)
package_app.command("push")(client_command(packages.push))
package_app.command("list")(client_command(packages.list_packages))
package_app.command("delete")(client_command(packages.delete))
app.add_typer(package_app, rich_help_panel=TEMPLATES)


@app.callback()
def _root() -> None:
    """A self-hosted serverless job platform: templates, cron and HTTP triggers, tasks.

    Client commands find the server from --url, JOBYARD_URL, the config file, or localhost.

    Config file: ~/.config/jobyard/config.yaml or $JOBYARD_CONFIG.

    Its keys: url, token, namespace, ca_cert, insecure.
    """


def main() -> None:
    """Run the command; usage mistakes become one ``error:`` line and exit 2."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(EXIT_FAILURE)
    except Exception as err:
        if not is_usage_error(err):
            raise
        _report_usage_error(err)
    sys.exit(code if isinstance(code, int) else 0)


def _report_usage_error(err: Any) -> None:
    exit_code = int(err.exit_code)
    if type(err).__name__ == "NoArgsIsHelpError":
        err.show()  # a group without a command: its help
        sys.exit(exit_code)
    context = getattr(err, "ctx", None)
    hint = f" (see '{context.command_path} --help')" if context is not None else ""
    message = " ".join(str(err.format_message()).replace("Value error, ", "").split())
    typer.echo(f"error: {message}{hint}", err=True)
    sys.exit(exit_code)
