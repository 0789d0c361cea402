"""A query integer beyond the 32 bits of the field it fills (page_size,
version) is a 400 naming it, not an internal error."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("/v1/plans", "page_size", str(2**31)),
        ("/v1/billable_metrics", "page_size", "99999999999"),
        ("/v1/customers", "page_size", str(-(2**31))),
        ("/v1/plans/some_plan", "version", "99999999999"),
    ],
)
async def test_a_query_integer_out_of_range_is_a_400_naming_it(tenant: Tenant, path: str, name: str, value: str):
    response = await tenant.http.get(path, params={name: value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["reason"], error["field"], error["message"]) == ("INVALID_VALUE", name, f"{name} is out of range")


async def test_the_largest_query_integer_reaches_the_service(tenant: Tenant):
    response = await tenant.http.get("/v1/plans/some_plan", params={"version": str(2**31 - 1)})
    assert response.status_code == 404
