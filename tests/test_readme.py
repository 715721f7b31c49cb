"""README.md's first screen: its first lines are the two commands (the two scripts), then one sentence
and the DAG, which runs end to end against the emulator's bundled demo scenario with the connection
line it shows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import DAGS_FOLDER, REPO_ROOT

pytestmark = pytest.mark.integration
README = (REPO_ROOT / "README.md").read_text()
OUTPUT_BASE = "file:///tmp/cfworkflows"


def first_block(language: str) -> str:
    return re.findall(rf"^```{language}\n(.*?)^```", README, re.S | re.M)[0]


def test_the_first_screen_is_the_two_commands_a_sentence_the_dag_and_the_connection():
    first_screen = README.split("\n## ", 1)[0]
    blocks = re.findall(r"^```(\w+)\n(.*?)^```", first_screen, re.S | re.M)
    assert [language for language, _ in blocks] == ["bash", "python", "bash"]
    assert README.startswith("# airflow-provider-cfworkflows\n\n```bash\n")  # the first lines
    commands = [line.split("#")[0].strip() for line in blocks[0][1].splitlines()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert README.index("```python") < 800  # right after the commands and one sentence
    assert "AIRFLOW_CONN_CLOUDFLARE_DEFAULT" in blocks[2][1]


def test_the_first_dag_runs_against_the_emulator(airflow_db, fresh_emulator, monkeypatch, tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    # The connection exactly as the README shows it, on the emulator's port.
    line = next(
        line
        for block in re.findall(r"^```bash\n(.*?)^```", README, re.S | re.M)
        for line in block.splitlines()
        if "AIRFLOW_CONN_CLOUDFLARE_DEFAULT" in line
    )
    conn = json.loads(line.split("=", 1)[1].strip("'"))
    conn["host"] = conn["host"].replace("127.0.0.1:8787", fresh_emulator.url.removeprefix("http://"))
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDFLARE_DEFAULT", json.dumps(conn))
    source = first_block("python")
    assert OUTPUT_BASE in source
    path = DAGS_FOLDER / "readme_first_dag.py"
    path.write_text(source.replace(OUTPUT_BASE, tmp_path.as_uri()))
    try:
        bag = DagBag(dag_folder=str(path))
        assert not bag.import_errors, bag.import_errors
        (dag,) = bag.dags.values()
        # The README leaves poke_interval at Airflow's 60 s; the second look need not wait that long here.
        dag.get_task("wait_for_prepare").poke_interval = 1
        dag_run = dag.test()
    finally:
        path.unlink()

    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states == dict.fromkeys(("start", "wait_for_prepare", "store_prepare", "approve"), "success")
    (stored,) = Path(tmp_path).rglob("prepare.json")
    assert len(json.loads(stored.read_text())["rows"]) == 14  # the demo scenario's prepare output, whole
    events = [r for r in fresh_emulator.requests_log() if r["raw_path"].endswith("/events/approval")]
    assert [r["status"] for r in events] == [200]
