"""Error codes and messages the emulator answers with, in one place so each is easy to change.

Codes 10001, 10200 and 10400 and the auth codes 9106 and 10000 have been seen on Cloudflare's API
(reference §8.1-§8.2). Every code marked *inferred* or *unverified* is our choice: Cloudflare does
not document it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorCode:
    """A Cloudflare API error: numeric ``code`` and default ``message``."""

    code: int
    message: str


# Seen in production.
INTERNAL = ErrorCode(10001, "workflows.api.error.internal_server")
WORKFLOW_NOT_FOUND = ErrorCode(10200, "workflows.api.error.workflow.not_found")
INSTANCE_NOT_FOUND = ErrorCode(10400, "workflows.api.error.instance.not_found")
MISSING_AUTH = ErrorCode(9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
AUTH_FAILED = ErrorCode(10000, "Authentication error")

# Unverified: a third-party emulator's guess (reference §3.6, §8.2).
INSTANCE_ALREADY_EXISTS = ErrorCode(10405, "workflows.api.error.instance.already_exists")
DUPLICATE_IN_BATCH = ErrorCode(10415, "workflows.api.error.instance.duplicate_in_batch")

# Inferred codes: the messages come from the spec / PR #14822 / docs where there is one.
STEP_NOT_FOUND = ErrorCode(10404, "workflows.api.error.instance.step_not_found")  # inferred code
VERSION_NOT_FOUND = ErrorCode(10300, "Version not found.")  # inferred code; message from the spec
VALIDATION = ErrorCode(10021, "Input Validation Error")  # inferred code; message from the spec
INVALID_INSTANCE_ID = ErrorCode(10021, "Provided Workflow ID is not valid.")  # inferred code
INVALID_EVENT_TYPE = ErrorCode(10021, "workflow.invalid_event_type")  # inferred code; name from the docs
EVENT_TOO_LARGE = ErrorCode(10021, "Event payload exceeds the 1 MiB limit.")  # inferred (400 too)
NOT_RESTARTABLE = ErrorCode(10409, "Instance not in a restartable state.")  # inferred code
INVALID_TRANSITION = ErrorCode(10409, "Instance is not in a state that allows this change.")  # inferred
MALFORMED_JSON = ErrorCode(6007, "Malformed JSON in request body")  # inferred (generic Cloudflare API)
RATE_LIMITED = ErrorCode(971, "Please wait and consider throttling your request speed")  # inferred
NO_ROUTE = ErrorCode(7000, "No route for that URI")  # generic Cloudflare API
METHOD_NOT_ALLOWED = ErrorCode(7001, "Method not allowed for this endpoint")  # inferred

# HTTP statuses for the cases above that the reference leaves open.
STATUS_ALREADY_EXISTS = 409  # inferred: a conflict, like the status-change conflicts
STATUS_EVENT_TOO_LARGE = 400  # inferred (the brief; a 413 would be just as plausible)
STATUS_INVALID_TRANSITION = 409  # inferred: the spec only documents 409 for restart


class ApiError(Exception):
    """An error answer of the emulated API: HTTP status plus one ``{code, message}``."""

    def __init__(self, status: int, error: ErrorCode, message: str | None = None) -> None:
        super().__init__(message or error.message)
        self.status = status
        self.code = error.code
        self.message = message or error.message

    def as_error(self) -> dict[str, Any]:
        """The item of the envelope's ``errors`` array."""
        return {"code": self.code, "message": self.message}
