"""Token buckets (gateway/rate_limits.py) and roles (gateway/roles.py) on a
clock of the test's own."""

from __future__ import annotations

import pytest

from bxb.catalog.v1 import organizations_pb2 as pb
from gateway import roles
from gateway.auth import role_name
from gateway.errors import ApiError
from gateway.rate_limits import EVENTS, REQUESTS, Limits, Rate, RateLimiter, Scope

LIMITS = Limits(Rate(2, 4), Rate(100, 500))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_refills_at_its_rate_up_to_its_burst():
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    scope = [Scope("org:a", LIMITS)]
    for _ in range(4):
        limiter.spend(scope, REQUESTS, 1)
    with pytest.raises(ApiError) as raised:
        limiter.spend(scope, REQUESTS, 1)
    assert (raised.value.status, raised.value.retry_after) == (429, 1)
    clock.now += 0.5  # one token back
    limiter.spend(scope, REQUESTS, 1)
    clock.now += 100  # full again, never above the burst
    for _ in range(4):
        limiter.spend(scope, REQUESTS, 1)
    with pytest.raises(ApiError):
        limiter.spend(scope, REQUESTS, 1)


def test_retry_after_is_the_whole_seconds_until_the_tokens_are_there():
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    scope = [Scope("org:a", LIMITS)]
    limiter.spend(scope, EVENTS, 500)
    with pytest.raises(ApiError) as raised:
        limiter.spend(scope, EVENTS, 250)  # 2.5 s of refill
    assert raised.value.retry_after == 3
    assert raised.value.response().headers["retry-after"] == "3"


def test_a_refusal_takes_from_no_bucket():
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    key, org = Scope("key:k", Limits(Rate(1, 1), LIMITS.events)), Scope("org:a", LIMITS)
    limiter.spend([key, org], REQUESTS, 1)
    with pytest.raises(ApiError):
        limiter.spend([key, org], REQUESTS, 1)
    for _ in range(3):  # the organization's bucket lost only the one request
        limiter.spend([org], REQUESTS, 1)


def test_the_least_recently_used_buckets_are_dropped_beyond_the_bound():
    clock = Clock()
    limiter = RateLimiter(max_buckets=2, clock=clock)
    a, b, c = (Scope(f"org:{n}", LIMITS) for n in "abc")
    for scope in (a, b):
        for _ in range(4):
            limiter.spend([scope], REQUESTS, 1)
    limiter.spend([c], REQUESTS, 1)  # drops a's bucket (b was used after a)
    assert set(limiter._buckets) == {("org:b", REQUESTS), ("org:c", REQUESTS)}
    limiter.spend([a], REQUESTS, 1)  # a starts over full; b is dropped
    assert set(limiter._buckets) == {("org:c", REQUESTS), ("org:a", REQUESTS)}


def test_defaults_come_from_the_environment_and_an_organization_overrides_them(monkeypatch):
    monkeypatch.setenv("BXB_RATE_LIMIT_REQUESTS_PER_SECOND", "7")
    monkeypatch.setenv("BXB_RATE_LIMIT_EVENT_BURST", "70")
    defaults = Limits.from_env()
    assert defaults == Limits(Rate(7, 10_000), Rate(100_000, 70))
    given = pb.RateLimits(request_burst=3, events_per_second=9)
    assert defaults.over(given) == Limits(Rate(7, 3), Rate(9, 70))
    assert defaults.over(pb.RateLimits()) == defaults


def test_a_limit_of_zero_is_refused_at_start(monkeypatch):
    monkeypatch.setenv("BXB_RATE_LIMIT_EVENTS_PER_SECOND", "0")
    with pytest.raises(SystemExit, match="BXB_RATE_LIMIT_EVENTS_PER_SECOND must be above 0"):
        Limits.from_env()


@pytest.mark.parametrize(
    ("role", "method", "path", "allowed"),
    [
        ("admin", "DELETE", "/v1/api_keys/key_1", True),
        ("write", "POST", "/v1/api_keys", False),
        ("write", "GET", "/v1/api_keys/key_1", False),
        ("write", "POST", "/v1/plans", True),
        ("write", "GET", "/v1/api_keysx", True),
        ("ingest", "POST", "/v1/events/batch", True),
        ("ingest", "GET", "/v1/events", False),
        ("ingest", "POST", "/v1/plans", False),
        ("read", "GET", "/v1/events", True),
        ("read", "HEAD", "/v1/customers", True),
        ("read", "POST", "/v1/usage/compute", True),
        ("read", "POST", "/v1/events", False),
        ("read", "GET", "/v1/api_keys", False),
    ],
)
def test_roles(role: str, method: str, path: str, allowed: bool):
    assert roles.allowed(role, method, path) is allowed


def test_a_key_s_role_is_named_from_the_proto_and_an_unnamed_one_is_allowed_nothing():
    assert [role_name(r) for r in (pb.API_KEY_ROLE_ADMIN, pb.API_KEY_ROLE_WRITE)] == ["admin", "write"]
    assert [role_name(r) for r in (pb.API_KEY_ROLE_INGEST, pb.API_KEY_ROLE_READ)] == ["ingest", "read"]
    unnamed = role_name(pb.API_KEY_ROLE_UNSPECIFIED)
    assert not any(
        roles.allowed(unnamed, method, path) for method, path in (("GET", "/v1/customers"), ("POST", "/v1/events"))
    )
