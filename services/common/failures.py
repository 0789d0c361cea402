"""Which failures mean a backing service is away (PostgreSQL, NATS,
ClickHouse, a peer): the caller should retry, so they are UNAVAILABLE (a
503 with Retry-After at the gateway), never INTERNAL. Everything else
unexpected is a bug, logged and answered INTERNAL.
"""

from __future__ import annotations

import errno

import nats.errors
import nats.js.errors
from sqlalchemy import exc as db_errors

# Socket errors of a host or network out of reach (ConnectionError covers refused and reset).
UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT, errno.EHOSTDOWN})
# PostgreSQL's own words for "not now": SQLSTATE classes and codes of a
# server starting, stopping, crashed or full (57P03 cannot_connect_now is what
# a restarting server answers a connect with).
_PG_AWAY_CLASSES = ("08",)  # connection exception
_PG_AWAY_CODES = frozenset({"57P01", "57P02", "57P03", "53300"})  # shutdowns, cannot connect now, too many connections
# JetStream answers that mean the request itself was wrong, not NATS away.
_NATS_REFUSALS = (nats.js.errors.BadRequestError, nats.js.errors.NotFoundError)


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` says a dependency could not be reached or answered in time."""
    if isinstance(error, (ConnectionError, TimeoutError, db_errors.TimeoutError)):
        return True  # refused or reset connections; a pool, a fetch or a request out of time
    if isinstance(error, db_errors.DBAPIError):
        state = getattr(error.orig, "sqlstate", None) or ""
        return (
            error.connection_invalidated
            or isinstance(error, (db_errors.OperationalError, db_errors.InterfaceError))
            or state.startswith(_PG_AWAY_CLASSES)
            or state in _PG_AWAY_CODES
        )
    if isinstance(error, nats.errors.Error):
        return not isinstance(error, _NATS_REFUSALS)
    return isinstance(error, OSError) and error.errno in UNREACHABLE
