"""The processes an end-to-end test starts run outside coverage unless the
test is marked `measured`: measuring every child doubled their CPU on a
machine whose two cores the other pytest worker shares, and measured nothing
that the in-process service tests and the one measured `make run` test
(test_stack_metrics.py: the supervisor's main, the gateway's entry point,
a service serving /metrics) do not."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def children_measured_only_when_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("measured") is None:
        monkeypatch.delenv("COVERAGE_PROCESS_CONFIG", raising=False)
