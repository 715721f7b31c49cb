"""The main job: run ``example_cfworkflows_pipeline`` end to end on a real Airflow, then report.

Against the bundled emulator by default. With ``CLOUDFLARE_API_TOKEN`` and ``CLOUDFLARE_ACCOUNT_ID``
set, against the real Cloudflare API instead (deploy the demo Workflow first: see README).
Run through ``bash scripts/demo.sh``, which sets up the virtualenv first.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMO_HOME = REPO / ".demo"
DAG_ID = "example_cfworkflows_pipeline"
CREATE_TASK_ID = "create_instance"


def _environment(output_dir: Path) -> dict[str, str]:
    airflow_home = DEMO_HOME / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "example_dags"),
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

    instance: dict[str, Any] = CloudflareWorkflowsHook().get_instance("demo-pipeline", instance_id)
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


def main() -> None:
    output_dir = DEMO_HOME / "output"
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.mkdir(parents=True)
    env = _environment(output_dir)
    with _cloudflare() as (conn_json, where):
        print(f"Running {DAG_ID} against {where}.", flush=True)
        env["AIRFLOW_CONN_CLOUDFLARE_DEFAULT"] = conn_json
        _run([sys.executable, "-m", "airflow", "db", "migrate"], env)
        _run([sys.executable, "-m", "airflow", "dags", "test", DAG_ID], env)
        _report(conn_json, _created_instance_id(env), output_dir)
    print("\nDone: the emulator (if any) is stopped; Airflow state is in .demo/airflow.")


if __name__ == "__main__":
    main()
