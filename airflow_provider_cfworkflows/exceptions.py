"""Typed errors raised by the Cloudflare Workflows hook, sensors and operators.

API errors carry what a user needs to act on them: the HTTP status, Cloudflare's error codes and
messages, and the ``cf-ray`` request id to quote to Cloudflare support. None of them ever holds a
credential: they are built from the response and the request path only.
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow.sdk.exceptions import AirflowException, AirflowFailException


@dataclass(frozen=True)
class CloudflareErrorDetail:
    """One item of the ``errors`` array of Cloudflare's response envelope."""

    code: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code is not None else self.message


class CloudflareWorkflowsError(AirflowException):
    """
    Any failure talking to the Cloudflare Workflows API.

    :param message: what went wrong, in words.
    :param http_status: HTTP status of the response, or None when there was no response.
    :param errors: the ``errors`` items of Cloudflare's envelope.
    :param cf_ray: the ``cf-ray`` response header, Cloudflare's request id.
    :param method: HTTP method of the request.
    :param path: request path (no host, no query, never a secret).
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        errors: tuple[CloudflareErrorDetail, ...] = (),
        cf_ray: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        self.message = message
        self.http_status = http_status
        self.errors = errors
        self.cf_ray = cf_ray
        self.method = method
        self.path = path
        super().__init__(self._render())

    @property
    def error_codes(self) -> tuple[int, ...]:
        """Cloudflare error codes of the response, in order."""
        return tuple(error.code for error in self.errors if error.code is not None)

    def _render(self) -> str:
        parts = [self.message]
        if self.method and self.path:
            parts.append(f"request: {self.method} {self.path}")
        if self.http_status is not None:
            parts.append(f"HTTP {self.http_status}")
        if self.errors:
            parts.append("errors: " + "; ".join(str(error) for error in self.errors))
        if self.cf_ray:
            parts.append(f"cf-ray: {self.cf_ray}")
        return " | ".join(parts)


class CloudflareWorkflowsConfigurationError(CloudflareWorkflowsError):
    """The connection or a parameter is unusable (missing account id, plain-HTTP remote host, ...)."""


class CloudflareWorkflowsAuthError(CloudflareWorkflowsError):
    """401 or 403: the credentials are wrong, or lack a permission for this account."""


class CloudflareWorkflowsNotFoundError(CloudflareWorkflowsError):
    """404: the workflow, instance, version or step does not exist (or a step has not started yet)."""


class CloudflareWorkflowsConflictError(CloudflareWorkflowsError):
    """409: the instance is in a state that does not allow the request (or the id already exists)."""


class CloudflareWorkflowsRateLimitError(CloudflareWorkflowsError):
    """
    429: too many requests.

    :param retry_after: seconds the server asked us to wait (``Retry-After``), if it said.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class CloudflareWorkflowsServerError(CloudflareWorkflowsError):
    """408 or 5xx, or HTTP 200 with ``success: false``: a fault on Cloudflare's side, usually transient."""


class CloudflareWorkflowsResponseError(CloudflareWorkflowsError):
    """The response could not be understood (malformed JSON, no envelope, unexpected shape)."""


class CloudflareWorkflowsConnectionError(CloudflareWorkflowsError):
    """No complete response: connection refused or dropped, or the request timed out."""


class CloudflareWorkflowStepFailedError(AirflowFailException):
    """
    The awaited step reached a failure state (or can never run).

    It is an ``AirflowFailException``: retrying the task cannot fix a step that already failed, and
    ``soft_fail=True`` turns it into a skip.
    """


class CloudflareWorkflowInstanceFailedError(AirflowFailException):
    """The awaited instance reached a failure state (``errored`` or ``terminated`` by default)."""


class CloudflareWorkflowStepNotReadyError(AirflowException):
    """The step's output was asked for before the step finished."""


class CloudflareWorkflowOutputError(AirflowException):
    """A step output cannot be delivered as asked (redacted, too large for XCom, binary without a path)."""


class CloudflareWorkflowOutputRejectedError(CloudflareWorkflowOutputError, AirflowFailException):
    """
    A step output that can never be delivered as configured: redacted (sensitive step), too large for
    XCom, or binary without ``output_path``. The task fails without retrying: a retry gets the same output.
    """
