"""Invoices and fees as the public JSON API spells them."""

from __future__ import annotations

from datetime import UTC, datetime

from bxb.invoicing.v1 import invoices_pb2 as pb
from gateway.codec import Encoder
from gateway.dialects import BXB
from services.common.timestamps import to_proto

# Invoices and fees as the bxb dialect shows them.
fee_json = invoice_json = Encoder(BXB).message
START, END = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 16, tzinfo=UTC)


def test_a_charge_fee_shows_its_group_filter_and_period():
    fee = pb.Fee(
        type=pb.FEE_TYPE_CHARGE,
        amount_cents=120,
        units="12",
        unit_amount="0.1",
        precise_amount="1.2",
        description="Tokens (US East; model: gpt): 12 units",
        billable_metric_code="tokens",
        charge_id="chg_1",
        events_count=3,
        group={"model": "gpt"},
        filter="US East",
        period_start=to_proto(START),
        period_end=to_proto(END),
    )
    assert fee_json(fee) == {
        "type": "charge",
        "amount_cents": 120,
        "units": "12",
        "unit_amount": "0.1",
        "precise_amount": "1.2",
        "description": "Tokens (US East; model: gpt): 12 units",
        "period_start": "2026-03-01T00:00:00Z",
        "period_end": "2026-03-16T00:00:00Z",
        "billable_metric_code": "tokens",
        "charge_id": "chg_1",
        "events_count": 3,
        "group": {"model": "gpt"},
        "filter": "US East",
    }


def test_a_charge_fee_of_the_default_price_has_no_filter_and_an_empty_group():
    data = fee_json(pb.Fee(type=pb.FEE_TYPE_CHARGE, charge_id="chg_1"))
    assert (data["group"], data["filter"], data["period_start"], data["period_end"]) == ({}, None, None, None)


def test_a_true_up_names_its_charge_and_a_commitment_names_none():
    true_up = fee_json(
        pb.Fee(type=pb.FEE_TYPE_TRUE_UP, amount_cents=50, billable_metric_code="tokens", charge_id="chg_1")
    )
    assert (true_up["type"], true_up["billable_metric_code"], true_up["charge_id"]) == ("true_up", "tokens", "chg_1")
    assert "events_count" not in true_up and "group" not in true_up
    commitment = fee_json(pb.Fee(type=pb.FEE_TYPE_COMMITMENT, amount_cents=700))
    assert commitment["type"] == "commitment"
    assert "charge_id" not in commitment and "billable_metric_code" not in commitment


def test_a_draft_has_no_id_number_or_issue_time():
    data = invoice_json(
        pb.Invoice(status=pb.INVOICE_STATUS_DRAFT, timing=pb.BILLING_TIMING_IN_ARREARS, period_start=to_proto(START))
    )
    assert (data["id"], data["number"], data["status"], data["timing"]) == (None, None, "draft", "in_arrears")
    assert (data["issued_at"], data["calculation_id"], data["period_start"]) == (None, None, "2026-03-01T00:00:00Z")


def test_an_issued_invoice_shows_its_timing_and_calculation():
    data = invoice_json(
        pb.Invoice(
            id="inv_1",
            number="INV-000001",
            status=pb.INVOICE_STATUS_FINALIZED,
            timing=pb.BILLING_TIMING_IN_ADVANCE,
            calculation_id="calc_1",
        )
    )
    assert (data["id"], data["number"], data["status"]) == ("inv_1", "INV-000001", "finalized")
    assert (data["timing"], data["calculation_id"]) == ("in_advance", "calc_1")


def test_each_payment_status_is_spelled_in_lower_case_and_an_empty_payment_url_is_null():
    spelled = {
        number: name.removeprefix("INVOICE_PAYMENT_STATUS_").lower() for name, number in pb.InvoicePaymentStatus.items()
    }
    assert spelled[pb.INVOICE_PAYMENT_STATUS_REQUIRES_ACTION] == "requires_action"
    assert spelled[pb.INVOICE_PAYMENT_STATUS_PARTIALLY_REFUNDED] == "partially_refunded"
    for number, name in spelled.items():
        data = invoice_json(pb.Invoice(status=pb.INVOICE_STATUS_FINALIZED, payment_status=number))
        assert (data["payment_status"], data["payment_url"]) == (None if number == 0 else name, None)
    linked = invoice_json(pb.Invoice(payment_status=pb.INVOICE_PAYMENT_STATUS_FAILED, payment_url="https://p.test/1"))
    assert (linked["payment_status"], linked["payment_url"]) == ("failed", "https://p.test/1")
