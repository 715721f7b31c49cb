"""Turn an Airflow connection of type ``cloudflare_workflows`` into validated client settings.

Plain functions and data, no I/O: the sync hook, the async hook path and the tests share them.

Connection fields: login = Account ID, password = API Token, host = API base URL (optional), extras
``email`` + ``api_key`` (legacy global API key auth), ``timeout`` (seconds), ``max_retries``,
``allow_http``, ``params_encoding`` and ``rate_limit``.

Configuration errors describe what is wrong (length, which characters, the expected shape) and never
repeat a field's value: a token pasted into the wrong field must not reach a log in clear text.
"""

from __future__ import annotations

import ipaddress
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_cfworkflows import __version__
from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConfigurationError
from airflow_provider_cfworkflows.protocol import ParamsEncoding

CONN_TYPE = "cloudflare_workflows"
DEFAULT_CONN_ID = "cloudflare_default"
DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
DEFAULT_API_PATH = "/client/v4"
DEFAULT_TIMEOUT_SECONDS = 60.0
# Cloudflare's own SDKs retry twice by default; a data pipeline waits longer for a transient fault.
DEFAULT_MAX_RETRIES = 5
MAX_MAX_RETRIES = 20
USER_AGENT = f"airflow-provider-cfworkflows/{__version__}"
# Cloudflare allows 1,200 API requests per 5 minutes per user or token, counting the dashboard's and
# every other client's (fundamentals/api/reference/limits). Without Ratelimit headers to go by, the
# provider spends at most this many per credential, leaving the other half to people and other tools.
RATE_LIMIT_WINDOW_SECONDS = 300
CLOUDFLARE_RATE_LIMIT = 1200
DEFAULT_RATE_LIMIT = CLOUDFLARE_RATE_LIMIT // 2
ACCOUNT_ID_LENGTH = 32

# Cloudflare account ids are 32-hex identifiers (api-schemas common.yaml "identifier").
_ACCOUNT_ID_PATTERN = re.compile(r"[0-9a-fA-F]{32}")
_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0", ""})


def clean_secret(value: Any, what: str) -> str | None:
    """
    A credential without surrounding whitespace, or None when empty.

    Secrets read from files, Vault or Kubernetes often end in a newline. A control character or a
    character outside Latin-1 cannot travel in an HTTP header: refused, naming its position but never
    the value (the header error would show the value in clear text, unmasked).
    """
    if value is None:
        return None
    text = str(value).strip()
    for position, character in enumerate(text, start=1):
        if unicodedata.category(character) == "Cc":
            problem = "a control character (such as a newline or tab)"
        elif ord(character) > 0xFF:
            problem = "a character outside Latin-1 (HTTP headers carry only Latin-1)"
        else:
            continue
        raise CloudflareWorkflowsConfigurationError(
            f"The connection's {what} contains {problem} at position {position} of {len(text)}: "
            "copy it again without extra characters."
        )
    return text or None


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
    :param allow_http: whether plain ``http://`` to a non-loopback host was allowed (extra ``allow_http``);
        the hook logs :func:`insecure_http_warning` each time it is built with such a connection.
    :param params_encoding: how create and batch create send ``params`` (extra ``params_encoding``).
    :param rate_limit: requests per 5 minutes the provider may spend per credential when Cloudflare
        sends no ``Ratelimit`` headers (extra ``rate_limit``).
    """

    base_url: str
    account_id: str | None
    credentials: Credentials
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    max_retries: int = DEFAULT_MAX_RETRIES
    allow_http: bool = False
    params_encoding: ParamsEncoding = ParamsEncoding.OBJECT
    rate_limit: int = DEFAULT_RATE_LIMIT

    def headers(self) -> dict[str, str]:
        """Headers sent with every request."""
        return {"User-Agent": USER_AGENT, "Accept": "application/json", **self.credentials.headers()}

    def resolve_account_id(self, account_id: str | None) -> str:
        """The ``account_id`` argument of a call, else the connection's login, validated."""
        return validate_account_id(account_id if account_id else self.account_id)


def validate_account_id(account_id: str | None) -> str:
    """Check that an account id is present and looks like a Cloudflare account id (surrounding spaces go)."""
    text = account_id.strip() if isinstance(account_id, str) else account_id
    if not text:
        raise CloudflareWorkflowsConfigurationError(
            "No Cloudflare account id: pass account_id=... to the task, or set the connection's "
            "login (Account ID) to your 32-character account id."
        )
    if not isinstance(text, str) or not _ACCOUNT_ID_PATTERN.fullmatch(text):
        raise CloudflareWorkflowsConfigurationError(
            f"Invalid Cloudflare account id ({_describe_account_id(text)}): expected the "
            f"{ACCOUNT_ID_LENGTH} hexadecimal characters (0-9, a-f) shown in the Cloudflare dashboard "
            "(Account ID), not an account name, email or token."
        )
    return text.lower()


def _describe_account_id(value: object) -> str:
    """What is wrong with an account id, without repeating it (it may be a misplaced token)."""
    if not isinstance(value, str):
        return f"a {type(value).__name__}, not text"
    wrong = sum(1 for character in value if character not in "0123456789abcdefABCDEF")
    parts = [f"{len(value)} characters"]
    if wrong:
        parts.append(f"{wrong} of them not hexadecimal")
    if "@" in value:
        parts.append("it looks like an email")
    elif "." in value or "/" in value:
        parts.append("it looks like a host or path")
    return ", ".join(parts)


def is_loopback_host(hostname: str) -> bool:
    """Whether ``hostname`` names this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def normalize_base_url(host: str | None, port: int | None = None, *, allow_http: bool = False) -> str:
    """
    Build the API base URL from the connection's host (and port).

    An empty host means Cloudflare's public API. A host without a scheme gets ``https://``; a host
    without a path gets ``/client/v4``. Plain ``http://`` is only accepted for loopback hosts (the local
    emulator) unless ``allow_http`` is set: anywhere else it sends the API token in clear text.
    """
    if not host or not host.strip():
        return DEFAULT_BASE_URL
    raw = host.strip()
    if any(unicodedata.category(character) == "Cc" or character.isspace() for character in raw):
        raise _host_error("contains spaces or control characters")
    if "://" not in raw:
        raw = f"https://{raw}"
    try:
        parts = urlsplit(raw)
        explicit_port = parts.port
    except ValueError:  # an unclosed '[' or a port that is not a number
        raise _host_error("is not a valid URL (check the brackets of an IPv6 address and the port)") from None
    if parts.username or parts.password:
        raise CloudflareWorkflowsConfigurationError(
            "The connection host must not contain credentials: put the API token in the password field."
        )
    if parts.query or parts.fragment:
        raise _host_error("must be a base URL without '?' query or '#' fragment")
    hostname = parts.hostname or ""
    if not hostname:
        raise _host_error("has no host name")
    if parts.scheme not in ("https", "http"):
        raise _host_error(
            "must start with https:// (or http:// for the local emulator); its scheme is neither"
        )
    if parts.scheme == "http" and not allow_http and not is_loopback_host(hostname):
        raise CloudflareWorkflowsConfigurationError(
            "The connection host uses plain http:// to a host that is not loopback, which would send "
            "credentials unencrypted. Use https://; http:// is allowed for loopback addresses such as the "
            "local emulator (http://127.0.0.1:8787), or anywhere with the connection extra "
            '"allow_http": true (for a private network such as Docker Compose; a warning is logged).'
        )
    netloc = parts.netloc
    if port and explicit_port is None:
        netloc = f"{netloc}:{port}"
    path = parts.path.rstrip("/") or DEFAULT_API_PATH
    return f"{parts.scheme}://{netloc}{path}"


def _host_error(problem: str) -> CloudflareWorkflowsConfigurationError:
    return CloudflareWorkflowsConfigurationError(
        f"The connection host {problem}: expected an API base URL such as {DEFAULT_BASE_URL} "
        "(or http://127.0.0.1:8787 for the local emulator)."
    )


def insecure_http_warning(settings: ConnectionSettings) -> str | None:
    """The warning the hook logs when it is built for plain http:// to a non-loopback host, else None."""
    parts = urlsplit(settings.base_url)
    if parts.scheme != "http" or is_loopback_host(parts.hostname or ""):
        return None
    return (
        f"The Cloudflare Workflows connection sends requests to {parts.hostname} over plain http:// "
        "(connection extra allow_http=true): credentials and data travel unencrypted. Use this only on a "
        "private network, such as an emulator in a neighbouring container."
    )


def _describe(value: Any) -> str:
    """A value's kind and size, never the value itself."""
    if isinstance(value, str):
        return f"a text of {len(value)} characters"
    return f"a {type(value).__name__}"


def _positive_number(extras: Mapping[str, Any], name: str, default: float) -> float:
    value = extras.get(name)
    if value is None or value == "":
        return default
    try:
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise CloudflareWorkflowsConfigurationError(
            f"Connection extra {name!r} must be a positive, finite number of seconds (e.g. 60); "
            f"got {_describe(value)} that is not."
        )
    return number


def _whole_number(extras: Mapping[str, Any], name: str, default: int, low: int, high: int, unit: str) -> int:
    value = extras.get(name)
    if value is None or value == "":
        return default
    text = str(value).strip()
    number = int(text) if not isinstance(value, bool) and re.fullmatch(r"[0-9]+", text) else None
    if number is None or not low <= number <= high:
        raise CloudflareWorkflowsConfigurationError(
            f"Connection extra {name!r} must be a whole number from {low} to {high} ({unit}, "
            f"default {default}); got {_describe(value)} that is not."
        )
    return number


def _flag(extras: Mapping[str, Any], name: str) -> bool:
    value = extras.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE_WORDS:
        return True
    if text in _FALSE_WORDS:
        return False
    raise CloudflareWorkflowsConfigurationError(
        f"Connection extra {name!r} must be true or false; got {_describe(value)} that is neither."
    )


def _params_encoding(extras: Mapping[str, Any]) -> ParamsEncoding:
    value = extras.get("params_encoding")
    if value is None or value == "":
        return ParamsEncoding.OBJECT
    try:
        return ParamsEncoding(str(value).strip().lower())
    except ValueError:
        raise CloudflareWorkflowsConfigurationError(
            "Connection extra 'params_encoding' must be 'object' (send params as a JSON value, the "
            f"default) or 'string' (JSON-encoded into a string); got {_describe(value)} that is neither."
        ) from None


def build_credentials(api_token: str | None, extras: Mapping[str, Any]) -> Credentials:
    """
    Pick the auth scheme: the API token (password) if set, else the ``email`` + ``api_key`` extras.

    Surrounding whitespace is removed from each; see :func:`clean_secret` for what is refused.
    """
    api_token = clean_secret(api_token, "API Token (password field)")
    email = clean_secret(extras.get("email"), "'email' extra")
    api_key = clean_secret(extras.get("api_key"), "'api_key' extra")
    if api_token:
        return Credentials(api_token=api_token)
    if email and api_key:
        return Credentials(email=email, api_key=api_key)
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
    overrides = {"timeout": timeout, "max_retries": max_retries}
    merged = {**extras, **{name: value for name, value in overrides.items() if value is not None}}
    allow_http = _flag(extras, "allow_http")
    return ConnectionSettings(
        base_url=normalize_base_url(host, port, allow_http=allow_http),
        account_id=(login or "").strip() or None,
        credentials=build_credentials(password, extras),
        timeout=_positive_number(merged, "timeout", DEFAULT_TIMEOUT_SECONDS),
        max_retries=_whole_number(merged, "max_retries", DEFAULT_MAX_RETRIES, 0, MAX_MAX_RETRIES, "retries"),
        allow_http=allow_http,
        params_encoding=_params_encoding(extras),
        rate_limit=_whole_number(
            extras, "rate_limit", DEFAULT_RATE_LIMIT, 1, CLOUDFLARE_RATE_LIMIT, "requests per 5 minutes"
        ),
    )
