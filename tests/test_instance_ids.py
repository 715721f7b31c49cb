"""Deterministic instance ids: valid, unique per task run, stable across retries."""

from __future__ import annotations

import re

import pytest

from airflow_provider_cfworkflows.instance_ids import derive_instance_id

VALID = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_-]{0,99}$")


def test_same_task_run_gives_the_same_id():
    first = derive_instance_id("etl", "manual__2026-01-01T00:00:00+00:00", "start", -1)
    again = derive_instance_id("etl", "manual__2026-01-01T00:00:00+00:00", "start", -1)
    assert first == again
    assert first.startswith("af-etl-start-")
    assert VALID.match(first)


@pytest.mark.parametrize(
    "changed",
    [
        {"dag_id": "etl2"},
        {"run_id": "scheduled__2026-01-02T00:00:00+00:00"},
        {"task_id": "start2"},
        {"map_index": 0},
        {"item": 3},
    ],
)
def test_any_input_change_gives_another_id(changed):
    base = {"dag_id": "etl", "run_id": "manual__1", "task_id": "start", "map_index": -1, "item": None}
    other = {**base, **changed}
    assert derive_instance_id(**base) != derive_instance_id(**other)


@pytest.mark.parametrize(
    ("dag_id", "task_id", "map_index", "item"),
    [
        ("-weird dag.id with spaces/and:colons", "group.task", -1, None),
        ("x" * 250, "y" * 250, 123456789, 99),
        ("cf_" + "a" * 64, "cf_" + "b" * 64, -1, None),
        ("ünïcødé", "タスク", 7, None),
    ],
)
def test_ids_are_always_valid(dag_id, task_id, map_index, item):
    instance_id = derive_instance_id(dag_id, "run", task_id, map_index, item=item)
    assert VALID.match(instance_id), instance_id
    assert not re.match(r"^cf_[0-9a-f]{64}$", instance_id)
