"""The live contract check: ``bash scripts/live-check.sh`` (or ``python -m tests.live.check``).

Given ``CLOUDFLARE_API_TOKEN`` and ``CLOUDFLARE_ACCOUNT_ID`` (and optionally ``CLOUDFLARE_WORKFLOW_NAME``,
default ``demo-pipeline``, and ``CLOUDFLARE_API_BASE_URL``, default Cloudflare's API), it asks the API
every question the provider had to assume, prints a table (assumption | what the server answered |
handled by the provider) and deletes the instances it created.

Exit codes: 0 every behaviour asked about is handled; 1 at least one is not; 2 the check could not run
(bad settings, the Workflow missing, credentials refused); 77 skipped (no credentials: nothing was
checked, which is never reported as a pass).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from tests.live.probes import Target

EXIT_HANDLED = 0
EXIT_NOT_HANDLED = 1
EXIT_ABORTED = 2
EXIT_SKIPPED = 77  # the conventional "skipped" code of test harnesses (automake, meson)

TOKEN_VARIABLE = "CLOUDFLARE_API_TOKEN"
ACCOUNT_VARIABLE = "CLOUDFLARE_ACCOUNT_ID"
WORKFLOW_VARIABLE = "CLOUDFLARE_WORKFLOW_NAME"
BASE_URL_VARIABLE = "CLOUDFLARE_API_BASE_URL"


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="live-check",
        description=(
            f"Check the provider's assumptions against the real API. Needs {TOKEN_VARIABLE} and "
            f"{ACCOUNT_VARIABLE}; {WORKFLOW_VARIABLE} (default demo-pipeline) and {BASE_URL_VARIABLE} "
            "(default Cloudflare's API) are optional."
        ),
    )
    parser.add_argument(
        "--finish-timeout", type=float, default=180.0, help="seconds to wait for the instance (180)"
    )
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds between looks at it (2)")
    parser.add_argument(
        "--event-type", default="approval", help="the event the Workflow waits for (approval)"
    )
    parser.add_argument(
        "--stream-step",
        default="build report-1",
        help="logged name of the step with a stream output (build report-1)",
    )
    return parser.parse_args(argv)


def _target(arguments: argparse.Namespace, environ: Mapping[str, str], token: str, account: str) -> Target:
    from tests.live.probes import DEMO_WORKFLOW_NAME, Target

    return Target(
        account_id=account,
        api_token=token,
        workflow_name=environ.get(WORKFLOW_VARIABLE, "").strip() or DEMO_WORKFLOW_NAME,
        base_url=environ.get(BASE_URL_VARIABLE, "").strip() or None,
        event_type=arguments.event_type,
        stream_step=arguments.stream_step,
        finish_timeout=arguments.finish_timeout,
        poll_interval=arguments.poll_interval,
    )


def run_check(target: Target, out: TextIO) -> int:
    """Run every probe against ``target``, print the table, and return the exit code."""
    from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsError
    from tests.live.probes import CheckAborted, ContractProbe, live_hook
    from tests.live.verdicts import Handled, render_table, summarize

    def say(line: str) -> None:
        print(f"- {line}", file=out, flush=True)

    settings = target.settings()
    print(
        f"Live contract check: {settings.base_url}, account {settings.resolve_account_id(None)}, "
        f"workflow {target.workflow_name!r}",
        file=out,
    )
    with live_hook(target) as hook:
        probe = ContractProbe(target, hook, say)
        try:
            rows = probe.run()
        except (CheckAborted, CloudflareWorkflowsError) as error:
            print(f"ABORTED: {error}", file=out)
            _report_leftovers(probe.leftovers, out)
            return EXIT_ABORTED
    print("", file=out)
    print(render_table(rows), file=out)
    print("", file=out)
    print(summarize(rows), file=out)
    _report_leftovers(probe.leftovers, out)
    if any(row.handled is Handled.NO for row in rows):
        print("RESULT: NOT HANDLED: see the rows marked 'no'.", file=out)
        return EXIT_NOT_HANDLED
    print("RESULT: every behaviour the server showed is handled by the provider.", file=out)
    return EXIT_HANDLED


def _report_leftovers(leftovers: Sequence[str], out: TextIO) -> None:
    if leftovers:
        print(f"Could not delete {len(leftovers)} instance(s): {'; '.join(leftovers)}", file=out)
    else:
        print("Every instance the check created was deleted.", file=out)


def main(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None, out: TextIO | None = None
) -> int:
    """The command line: returns the exit code (see the module docstring)."""
    arguments = _arguments(argv)
    environ = os.environ if environ is None else environ
    out = sys.stdout if out is None else out
    token = environ.get(TOKEN_VARIABLE, "").strip()
    account = environ.get(ACCOUNT_VARIABLE, "").strip()
    if not token or not account:
        print(
            f"SKIPPED: set {TOKEN_VARIABLE} and {ACCOUNT_VARIABLE} (and deploy the demo Workflow as the "
            "README shows) to run the live contract check. Nothing was checked.",
            file=out,
        )
        return EXIT_SKIPPED
    # Importing Airflow writes a default configuration into AIRFLOW_HOME: keep it out of the user's home.
    scratch_home = None
    if "AIRFLOW_HOME" not in os.environ:
        scratch_home = tempfile.mkdtemp(prefix="cfworkflows-live-check-")
        os.environ["AIRFLOW_HOME"] = scratch_home
    try:
        from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConfigurationError

        try:
            return run_check(_target(arguments, environ, token, account), out)
        except CloudflareWorkflowsConfigurationError as error:
            print(f"ABORTED: {error}", file=out)
            return EXIT_ABORTED
    finally:
        if scratch_home is not None:
            shutil.rmtree(scratch_home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
