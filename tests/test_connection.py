"""Connection fields -> validated client settings."""

from __future__ import annotations

import pytest

from airflow_provider_cfworkflows.connection import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RATE_LIMIT,
    DEFAULT_TIMEOUT_SECONDS,
    Credentials,
    insecure_http_warning,
    normalize_base_url,
    settings_from_connection,
    validate_account_id,
)
from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConfigurationError
from airflow_provider_cfworkflows.protocol import ParamsEncoding

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
        ({"timeout": 0}, "'timeout' must be a positive, finite number"),
        ({"timeout": "soon"}, "'timeout' must be a positive, finite number"),
        ({"timeout": float("inf")}, "'timeout' must be a positive, finite number"),
        ({"timeout": "nan"}, "'timeout' must be a positive, finite number"),
        ({"timeout": True}, "'timeout' must be a positive, finite number"),
        ({"max_retries": -1}, "'max_retries' must be a whole number from 0 to 20"),
        ({"max_retries": "many"}, "'max_retries' must be a whole number"),
        ({"max_retries": 99}, "'max_retries' must be a whole number"),
        ({"max_retries": "٣"}, "'max_retries' must be a whole number"),
        ({"rate_limit": 0}, "'rate_limit' must be a whole number from 1 to 1200"),
        ({"rate_limit": 1201}, "'rate_limit' must be a whole number from 1 to 1200"),
        ({"rate_limit": "lots"}, "'rate_limit' must be a whole number"),
        ({"rate_limit": True}, "'rate_limit' must be a whole number"),
        ({"params_encoding": "json"}, "'params_encoding' must be 'object'"),
        ({"allow_http": "maybe"}, "'allow_http' must be true or false"),
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


def test_surrounding_whitespace_is_stripped_from_every_credential():
    token = settings(password="token-value-1\n")
    assert token.credentials.headers() == {"Authorization": "Bearer token-value-1"}
    assert token.credentials.secrets == ("token-value-1",)
    legacy = settings(password=None, extras={"email": " a@b.c\r\n", "api_key": "\tglobal-key-9\n"})
    assert legacy.credentials.headers() == {"X-Auth-Email": "a@b.c", "X-Auth-Key": "global-key-9"}
    blank_token = settings(password=" \n ", extras={"email": "a@b.c", "api_key": "k"})
    assert blank_token.credentials.headers() == {"X-Auth-Email": "a@b.c", "X-Auth-Key": "k"}


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        (
            {"password": "tok\nen-SECRET-1"},
            r"API Token \(password field\) contains a control character .* at position 4 of 15",
        ),
        ({"password": "token-SECRET-\x7f1"}, "control character"),
        ({"password": "token-SECRET-\x851"}, "control character"),
        ({"password": "token-SECRET-\u20ac"}, "outside Latin-1"),
        ({"password": None, "extras": {"email": "a@b.c", "api_key": "key-SECRET-\x001"}}, "'api_key' extra"),
        ({"password": None, "extras": {"email": "a\u200b@b.c", "api_key": "key-SECRET-1"}}, "'email' extra"),
    ],
)
def test_unusable_credentials_are_refused_without_their_text(fields, fragment):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=fragment) as caught:
        settings(**fields)
    assert "SECRET" not in str(caught.value)
    assert "SECRET" not in repr(caught.value.args)


SECRET = "Zq9SECRETtokenVALUE0123456789abcdefghij"


@pytest.mark.parametrize(
    "fields",
    [
        {"login": SECRET},
        {"login": f"{SECRET}.example.com"},
        {"host": f"ftp://{SECRET}"},
        {"host": f"https://api.example.com/?{SECRET}"},
        {"host": f"http://{SECRET}.example.com"},
        {"host": f"https://[{SECRET}"},
        {"host": f"{SECRET} x"},
        {"extras": {"timeout": SECRET}},
        {"extras": {"max_retries": SECRET}},
        {"extras": {"rate_limit": SECRET}},
        {"extras": {"params_encoding": SECRET}},
        {"extras": {"allow_http": SECRET}},
    ],
)
def test_configuration_errors_never_echo_field_values(fields):
    with pytest.raises(CloudflareWorkflowsConfigurationError) as caught:
        settings(**fields).resolve_account_id(None)
    message = str(caught.value)
    assert SECRET not in message
    assert "SECRET" not in message


def test_account_id_error_describes_the_problem():
    with pytest.raises(CloudflareWorkflowsConfigurationError) as caught:
        validate_account_id("my-account@example.com")
    assert "22 characters, 15 of them not hexadecimal, it looks like an email" in str(caught.value)
    assert "my-account" not in str(caught.value)
    assert validate_account_id(f" {ACCOUNT.upper()}\n") == ACCOUNT
    assert settings(login=f"{ACCOUNT}\n").resolve_account_id(None) == ACCOUNT
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="32 hexadecimal"):
        validate_account_id(f"{ACCOUNT}\n0")


def test_plain_http_to_a_remote_host_needs_allow_http():
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="allow_http"):
        settings(host="http://emulator:8787")

    allowed = settings(host="http://emulator:8787", extras={"allow_http": "true"})
    assert allowed.base_url == "http://emulator:8787/client/v4"
    assert allowed.allow_http
    warning = insecure_http_warning(allowed)
    assert warning is not None
    assert "emulator" in warning
    assert "unencrypted" in warning
    assert "token-value-1" not in warning


@pytest.mark.parametrize(
    ("host", "extras"),
    [
        ("http://127.0.0.1:8787", {}),
        ("http://127.0.0.1:8787", {"allow_http": True}),
        ("https://api.example.com", {"allow_http": True}),
        (None, {"allow_http": "false"}),
    ],
)
def test_no_http_warning_for_loopback_or_https(host, extras):
    assert insecure_http_warning(settings(host=host, extras=extras)) is None


def test_new_extras_defaults_and_values():
    default = settings()
    assert (default.allow_http, default.params_encoding, default.rate_limit) == (
        False,
        ParamsEncoding.OBJECT,
        DEFAULT_RATE_LIMIT,
    )
    assert DEFAULT_RATE_LIMIT == 600
    chosen = settings(extras={"allow_http": False, "params_encoding": " String ", "rate_limit": "120"})
    assert (chosen.allow_http, chosen.params_encoding, chosen.rate_limit) == (
        False,
        ParamsEncoding.STRING,
        120,
    )
    assert settings(extras={"rate_limit": 1200}).rate_limit == 1200


@pytest.mark.parametrize(
    ("uri", "base_url"),
    [
        # The scheme before the credentials is kept in the host (Airflow's URI rule): plain http honoured.
        (
            f"cloudflare-workflows://http://{ACCOUNT}:tok-1234567@127.0.0.1:8787",
            "http://127.0.0.1:8787/client/v4",
        ),
        # A URI's host has no scheme of its own: https.
        (f"cloudflare-workflows://{ACCOUNT}:tok-1234567@127.0.0.1:8787", "https://127.0.0.1:8787/client/v4"),
    ],
)
def test_uri_connections(monkeypatch, uri, base_url):
    from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook

    monkeypatch.setenv("AIRFLOW_CONN_CF_URI", uri)
    assert CloudflareWorkflowsHook("cf_uri").settings.base_url == base_url
