"""
A real multi-process Airflow on this machine: scheduler, dag-processor, triggerer and api-server.

LocalExecutor, a SQLite metadata DB and a temporary ``AIRFLOW_HOME``. Each component runs in a
process group of its own, so stopping it also stops what it started (the executor's task
processes, the trigger runner), and Ctrl-C in a terminal reaches only the parent, which then stops
the components in order. Used by ``scripts/demo.py --airflow`` and ``tests/multiprocess/``::

    with AirflowStack.running(dags_folder=Path("example_dags"), env={...}) as stack:
        stack.unpause("my_dag")
        run_id = stack.trigger("my_dag")
        state = stack.wait_for_run("my_dag", run_id, timeout=300)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

SCHEDULER = "scheduler"
DAG_PROCESSOR = "dag-processor"
TRIGGERER = "triggerer"
API_SERVER = "api-server"
COMPONENTS = (API_SERVER, SCHEDULER, DAG_PROCESSOR, TRIGGERER)
# The scheduler and triggerer would serve their logs on all interfaces (fixed ports 8793/8794); on one
# machine the api-server reads the log files directly, so they do not.
COMMAND_ARGS = {SCHEDULER: ("--skip-serve-logs",), TRIGGERER: ("--skip-serve-logs",)}
# The names the api-server's /monitor/health answer uses for the components that heartbeat.
HEALTH_KEYS = {SCHEDULER: "scheduler", DAG_PROCESSOR: "dag_processor", TRIGGERER: "triggerer"}
HEALTHY = "healthy"

RUN_FINISHED_STATES = frozenset({"success", "failed"})
POLL_INTERVAL = 0.5  # seconds between two looks at a condition (never a substitute for the condition)
STOP_TIMEOUT = 30.0  # seconds a component gets to shut down gracefully before its group is killed
CLI_TIMEOUT = 300.0
LOG_TAIL_LINES = 40
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

T = TypeVar("T")


class StackError(RuntimeError):
    """A component did not start, a command failed, or a condition was not met before its deadline."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def inherited_environment() -> dict[str, str]:
    """This process's environment less Airflow settings (a stack is configured by its own alone)."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AIRFLOW__") and name not in ("AIRFLOW_HOME", "AIRFLOW_CONFIG")
    }


def stack_environment(home: Path, dags_folder: Path, api_port: int) -> dict[str, str]:
    """The Airflow settings every component and CLI call of one stack shares."""
    api_url = f"http://127.0.0.1:{api_port}"
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        # One secret for every component: the scheduler signs the task tokens the api-server checks.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API__WORKERS": "1",
        # A local demo: every user is an admin, no login page (never do this in production).
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        # A killed triggerer's triggers move to a live one once its heartbeat is this old (default 30 s).
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "5",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }


def _set_parent_death_signal() -> None:
    """In the child (Linux): get SIGTERM when the parent dies, even by SIGKILL (best effort)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while stopping, so a second Ctrl-C cannot leave processes behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: caught.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt(f"signal {signal.Signals(caught[0]).name} while stopping")


@dataclass
class AirflowStack:
    """
    One Airflow installation and the component processes started for it.

    :param home: the ``AIRFLOW_HOME`` (SQLite DB, logs, the components' output in ``stack-logs/``).
    :param env: the environment of every component and CLI call.
    :param api_port: the api-server's port on 127.0.0.1.
    """

    home: Path
    env: dict[str, str]
    api_port: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _token: str | None = None

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        *,
        dags_folder: Path,
        env: Mapping[str, str] | None = None,
        home: Path | None = None,
        keep_home: bool = False,
        start_timeout: float = 180.0,
    ) -> Iterator[AirflowStack]:
        """
        Migrate a new metadata DB, start every component, wait until all are healthy; stop them all
        on exit (also on an exception or KeyboardInterrupt).

        :param dags_folder: the folder the dag-processor parses.
        :param env: more environment (connections, settings) for every component.
        :param home: the ``AIRFLOW_HOME`` to use; default a new temporary folder.
        :param keep_home: keep the home folder afterwards (a temporary one is removed otherwise).
        :param start_timeout: seconds for the components to report healthy.
        """
        created = home is None
        home = Path(tempfile.mkdtemp(prefix="cfwf-airflow-stack-")) if home is None else home
        port = free_port()
        stack = cls(
            home=home,
            env={
                **inherited_environment(),
                **stack_environment(home, dags_folder.resolve(), port),
                **(env or {}),
            },
            api_port=port,
        )
        failed = False
        try:
            stack.airflow("db", "migrate")
            for component in COMPONENTS:
                stack.start(component)
            stack.wait_healthy(timeout=start_timeout)
            yield stack
        except Exception:
            failed = True  # keep the logs to look at
            raise
        finally:
            stack.stop_all()
            if created and not (keep_home or failed):
                shutil.rmtree(home, ignore_errors=True)

    # --- processes ------------------------------------------------------------------------------

    @property
    def ui_url(self) -> str:
        """The api-server (UI and REST API) address."""
        return f"http://127.0.0.1:{self.api_port}"

    def log_path(self, component: str) -> Path:
        """Where ``component``'s stdout and stderr go."""
        return self.home / "stack-logs" / f"{component}.log"

    def start(self, component: str) -> None:
        """Start ``airflow <component>`` in a process group of its own (output appended to its log)."""
        if component not in COMPONENTS:
            raise ValueError(f"unknown component {component!r}; one of {COMPONENTS}")
        running = self.processes.get(component)
        if running is not None and running.poll() is None:
            raise StackError(f"{component} is already running (pid {running.pid})")
        log = self.log_path(component)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as output:
            self.processes[component] = subprocess.Popen(
                [sys.executable, "-m", "airflow", component, *COMMAND_ARGS.get(component, ())],
                env=self.env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_set_parent_death_signal,
            )

    def kill(self, component: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to ``component``'s whole process group and reap its leader."""
        process = self.processes[component]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        if sig == signal.SIGKILL:
            process.wait()

    def stop(self, component: str) -> None:
        """Stop ``component`` gracefully (SIGTERM), then kill whatever is left of its process group."""
        process = self.processes.pop(component, None)
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT)
        # Task or trigger-runner processes of the group that outlived their leader.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        """Stop every component, the scheduler first (it owns the task processes), then the rest."""
        with _interrupts_deferred():
            for component in (SCHEDULER, TRIGGERER, DAG_PROCESSOR, API_SERVER):
                self.stop(component)

    def log_tail(self, component: str, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of ``component``'s output."""
        path = self.log_path(component)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def diagnostics(self) -> str:
        """Each component's state and the tail of its output, for error messages."""
        parts = [f"AIRFLOW_HOME={self.home}; each component's output is in {self.log_path('').parent}"]
        for component in COMPONENTS:
            process = self.processes.get(component)
            state = "not running" if process is None else f"pid {process.pid}, exit code {process.poll()}"
            parts.append(f"--- {component} ({state}) ---\n{self.log_tail(component)}")
        return "\n".join(parts)

    def airflow(self, *args: str, timeout: float = CLI_TIMEOUT) -> str:
        """Run ``airflow <args>`` against this stack; its stdout, or StackError with its output."""
        try:
            done = subprocess.run(
                [sys.executable, "-m", "airflow", *args],
                env=self.env,
                cwd=self.home,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise StackError(f"`airflow {' '.join(args)}` did not finish within {timeout:.0f} s") from error
        if done.returncode != 0:
            raise StackError(
                f"`airflow {' '.join(args)}` failed (exit code {done.returncode}):\n"
                f"{(done.stdout + done.stderr)[-4000:]}"
            )
        return done.stdout

    # --- the REST API ---------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call the api-server's public REST API (``/api/v2`` + ``path``) as the demo admin."""
        if self._token is None:
            # SimpleAuthManager with all_admins hands out a token without credentials.
            answer = httpx.get(f"{self.ui_url}/auth/token", timeout=30)
            answer.raise_for_status()
            self._token = str(answer.json()["access_token"])
        headers = {"Authorization": f"Bearer {self._token}"}
        return httpx.request(method, f"{self.ui_url}/api/v2{path}", headers=headers, timeout=30, **kwargs)

    def health(self) -> dict[str, Any]:
        """The api-server's ``/api/v2/monitor/health`` answer."""
        return dict(httpx.get(f"{self.ui_url}/api/v2/monitor/health", timeout=10).json())

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of a read-only SQL query on the metadata DB (for what the REST API does not show)."""
        uri = f"{(self.home / 'airflow.db').as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
            return db.execute(sql, params).fetchall()

    # --- waiting --------------------------------------------------------------------------------

    def wait_until(self, what: str, look: Callable[[], T | None], timeout: float) -> T:
        """
        Look (``look()``) until it answers something other than None, or fail after ``timeout`` s.

        A component that exits meanwhile, or an API that does not answer, counts as "not yet" until
        the deadline; the error then says what was awaited and shows each component's output.
        """
        if not 0 < timeout < math.inf:
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            try:
                answer = look()
                if answer is not None:
                    return answer
            except (httpx.HTTPError, sqlite3.OperationalError, ValueError, KeyError) as error:
                last_error = error
            if time.monotonic() > deadline:
                cause = f" (last error: {last_error!r})" if last_error else ""
                raise StackError(
                    f"Gave up after {timeout:.0f} s waiting for {what}{cause}.\n{self.diagnostics()}"
                )
            time.sleep(POLL_INTERVAL)

    def wait_healthy(self, components: tuple[str, ...] = tuple(HEALTH_KEYS), timeout: float = 180.0) -> None:
        """Wait until the api-server answers and reports each of ``components`` healthy."""

        def all_healthy() -> bool | None:
            health = self.health()
            ok = all(health[HEALTH_KEYS[name]]["status"] == HEALTHY for name in components)
            return True if ok else None

        self.wait_until(f"{', '.join(components)} to report healthy", all_healthy, timeout)

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> None:
        """Wait until the dag-processor has parsed ``dag_id`` (the API knows it)."""

        def known() -> bool | None:
            return True if self.api("GET", f"/dags/{dag_id}").status_code == 200 else None

        self.wait_until(f"the DAG {dag_id!r} to be parsed", known, timeout)

    def task_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        """The state of one task instance of a run (None before it has one)."""
        answer = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        answer.raise_for_status()
        state = answer.json().get("state")
        return None if state is None else str(state)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """``{task_id: state}`` of a run."""
        answer = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        answer.raise_for_status()
        return {ti["task_id"]: ti.get("state") for ti in answer.json()["task_instances"]}

    def run_state(self, dag_id: str, run_id: str) -> str:
        """The state of a DAG run."""
        answer = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        answer.raise_for_status()
        return str(answer.json()["state"])

    def wait_for_task_state(
        self, dag_id: str, run_id: str, task_id: str, state: str, timeout: float = 300.0
    ) -> None:
        """Wait until a task instance is in ``state``; fail early if its run finishes first."""

        def reached() -> bool | None:
            if self.task_state(dag_id, run_id, task_id) == state:
                return True
            run = self.run_state(dag_id, run_id)
            if run in RUN_FINISHED_STATES:
                raise StackError(
                    f"run {run_id} ended {run} before {task_id} was {state}: "
                    f"{self.task_states(dag_id, run_id)}"
                )
            return None

        self.wait_until(f"{dag_id}.{task_id} to be {state}", reached, timeout)

    def wait_for_executor_report(
        self, dag_id: str, run_id: str, task_id: str, state: str, timeout: float = 300.0
    ) -> None:
        """
        Wait until the scheduler has taken the executor's report that the process of a task instance
        ended while the task instance was in ``state`` (e.g. ``awaiting_input``). Read from the
        scheduler's output (its "TaskInstance Finished" line): neither the REST API nor the metadata DB
        shows it.
        """
        fragment = f"TaskInstance Finished: dag_id={dag_id}, task_id={task_id}, run_id={run_id},"
        path = self.log_path(SCHEDULER)

        def reported() -> bool | None:
            with path.open(errors="replace") as log:
                found = any(fragment in line and f" state={state}," in line for line in log)
            return True if found else None

        self.wait_until(f"the scheduler to take the end of {dag_id}.{task_id}'s process", reported, timeout)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300.0) -> str:
        """Wait until a DAG run finishes; its final state (``success`` or ``failed``)."""

        def finished() -> str | None:
            state = self.run_state(dag_id, run_id)
            return state if state in RUN_FINISHED_STATES else None

        return self.wait_until(f"run {run_id} of {dag_id} to finish", finished, timeout)

    # --- what a user does -----------------------------------------------------------------------

    def unpause(self, dag_id: str) -> None:
        """``airflow dags unpause`` (new DAGs start paused)."""
        self.airflow("dags", "unpause", dag_id)

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """``airflow dags trigger`` (a manual run, without a logical date); returns the run id."""
        args = ["dags", "trigger", dag_id, "--output", "json"]
        if conf:
            args += ["--conf", json.dumps(conf)]
        output = self.airflow(*args)
        # The JSON list is the last line; Airflow may log before it.
        runs = json.loads(output.strip().splitlines()[-1])
        return str(runs[0]["dag_run_id"])
