"""The reliability suite's guarded secret: no test of this directory may show it anywhere.

The suite's connections carry the API token ``guarded.SECRET`` with a trailing newline,
as secrets read from files, Vault or Kubernetes do. On top of the run-wide guard of ``tests/conftest.py``
(the shared test credentials), any test here whose captured output (stdout, stderr, log records) or
failure text holds the token fails.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.guarded import leaked_forms


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    texts = [content for _name, content in report.sections]
    if report.longrepr is not None:
        texts.append(str(report.longrepr))
    if leaked_forms(texts):
        report.outcome = "failed"
        report.longrepr = f"the reliability suite's API token appeared in the output of {item.nodeid}"
