"""``scripts/demo.py``'s options, with the multi-process Airflow stood in for (the real one runs in
``tests/multiprocess/test_demo_airflow.py``): ``--airflow --dags-folder DIR`` serves your DAGs until
Ctrl-C without triggering the demo, ``--keep-logs`` keeps the ``AIRFLOW_HOME``, ``--scenario`` feeds
the emulator."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from scripts import demo


class FakeStack:
    """What ``AirflowStack.running`` yields, recording what the demo asks of it."""

    ui_url = "http://127.0.0.1:28080"

    def __init__(self, home: Path) -> None:
        self.home = home
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:  # wait_for_dag, unpause, trigger, ...: none expected here
        self.calls.append(name)
        raise AssertionError(f"the demo should not call stack.{name} when serving your DAGs")


@pytest.fixture
def started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stand-ins for the emulator and the stack; returns what the stack was started with."""
    monkeypatch.setattr(demo, "DEMO_HOME", tmp_path / "demo")
    seen: dict[str, Any] = {}

    @contextlib.contextmanager
    def cloudflare(scenario: Path | None = None) -> Iterator[tuple[str, str]]:
        seen["scenario"] = scenario
        yield json.dumps({"conn_type": "cloudflare_workflows"}), "the local emulator at http://127.0.0.1:1"

    @contextlib.contextmanager
    def running(**kwargs: Any) -> Iterator[FakeStack]:
        seen.update(kwargs)
        seen["stack"] = FakeStack(tmp_path / "home")
        yield seen["stack"]

    monkeypatch.setattr(demo, "_cloudflare", cloudflare)
    monkeypatch.setattr(demo.AirflowStack, "running", running)
    monkeypatch.setattr(demo, "_stop_on_sigterm", lambda: None)
    return seen


def test_own_dags_are_served_until_ctrl_c_and_the_logs_kept(started, tmp_path, capsys):
    dags = tmp_path / "my_dags"
    dags.mkdir()
    scenario = tmp_path / "workflows.yaml"
    scenario.write_text("workflows: []\n")

    with mock.patch.object(demo.signal, "pause", side_effect=KeyboardInterrupt):  # Ctrl-C
        code = demo.main(
            ["--airflow", "--dags-folder", str(dags), "--keep-logs", "--scenario", str(scenario)]
        )

    assert code == 130
    assert started["dags_folder"] == dags
    assert started["keep_home"] is True
    assert started["scenario"] == scenario
    assert started["env"]["AIRFLOW_CONN_CLOUDFLARE_DEFAULT"]
    assert started["stack"].calls == []  # nothing triggered: the demo DAG is not in your folder
    out = capsys.readouterr().out
    assert f"AIRFLOW_HOME={tmp_path / 'home'} (kept after the stop (--keep-logs)" in out
    assert f"The dag-processor parses your DAGs in {dags}" in out
    assert "cloudflare_default points at the local emulator at http://127.0.0.1:1" in out


def test_without_keep_logs_the_home_goes(started):
    with mock.patch.object(demo.signal, "pause", side_effect=KeyboardInterrupt):
        demo.main(["--airflow", "--dags-folder", str(Path(__file__).parent)])
    assert started["keep_home"] is False


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--dags-folder", "."], "--dags-folder needs --airflow"),
        (["--keep-logs"], "--keep-logs needs --airflow"),
        (
            ["--airflow", "--dags-folder", "/nonexistent/dags"],
            "--dags-folder /nonexistent/dags is not a directory",
        ),
        (["--scenario", "/nonexistent.yaml"], "--scenario /nonexistent.yaml is not a file"),
    ],
)
def test_option_errors(argv, error, started, capsys):
    with pytest.raises(SystemExit) as exited:
        demo.main(argv)
    assert exited.value.code == 2
    assert error in capsys.readouterr().err
