"""Error codes and messages the emulator answers with, in one place so each is easy to change.

Codes 10001, 10200 and 10400, the auth codes 9106, 6003 (with 6111 in its ``error_chain``) and
10000, and 7000 have been seen on Cloudflare's API (the issue threads cited in ``protocol.py``). Every code
marked *inferred* or *unverified* is our choice: Cloudflare does not document it.
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
INVALID_HEADERS = ErrorCode(6003, "Invalid request headers")  # with INVALID_AUTH_FORMAT as its chain
INVALID_AUTH_FORMAT = ErrorCode(6111, "Invalid format for Authorization header")
AUTH_FAILED = ErrorCode(10000, "Authentication error")
NO_ROUTE = ErrorCode(7000, "No route for that URI")
RATE_LIMITED = ErrorCode(971, "Please wait and consider throttling your request speed")

# The code is in a newer Workers binding source; the message is the binding's text, which third-party tests
# quote from production. Unverified for REST.
INSTANCE_ALREADY_EXISTS = ErrorCode(10405, "(instance.already_exists) Instance already exists")
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
INSTANCE_FINISHED = ErrorCode(10409, "Instance has finished; it cannot receive events.")  # inferred
OUTPUT_TOO_LARGE_NAME = "WorkflowInternalError"  # the step error of an output over 1 MiB (WSDK context.ts)
OUTPUT_TOO_LARGE_MESSAGE = "Step {step} output is too large. Maximum allowed size is 1MiB."

# HTTP statuses for the cases above that Cloudflare's API reference leaves open.
# (The already-exists status is an option, ApiOptions.already_exists_status: 409 or 400, both seen.)
STATUS_EVENT_TOO_LARGE = 400  # inferred (the brief; a 413 would be just as plausible)
STATUS_INVALID_TRANSITION = 409  # inferred: the spec only documents 409 for restart
# Inferred: the binding "throws if the Workflow is not running"; the REST status is not documented.
STATUS_EVENT_TO_FINISHED = 409


class ApiError(Exception):
    """An error answer of the emulated API: HTTP status plus one ``{code, message}``."""

    def __init__(
        self,
        status: int,
        error: ErrorCode,
        message: str | None = None,
        *,
        chain: tuple[ErrorCode, ...] = (),
    ) -> None:
        super().__init__(message or error.message)
        self.status = status
        self.code = error.code
        self.message = message or error.message
        self.chain = chain

    def as_error(self) -> dict[str, Any]:
        """The item of the envelope's ``errors`` array (with ``error_chain`` when there is one)."""
        item: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.chain:
            item["error_chain"] = [{"code": link.code, "message": link.message} for link in self.chain]
        return item
