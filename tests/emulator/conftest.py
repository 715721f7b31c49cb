"""Fixtures for the emulator's own tests: one emulator process per session, its clock frozen.

With ``time_scale = 0`` emulated time only moves when a test calls ``advance``, so every status a test
asserts is exact, however slow the machine is.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_cfworkflows.emulator.server import EmulatorProcess, run_emulator_process


@pytest.fixture(scope="session")
def emu_server() -> Iterator[EmulatorProcess]:
    """A real emulator server on 127.0.0.1 serving the bundled demo scenario, clock frozen."""
    with run_emulator_process(None, time_scale=0) as emulator:
        yield emulator


@pytest.fixture
def emu(emu_server: EmulatorProcess) -> EmulatorProcess:
    """The session emulator, reset (no instances, faults or request log) and with a frozen clock."""
    emu_server.reset()
    emu_server.set_time_scale(0)
    return emu_server


@pytest.fixture
def client(emu: EmulatorProcess) -> Iterator[httpx.Client]:
    """httpx client for ``.../accounts/{account_id}/workflows`` with the Bearer token."""
    with emu.api_client() as api:
        yield api


@pytest.fixture
def make_workflow(emu: EmulatorProcess) -> Callable[..., str]:
    """``make_workflow(steps, **workflow_fields)`` puts a workflow with a unique name; returns the name."""

    def make(steps: list[dict[str, Any]], **extra: Any) -> str:
        name = f"t-{uuid.uuid4().hex[:10]}"
        emu.put_workflow({"name": name, "steps": steps, **extra})
        return name

    return make
