"""Typed errors raised by the Cloudflare Workflows hook, sensors and operators.

API errors carry what a user needs to act on them: the HTTP status, Cloudflare's error codes and
messages, and the ``cf-ray`` request id to quote to Cloudflare support. None of them ever holds a
credential: they are built from the response and the request path only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self, TypeVar, overload

from airflow.sdk.exceptions import AirflowException, AirflowFailException

# Statuses worth another try: timeouts, rate limits, and server faults (520-524 are Cloudflare's own).
RETRYABLE_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
# "Already exists" for a create with our own instance_id. Cloudflare does not document the REST answer
# (inferred): a third-party emulator uses code 10405 (unverified), and the message has been seen as
# "instance.already_exists" and in words; any 4xx with either counts (see ``is_already_exists``).
ALREADY_EXISTS_ERROR_CODES = frozenset({10405})
ALREADY_EXISTS_MESSAGE_FRAGMENT = "already_exists"
_E = TypeVar("_E", bound="CloudflareWorkflowsError")


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
        # Set by the hook when an earlier attempt of the same call may have taken effect (its answer was
        # lost), so "already exists" on a retried create means "created by that attempt".
        self.follows_uncertain_attempt = False
        super().__init__(self._render())

    @property
    def error_codes(self) -> tuple[int, ...]:
        """Cloudflare error codes of the response, in order."""
        return tuple(error.code for error in self.errors if error.code is not None)

    @property
    def is_transient(self) -> bool:
        """
        Whether the error may go away by itself, so the same call is worth another try: 408, 429, 5xx
        (and Cloudflare's 520-524), ``success: false``, an unreadable body, or no complete response.
        """
        return False

    @property
    def may_have_taken_effect(self) -> bool:
        """
        Whether the request may have reached the API and acted although it failed: no answer after it
        was sent, a 5xx, or an unreadable 2xx. False for a definite refusal (4xx, 429) and for a failure
        to connect. A non-idempotent call (an event, a restart) is never repeated after such an error.
        """
        return False

    @property
    def is_already_exists(self) -> bool:
        """
        Whether a create failed only because the instance id is taken: any 4xx whose error code is
        10405 or whose message says so (``already exists``, ``already_exists``,
        ``instance.already_exists``; case does not matter).
        """
        if self.http_status is None or not 400 <= self.http_status < 500:
            return False
        if any(code in ALREADY_EXISTS_ERROR_CODES for code in self.error_codes):
            return True
        return any(
            ALREADY_EXISTS_MESSAGE_FRAGMENT in detail.message.replace(" ", "_").lower()
            for detail in self.errors
        )

    @overload
    def restated(self, message: str) -> Self: ...

    @overload
    def restated(self, message: str, error_class: type[_E]) -> _E: ...

    def restated(self, message: str, error_class: type[CloudflareWorkflowsError] | None = None) -> Any:
        """The same answer (HTTP status, Cloudflare's errors, ``cf-ray``, request), told by ``message``."""
        return (error_class or type(self))(
            message,
            http_status=self.http_status,
            errors=self.errors,
            cf_ray=self.cf_ray,
            method=self.method,
            path=self.path,
        )

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


class CloudflareWorkflowsUnknownWorkflowError(CloudflareWorkflowsNotFoundError):
    """404 for a workflow name the account does not have; the message lists the workflows it has."""


class CloudflareWorkflowStepNotFoundError(CloudflareWorkflowsNotFoundError):
    """404 from ``/step`` for every logged name tried: the step has not started, or has another name."""


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

    @property
    def is_transient(self) -> bool:
        return True


class CloudflareWorkflowsServerError(CloudflareWorkflowsError):
    """408 or 5xx, or HTTP 200 with ``success: false``: a fault on Cloudflare's side, usually transient."""

    @property
    def is_transient(self) -> bool:
        # No status or a 2xx (a bad body, ``success: false``), or a retryable status.
        status = self.http_status
        return status is None or status < 300 or status in RETRYABLE_STATUS_CODES

    @property
    def may_have_taken_effect(self) -> bool:
        # 408: the server gave up waiting for the request, so it was not processed.
        return self.http_status != 408


class CloudflareWorkflowsResponseError(CloudflareWorkflowsError):
    """The response could not be understood (malformed JSON, no envelope, unexpected shape)."""

    is_transient = CloudflareWorkflowsServerError.is_transient  # the status decides, as for a server fault

    @property
    def may_have_taken_effect(self) -> bool:
        return True


class CloudflareWorkflowsResponseTooLargeError(CloudflareWorkflowsResponseError):
    """
    A JSON answer over the size cap (``protocol.MAX_JSON_BODY_BYTES``): a fault that a retry would only
    repeat, so it is not transient.
    """

    @property
    def is_transient(self) -> bool:
        return False


class CloudflareWorkflowsResponseTooDeepError(CloudflareWorkflowsResponseError):
    """
    A JSON answer that nests lists and objects too deeply for Python to read (about 1,000 levels): a
    fault that a retry would only repeat, so it is not transient.
    """

    @property
    def is_transient(self) -> bool:
        return False


class CloudflareWorkflowsConnectionError(CloudflareWorkflowsError):
    """
    No complete response: connection refused or dropped, or the request timed out.

    :param request_sent: False when the request provably never left (a failure to resolve or connect,
        or the call's deadline passed before it was sent); True when it may have reached the API.
    """

    def __init__(self, message: str, *, request_sent: bool = True, **kwargs: object) -> None:
        self.request_sent = request_sent
        super().__init__(message, **kwargs)  # type: ignore[arg-type]

    @property
    def is_transient(self) -> bool:
        return True

    @property
    def may_have_taken_effect(self) -> bool:
        return self.request_sent


def is_transient_error(error: BaseException) -> bool:
    """Whether ``error`` is a Cloudflare error that may go away by itself (a retry predicate)."""
    return isinstance(error, CloudflareWorkflowsError) and error.is_transient


class CloudflareWorkflowOutcomeUnknownError(AirflowFailException):
    """
    A call that must not be repeated (an event, a restart) failed after it may have reached Cloudflare.

    It is an ``AirflowFailException``: a task retry could deliver the event (or restart the instance) a
    second time. The message says how to check what happened.
    """


class CloudflareWorkflowOutcomePendingError(AirflowException):
    """
    A call that must not be repeated (an event, a restart) got no usable answer, and the task state
    store holds its intent: not an ``AirflowFailException``, so Airflow retries the task, and the retry
    asks the instance whether the call took effect before doing anything again (see
    :mod:`airflow_provider_cfworkflows.side_effects`).
    """


class CloudflareWorkflowStepFailedError(AirflowFailException):
    """
    The awaited step reached a failure state (or can never run).

    It is an ``AirflowFailException``: retrying the task cannot fix a step that already failed, and
    ``soft_fail=True`` turns it into a skip.
    """


class CloudflareWorkflowInstanceFailedError(AirflowFailException):
    """The awaited instance reached a failure state (``errored`` or ``terminated`` by default)."""


class CloudflareWorkflowInstanceRestartableError(AirflowException):
    """
    The awaited instance errored and the task has ``retry_from_failure`` and retries left: not an
    ``AirflowFailException``, so Airflow retries the task, and the retry restarts the instance from its
    failed step.
    """


class CloudflareWorkflowStepNotReadyError(AirflowException):
    """The step's output was asked for before the step finished."""


class CloudflareWorkflowOutputDeliveryError(AirflowException):
    """
    A step output could not be delivered (written to ``output_path``, or returned through XCom).

    Not an API error (those are :class:`CloudflareWorkflowsError`): the step's output was read, the
    delivery failed. A storage failure is retryable; see :class:`CloudflareWorkflowOutputRejectedError`
    for outputs that can never be delivered as configured.
    """


# The earlier name, kept importable: one letter away from CloudflareWorkflowsError, another exception tree.
CloudflareWorkflowOutputError = CloudflareWorkflowOutputDeliveryError


class CloudflareWorkflowOutputRejectedError(CloudflareWorkflowOutputDeliveryError, AirflowFailException):
    """
    A step output that can never be delivered as configured: redacted (sensitive step), too large for
    XCom, or binary without ``output_path``. The task fails without retrying: a retry gets the same output.
    """


class CloudflareWorkflowInstanceEndedError(AirflowFailException):
    """
    The instance has ended (or is rolling back to its end), so an event can no longer reach it: an
    approval asks nobody, or sends nothing. An ``AirflowFailException``: a retry finds it ended too.
    """
