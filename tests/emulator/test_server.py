"""The CLI and ``run_emulator_process``: the URL line, loopback-only binding, startup errors, shutdown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from airflow_provider_cfworkflows.emulator.__main__ import is_loopback
from airflow_provider_cfworkflows.emulator.scenario import ScenarioError
from airflow_provider_cfworkflows.emulator.server import EmulatorError, run_emulator_process

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "airflow_provider_cfworkflows.emulator"]
REPO_ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
    )


def test_cli_prints_exactly_one_url_line(tmp_path):
    scenario = tmp_path / "one.json"
    scenario.write_text(
        '{"account_id": "' + "a" * 32 + '", "api_token": "unit-test-token-4c1d", "workflows": []}'
    )
    process = subprocess.Popen(
        [*CLI, "--scenario", str(scenario), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until the server announces itself
        assert line.startswith("EMULATOR_URL=http://127.0.0.1:")
        url = line.strip().removeprefix("EMULATOR_URL=")
        port = int(url.rsplit(":", 1)[1])
        assert 0 < port < 65536
        answer = httpx.get(
            f"{url}/client/v4/accounts/{'a' * 32}/workflows",
            headers={"Authorization": "Bearer unit-test-token-4c1d"},
        )
        assert answer.json()["result"] == []
    finally:
        process.terminate()
        stdout, stderr = process.communicate(timeout=30)
    assert stdout == ""  # nothing after the URL line
    assert "unit-test-token-4c1d" not in stderr


@pytest.mark.parametrize("module", ["fastapi", "uvicorn", "yaml"])
def test_cli_without_the_emulator_extra_says_how_to_install_it(module):
    # The module made unimportable, as in an environment without the `emulator` extra.
    run_cli = (
        f"import runpy, sys; sys.modules[{module!r}] = None; "
        f"runpy.run_module({CLI[-1]!r}, run_name='__main__')"
    )
    finished = subprocess.run(
        [sys.executable, "-c", run_cli],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )
    assert finished.returncode == 1
    assert finished.stderr == (
        f"The emulator needs {module}, which comes with the provider's `emulator` extra: "
        "pip install 'airflow-provider-cfworkflows[emulator]'\n"
    )


def test_cli_refuses_non_loopback_hosts():
    refused = cli("--host", "0.0.0.0")
    assert refused.returncode == 2
    assert "not a loopback address; pass --allow-remote" in refused.stderr
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("[::1]")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.168.1.10")
    assert not is_loopback("example.com")


def test_cli_reports_a_bad_scenario(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflows: [{name: w, steps: [{name: s, type: loop}]}]")
    broken = cli("--scenario", str(bad), "--port", "0")
    assert broken.returncode == 2
    assert "Cannot load the scenario" in broken.stderr
    assert "workflows[0].steps[0].type must be one of" in broken.stderr
    missing = cli("--scenario", str(tmp_path / "missing.yaml"))
    assert missing.returncode == 2
    assert "missing.yaml" in missing.stderr


def test_run_emulator_process_with_a_scenario_file(tmp_path):
    scenario = tmp_path / "custom.yaml"
    scenario.write_text(
        f"account_id: {'b' * 32}\napi_token: unit-test-token-4c1d\ntime_scale: 0\n"
        "workflows: [{name: only, steps: [{name: s, duration: 5}]}]\n"
    )
    with run_emulator_process(scenario) as emulator:
        assert emulator.url.startswith("http://127.0.0.1:")
        assert emulator.api_base == emulator.url + "/client/v4"
        assert emulator.account_id == "b" * 32
        assert "unit-test-token-4c1d" not in repr(emulator)
        with emulator.api_client() as client:
            assert [w["name"] for w in client.get("").json()["result"]] == ["only"]
        assert emulator.now() == emulator.now()  # the scenario's time_scale 0: frozen
        process = emulator.process
    assert process.poll() is not None  # stopped on exit


def test_run_emulator_process_time_scale_override(tmp_path):
    with run_emulator_process(None, time_scale=0) as emulator:
        assert emulator.now() == emulator.now()


def test_run_emulator_process_surfaces_startup_errors(tmp_path):
    with (
        pytest.raises(EmulatorError, match="exited with code 2") as caught,
        run_emulator_process(None, extra_args=["--port", "70000"]),
    ):
        pass
    assert "--port must be from 0 to 65535" in str(caught.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflows: 3")
    with pytest.raises(ScenarioError, match=r"scenario\.workflows must be a list"), run_emulator_process(bad):
        pass


def test_the_emulator_stops_when_its_parent_goes_away():
    """run_emulator_process keeps the child's stdin open; at its end (parent dead) the child stops."""
    with run_emulator_process(None, time_scale=0) as emulator:
        assert emulator.process.stdin is not None
        emulator.process.stdin.close()
        assert emulator.process.wait(timeout=30) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{emulator.url}/__emulator/clock", timeout=2)


def test_help_lists_the_option_flags():
    shown = cli("--help")
    assert shown.returncode == 0
    for flag in (
        "--rate-limit",
        "--no-rate-limit-headers",
        "--already-exists-status",
        "--params-encoding",
        "--output-encoding",
        "--chunked-streams",
        "--gzip",
        "--pause-delay",
        "--rollback-duration",
        "lost_answer",
    ):
        assert flag in shown.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate-limit", "1200"], "--rate-limit must be QUOTA/WINDOW"),
        (["--rate-limit", "0/300"], "--rate-limit must be QUOTA/WINDOW"),
        (["--no-rate-limit-headers"], "--no-rate-limit-headers needs --rate-limit"),
        (["--pause-delay", "nan"], "--pause-delay must be a finite number >= 0"),
        (["--already-exists-status", "404"], "invalid choice"),
    ],
)
def test_bad_option_flags(args, message):
    refused = cli(*args, "--port", "0")
    assert refused.returncode == 2
    assert message in refused.stderr
