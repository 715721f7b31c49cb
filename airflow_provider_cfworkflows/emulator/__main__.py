"""``python -m airflow_provider_cfworkflows.emulator``: serve a scenario on loopback.

Prints exactly one line, ``EMULATOR_URL=http://127.0.0.1:<port>``, to stdout once the server accepts
connections; logs go to stderr (warnings only, no access log, unless asked).

Flags override the scenario's ``api`` options and ``rate_limit`` (see ``scenario``); the control API
can change both at run time, and ``POST /__emulator/reset`` goes back to what the flags set.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import sys
from pathlib import Path

try:
    from .scenario import (
        ALREADY_EXISTS_STATUSES,
        DEFAULT_RATE_QUOTA,
        DEFAULT_RATE_WINDOW,
        OUTPUT_ENCODINGS,
        PARAMS_ENCODINGS,
        RateLimitSpec,
        Scenario,
        ScenarioError,
        load_scenario,
    )
    from .server import serve
except ModuleNotFoundError as missing:  # the `emulator` extra's packages are not the provider's dependencies
    if (missing.name or "").split(".")[0] not in ("anyio", "fastapi", "starlette", "uvicorn", "yaml"):
        raise
    sys.exit(
        f"The emulator needs {missing.name}, which comes with the provider's `emulator` extra: "
        "pip install 'airflow-provider-cfworkflows[emulator]'"
    )

DEFAULT_RATE_LIMIT = f"{DEFAULT_RATE_QUOTA}/{DEFAULT_RATE_WINDOW}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_rate_limit_flag(value: str) -> tuple[int, int]:
    """``QUOTA/WINDOW`` -> ``(quota, window)``, both whole numbers >= 1."""
    quota, slash, window = value.partition("/")
    if slash and quota.strip().isdigit() and window.strip().isdigit() and int(quota) and int(window):
        return int(quota), int(window)
    raise ValueError(f"--rate-limit must be QUOTA/WINDOW, whole numbers >= 1 (e.g. {DEFAULT_RATE_LIMIT})")


def apply_flags(scenario: Scenario, args: argparse.Namespace) -> Scenario:
    """The scenario with the option flags applied (ValueError for a bad combination)."""
    rate_limit = scenario.rate_limit
    if args.rate_limit is not None:
        quota, window = parse_rate_limit_flag(args.rate_limit)
        rate_limit = RateLimitSpec(quota, window, rate_limit.headers if rate_limit else True)
    if args.no_rate_limit_headers:
        if rate_limit is None:
            raise ValueError("--no-rate-limit-headers needs --rate-limit (or a scenario rate_limit)")
        rate_limit = dataclasses.replace(rate_limit, headers=False)
    for name in ("pause_delay", "rollback_duration"):
        value = getattr(args, name)
        if value is not None and not 0 <= value < float("inf"):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
    changes = {
        "already_exists_status": args.already_exists_status,
        "params_encoding": args.params_encoding,
        "output_encoding": args.output_encoding,
        "stream_content_length": False if args.chunked_streams else None,
        "gzip": True if args.gzip else None,
        "pause_delay": args.pause_delay,
        "rollback_duration": args.rollback_duration,
    }
    api = dataclasses.replace(scenario.api, **{k: v for k, v in changes.items() if v is not None})
    return dataclasses.replace(scenario, api=api, rate_limit=rate_limit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_cfworkflows.emulator",
        description="Local emulator of the Cloudflare Workflows REST API.",
        epilog="At run time, the control API under /__emulator/ injects faults (rate_limit, server_error, "
        "html, drop_connection, success_false, malformed_json, delay, drip, header_drip, lost_answer, "
        "endless_json, truncated_chunked), changes the options (/__emulator/options) and the rate limit "
        "(/__emulator/rate-limit), moves the clock, and serves the request log with timestamps "
        "(/__emulator/requests, /__emulator/requests/stats). See the docstrings of the emulator's "
        "control, faults and scenario modules.",
    )
    parser.add_argument(
        "--scenario", type=Path, default=None, help="scenario file (YAML or JSON); default: the bundled demo"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (loopback unless --allow-remote)"
    )
    parser.add_argument("--port", type=int, default=8787, help="port (default 8787); 0 picks a free one")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help="emulated seconds per real second (default: the scenario's)",
    )
    parser.add_argument(
        "--rate-limit",
        nargs="?",
        const=DEFAULT_RATE_LIMIT,
        default=None,
        metavar="QUOTA/WINDOW",
        help=f"enforce QUOTA requests per credential per WINDOW real seconds, with a lockout for the rest "
        f"of the window, 429 + error 971 + Retry-After, and Ratelimit / Ratelimit-Policy headers on every "
        f"answer (bare flag: {DEFAULT_RATE_LIMIT}, Cloudflare's limit; e.g. 120/30 for a time-scaled run)",
    )
    parser.add_argument(
        "--no-rate-limit-headers",
        action="store_true",
        help="enforce the rate limit but send no Ratelimit / Ratelimit-Policy headers",
    )
    parser.add_argument(
        "--already-exists-status",
        type=int,
        choices=ALREADY_EXISTS_STATUSES,
        default=None,
        help="HTTP status of the 'instance already exists' answer (code 10405); default 409",
    )
    parser.add_argument(
        "--params-encoding",
        choices=PARAMS_ENCODINGS,
        default=None,
        help="create's `params`: lenient (default: object or JSON string), object (a string is refused), "
        "string (only a JSON-encoded string, decoded)",
    )
    parser.add_argument(
        "--output-encoding",
        choices=OUTPUT_ENCODINGS,
        default=None,
        help="instance `output`: raw (default, the JSON value) or string (JSON-encoded)",
    )
    parser.add_argument(
        "--chunked-streams",
        action="store_true",
        help="send stream step outputs chunked, without Content-Length",
    )
    parser.add_argument(
        "--gzip", action="store_true", help="gzip-encode answers when the request accepts gzip"
    )
    for flag, what in (
        ("--pause-delay", "a paused instance is `waitingForPause`"),
        ("--rollback-duration", "a terminate with rollback is `rollingBack`"),
    ):
        help_text = f"emulated seconds {what} first (default 0)"
        parser.add_argument(flag, type=float, default=None, metavar="SECONDS", help=help_text)
    parser.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--access-log", action="store_true", help="log every request (off by default)")
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="also stop when standard input closes (for a parent process that may die without stopping it)",
    )
    args = parser.parse_args(argv)
    if not args.allow_remote and not is_loopback(args.host):
        parser.error(f"--host {args.host} is not a loopback address; pass --allow-remote to bind it anyway")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be from 0 to 65535, got {args.port}")
    if args.time_scale is not None and not 0 <= args.time_scale < float("inf"):
        parser.error(f"--time-scale must be a finite number >= 0, got {args.time_scale}")
    try:
        scenario = load_scenario(args.scenario)
    except (OSError, ScenarioError) as error:
        print(f"Cannot load the scenario: {error}", file=sys.stderr)
        return 2
    if args.time_scale is not None:
        scenario = dataclasses.replace(scenario, time_scale=args.time_scale)
    try:
        scenario = apply_flags(scenario, args)
    except ValueError as error:
        parser.error(str(error))
    try:
        serve(
            scenario,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=args.access_log,
            exit_on_stdin_eof=args.exit_on_stdin_eof,
        )
    except OSError as error:
        print(f"Cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
