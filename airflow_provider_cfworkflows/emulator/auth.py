"""Credentials: how the emulated API authenticates a request, and a non-secret label for each credential.

As Cloudflare answers (``AUTH_ERROR_HINTS`` in ``protocol.py`` cites the sources): no credentials (or
only half of the legacy pair) -> HTTP 400, 9106; an ``Authorization`` header that is not
``Bearer <token>`` -> HTTP 400, 6003 "Invalid request headers" with ``error_chain`` [6111 "Invalid
format for Authorization header"]; a wrong token or key -> HTTP 403, 10000 "Authentication error".

A credential's label (``token:<12 hex>`` or ``key:<12 hex>``, from a SHA-256 of the secret) names it in
the request log and the rate-limit counters without revealing it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from . import errors
from .errors import ApiError
from .scenario import Scenario

BEARER, LEGACY, NONE = "bearer", "legacy", "none"
# Inferred: what Cloudflare takes for a well-formed token (visible ASCII, no spaces).
TOKEN_PATTERN = re.compile(r"[\x21-\x7e]+")


def token_label(token: str) -> str:
    """The label of an API token."""
    return "token:" + _digest(token)


def key_label(email: str, api_key: str) -> str:
    """The label of a legacy email + global API key pair."""
    return "key:" + _digest(email + "\0" + api_key)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()[:12]


@dataclass(frozen=True)
class Credentials:
    """
    What a request presented.

    :param scheme: ``bearer``, ``legacy`` or ``none``.
    :param label: the credential's label; None when there is no usable credential.
    :param error: the answer to give (None: valid).
    """

    scheme: str
    label: str | None
    error: ApiError | None


def authenticate(scenario: Scenario, headers: Mapping[str, str]) -> Credentials:
    """Check a request's credentials against the scenario's."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not TOKEN_PATTERN.fullmatch(token):
            malformed = ApiError(400, errors.INVALID_HEADERS, chain=(errors.INVALID_AUTH_FORMAT,))
            return Credentials(BEARER, None, malformed)
        valid = _same(token, scenario.api_token)
        return Credentials(BEARER, token_label(token), None if valid else ApiError(403, errors.AUTH_FAILED))
    email, key = headers.get("x-auth-email"), headers.get("x-auth-key")
    if email is None and key is None:
        return Credentials(NONE, None, ApiError(400, errors.MISSING_AUTH))
    if email is None or key is None:
        return Credentials(LEGACY, None, ApiError(400, errors.MISSING_AUTH))
    email, key = email.strip(), key.strip()
    valid = _same(email, scenario.email) and _same(key, scenario.api_key)
    return Credentials(LEGACY, key_label(email, key), None if valid else ApiError(403, errors.AUTH_FAILED))


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))
