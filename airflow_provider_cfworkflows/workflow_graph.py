"""Reading the answer of ``GET .../versions/{version_id}/graph``: what a Workflow version waits for.

Cloudflare parses a Workflow's ``run()`` into a graph of nodes: steps (``step_do``, ``step_sleep``,
``step_sleep_until``, ``step_wait_for_event`` with ``options.event_type``), and the control flow around
them (``loop``, ``parallel``, ``try`` with its blocks, ``if`` / ``switch`` with branches, functions). The
shape is typed in Cloudflare's API reference (``workflows.versions.graph``):
https://developers.cloudflare.com/api/resources/workflows/subresources/versions/methods/graph/
How the nodes nest is not documented, so the reader looks at every node wherever it sits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

WAIT_FOR_EVENT_NODE = "step_wait_for_event"


def waited_event_types(graph_result: Any) -> frozenset[str] | None:
    """
    The event types of every ``step.waitForEvent`` the version declares, or None when the graph cannot
    tell: no graph (Cloudflare has none for the version), or a ``waitForEvent`` node without
    ``options.event_type`` (the API marks ``options`` optional: e.g. a type computed at run time).

    :param graph_result: the ``result`` of the graph endpoint.
    """
    graph = graph_result.get("graph") if isinstance(graph_result, Mapping) else None
    workflow = graph.get("workflow") if isinstance(graph, Mapping) else None
    if not isinstance(workflow, Mapping):
        return None
    found: set[str] = set()
    pending: list[Any] = [workflow]
    while pending:  # without recursion: the answer may nest deeply
        value = pending.pop()
        if isinstance(value, list):
            pending.extend(value)
            continue
        if not isinstance(value, Mapping):
            continue
        if value.get("type") == WAIT_FOR_EVENT_NODE:
            options = value.get("options")
            event_type = options.get("event_type") if isinstance(options, Mapping) else None
            if not isinstance(event_type, str):
                return None
            found.add(event_type)
        pending.extend(child for child in value.values() if isinstance(child, list | Mapping))
    return frozenset(found)
