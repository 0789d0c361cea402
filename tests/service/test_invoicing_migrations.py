"""Data migrations on real PostgreSQL: invoicing's 0003 rewrites stored
calculations from proto3 JSON to the protobuf wire format, and back; each
service's latest migrations go down and up again."""

from __future__ import annotations

import asyncio
import json

import asyncpg
from alembic import command
from alembic.config import Config

from bxb.invoicing.v1 import calculations_pb2 as pb
from services.catalog.server import MIGRATIONS as CATALOG
from services.common import db
from services.invoicing.server import MIGRATIONS
from services.payments.server import MIGRATIONS as PAYMENTS
from tests.conftest import Infra, unique

STORED = {
    "id": "calc_1",
    "customer_id": "cus_1",
    "currency": "USD",
    "total_amount_cents": "12400",
    "line_items": [{"amount_cents": "12400", "units": "1", "description": "Pro base fee"}],
}


def migrate(url: str, revision: str, down: bool = False) -> None:
    run(MIGRATIONS, url, revision, down)


async def test_stored_calculations_survive_the_change_of_format(infra: Infra):
    url = await infra.database(unique("inv_migrations"))
    await asyncio.to_thread(migrate, url, "0002")
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "INSERT INTO calculations (id, organization_id, customer_id, subscription_id, period_start, "
            "period_end, total_amount_cents, calculation) VALUES ('calc_1', 'org', 'cus_1', 'sub_1', now(), "
            "now(), 12400, $1::jsonb)",
            json.dumps(STORED),
        )
        await asyncio.to_thread(migrate, url, "0003")
        message = await connection.fetchval("SELECT message FROM calculations WHERE id = 'calc_1'")
        calculation = pb.Calculation.FromString(message)
        assert (calculation.total_amount_cents, calculation.line_items[0].description) == (12400, "Pro base fee")

        await asyncio.to_thread(migrate, url, "0002", down=True)
        stored = await connection.fetchval("SELECT calculation FROM calculations WHERE id = 'calc_1'")
        assert json.loads(stored) == STORED
    finally:
        await connection.close()


async def test_each_service_s_latest_migrations_go_down_and_up_again(infra: Infra):
    for migrations, back in ((MIGRATIONS, "0010"), (CATALOG, "0009"), (PAYMENTS, "0003")):
        url = await infra.database(unique("migrations"))
        for revision, down in (("head", False), (back, True), ("head", False)):
            await asyncio.to_thread(run, migrations, url, revision, down)
        connection = await asyncpg.connect(url)
        try:
            assert await connection.fetchval("SELECT count(*) FROM parked_messages") == 0
        finally:
            await connection.close()


def run(migrations, url: str, revision: str, down: bool) -> None:
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.set_main_option("sqlalchemy.url", db.async_url(url))
    (command.downgrade if down else command.upgrade)(config, revision)
