"""
Every templated field of every operator in ``example_dags/`` and in README.md's Python examples renders
for a manually triggered run without a logical date (Airflow 3: ``airflow dags trigger`` or the UI).

Each DAG runs through ``dag.test(logical_date=None)`` — a real manual DagRun and Airflow's own
rendering (StrictUndefined: ``{{ ds }}`` fails such a run). Only the provider operators' ``execute``
is replaced: it records the rendered fields and returns a marker, so no Cloudflare call is made and
templates pulling an upstream XCom see a value.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DAGS_FOLDER, EXAMPLE_DAGS, REPO_ROOT, load_dag

pytestmark = pytest.mark.integration

PROVIDER_PACKAGE = "airflow_provider_cfworkflows"
README_DAG_ID = "readme_examples"
CONTROL_DAG_ID = "readme_examples_control"
# The event-driven example has no provider operator (its asset's watcher is the provider's part).
EXAMPLE_DAG_IDS = sorted(
    path.stem for path in EXAMPLE_DAGS.glob("example_*.py") if path.stem != "example_cfworkflows_event_driven"
)
JINJA_MARKERS = ("{{", "{%", "}}")


def readme_python_blocks() -> list[str]:
    """The ```python code blocks of README.md."""
    readme = (REPO_ROOT / "README.md").read_text()
    return [textwrap.dedent(block) for block in re.findall(r"^```python\n(.*?)^```", readme, re.S | re.M)]


# A DAG file made of README.md's Python blocks, run one after another inside one DAG (the README
# shows them as parts of one pipeline), and a control DAG using {{ ds }} that must fail.
README_DAG_FILE = """
import re

from airflow.sdk import DAG

from airflow_provider_cfworkflows.operators import workflows as operators
from airflow_provider_cfworkflows.sensors import workflows as sensors
from airflow_provider_cfworkflows.operators.workflows import CloudflareWorkflowCreateInstanceOperator

BLOCKS = {blocks!r}

with DAG(dag_id={dag_id!r}, schedule=None, catchup=False) as dag:
    # Some README blocks leave out their import: every public operator and sensor is at hand.
    namespace = {{
        name: value
        for module in (operators, sensors)
        for name, value in vars(module).items()
        if name.startswith("Cloudflare")
    }}
    for number, block in enumerate(BLOCKS, 1):
        exec(compile(block, f"README.md python block {{number}}", "exec"), namespace)
    # A task pulling another's XCom runs after it, as in the pipeline the README describes.
    for task in dag.tasks:
        for field in task.template_fields:
            for upstream in re.findall(r"task_ids='([^']+)'", str(getattr(task, field))):
                if upstream in dag.task_dict:
                    task.set_upstream(dag.task_dict[upstream])

with DAG(dag_id={control_id!r}, schedule=None, catchup=False):
    CloudflareWorkflowCreateInstanceOperator(
        task_id="uses_ds", workflow_name="wf", instance_params={{"date": "{{{{ ds }}}}"}}
    )
"""


def operator_class(task: Any) -> type:
    """The operator class of a task (of its mapped tasks, for a mapped one)."""
    return getattr(task, "operator_class", type(task))


def is_provider_task(task: Any) -> bool:
    return operator_class(task).__module__.startswith(PROVIDER_PACKAGE)


class RenderRecorder:
    """Stands in for the provider operators' ``execute``: records what Airflow rendered."""

    def __init__(self) -> None:
        self.rendered: dict[tuple[str, int], dict[str, Any]] = {}

    def marker(self, task_id: str, map_index: int) -> str:
        return f"rendered-{task_id}-{map_index}"

    def install(self, dag: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        recorder = self

        def execute(operator: Any, context: Any) -> str:
            map_index = context["ti"].map_index
            recorder.rendered[(operator.task_id, map_index)] = {
                name: getattr(operator, name) for name in operator.template_fields
            }
            return recorder.marker(operator.task_id, map_index)

        for cls in {operator_class(task) for task in dag.tasks if is_provider_task(task)}:
            monkeypatch.setattr(cls, "execute", execute)


def run_manually_without_logical_date(dag: Any) -> Any:
    """``dag.test()`` as a manual run without a logical date; tasks that consume a provider
    operator's real output (its marker here) are marked successful instead of run."""
    consumers = sorted(
        task.task_id
        for task in dag.tasks
        if not is_provider_task(task)
        and any(is_provider_task(upstream) for upstream in task.get_flat_relatives(upstream=True))
    )
    pattern = "^(" + "|".join(map(re.escape, consumers)) + ")$" if consumers else None
    dag_run = dag.test(logical_date=None, mark_success_pattern=pattern)
    assert dag_run.logical_date is None
    assert str(dag_run.run_type) == "manual"
    return dag_run


def flatten(value: Any) -> list[Any]:
    """Every leaf of a rendered value (dicts, lists and tuples walked)."""
    if isinstance(value, dict):
        return [leaf for item in value.items() for part in item for leaf in flatten(part)]
    if isinstance(value, list | tuple):
        return [leaf for item in value for leaf in flatten(item)]
    return [value]


def assert_all_rendered(dag: Any, dag_run: Any, recorder: RenderRecorder) -> None:
    states = {(ti.task_id, ti.map_index): str(ti.state) for ti in dag_run.get_task_instances()}
    provider_tis = {key: state for key, state in states.items() if is_provider_task(dag.get_task(key[0]))}
    assert provider_tis, f"{dag.dag_id} has no provider operator"
    assert all(state == "success" for state in provider_tis.values()), states
    assert set(recorder.rendered) == set(provider_tis)
    for key, fields in recorder.rendered.items():
        leftovers = [
            leaf
            for leaf in flatten(fields)
            if isinstance(leaf, str) and any(m in leaf for m in JINJA_MARKERS)
        ]
        assert not leftovers, f"{key}: not rendered: {leftovers}"


@pytest.fixture
def readme_dags(airflow_db: Path) -> Iterator[dict[str, Any]]:
    """README.md's examples (and the control DAG) as a DAG file in the DAGs folder."""
    from airflow.dag_processing.dagbag import DagBag

    path = DAGS_FOLDER / "readme_examples_generated.py"
    path.write_text(
        README_DAG_FILE.format(blocks=readme_python_blocks(), dag_id=README_DAG_ID, control_id=CONTROL_DAG_ID)
    )
    try:
        bag = DagBag(dag_folder=str(path))
        assert not bag.import_errors, bag.import_errors
        yield {dag_id: bag.get_dag(dag_id) for dag_id in (README_DAG_ID, CONTROL_DAG_ID)}
    finally:
        path.unlink()


@pytest.mark.parametrize("dag_id", EXAMPLE_DAG_IDS)
def test_example_dag_renders_for_a_manual_run(
    dag_id: str, airflow_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dag = load_dag(dag_id)
    recorder = RenderRecorder()
    recorder.install(dag, monkeypatch)

    dag_run = run_manually_without_logical_date(dag)

    assert_all_rendered(dag, dag_run, recorder)
    if dag_id == "example_cfworkflows_pipeline":
        created = recorder.marker("create_instance", -1)
        assert recorder.rendered[("create_instance", -1)]["instance_params"]["run_id"] == dag_run.run_id
        assert recorder.rendered[("approve", -1)]["instance_id"] == created
        output_path = recorder.rendered[("store_report", -1)]["output_path"]
        assert output_path.endswith("/report.bin")
        assert "manual__" in output_path


def test_readme_examples_render_for_a_manual_run(
    readme_dags: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    dag = readme_dags[README_DAG_ID]
    templated = [
        task.task_id for task in dag.tasks if any("{{" in str(getattr(task, f)) for f in task.template_fields)
    ]
    assert len(templated) >= 5, f"fewer templated README examples than expected: {templated}"
    recorder = RenderRecorder()
    recorder.install(dag, monkeypatch)

    dag_run = run_manually_without_logical_date(dag)

    assert_all_rendered(dag, dag_run, recorder)
    day = dag_run.run_after.strftime("%Y-%m-%d")
    assert recorder.rendered[("start_etl", -1)]["instance_params"] == {"date": day}
    assert (
        recorder.rendered[("export", -1)]["output_path"]
        == f"s3://r2@my-bucket/exports/{day}/{dag_run.run_id}.bin"
    )
    assert recorder.rendered[("wait_for_load", -1)]["instance_id"] == recorder.marker("start_etl", -1)


def test_the_check_catches_ds_in_a_manual_run(
    readme_dags: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    dag = readme_dags[CONTROL_DAG_ID]
    recorder = RenderRecorder()
    recorder.install(dag, monkeypatch)

    dag_run = run_manually_without_logical_date(dag)

    assert {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()} == {"uses_ds": "failed"}
    assert recorder.rendered == {}, "rendering {{ ds }} must fail before execute"
