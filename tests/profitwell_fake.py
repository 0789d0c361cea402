"""ProfitWell's API v2 as bxb calls it, for tests: a real HTTP server on
127.0.0.1 (tests/vendor_fake.py) serving the endpoints the product uses as
profitwellapiv2.docs.apiary.io documents them, with the error shapes of the
Django REST Framework it is built on:

- auth by the private token as the bare `Authorization` header; a missing
  or unknown one is a 401 `{"detail": "..."}`; `GET /v2/api-status/` is 200 with a good one;
- `POST /v2/subscriptions/` (201): email, plan_id, plan_interval ("month" or
  "year"), value (an integer) and effective_date (Unix seconds) required,
  status "active" or "trialing"; a `subscription_alias` is unique in the
  company and at most 36 characters; a `user_alias` not seen before makes a
  user (`pwu_...`), a known one adds to its subscriptions;
- `PUT /v2/subscriptions/{id or alias}/`: an upgrade, downgrade or status change;
- `DELETE /v2/subscriptions/{id or alias}/?effective_date=&churn_type=`:
  churns it ("voluntary" or "delinquent"); churning a churned one is a 400;
- `GET /v2/users/{id or alias}/`: the user's history (every change, oldest
  first; a churn shows as status "churned_voluntary" or "churned_delinquent");
  `PUT` sets its email.

Invalid fields are a 400 `{"field": ["message"]}`, a rule across fields
`{"non_field_errors": [...]}`, an unknown id or alias a 404
`{"detail": "Not found."}`. Every request is recorded; faults as vendor_fake."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.vendor_fake import FakeTool, Handler

Json = dict[str, Any]
STATUSES = ("active", "trialing")
INTERVALS = ("month", "year")
CHURN_TYPES = ("voluntary", "delinquent")


@dataclass
class ProfitWellUser:
    user_id: str
    user_alias: str | None
    email: str
    history: list[Json] = field(default_factory=list)


@dataclass
class ProfitWellAccount:
    api_key: str
    users: dict[str, ProfitWellUser] = field(default_factory=dict)  # by user_id
    subscriptions: dict[str, Json] = field(default_factory=dict)  # by subscription_id, as they stand

    def user(self, id_or_alias: str) -> ProfitWellUser | None:
        return self.users.get(id_or_alias) or next(
            (u for u in self.users.values() if u.user_alias == id_or_alias), None
        )

    def subscription(self, id_or_alias: str) -> Json | None:
        return self.subscriptions.get(id_or_alias) or next(
            (s for s in self.subscriptions.values() if s["subscription_alias"] == id_or_alias), None
        )


class Invalid(Exception):
    def __init__(self, status: int, body: Json):
        super().__init__(str(body))
        self.status = status
        self.body = body


def _missing() -> Invalid:
    return Invalid(404, {"detail": "Not found."})


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(body: Any, required: tuple[str, ...]) -> Json:
    """DRF's field errors for `body`: required fields, then each field's rule."""
    if not isinstance(body, dict):
        raise Invalid(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
    errors: dict[str, list[str]] = {}
    for name in required:
        if body.get(name) in (None, ""):
            errors[name] = ["This field is required."]
    checks: dict[str, tuple[Callable[[Any], bool], str]] = {
        "email": (lambda v: isinstance(v, str) and "@" in v, "Enter a valid email address."),
        "plan_interval": (lambda v: v in INTERVALS, "Must be one of: month, year."),
        "status": (lambda v: v in STATUSES, "Must be one of: active, trialing."),
        "value": (lambda v: _integer(v) and v >= 0, "A valid integer is required."),
        "effective_date": (_integer, "A valid integer is required."),
        "plan_currency": (lambda v: isinstance(v, str) and len(v) == 3 and v.islower(), "Not a valid currency."),
        "subscription_alias": (
            lambda v: isinstance(v, str) and len(v) <= 36,
            "Ensure this field has no more than 36 characters.",
        ),
    }
    for name, (valid, message) in checks.items():
        if name not in errors and body.get(name) is not None and not valid(body[name]):
            errors[name] = [message]
    if errors:
        raise Invalid(400, dict(errors))
    return body


def _answer(work: Callable[[Request, Any], tuple[int, Any]]) -> Handler:
    async def handler(request: Request, body: Any) -> Response:
        try:
            status, answer = work(request, body)
        except Invalid as invalid:
            return JSONResponse(invalid.body, invalid.status)
        return JSONResponse(answer, status)

    return handler


class ProfitWellFake(FakeTool):
    """`async with ProfitWellFake() as fake:`, then `fake.add_account()`."""

    def __init__(self) -> None:
        super().__init__()
        self.accounts: dict[str, ProfitWellAccount] = {}

    def add_account(self) -> ProfitWellAccount:
        account = ProfitWellAccount(api_key=secrets.token_hex(16).upper())
        self.accounts[account.api_key] = account
        return account

    def routes(self) -> list[tuple[str, str, Handler]]:
        endpoints: list[tuple[str, str, Callable[[Request, Any], tuple[int, Any]]]] = [
            ("GET", "/v2/api-status/", self._status),
            ("POST", "/v2/subscriptions/", self._create),
            ("PUT", "/v2/subscriptions/{name}/", self._update),
            ("DELETE", "/v2/subscriptions/{name}/", self._churn),
            ("GET", "/v2/users/{name}/", self._history),
            ("PUT", "/v2/users/{name}/", self._update_user),
        ]
        return [(method, path, _answer(work)) for method, path, work in endpoints]

    def _account(self, request: Request) -> ProfitWellAccount:
        token = request.headers.get("authorization", "")
        if not token:
            raise Invalid(401, {"detail": "Authentication credentials were not provided."})
        account = self.accounts.get(token)
        if account is None:
            raise Invalid(401, {"detail": "Invalid token."})
        return account

    @staticmethod
    def _record(user: ProfitWellUser, sub: Json) -> None:
        user.history.append(dict(sub))

    def _status(self, request: Request, body: Any) -> tuple[int, Any]:
        self._account(request)
        return 200, {}

    def _create(self, request: Request, body: Any) -> tuple[int, Any]:
        account = self._account(request)
        data = _validate(body, ("email", "plan_id", "plan_interval", "value", "effective_date"))
        alias = data.get("subscription_alias")
        if alias and account.subscription(alias) is not None:
            raise Invalid(400, {"subscription_alias": ["A subscription with this alias already exists."]})
        user = None
        if data.get("user_id"):
            user = account.users.get(data["user_id"])
            if user is None:
                raise Invalid(400, {"user_id": ["No user with this id."]})
        elif data.get("user_alias"):
            user = account.user(data["user_alias"])
        if user is None:
            user = ProfitWellUser(f"pwu_{secrets.token_hex(6)}", data.get("user_alias"), data["email"])
            account.users[user.user_id] = user
        sub = {
            "user_id": user.user_id,
            "user_alias": user.user_alias,
            "subscription_id": f"pws_{secrets.token_hex(6)}",
            "subscription_alias": alias,
            "email": user.email,
            "plan_id": data["plan_id"],
            "plan_interval": data["plan_interval"],
            "plan_currency": data.get("plan_currency", "usd"),
            "status": data.get("status", "active"),
            "value": data["value"],
            "effective_date": data["effective_date"],
        }
        account.subscriptions[sub["subscription_id"]] = sub
        self._record(user, sub)
        return 201, sub

    def _update(self, request: Request, body: Any) -> tuple[int, Any]:
        account = self._account(request)
        sub = account.subscription(request.path_params["name"])
        if sub is None:
            raise _missing()
        data = _validate(body, ("plan_id", "plan_interval", "value", "effective_date"))
        if sub["status"] not in STATUSES:
            raise Invalid(400, {"non_field_errors": ["This subscription has churned."]})
        for key in ("plan_id", "plan_interval", "value", "effective_date", "status"):
            if key in data:
                sub[key] = data[key]
        self._record(account.users[sub["user_id"]], sub)
        return 200, sub

    def _churn(self, request: Request, body: Any) -> tuple[int, Any]:
        account = self._account(request)
        sub = account.subscription(request.path_params["name"])
        if sub is None:
            raise _missing()
        query = request.query_params
        churn_type = query.get("churn_type", "voluntary")
        errors = {}
        if churn_type not in CHURN_TYPES:
            errors["churn_type"] = ["Must be one of: voluntary, delinquent."]
        if not query.get("effective_date", "").isdigit():
            errors["effective_date"] = ["A valid integer is required."]
        if errors:
            raise Invalid(400, errors)
        if sub["status"] not in STATUSES:
            raise Invalid(400, {"non_field_errors": ["This subscription has already churned."]})
        sub["status"] = f"churned_{churn_type}"
        sub["effective_date"] = int(query["effective_date"])
        self._record(account.users[sub["user_id"]], sub)
        return 200, sub

    def _history(self, request: Request, body: Any) -> tuple[int, Any]:
        user = self._account(request).user(request.path_params["name"])
        if user is None:
            raise _missing()
        return 200, user.history

    def _update_user(self, request: Request, body: Any) -> tuple[int, Any]:
        account = self._account(request)
        user = account.user(request.path_params["name"])
        if user is None:
            raise _missing()
        user.email = _validate(body, ("email",))["email"]
        for sub in account.subscriptions.values():
            if sub["user_id"] == user.user_id:
                sub["email"] = user.email
        return 200, {}
