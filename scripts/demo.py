"""
The main job: run ``example_cfworkflows_pipeline`` end to end on a real Airflow, then report.

* default: ``airflow dags test`` (one process, a logical date set);
* ``--airflow``: a real multi-process Airflow (scheduler, dag-processor, triggerer, api-server;
  LocalExecutor, SQLite, a temporary ``AIRFLOW_HOME``); the DAG is unpaused and triggered as a user
  would (a manual run, without a logical date), and everything started is stopped at the end, also
  on Ctrl-C or failure.

Against the bundled emulator (a process of its own) by default. With ``CLOUDFLARE_API_TOKEN`` and
``CLOUDFLARE_ACCOUNT_ID`` set, against the real Cloudflare API instead (deploy the demo Workflow
first: see README). Run through ``bash scripts/demo.sh``, which sets up the virtualenv first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from scripts.airflow_stack import AirflowStack, StackError

REPO = Path(__file__).resolve().parents[1]
DEMO_HOME = Path(
    os.environ.get("CFWORKFLOWS_DEMO_DIR") or REPO / ".demo"
)  # the output, and `dags test` state
EXAMPLE_DAGS = REPO / "example_dags"
DAG_ID = "example_cfworkflows_pipeline"
WORKFLOW = "demo-pipeline"
CREATE_TASK_ID = "create_instance"
DEFAULT_TIMEOUT = 600.0


def _environment(output_dir: Path) -> dict[str, str]:
    airflow_home = DEMO_HOME / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
        "CFWORKFLOWS_EXAMPLE_OUTPUT_BASE": output_dir.as_uri(),
    }


@contextlib.contextmanager
def _cloudflare() -> Iterator[tuple[str, str]]:
    """Yield ``(connection json, where)``: real Cloudflare when credentials are set, else the emulator."""
    token = os.environ.get("CLOUDFLARE_API_TOKEN")
    account = os.environ.get("CLOUDFLARE_ACCOUNT_ID")
    if token and account:
        conn = {"conn_type": "cloudflare_workflows", "login": account, "password": token}
        yield json.dumps(conn), "the Cloudflare API (CLOUDFLARE_API_TOKEN / CLOUDFLARE_ACCOUNT_ID are set)"
        return
    from airflow_provider_cfworkflows.emulator.server import run_emulator_process

    with run_emulator_process(None) as emulator:
        conn = {
            "conn_type": "cloudflare_workflows",
            "login": emulator.account_id,
            "password": emulator.api_token,
            "host": emulator.api_base,
        }
        yield json.dumps(conn), f"the local emulator at {emulator.url} (bundled demo scenario)"


def _run(command: list[str], env: dict[str, str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, env=env, check=True)


def _created_instance_id(env: dict[str, str]) -> str:
    """The instance id the DAG's create task returned (read from the run's XCom)."""
    os.environ.update(env)
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    settings.configure_orm()
    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == DAG_ID).order_by(DagRun.id.desc()).first()
        if run is None:
            raise SystemExit("The demo DAG did not run.")
        query = XComModel.get_many(
            run_id=run.run_id, dag_ids=DAG_ID, task_ids=CREATE_TASK_ID, key="return_value"
        )
        row = session.scalars(query).first()
        if row is None:
            raise SystemExit("The demo DAG's create task pushed no instance id.")
        return str(XComModel.deserialize_value(row))


def _report(conn_json: str, instance_id: str, output_dir: Path) -> None:
    os.environ["AIRFLOW_CONN_CLOUDFLARE_DEFAULT"] = conn_json
    from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook

    instance: dict[str, Any] = CloudflareWorkflowsHook().get_instance(WORKFLOW, instance_id)
    print("\n=== What happened ===")
    print(f"instance id : {instance_id}")
    print(f"status      : {instance.get('status')}")
    for step in instance.get("steps") or []:
        if step.get("type") in ("step", "waitForEvent", "sleep"):
            state = step.get("success", step.get("finished"))
            print(f"  step {step.get('name')!r:<22} type={step.get('type'):<13} done={state}")
    outputs = sorted(path for path in output_dir.rglob("*") if path.is_file())
    for path in outputs:
        print(f"output      : {path.as_uri()} ({path.stat().st_size:,} bytes)")
    if not outputs:
        raise SystemExit("No output landed in " + str(output_dir))


def _dags_test(output_dir: Path) -> None:
    env = _environment(output_dir)
    with _cloudflare() as (conn_json, where):
        print(f"Running {DAG_ID} with `airflow dags test` against {where}.", flush=True)
        env["AIRFLOW_CONN_CLOUDFLARE_DEFAULT"] = conn_json
        _run([sys.executable, "-m", "airflow", "db", "migrate"], env)
        _run([sys.executable, "-m", "airflow", "dags", "test", DAG_ID], env)
        _report(conn_json, _created_instance_id(env), output_dir)
    print(f"\nDone: the emulator (if any) is stopped; Airflow state is in {DEMO_HOME / 'airflow'}.")


def _stop_on_sigterm() -> None:
    """SIGTERM (and SIGHUP) end the demo like Ctrl-C does: through the cleanup of every context."""

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def _multi_process(output_dir: Path, timeout: float, keep_running: bool) -> int:
    """Run the DAG on a scheduler, dag-processor, triggerer and api-server; the exit code."""
    with _cloudflare() as (conn_json, where):
        print(f"Starting Airflow (scheduler, dag-processor, triggerer, api-server) for {where}.", flush=True)
        env = {
            # Every process that runs provider code (task processes, the triggerer) sees the connection.
            "AIRFLOW_CONN_CLOUDFLARE_DEFAULT": conn_json,
            "CFWORKFLOWS_EXAMPLE_OUTPUT_BASE": output_dir.as_uri(),
        }
        with AirflowStack.running(dags_folder=EXAMPLE_DAGS, env=env) as stack:
            print(f"Airflow is up: UI and REST API at {stack.ui_url}", flush=True)
            print(f"AIRFLOW_HOME={stack.home} (removed at the end unless something fails)", flush=True)
            stack.wait_for_dag(DAG_ID)
            print(f"$ airflow dags unpause {DAG_ID}", flush=True)
            stack.unpause(DAG_ID)
            print(f"$ airflow dags trigger {DAG_ID}", flush=True)
            run_id = stack.trigger(DAG_ID)
            print(f"Triggered run {run_id}; waiting for it (at most {timeout:.0f} s).", flush=True)
            state = stack.wait_for_run(DAG_ID, run_id, timeout=timeout)
            print(f"\nRun {run_id}: {state}")
            for task_id, task_state in stack.task_states(DAG_ID, run_id).items():
                print(f"  task {task_id:<24} {task_state}")
            print(f"UI: {stack.ui_url}/dags/{DAG_ID}")
            if state != "success":
                print(stack.diagnostics(), file=sys.stderr)
                return 1
            answer = stack.api(
                "GET",
                f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{CREATE_TASK_ID}/xcomEntries/return_value",
                params={"deserialize": "true"},
            )
            answer.raise_for_status()
            _report(conn_json, str(answer.json()["value"]), output_dir)
            if keep_running:
                print(f"\nAirflow keeps running at {stack.ui_url}; press Ctrl-C to stop it.", flush=True)
                signal.pause()
    print("\nDone: every process the demo started is stopped.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bash scripts/demo.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--airflow",
        action="store_true",
        help="run on a real scheduler, dag-processor, triggerer and api-server instead of `dags test`",
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the run (--airflow)"
    )
    parser.add_argument(
        "--keep-running", action="store_true", help="with --airflow: keep Airflow up until Ctrl-C"
    )
    args = parser.parse_args(argv)
    if args.keep_running and not args.airflow:
        parser.error("--keep-running needs --airflow")
    if not 0 < args.timeout < math.inf:
        parser.error(f"--timeout must be a finite number of seconds > 0, got {args.timeout}")
    output_dir = DEMO_HOME / "output"
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.mkdir(parents=True)
    if not args.airflow:
        _dags_test(output_dir)
        return 0
    _stop_on_sigterm()
    try:
        return _multi_process(output_dir, args.timeout, args.keep_running)
    except KeyboardInterrupt:
        print("\nInterrupted: every process the demo started is stopped.", file=sys.stderr)
        return 130
    except StackError as error:
        print(f"\nThe demo failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
