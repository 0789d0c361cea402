"""The payments service process: receivables from finalized invoices and
customers' payment methods."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from bxb.payments.v1 import payments_pb2, payments_pb2_grpc
from services.common import bus, config, db, grpc_server
from services.payments.customers import CustomerPaymentMethods
from services.payments.payments import PaymentServicer
from services.payments.receivables import Receivables

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass
class Settings:
    address: str
    database_url: str
    nats_url: str

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            address=config.grpc_address("payments", config.DEFAULT_PORTS["payments"]),
            database_url=config.database_url("payments"),
            nats_url=config.nats_url(),
        )


def build(settings: Settings) -> grpc_server.Service:
    engine = db.create_engine(settings.database_url)
    sessions = db.sessions(engine)
    receivables = Receivables(sessions)
    methods = CustomerPaymentMethods(sessions)
    state: dict[str, bus.Bus] = {}

    async def on_start() -> None:
        await db.migrate(settings.database_url, MIGRATIONS)
        state["bus"] = await bus.Bus.connect(settings.nats_url, "payments")
        await state["bus"].consume(bus.INVOICING, "payments", "bxb.invoicing.>", receivables.handle)
        await state["bus"].consume(bus.CATALOG, "payments-catalog", "bxb.catalog.>", methods.handle)

    async def on_stop() -> None:
        await state["bus"].close()  # on_stop follows a successful on_start, which connected the bus
        await engine.dispose()

    return grpc_server.Service(
        name="payments",
        registrars=[
            grpc_server.registrar(payments_pb2, payments_pb2_grpc, "PaymentService", PaymentServicer(sessions))
        ],
        on_start=on_start,
        on_stop=on_stop,
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s payments %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    asyncio.run(grpc_server.run(build(settings), settings.address))
