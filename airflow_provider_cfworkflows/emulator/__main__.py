"""``python -m airflow_provider_cfworkflows.emulator``: serve a scenario on loopback.

Prints exactly one line, ``EMULATOR_URL=http://127.0.0.1:<port>``, to stdout once the server accepts
connections; logs go to stderr (warnings only, no access log, unless asked).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import sys
from pathlib import Path

from .scenario import ScenarioError, load_scenario
from .server import serve


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_cfworkflows.emulator",
        description="Local emulator of the Cloudflare Workflows REST API.",
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
