"""The ChargeProperties fields each charge model reads, in the order the API
shows them. One table for both sides: the catalog refuses any other property
of a charge, and the gateway renders only these. Property names are the same
in the proto and in the JSON API; `grouped_by` applies to every model that
depends on usage and is handled apart."""

from __future__ import annotations

MODEL_FIELDS: dict[str, tuple[str, ...]] = {
    "standard": ("amount",),
    "graduated": ("graduated_ranges",),
    "volume": ("volume_ranges",),
    "package": ("amount", "package_size", "free_units"),
    "percentage": (
        "rate",
        "fixed_amount",
        "free_units_per_events",
        "free_units_per_total_aggregation",
        "per_transaction_min_amount",
        "per_transaction_max_amount",
    ),
    "graduated_percentage": ("graduated_percentage_ranges",),
    "flat": ("amount",),
}
