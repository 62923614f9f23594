"""The options every client command takes, and the session they resolve to.

``client_command`` adds the global options (``--url``, ``--token``, ``-n``, ``-o``,
...) to a command's signature, builds a ``Session`` from them, and turns every
failure into one ``error: ...`` line on stderr with the right exit code.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Concatenate, NoReturn, ParamSpec, cast

import typer

from jobyard.cli import config
from jobyard.cli.client import Api
from jobyard.cli.errors import EXIT_FAILURE, CliError

P = ParamSpec("P")
PANEL = "Connection and output"


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


@dataclass
class Session:
    """One command's view of the server: where, as whom, in which namespace, how to print."""

    connection: config.Connection
    output: Output
    namespace_from_command_line: bool
    _api: Api | None = field(default=None, repr=False)

    @property
    def namespace(self) -> str:
        return self.connection.namespace

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = Api(self.connection)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()


def _option(*names: str, env: str | None, help: str) -> Any:
    return typer.Option(*names, envvar=env, help=help, rich_help_panel=PANEL, show_default=False)


_GLOBALS: list[tuple[str, Any, Any]] = [
    (
        "url",
        Annotated[
            str | None,
            _option("--url", env="JOBYARD_URL", help=f"server URL (default {config.DEFAULT_URL})"),
        ],
        None,
    ),
    (
        "token",
        Annotated[
            str | None,
            _option("--token", env="JOBYARD_TOKEN", help="API token, sent as a Bearer token"),
        ],
        None,
    ),
    (
        "namespace",
        Annotated[
            str | None,
            _option(
                "--namespace", "-n", env="JOBYARD_NAMESPACE", help="namespace (default: default)"
            ),
        ],
        None,
    ),
    (
        "ca_cert",
        Annotated[
            Path | None,
            _option(
                "--ca-cert",
                env="JOBYARD_CA_CERT",
                help="CA certificate (PEM) to trust a self-signed HTTPS server",
            ),
        ],
        None,
    ),
    (
        "insecure",
        Annotated[
            bool, _option("--insecure", env=None, help="do not verify the server's certificate")
        ],
        False,
    ),
    (
        "output",
        Annotated[Output, _option("--output", "-o", env=None, help="table, json or yaml")],
        Output.TABLE,
    ),
]
GLOBAL_NAMES = [name for name, _, _ in _GLOBALS]
CONTEXT = "jobyard_context"


def _global_parameters() -> list[inspect.Parameter]:
    keyword = inspect.Parameter.KEYWORD_ONLY
    found = [
        inspect.Parameter(name, keyword, default=default, annotation=hint)
        for name, hint, default in _GLOBALS
    ]
    # typer fills a parameter annotated with its Context: it says where values came from.
    return [*found, inspect.Parameter(CONTEXT, keyword, annotation=typer.Context)]


def client_command(func: Callable[Concatenate[Session, P], None]) -> Callable[..., None]:
    """Make ``func(session, ...)`` a typer command with the global options."""
    own = list(inspect.signature(func, eval_str=True).parameters.values())[1:]
    parameters = own + _global_parameters()
    call = cast(Callable[..., None], func)

    @functools.wraps(func)
    def command(**kwargs: Any) -> None:
        chosen = {name: kwargs.pop(name) for name in GLOBAL_NAMES}
        context: typer.Context = kwargs.pop(CONTEXT)
        with reported_errors():
            session = _session(chosen, context)
            try:
                call(session, **kwargs)
            finally:
                session.close()

    signature = inspect.Signature(parameters, return_annotation=None)
    command.__signature__ = signature  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    return command


def _session(chosen: dict[str, Any], context: typer.Context) -> Session:
    connection = config.resolve(
        url=chosen["url"],
        token=chosen["token"],
        namespace=chosen["namespace"],
        ca_cert=chosen["ca_cert"],
        insecure=chosen["insecure"],
        config=config.load_config(),
    )
    source = context.get_parameter_source("namespace")
    return Session(
        connection=connection,
        output=chosen["output"],
        namespace_from_command_line=source is not None and source.name == "COMMANDLINE",
    )


@contextmanager
def reported_errors() -> Iterator[None]:
    """``error: ...`` on stderr and an exit code, never a traceback."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except CliError as err:
        fail(str(err), err.exit_code)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except BrokenPipeError:
        _silence_stdout()
        raise typer.Exit(EXIT_FAILURE) from None
    except Exception as err:
        if is_usage_error(err) or os.environ.get("JOBYARD_DEBUG"):
            raise
        fail(f"unexpected {type(err).__name__}: {err} (set JOBYARD_DEBUG=1 for a traceback)")


def is_usage_error(err: BaseException) -> bool:
    """click's own exceptions (typer may vendor click: no isinstance that always works)."""
    return hasattr(err, "format_message") and isinstance(getattr(err, "exit_code", None), int)


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print one error line and end the command."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


def _silence_stdout() -> None:
    # The reader went away (``| head``): later flushes must not fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
