"""Reading a JSON request body, and refusing what no store can keep.

JSON is parsed with exact decimals, so `0.1` is never a float; malformed
JSON (a lone UTF-16 surrogate, NaN, an integer of thousands of digits,
nesting too deep for the parser) is a 400 that says what is wrong. A NUL
character, which PostgreSQL text cannot store, is refused by the path of
the string or key holding it, in a body, a path or a query string.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, NoReturn

from gateway.errors import invalid

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_NUL_ESCAPE = re.compile(rb"\\u0000")
NUL = "\x00"


def refuse_nul(text: str, name: str) -> str:
    """`text`, unless it holds a NUL character, which PostgreSQL text cannot
    store: then a 400 naming `name`."""
    if NUL in text:
        raise invalid(f"{name or 'the body'} must not contain the NUL character (\\u0000)", name, "INVALID_VALUE")
    return text


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _refuse_nul_in(value: Any, path: str = "") -> None:
    """Refuses the first string or key holding a NUL character, by its path."""
    if isinstance(value, str):
        refuse_nul(value, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            where = _join(path, key.replace(NUL, "\\u0000"))
            refuse_nul(key, where)
            _refuse_nul_in(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_nul_in(item, f"{path}[{index}]")


def parse_json(raw: bytes) -> Any:
    """Parses a request body; malformed JSON is a 400 that says where."""
    try:
        value = json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
        # An escaped lone UTF-16 surrogate ("\ud800") parses but cannot be
        # encoded onward. Only an escape makes one (the body is UTF-8), so
        # only a body holding such an escape is encoded to find out.
        if _SURROGATE_ESCAPE.search(raw):
            json.dumps(value, ensure_ascii=False, default=str).encode()
        # Likewise only an escape makes a NUL (a raw one is malformed JSON).
        if _NUL_ESCAPE.search(raw):
            _refuse_nul_in(value)
        return value
    except json.JSONDecodeError as error:
        raise invalid(
            f"malformed JSON: {error.msg} at line {error.lineno} column {error.colno}", "", "MALFORMED_JSON"
        ) from None
    except UnicodeDecodeError:
        raise invalid("the body is not UTF-8", "", "MALFORMED_JSON") from None
    except UnicodeEncodeError:
        raise invalid("malformed JSON: a string holds an unpaired UTF-16 surrogate", "", "MALFORMED_JSON") from None
    except ValueError:  # an integer literal beyond Python's 4300-digit conversion limit
        raise invalid("malformed JSON: a number has too many digits", "", "MALFORMED_JSON") from None
    except RecursionError:
        raise invalid("malformed JSON: nested too deeply", "", "MALFORMED_JSON") from None


def _reject_constant(name: str) -> NoReturn:
    raise invalid(f"malformed JSON: {name} is not a number", "", "MALFORMED_JSON")
