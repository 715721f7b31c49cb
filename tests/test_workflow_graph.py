"""Reading a version graph: the event types a Workflow version waits for, wherever its steps nest."""

from __future__ import annotations

from airflow_provider_cfworkflows.workflow_graph import waited_event_types


def wait(event_type: str) -> dict[str, object]:
    return {
        "type": "step_wait_for_event",
        "name": event_type,
        "options": {"event_type": event_type, "timeout": 1},
    }


def graph(*nodes: object, functions: dict[str, object] | None = None) -> dict[str, object]:
    workflow = {"class_name": "Flow", "functions": functions or {}, "nodes": list(nodes)}
    return {"id": "v", "graph": {"version": 1, "workflow": workflow}}


def test_event_types_are_found_in_every_kind_of_nesting():
    nested = graph(
        {"type": "step_do", "name": "prepare", "config": {}, "nodes": [wait("inside-do")]},
        {"type": "try", "try_block": {"type": "block", "nodes": [wait("in-try")]}, "catch_block": None},
        {"type": "if", "branches": [{"condition": "x", "nodes": [wait("in-branch")]}]},
        {"type": "parallel", "kind": "all", "nodes": [{"type": "loop", "nodes": [wait("in-loop")]}]},
        functions={"helper": {"type": "function_def", "name": "helper", "nodes": [wait("in-function")]}},
    )
    assert waited_event_types(nested) == {"inside-do", "in-try", "in-branch", "in-loop", "in-function"}


def test_no_wait_is_an_empty_set_and_an_unknowable_graph_is_none():
    assert waited_event_types(graph({"type": "step_sleep", "name": "nap", "duration": 5})) == frozenset()
    assert waited_event_types({"id": "v", "graph": None}) is None  # Cloudflare has no graph
    assert waited_event_types(None) is None
    dynamic = {"type": "step_wait_for_event", "name": "approval"}  # options are optional in the API
    assert waited_event_types(graph(wait("approval"), dynamic)) is None


def test_a_deeply_nested_graph_is_read_without_recursion():
    node: dict[str, object] = wait("deep")
    for _ in range(5000):
        node = {"type": "block", "nodes": [node]}
    assert waited_event_types(graph(node)) == {"deep"}
