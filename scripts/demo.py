"""
The main job: run ``example_cfworkflows_pipeline`` end to end on a real Airflow, then report.

* default: ``airflow dags test`` (one process, a logical date set);
* ``--airflow``: a real multi-process Airflow (scheduler, dag-processor, triggerer, api-server;
  LocalExecutor, SQLite, a temporary ``AIRFLOW_HOME``); the DAG is unpaused and triggered as a user
  would (a manual run, without a logical date), and everything started is stopped at the end, also
  on Ctrl-C or failure. Against the emulator, ``example_cfworkflows_approval`` runs beside it: the demo
  shows how a person answers its question and answers it through the REST API;
* ``--airflow --dags-folder DIR``: the same Airflow parsing your DAGs instead, with
  ``cloudflare_default`` pointing at the emulator (``--scenario FILE`` for your own Workflows); nothing
  is triggered, and Airflow runs until Ctrl-C. ``--keep-logs`` keeps the ``AIRFLOW_HOME`` (task logs,
  each component's output) after the stop.

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
APPROVAL_DAG_ID = "example_cfworkflows_approval"
APPROVAL_TASK_ID = "approve_payout"
# What the demo answers, as a person would in the UI (the form of the example DAG has one field).
APPROVAL_ANSWER = {"chosen_options": ["Approve"], "params_input": {"note": "approved by the demo"}}
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


def _real_cloudflare() -> tuple[str, str] | None:
    """``(token, account id)`` from the environment, when both are set."""
    token = os.environ.get("CLOUDFLARE_API_TOKEN")
    account = os.environ.get("CLOUDFLARE_ACCOUNT_ID")
    return (token, account) if token and account else None


@contextlib.contextmanager
def _cloudflare(scenario: Path | None = None) -> Iterator[tuple[str, str]]:
    """
    Yield ``(connection json, where)``: real Cloudflare when credentials are set, else the emulator
    serving ``scenario`` (None: the bundled demo scenario).
    """
    credentials = _real_cloudflare()
    if credentials is not None:
        conn = {"conn_type": "cloudflare_workflows", "login": credentials[1], "password": credentials[0]}
        yield json.dumps(conn), "the Cloudflare API (CLOUDFLARE_API_TOKEN / CLOUDFLARE_ACCOUNT_ID are set)"
        return
    from airflow_provider_cfworkflows.emulator.server import run_emulator_process

    with run_emulator_process(scenario) as emulator:
        conn = {
            "conn_type": "cloudflare_workflows",
            "login": emulator.account_id,
            "password": emulator.api_token,
            "host": emulator.api_base,
        }
        served = f"scenario {scenario}" if scenario else "bundled demo scenario"
        yield json.dumps(conn), f"the local emulator at {emulator.url} ({served})"


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


def _dags_test(output_dir: Path, scenario: Path | None) -> None:
    env = _environment(output_dir)
    with _cloudflare(scenario) as (conn_json, where):
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


def _multi_process(output_dir: Path, options: argparse.Namespace) -> int:
    """Run the DAG on a scheduler, dag-processor, triggerer and api-server; the exit code."""
    with _cloudflare(options.scenario) as (conn_json, where):
        print(f"Starting Airflow (scheduler, dag-processor, triggerer, api-server) for {where}.", flush=True)
        env = {
            # Every process that runs provider code (task processes, the triggerer) sees the connection.
            "AIRFLOW_CONN_CLOUDFLARE_DEFAULT": conn_json,
            "CFWORKFLOWS_EXAMPLE_OUTPUT_BASE": output_dir.as_uri(),
        }
        dags_folder = options.dags_folder or EXAMPLE_DAGS
        with AirflowStack.running(dags_folder=dags_folder, env=env, keep_home=options.keep_logs) as stack:
            print(f"Airflow is up: UI and REST API at {stack.ui_url}", flush=True)
            kept = "kept after the stop (--keep-logs)" if options.keep_logs else "removed at the end"
            print(
                f"AIRFLOW_HOME={stack.home} ({kept}; kept whenever something fails): task logs in logs/, "
                "each component's output in stack-logs/",
                flush=True,
            )
            if options.dags_folder is not None:
                _serve(stack, options.dags_folder, where)
            else:
                _run_pipeline(stack, conn_json, output_dir, options)
    print("\nDone: every process the demo started is stopped.")
    return 0


def _start(stack: AirflowStack, dag_id: str) -> str:
    """Unpause and trigger ``dag_id`` as a user would; the run id."""
    stack.wait_for_dag(dag_id)
    print(f"$ airflow dags unpause {dag_id}", flush=True)
    stack.unpause(dag_id)
    print(f"$ airflow dags trigger {dag_id}", flush=True)
    return stack.trigger(dag_id)


def _finish(stack: AirflowStack, dag_id: str, run_id: str, timeout: float) -> None:
    """Wait for a run and print it (StackError unless it succeeds)."""
    state = stack.wait_for_run(dag_id, run_id, timeout=timeout)
    print(f"\nRun {run_id} of {dag_id}: {state}")
    for task_id, task_state in stack.task_states(dag_id, run_id).items():
        print(f"  task {task_id:<24} {task_state}")
    print(f"UI: {stack.ui_url}/dags/{dag_id}")
    if state != "success":  # an error, so the stack keeps its AIRFLOW_HOME to look at
        raise StackError(f"run {run_id} of {dag_id} ended {state}.\n{stack.diagnostics()}")


def _answer_approval(stack: AirflowStack, run_id: str, timeout: float) -> None:
    """Wait for the approval's question, show how a person answers it, and answer it (REST API)."""
    stack.wait_for_task_state(APPROVAL_DAG_ID, run_id, APPROVAL_TASK_ID, "awaiting_input", timeout=timeout)
    # Airflow 3.3.2 fails a task whose answer comes before the scheduler took the end of the process
    # that asked ("state mismatch"): a person is never that fast, the demo is.
    stack.wait_for_executor_report(APPROVAL_DAG_ID, run_id, APPROVAL_TASK_ID, "awaiting_input", timeout)
    path = f"/dags/{APPROVAL_DAG_ID}/dagRuns/{run_id}/taskInstances/{APPROVAL_TASK_ID}/-1/hitlDetails"
    question = stack.api("GET", path)
    question.raise_for_status()
    print(
        f"\n{APPROVAL_TASK_ID} asks a person: {question.json()['subject']}\n"
        f"  In the UI: {stack.ui_url}/dags/{APPROVAL_DAG_ID}/runs/{run_id}/tasks/{APPROVAL_TASK_ID}"
        "/required_actions (or Browse -> Required Actions).\n"
        "  Or through the REST API, with a token (docs/deployment.md):\n"
        f"    curl -X PATCH '{stack.ui_url}/api/v2{path}' -H \"Authorization: Bearer $TOKEN\" "
        f"-H 'Content-Type: application/json' -d '{json.dumps(APPROVAL_ANSWER)}'",
        flush=True,
    )
    answer = stack.api("PATCH", path, json=APPROVAL_ANSWER)
    answer.raise_for_status()
    chosen, user = APPROVAL_ANSWER["chosen_options"], answer.json()["responded_by"]["name"]
    print(f"The demo answered through the REST API: {chosen} as {user}.", flush=True)


def _run_pipeline(stack: AirflowStack, conn_json: str, output_dir: Path, options: argparse.Namespace) -> None:
    """
    Unpause and trigger the demo pipeline (and, against the emulator, the approval example beside it;
    its question is answered), wait for the runs (StackError unless they succeed), report.
    """
    run_id = _start(stack, DAG_ID)
    print(f"Triggered run {run_id}; waiting for it (at most {options.timeout:.0f} s).", flush=True)
    if _real_cloudflare() is None:  # the approval example needs the emulator's demo-payout Workflow
        approval_run_id = _start(stack, APPROVAL_DAG_ID)
        _answer_approval(stack, approval_run_id, options.timeout)
        _finish(stack, APPROVAL_DAG_ID, approval_run_id, options.timeout)
    _finish(stack, DAG_ID, run_id, options.timeout)
    answer = stack.api(
        "GET",
        f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{CREATE_TASK_ID}/xcomEntries/return_value",
        params={"deserialize": "true"},
    )
    answer.raise_for_status()
    _report(conn_json, str(answer.json()["value"]), output_dir)
    if options.keep_running:
        print(f"\nAirflow keeps running at {stack.ui_url}; press Ctrl-C to stop it.", flush=True)
        signal.pause()


def _serve(stack: AirflowStack, dags_folder: Path, where: str) -> None:
    """Keep Airflow up for the user's own DAGs until Ctrl-C (which raises KeyboardInterrupt)."""
    print(
        f"\nThe dag-processor parses your DAGs in {dags_folder} (new DAGs start paused; the UI shows "
        f"import errors). cloudflare_default points at {where}.\n"
        f"Unpause and trigger them in the UI at {stack.ui_url} (everyone is admin here: a local demo), "
        f"or through the REST API with a token from GET {stack.ui_url}/auth/token (docs/deployment.md).\n"
        "Press Ctrl-C to stop Airflow.",
        flush=True,
    )
    signal.pause()


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
    parser.add_argument(
        "--dags-folder",
        type=Path,
        metavar="DIR",
        help="with --airflow: parse the DAGs in DIR instead of example_dags/; nothing is triggered, and "
        "Airflow runs until Ctrl-C",
    )
    parser.add_argument(
        "--scenario",
        type=Path,
        metavar="FILE",
        help="the emulator's scenario (YAML or JSON; docs/emulator.md); default: the bundled demo",
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="with --airflow: keep AIRFLOW_HOME (task logs, each component's output) after the stop",
    )
    args = parser.parse_args(argv)
    for option, given in (
        ("--keep-running", args.keep_running),
        ("--dags-folder", args.dags_folder),
        ("--keep-logs", args.keep_logs),
    ):
        if given and not args.airflow:
            parser.error(f"{option} needs --airflow")
    if args.dags_folder is not None and not args.dags_folder.is_dir():
        parser.error(f"--dags-folder {args.dags_folder} is not a directory")
    if args.scenario is not None and not args.scenario.is_file():
        parser.error(f"--scenario {args.scenario} is not a file")
    if args.scenario is not None and _real_cloudflare() is not None:
        parser.error("--scenario is for the emulator; unset CLOUDFLARE_API_TOKEN / CLOUDFLARE_ACCOUNT_ID")
    if not 0 < args.timeout < math.inf:
        parser.error(f"--timeout must be a finite number of seconds > 0, got {args.timeout}")
    output_dir = DEMO_HOME / "output"
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.mkdir(parents=True)
    if not args.airflow:
        _dags_test(output_dir, args.scenario)
        return 0
    _stop_on_sigterm()
    try:
        return _multi_process(output_dir, args)
    except KeyboardInterrupt:
        print("\nInterrupted: every process the demo started is stopped.", file=sys.stderr)
        return 130
    except StackError as error:
        print(f"\nThe demo failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
