"""Error classification lives on the exception classes: transient (worth another try) and already-exists."""

from __future__ import annotations

import pytest

from airflow_provider_cfworkflows.exceptions import (
    RETRYABLE_STATUS_CODES,
    CloudflareErrorDetail,
    CloudflareWorkflowOutputDeliveryError,
    CloudflareWorkflowOutputError,
    CloudflareWorkflowOutputRejectedError,
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsConflictError,
    CloudflareWorkflowsConnectionError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsRateLimitError,
    CloudflareWorkflowsResponseError,
    CloudflareWorkflowsServerError,
    is_transient_error,
)


def test_connection_and_rate_limit_errors_are_transient_and_config_errors_are_not():
    assert CloudflareWorkflowsConnectionError("dropped").is_transient
    assert CloudflareWorkflowsRateLimitError("slow down", http_status=429).is_transient
    assert not CloudflareWorkflowsConfigurationError("bad").is_transient
    assert not CloudflareWorkflowsError("bad request", http_status=400).is_transient
    assert is_transient_error(CloudflareWorkflowsConnectionError("dropped"))
    assert not is_transient_error(ValueError("x"))


@pytest.mark.parametrize("status", sorted(RETRYABLE_STATUS_CODES - {429}))
def test_retryable_server_statuses_are_transient(status):
    assert CloudflareWorkflowsServerError("x", http_status=status).is_transient


@pytest.mark.parametrize("status", [None, 200])
def test_unreadable_body_and_success_false_are_transient(status):
    assert CloudflareWorkflowsResponseError("bad body", http_status=status).is_transient
    assert CloudflareWorkflowsServerError("success=false", http_status=status).is_transient


def test_server_errors_outside_the_retryable_set_are_not_transient():
    assert not CloudflareWorkflowsServerError("x", http_status=501).is_transient
    assert not CloudflareWorkflowsResponseError("x", http_status=418).is_transient


def _error(status, *details, cls=CloudflareWorkflowsError):
    return cls("x", http_status=status, errors=tuple(CloudflareErrorDetail(c, m) for c, m in details))


@pytest.mark.parametrize(
    "error",
    [
        _error(409, (10405, "m"), cls=CloudflareWorkflowsConflictError),
        _error(400, (10405, "whatever")),  # any 4xx with the code
        _error(409, (None, "instance already exists"), cls=CloudflareWorkflowsConflictError),
        _error(400, (1, "workflows.api.error.instance.already_exists")),
        _error(422, (None, "Instance ALREADY_EXISTS")),
        _error(400, (7, "first"), (8, "An instance with this ID Already Exists.")),
    ],
)
def test_already_exists_is_any_4xx_with_the_code_or_the_words(error):
    assert error.is_already_exists


@pytest.mark.parametrize(
    "error",
    [
        _error(409, (None, "Instance not in a restartable state."), cls=CloudflareWorkflowsConflictError),
        _error(500, (10405, "already exists"), cls=CloudflareWorkflowsServerError),  # not a 4xx
        _error(None, (10405, "already exists")),
        _error(404, (10404, "not found")),
    ],
)
def test_other_errors_are_not_already_exists(error):
    assert not error.is_already_exists


def test_output_delivery_error_has_an_unmistakable_name_and_keeps_the_old_one():
    assert CloudflareWorkflowOutputError is CloudflareWorkflowOutputDeliveryError
    assert issubclass(CloudflareWorkflowOutputRejectedError, CloudflareWorkflowOutputDeliveryError)
    assert not issubclass(CloudflareWorkflowOutputDeliveryError, CloudflareWorkflowsError)
