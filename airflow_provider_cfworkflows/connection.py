"""Turn an Airflow connection of type ``cloudflare_workflows`` into validated client settings.

Plain functions and data, no I/O: the sync hook, the async hook path and the tests share them.

Connection fields: login = Account ID, password = API Token, host = API base URL (optional), extras
``email`` + ``api_key`` (legacy global API key auth), ``timeout`` (seconds) and ``max_retries``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_cfworkflows import __version__
from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConfigurationError

CONN_TYPE = "cloudflare_workflows"
DEFAULT_CONN_ID = "cloudflare_default"
DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
DEFAULT_API_PATH = "/client/v4"
DEFAULT_TIMEOUT_SECONDS = 60.0
# Cloudflare's own SDKs retry twice by default; a data pipeline waits longer for a transient fault.
DEFAULT_MAX_RETRIES = 5
MAX_MAX_RETRIES = 20
USER_AGENT = f"airflow-provider-cfworkflows/{__version__}"

# Cloudflare account ids are 32-hex identifiers (api-schemas common.yaml "identifier").
_ACCOUNT_ID_PATTERN = re.compile(r"^[0-9a-fA-F]{32}$")


@dataclass(frozen=True)
class Credentials:
    """
    Authentication for the Cloudflare API: an API token, or a legacy email + global API key.

    ``repr()`` and ``str()`` never show the secret.
    """

    api_token: str | None = field(default=None, repr=False)
    email: str | None = None
    api_key: str | None = field(default=None, repr=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret values, for masking."""
        return tuple(secret for secret in (self.api_token, self.api_key) if secret)

    def headers(self) -> dict[str, str]:
        """The request headers that authenticate a call."""
        if self.api_token:
            return {"Authorization": f"Bearer {self.api_token}"}
        return {"X-Auth-Email": self.email or "", "X-Auth-Key": self.api_key or ""}


@dataclass(frozen=True)
class ConnectionSettings:
    """
    Everything a transport needs to call the API.

    :param base_url: API base URL without a trailing slash, e.g. ``https://api.cloudflare.com/client/v4``.
    :param account_id: the connection's default account id (its login), if set.
    :param credentials: how requests authenticate.
    :param timeout: seconds to wait for the server to connect or send data.
    :param max_retries: retries of an idempotent call after a transient failure.
    """

    base_url: str
    account_id: str | None
    credentials: Credentials
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    max_retries: int = DEFAULT_MAX_RETRIES

    def headers(self) -> dict[str, str]:
        """Headers sent with every request."""
        return {"User-Agent": USER_AGENT, "Accept": "application/json", **self.credentials.headers()}

    def resolve_account_id(self, account_id: str | None) -> str:
        """The ``account_id`` argument of a call, else the connection's login, validated."""
        return validate_account_id(account_id if account_id else self.account_id)


def validate_account_id(account_id: str | None) -> str:
    """Check that an account id is present and looks like a Cloudflare account id."""
    if not account_id:
        raise CloudflareWorkflowsConfigurationError(
            "No Cloudflare account id: pass account_id=... to the task, or set the connection's "
            "login (Account ID) to your 32-character account id."
        )
    if not isinstance(account_id, str) or not _ACCOUNT_ID_PATTERN.match(account_id):
        raise CloudflareWorkflowsConfigurationError(
            f"Invalid Cloudflare account id {account_id!r}: expected the 32 hexadecimal characters shown "
            "in the Cloudflare dashboard (Account ID), not an account name or email."
        )
    return account_id.lower()


def is_loopback_host(hostname: str) -> bool:
    """Whether ``hostname`` names this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def normalize_base_url(host: str | None, port: int | None = None) -> str:
    """
    Build the API base URL from the connection's host (and port).

    An empty host means Cloudflare's public API. A host without a scheme gets ``https://``; a host
    without a path gets ``/client/v4``. Plain ``http://`` is only accepted for loopback hosts (the local
    emulator): anywhere else it would send the API token in clear text.
    """
    if not host or not host.strip():
        return DEFAULT_BASE_URL
    raw = host.strip()
    if "://" not in raw:
        raw = f"https://{raw}"
    parts = urlsplit(raw)
    if parts.username or parts.password:
        raise CloudflareWorkflowsConfigurationError(
            "The connection host must not contain credentials: put the API token in the password field."
        )
    if parts.query or parts.fragment:
        raise CloudflareWorkflowsConfigurationError(
            f"The connection host {host!r} must be a base URL without '?' query or '#' fragment, "
            f"e.g. {DEFAULT_BASE_URL}."
        )
    hostname = parts.hostname or ""
    if not hostname:
        raise CloudflareWorkflowsConfigurationError(f"The connection host {host!r} has no host name.")
    if parts.scheme not in ("https", "http"):
        raise CloudflareWorkflowsConfigurationError(
            f"The connection host {host!r} must start with https:// (got scheme {parts.scheme!r})."
        )
    if parts.scheme == "http" and not is_loopback_host(hostname):
        raise CloudflareWorkflowsConfigurationError(
            f"The connection host {host!r} uses plain http://, which would send credentials unencrypted. "
            "Use https://; http:// is allowed only for loopback addresses such as the local emulator "
            "(http://127.0.0.1:8787)."
        )
    netloc = parts.netloc
    if port and parts.port is None:
        netloc = f"{netloc}:{port}"
    path = parts.path.rstrip("/") or DEFAULT_API_PATH
    return f"{parts.scheme}://{netloc}{path}"


def _positive_number(extras: Mapping[str, Any], name: str, default: float) -> float:
    value = extras.get(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise CloudflareWorkflowsConfigurationError(
            f"Connection extra {name!r} must be a positive number of seconds, got {value!r}."
        )
    return number


def _retry_count(extras: Mapping[str, Any], name: str, default: int) -> int:
    value = extras.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(str(value))
    except ValueError:
        number = -1
    if not 0 <= number <= MAX_MAX_RETRIES:
        raise CloudflareWorkflowsConfigurationError(
            f"Connection extra {name!r} must be a whole number from 0 to {MAX_MAX_RETRIES}, got {value!r}."
        )
    return number


def build_credentials(api_token: str | None, extras: Mapping[str, Any]) -> Credentials:
    """Pick the auth scheme: the API token (password) if set, else the ``email`` + ``api_key`` extras."""
    email = extras.get("email") or None
    api_key = extras.get("api_key") or None
    if api_token:
        return Credentials(api_token=api_token)
    if email and api_key:
        return Credentials(email=str(email), api_key=str(api_key))
    if api_key or email:
        missing = "email" if api_key else "api_key"
        raise CloudflareWorkflowsConfigurationError(
            f"Legacy global API key auth needs both the 'email' and 'api_key' extras; {missing!r} is missing."
        )
    raise CloudflareWorkflowsConfigurationError(
        "The connection has no Cloudflare credentials: set the API Token (password field), or the "
        "'email' and 'api_key' extras for a legacy global API key."
    )


def settings_from_connection(
    *,
    login: str | None,
    password: str | None,
    host: str | None,
    port: int | None,
    extras: Mapping[str, Any],
    timeout: float | None = None,
    max_retries: int | None = None,
) -> ConnectionSettings:
    """
    Validate a connection's fields into :class:`ConnectionSettings`.

    :param timeout: overrides the ``timeout`` extra when given.
    :param max_retries: overrides the ``max_retries`` extra when given.
    """
    overrides: dict[str, Any] = {}
    if timeout is not None:
        overrides["timeout"] = timeout
    if max_retries is not None:
        overrides["max_retries"] = max_retries
    merged = {**extras, **overrides}
    return ConnectionSettings(
        base_url=normalize_base_url(host, port),
        account_id=login or None,
        credentials=build_credentials(password, extras),
        timeout=_positive_number(merged, "timeout", DEFAULT_TIMEOUT_SECONDS),
        max_retries=_retry_count(merged, "max_retries", DEFAULT_MAX_RETRIES),
    )
