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
# JetStream answers that mean the request itself was wrong, not NATS away.
_NATS_REFUSALS = (nats.js.errors.BadRequestError, nats.js.errors.NotFoundError)


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` says a dependency could not be reached or answered in time."""
    if isinstance(error, (ConnectionError, TimeoutError, db_errors.TimeoutError)):
        return True  # refused or reset connections; a pool, a fetch or a request out of time
    if isinstance(error, db_errors.DBAPIError):
        return error.connection_invalidated or isinstance(error, (db_errors.OperationalError, db_errors.InterfaceError))
    if isinstance(error, nats.errors.Error):
        return not isinstance(error, _NATS_REFUSALS)
    return isinstance(error, OSError) and error.errno in UNREACHABLE
