"""Which failures mean a dependency is away (retry: UNAVAILABLE) and which
are bugs (INTERNAL)."""

from __future__ import annotations

import errno

import nats.errors
import nats.js.errors
import pytest
from sqlalchemy import exc as db_errors

from services.common.failures import is_unavailable


class Orig(Exception):
    def __init__(self, message: str, sqlstate: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        ConnectionResetError(errno.ECONNRESET, "reset"),
        TimeoutError(),
        OSError(errno.EHOSTUNREACH, "no route to host"),
        db_errors.TimeoutError("QueuePool limit reached"),
        db_errors.OperationalError("SELECT 1", {}, Orig("server closed the connection")),
        db_errors.InterfaceError("SELECT 1", {}, Orig("connection is closed")),
        db_errors.DBAPIError("SELECT 1", {}, Orig("gone"), connection_invalidated=True),
        # A restarting server refuses connects with its own codes, which SQLAlchemy leaves a bare DBAPIError.
        db_errors.DBAPIError("SELECT 1", {}, Orig("the database system is starting up", "57P03")),
        db_errors.DBAPIError("SELECT 1", {}, Orig("terminating connection: administrator command", "57P01")),
        db_errors.DBAPIError("SELECT 1", {}, Orig("connection failure", "08006")),
        nats.errors.ConnectionClosedError(),
        nats.errors.NoRespondersError(),
        nats.errors.TimeoutError(),
        nats.js.errors.ServiceUnavailableError(code=503, description="JetStream not ready"),
    ],
)
def test_a_dependency_out_of_reach_is_unavailable(error):
    assert is_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bug"),
        FileNotFoundError(errno.ENOENT, "missing"),
        db_errors.DBAPIError("SELECT 1", {}, Orig("syntax error")),
        db_errors.DBAPIError("SELECT 1", {}, Orig("division by zero", "22012")),
        db_errors.IntegrityError("INSERT", {}, Orig("duplicate key")),
        nats.js.errors.BadRequestError(code=400, description="bad"),
        nats.js.errors.NotFoundError(code=404, description="stream not found"),
    ],
)
def test_anything_else_is_not(error):
    assert not is_unavailable(error)
