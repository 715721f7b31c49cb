"""Deterministic Workflow instance ids derived from the Airflow task that creates the instance.

Cloudflare does not deduplicate retried creates, so the create operators always send an id: the same
dag id, run id, task id and map index give the same id on every try of the task, and a retry finds
the instance it already created instead of starting a second one.
"""

from __future__ import annotations

import hashlib
import re

from airflow_provider_cfworkflows.validation import MAX_INSTANCE_ID_LENGTH, validate_new_instance_id

_DISALLOWED = re.compile(r"[^a-zA-Z0-9_-]+")
_PREFIX = "af"
_READABLE_PART_LENGTH = 28
_DIGEST_LENGTH = 24


def _readable(value: str) -> str:
    return _DISALLOWED.sub("-", value).strip("-")[:_READABLE_PART_LENGTH].strip("-")


def derive_instance_id(
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int = -1,
    *,
    item: int | None = None,
    first_try_number: int = 1,
) -> str:
    """
    A valid instance id, unique per task run (and per item of a batch), stable across task retries.

    The id reads ``af-<dag>-<task>-<digest>``: the readable parts help find the instance in the
    dashboard; the digest of all inputs makes it unique. It never starts with ``-``, is at most 100
    characters of ``[a-zA-Z0-9_-]``, and cannot take the reserved ``cf_`` + 64 hex form.

    :param item: position in a batch created by one task, or None for a single instance.
    :param first_try_number: the first try of the task's current series of tries (see
        :func:`first_try_of_series`). Retries share it, so they find the instance; a cleared task
        starts a new series, so it gets a new id (``...-t<n>-<digest>``) and a new instance. The first
        series (1) gives the ids of earlier releases.
    """
    fields = [dag_id, run_id, task_id, str(map_index), "" if item is None else str(item)]
    if first_try_number > 1:
        fields.append(str(first_try_number))
    digest = hashlib.sha256("\x1f".join(fields).encode()).hexdigest()[:_DIGEST_LENGTH]
    parts = [_PREFIX, _readable(dag_id), _readable(task_id)]
    if map_index >= 0:
        parts.append(str(map_index))
    if item is not None:
        parts.append(str(item))
    if first_try_number > 1:
        parts.append(f"t{first_try_number}")
    parts.append(digest)
    instance_id = "-".join(part for part in parts if part)
    if len(instance_id) > MAX_INSTANCE_ID_LENGTH:  # long map indexes/items: keep the unique tail
        instance_id = f"{_PREFIX}-{instance_id[-(MAX_INSTANCE_ID_LENGTH - len(_PREFIX) - 1) :]}".replace(
            "--", "-"
        )
    return validate_new_instance_id(instance_id)


def first_try_of_series(try_number: int, max_tries: int, retries: int) -> int:
    """
    The first try of a task instance's current series of tries: retries stay in one series, a clear
    starts the next.

    Airflow sets ``max_tries = retries`` for a new task instance and, when a finished one is cleared,
    ``max_tries = try_number + retries`` (``airflow.models.taskinstance.clear_task_instances``); so the
    series starts at ``max_tries - retries + 1``, the rule Airflow itself uses to find a sensor's first
    reschedule (``RuntimeTaskInstance.get_first_reschedule_date``). Clearing a running task does not
    raise ``max_tries`` (Airflow restarts it as a retry), so that stays in the series.

    :param try_number: the current try (for a sanity bound: never later than it).
    :param max_tries: the task instance's ``max_tries``.
    :param retries: the task's ``retries``.
    """
    return max(1, min(try_number, max_tries - retries + 1))
