"""The TypeScript client `make clients` generates (protoc-gen-es, npm packages
from the root package-lock.json) billing by usage from Node over gRPC,
straight to the services (tests/e2e/grpc_client.mjs): it authenticates with
an API key, names its organization in metadata, creates a metric, a plan, a
customer and a subscription, sends events, reads usage and the invoices, and
decodes the google.rpc.Status details of the errors it provokes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from services.common import trust
from tests.conftest import Stack, Tenant

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    not (shutil.which("node") and shutil.which("npm")), reason="Node 20+ and npm run the TypeScript client"
)


async def run(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Runs a process without blocking the loop the in-process services answer on."""
    process = await asyncio.create_subprocess_exec(
        *map(str, args), cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, f"{args} exited {process.returncode}:\n{out.decode()}\n{err.decode()}"
    return out.decode()


@pytest.fixture(scope="module")
async def ts_client() -> Path:
    await run(sys.executable, ROOT / "scripts" / "clients.py", "ts")  # npm ci first when the lock file changed
    return ROOT / "clients" / "ts"


async def test_node_bills_by_usage_over_grpc_with_the_generated_client(stack: Stack, tenant: Tenant, ts_client: Path):
    env = dict(
        os.environ,
        BXB_TS_CLIENT=str(ts_client),
        BXB_API_KEY=tenant.key,
        BXB_CATALOG_ADDRESS=stack.catalog,
        BXB_METERING_ADDRESS=stack.metering,
        BXB_INVOICING_ADDRESS=stack.invoicing,
        BXB_SERVICE_TOKEN=trust.service_token(),
    )
    seen = json.loads((await run("node", ROOT / "tests" / "e2e" / "grpc_client.mjs", env=env)).splitlines()[-1])
    assert seen["organizationId"] == tenant.organization_id  # the key's organization
    # Errors: google.rpc.Status in grpc-status-details-bin, with ErrorInfo.
    assert seen["duplicate"] == {
        "code": "AlreadyExists",
        "reason": "ALREADY_EXISTS",
        "domain": "bxb.dev",
        "field": "code",
    }
    assert seen["anonymous"] == {"code": "Unauthenticated", "reason": "MISSING_ORGANIZATION", "domain": "bxb.dev"}
    assert seen["sent"] == ["QUEUED"] * 6
    assert seen["usage"] == {"value": "2340", "eventCount": 3}  # each retry counted once
    fees = [{"units": "2340", "amountCents": 234, "eventsCount": 3}]
    assert seen["draft"] == {"status": "DRAFT", "number": "", "currency": "USD", "totalAmountCents": 234, "fees": fees}
    assert seen["invoicesCreated"] == 1
    invoice = seen["invoice"]
    assert invoice.pop("number").startswith("INV-")
    assert invoice == {"status": "FINALIZED", "currency": "USD", "totalAmountCents": 234, "fees": fees}
