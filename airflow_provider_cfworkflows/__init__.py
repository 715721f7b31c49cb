"""Apache Airflow provider for Cloudflare Workflows.

The words the code uses, one meaning each:

- **wait**: what a sensor, a trigger or the create-and-wait operator does until a step or an instance
  reaches a final status. On a worker it is a :class:`~.task_waits.StepWait` or
  :class:`~.task_waits.InstanceWait` (poke, wait, defer, resume); in the triggerer, a trigger.
- **look**: one round of API calls during a wait, normally one ``GET`` of the instance details
  (:mod:`.looks` makes the calls, for both transports).
- **check**: the decision a look leads to (success, failure, or not yet), pure code
  (:mod:`.checks`).
- **watcher**: what looks at an instance, in a triggerer, for all the triggers waiting on it
  (:mod:`.triggers.watchers`).
- **instance details**: the answer of ``GET .../instances/{id}``, with its step log
  (:mod:`.instance_details` reads them).

Layers, from the wire up: :mod:`.protocol` (requests and answers as plain data), :mod:`.transport`
(sending them: retries, rate limit, deadlines), :mod:`.hooks.workflows` (the API verbs), then
:mod:`.instance_details` / :mod:`.checks` / :mod:`.looks` / :mod:`.task_waits`, and on top the
operators, sensors and triggers. ``tests/test_layering.py`` keeps the arrows pointing down.
"""

from __future__ import annotations

__version__ = "0.1.0"
