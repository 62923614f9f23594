"""The one exception tree of jobyard.

Every error a user can cause is a ``JobyardError``; the API maps each class to
an HTTP status in one place (``jobyard.api.errors``).
"""

from __future__ import annotations


class JobyardError(Exception):
    """Root of all jobyard errors; ``str(err)`` is the message shown to users."""


class InvalidSpec(JobyardError):
    """Input that breaks a rule: a field out of range, a malformed cron, ..."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(JobyardError):
    """The named namespace, template, version, task or instance does not exist."""


class AlreadyExists(JobyardError):
    """A name that must be unique is taken."""


class Conflict(JobyardError):
    """The request is valid but clashes with the current state."""


class ConcurrencyForbidden(Conflict):
    """A Forbid template already has an active task."""

    def __init__(self, message: str, active_task_id: int) -> None:
        super().__init__(message)
        self.active_task_id = active_task_id


class StoreError(JobyardError):
    """The database failed in a way the caller cannot fix."""


class BadRequest(JobyardError):
    """A request that cannot be understood (malformed JSON, a bad override)."""


class Unauthorized(JobyardError):
    """No valid API token."""


class Forbidden(JobyardError):
    """Known caller, not allowed: a role too weak, a trigger filter said no."""


class MethodNotAllowed(JobyardError):
    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message)
        self.allowed = allowed


class PayloadTooLarge(JobyardError):
    """A request body over the configured limit."""
