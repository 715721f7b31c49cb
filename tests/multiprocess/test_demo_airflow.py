"""``bash scripts/demo.sh --airflow``: the pipeline and an approval answered through the REST API on a
real multi-process Airflow, and a clean stop."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from scripts.airflow_stack import inherited_environment
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.multiprocess
DEMO_DEADLINE = 600.0  # seconds; the run itself takes about a minute on 2 busy cores
STOP_DEADLINE = 150.0  # seconds from Ctrl-C: each of the 4 components gets 30 s to stop before it is killed


def _read_until(demo: subprocess.Popen[str], pattern: str, seen: list[str], deadline: float) -> re.Match[str]:
    """Read the demo's output line by line until ``pattern`` matches (or fail at the deadline/exit)."""
    assert demo.stdout is not None
    while time.monotonic() < deadline:
        line = demo.stdout.readline()
        if not line:
            pytest.fail(f"the demo exited ({demo.wait()}) before printing {pattern!r}:\n{''.join(seen)}")
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    pytest.fail(f"no {pattern!r} within the deadline:\n{''.join(seen)}")


def _stack_processes(home: str) -> list[psutil.Process]:
    """Processes still running with ``AIRFLOW_HOME=home`` (anything the stack started)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("AIRFLOW_HOME") == home:
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def _port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as probe:
        return probe.connect_ex((host, int(port))) == 0


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_demo_runs_the_pipeline_on_airflow_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    env = {**inherited_environment(), "CFWORKFLOWS_DEMO_DIR": str(tmp_path)}
    for name in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID"):
        env.pop(name, None)  # always the emulator here
    demo = subprocess.Popen(
        ["bash", "scripts/demo.sh", "--airflow", "--keep-running", "--timeout", "400"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # As in a terminal: pytest-xdist's workers ignore SIGINT, and an ignored SIGINT is inherited.
        preexec_fn=_default_sigint,
    )
    seen: list[str] = []
    deadline = time.monotonic() + DEMO_DEADLINE
    try:
        emulator_url = _read_until(demo, r"local emulator at (http://127\.0\.0\.1:\d+)", seen, deadline)[1]
        ui_url = _read_until(demo, r"UI and REST API at (http://127\.0\.0\.1:\d+)", seen, deadline)[1]
        home = _read_until(demo, r"AIRFLOW_HOME=(\S+)", seen, deadline)[1]
        _read_until(demo, r"\$ airflow dags trigger example_cfworkflows_pipeline", seen, deadline)
        _read_until(demo, r"\$ airflow dags trigger example_cfworkflows_approval", seen, deadline)
        _read_until(demo, r"approve_payout asks a person: Release the payout", seen, deadline)
        _read_until(demo, r"In the UI: \S+/required_actions", seen, deadline)
        _read_until(demo, r"curl -X PATCH '\S+/hitlDetails'", seen, deadline)
        _read_until(demo, r"answered through the REST API: \['Approve'\]", seen, deadline)
        _read_until(demo, r"^Run manual__\S+ of example_cfworkflows_approval: success$", seen, deadline)
        _read_until(demo, r"^  task wait_for_payout +success$", seen, deadline)
        _read_until(demo, r"^Run manual__\S+ of example_cfworkflows_pipeline: success$", seen, deadline)
        _read_until(demo, r"^status +: complete$", seen, deadline)
        _read_until(demo, r"press Ctrl-C to stop it", seen, deadline)
        assert _stack_processes(home), "the stack should be running until Ctrl-C"
        assert _port_open(ui_url)

        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        try:
            # communicate() reads while it waits: a full pipe cannot hold the demo's exit up.
            seen.append(demo.communicate(timeout=STOP_DEADLINE)[0])
        except subprocess.TimeoutExpired as stuck:
            partial = stuck.output.decode(errors="replace") if isinstance(stuck.output, bytes) else ""
            still = [" ".join(process.cmdline()[:4]) for process in _stack_processes(home)]
            pytest.fail(
                f"not stopped {STOP_DEADLINE:.0f} s after Ctrl-C; still running: {still}\n"
                f"{''.join(seen)}{partial}"
            )
        assert demo.returncode == 130, "".join(seen)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.communicate()
    output = "".join(seen)
    assert "Interrupted: every process the demo started is stopped." in output
    (report,) = tmp_path.glob("output/example_cfworkflows_pipeline/*/report.bin")
    assert report.stat().st_size == 5 * 1024 * 1024
    assert _stack_processes(home) == []
    assert not _port_open(ui_url)
    assert not _port_open(emulator_url)
    assert not Path(home).exists(), "a temporary AIRFLOW_HOME is removed after a clean stop"
