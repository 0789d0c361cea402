"""Charge models: exact decimal math from a quantity to an amount.

Every model returns the exact amount in major units as a Decimal; rounding to
the currency's minor units happens once per fee, in `money.to_minor`.
"""
