"""What the client reports as ``error: ...`` on stderr, and with which exit code."""

from __future__ import annotations

from jobyard.errors import JobyardError

EXIT_FAILURE = 1  # the server refused, could not be reached, or the task failed
EXIT_USAGE = 2  # the command line, a file or the config is wrong


class CliError(JobyardError):
    """Shown as one line; ``exit_code`` is what the process ends with."""

    exit_code = EXIT_FAILURE


class UsageProblem(CliError):
    """Something the user can fix locally: a flag, a file, the config."""

    exit_code = EXIT_USAGE


class ApiError(CliError):
    """The server answered with an error status."""

    def __init__(self, message: str, status: int, code: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
