"""End-to-end: `make run`'s processes serve Prometheus metrics where they
are told (BXB_<SVC>_METRICS_LISTEN, the gateway's own port) and log JSON
lines carrying the request id."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from deploy.embedded import free_port
from deploy.stack import SERVICES
from tests.conftest import eventually
from tests.e2e.test_stack import KEY, send_events, stack_env, start_make_run_grpc, stop_make_run, walkthrough
from tests.metrics_text import sample


@pytest.mark.timeout(300)
async def test_every_process_of_make_run_serves_metrics_after_traffic(tmp_path: Path):
    listen = {name: f"127.0.0.1:{free_port()}" for name in SERVICES}
    home = tmp_path / "home"
    env = stack_env(
        home,
        BXB_API_KEY=KEY,
        BXB_BILLING_INTERVAL_SECONDS="1",
        BXB_METRICS_REFRESH_SECONDS="0.5",
        **{f"BXB_{name.upper()}_METRICS_LISTEN": address for name, address in listen.items()},
    )
    process, url, _, _ = start_make_run_grpc(env)
    try:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
            await walkthrough(http)
            await send_events(http)
            traced = await http.get("/v1/customers/cus_9a4b2", headers={"X-Request-Id": "e2e-request-1"})
            assert traced.status_code == 200 and traced.headers["x-request-id"] == "e2e-request-1"
            gateway = (await http.get("/metrics")).text
            events = {"route": "/v1/events", "method": "POST", "status": "200"}
            assert sample(gateway, "bxb_http_requests_total", **events) == 6
            assert sample(gateway, "bxb_http_request_seconds_count", route="/v1/events", method="POST") == 6

            async def served() -> dict[str, str]:
                scraped = {name: (await http.get(f"http://{address}/metrics")).text for name, address in listen.items()}
                for name, text in scraped.items():
                    assert sample(text, "bxb_grpc_server_requests_total", service=name, code="OK") > 0, name
                assert "bxb_metering_ingestion_pending_messages " in scraped["metering"]
                assert sample(scraped["invoicing"], "bxb_billing_run_seconds_count", trigger="scheduled") > 0
                for name in ("catalog", "invoicing", "payments"):
                    assert f'bxb_outbox_backlog{{service="{name}"}}' in scraped[name]
                assert "bxb_webhook_backlog " in scraped["payments"]
                return scraped

            await eventually(served, timeout=30, interval=0.5)
    finally:
        stop_make_run(process)
    lines = [
        json.loads(line) for line in (home / "logs" / "gateway.log").read_text().splitlines() if line.startswith("{")
    ]
    access = [line for line in lines if line.get("request_id") == "e2e-request-1"]
    assert access and access[0]["route"] == "/v1/customers/{id}" and access[0]["status"] == 200
    assert access[0]["logger"] == "bxb.access" and access[0]["service"] == "gateway"
