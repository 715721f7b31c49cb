"""Connection fields -> validated client settings."""

from __future__ import annotations

import pytest

from airflow_provider_cfworkflows.connection import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_SECONDS,
    Credentials,
    normalize_base_url,
    settings_from_connection,
    validate_account_id,
)
from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConfigurationError

ACCOUNT = "0123456789abcdef0123456789abcdef"


def settings(**kwargs):
    fields = {"login": ACCOUNT, "password": "token-value-1", "host": None, "port": None, "extras": {}}
    fields.update(kwargs)
    return settings_from_connection(**fields)


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        (None, None, DEFAULT_BASE_URL),
        ("", None, DEFAULT_BASE_URL),
        ("api.cloudflare.com", None, "https://api.cloudflare.com/client/v4"),
        ("https://api.cloudflare.com/client/v4/", None, "https://api.cloudflare.com/client/v4"),
        ("http://127.0.0.1:8787", None, "http://127.0.0.1:8787/client/v4"),
        ("http://127.0.0.1", 8787, "http://127.0.0.1:8787/client/v4"),
        ("http://localhost:8787/client/v4", None, "http://localhost:8787/client/v4"),
        ("http://127.5.6.7:1/x", None, "http://127.5.6.7:1/x"),
        ("http://[::1]:8787", None, "http://[::1]:8787/client/v4"),
        ("https://proxy.example.com/cf/client/v4", None, "https://proxy.example.com/cf/client/v4"),
    ],
)
def test_base_url_is_normalized(host, port, expected):
    assert normalize_base_url(host, port) == expected


@pytest.mark.parametrize(
    ("host", "fragment"),
    [
        ("http://api.cloudflare.com", "plain http://"),
        ("http://10.0.0.5:8787", "plain http://"),
        ("ftp://api.cloudflare.com", "must start with https://"),
        ("https://user:pw@api.cloudflare.com", "must not contain credentials"),
        ("https://api.cloudflare.com/client/v4?x=1", "must be a base URL without"),
    ],
)
def test_unsafe_or_malformed_hosts_are_rejected(host, fragment):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=fragment):
        normalize_base_url(host)


def test_api_token_is_preferred_and_never_shown():
    result = settings(extras={"email": "a@b.c", "api_key": "global-key-9"})

    assert result.credentials.headers() == {"Authorization": "Bearer token-value-1"}
    assert "token-value-1" not in repr(result)
    assert "global-key-9" not in repr(result)
    assert result.credentials.secrets == ("token-value-1",)


def test_legacy_global_key_auth():
    result = settings(password=None, extras={"email": "a@b.c", "api_key": "global-key-9"})

    assert result.credentials.headers() == {"X-Auth-Email": "a@b.c", "X-Auth-Key": "global-key-9"}
    assert result.credentials.secrets == ("global-key-9",)
    assert "global-key-9" not in repr(result)


@pytest.mark.parametrize(
    ("extras", "fragment"),
    [
        ({}, "no Cloudflare credentials"),
        ({"api_key": "k"}, "'email' is missing"),
        ({"email": "a@b.c"}, "'api_key' is missing"),
    ],
)
def test_missing_credentials_are_explained(extras, fragment):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=fragment):
        settings(password=None, extras=extras)


def test_timeout_and_retries_from_extras_and_overrides():
    assert settings().timeout == DEFAULT_TIMEOUT_SECONDS
    assert settings().max_retries == DEFAULT_MAX_RETRIES
    from_extras = settings(extras={"timeout": "12.5", "max_retries": 0})
    assert (from_extras.timeout, from_extras.max_retries) == (12.5, 0)
    overridden = settings(extras={"timeout": 5, "max_retries": 1}, timeout=7, max_retries=4)
    assert (overridden.timeout, overridden.max_retries) == (7, 4)


@pytest.mark.parametrize(
    ("extras", "fragment"),
    [
        ({"timeout": 0}, "'timeout' must be a positive number"),
        ({"timeout": "soon"}, "'timeout' must be a positive number"),
        ({"timeout": float("inf")}, "'timeout' must be a positive number"),
        ({"max_retries": -1}, "'max_retries' must be a whole number from 0 to 20"),
        ({"max_retries": "many"}, "'max_retries' must be a whole number"),
        ({"max_retries": 99}, "'max_retries' must be a whole number"),
    ],
)
def test_bad_extras_are_explained(extras, fragment):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=fragment):
        settings(extras=extras)


def test_account_id_falls_back_to_login_and_is_validated():
    result = settings()
    assert result.resolve_account_id(None) == ACCOUNT
    other = "fedcba9876543210fedcba9876543210"
    assert result.resolve_account_id(other) == other
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="No Cloudflare account id"):
        settings(login=None).resolve_account_id(None)
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="32 hexadecimal characters"):
        validate_account_id("my-account@example.com")


def test_credentials_str_hides_secrets():
    credentials = Credentials(api_token="secret-token-xyz")
    assert "secret-token-xyz" not in str(credentials)
    assert "secret-token-xyz" not in repr(credentials)
