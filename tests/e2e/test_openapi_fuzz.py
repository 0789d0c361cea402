"""Schemathesis against the running stack: every operation of
GET /openapi.json is called with inputs generated from its own schemas, and
no answer is a server error or strays from what the document says (status,
content type, body schema). BXB_SCHEMATHESIS_EXAMPLES sets how many inputs
each operation gets (a soak sets it high)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from deploy.stack import Stack
from tests.e2e.test_stack import KEY, stack_env

EXAMPLES = int(os.environ.get("BXB_SCHEMATHESIS_EXAMPLES", "8"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def fuzz(url: str) -> tuple[int, list[str]]:
    """Runs every operation's examples; the calls made and each failure found."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    headers = {"Authorization": f"Bearer {KEY}"}
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            response = case.call(base_url=url, headers=headers, timeout=30)
            try:
                case.validate_response(response, checks=CHECKS)
            except AssertionError as failure:  # schemathesis' failures are AssertionErrors
                failures.append(f"{case.operation.label}: {str(failure)[:600]}\n{case.as_curl_command(headers)}")

        run()
    return calls, failures


@pytest.mark.timeout(900)
async def test_no_generated_request_meets_a_server_error_or_an_answer_off_the_schema(tmp_path: Path):
    stack = Stack(tmp_path / "home", stack_env(tmp_path / "home", BXB_API_KEY=KEY))
    try:
        url, _ = await stack.start()
        calls, failures = await asyncio.to_thread(fuzz, url)
    finally:
        await stack.stop()
    assert calls > 60 * EXAMPLES // 2  # every operation ran (most to their examples)
    assert failures == [], "\n\n".join(failures[:20])
