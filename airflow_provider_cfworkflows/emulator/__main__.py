"""``python -m airflow_provider_cfworkflows.emulator``: serve a scenario on loopback."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from airflow_provider_cfworkflows.connection import is_loopback_host

from .scenario import ScenarioError, load_scenario
from .server import serve


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
    parser.add_argument("--port", type=int, default=8787, help="port; 0 picks a free one")
    parser.add_argument("--time-scale", type=float, default=None, help="emulated seconds per real second")
    parser.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    if not args.allow_remote and not is_loopback_host(args.host):
        parser.error(f"--host {args.host} is not a loopback address; pass --allow-remote to bind it anyway")
    try:
        scenario = load_scenario(args.scenario)
    except (OSError, ScenarioError) as error:
        print(f"Cannot load the scenario: {error}", file=sys.stderr)
        return 2
    if args.time_scale is not None:
        scenario = dataclasses.replace(scenario, time_scale=args.time_scale)
    serve(scenario, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
