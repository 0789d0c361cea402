"""What the deployment files' tests share: the environment variables bxb's
code reads, the commands the image can run, and where each gRPC service
listens by default."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("catalog", "metering", "invoicing", "payments")
GRPC_PORTS = {"catalog": 50051, "metering": 50052, "invoicing": 50053, "payments": 50054}
# The database of each service that keeps its state in PostgreSQL (metering's is ClickHouse).
DATABASES = ("catalog", "invoicing", "payments")

# Names the shared brief of issue 21 gives parts other branches write (TLS, logs, NATS
# credentials and replicas, ClickHouse cluster, listen and metrics addresses); accepted
# here until their readers are merged, after which the code's own reads cover them.
CONVENTIONS = {
    "BXB_TLS_DIR",
    "BXB_LOG_FORMAT",
    "BXB_NATS_USER",
    "BXB_NATS_PASSWORD",
    "BXB_NATS_REPLICAS",
    "BXB_CLICKHOUSE_CLUSTER",
    *(f"BXB_{service.upper()}_{suffix}" for service in SERVICES for suffix in ("LISTEN", "METRICS_LISTEN")),
}

LITERAL = re.compile(r"""f?["'](BXB_(?:\{[^}"']*\}|[A-Z0-9_])+)["']""")


@cache
def read_patterns() -> tuple[re.Pattern[str], ...]:
    """Every BXB_* name the shipped code reads, as a pattern: an f-string's
    placeholder (f"BXB_{service.upper()}_ADDRESS") matches any upper-case word."""
    found: set[str] = set()
    for folder in ("services", "gateway"):
        for source in (ROOT / folder).rglob("*.py"):
            found.update(LITERAL.findall(source.read_text()))
    return tuple(
        re.compile(
            "".join("[A-Z]+" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{[^}]*\})", name))
        )
        for name in sorted(found)
    )


def unknown_names(names: Iterable[str]) -> list[str]:
    """The BXB_* names among `names` that nothing reads."""
    return sorted(
        name
        for name in names
        if name.startswith("BXB_")
        and name not in CONVENTIONS
        and not any(pattern.fullmatch(name) for pattern in read_patterns())
    )


def module_file(module: str) -> Path:
    """The file `python -m module` runs."""
    path = ROOT.joinpath(*module.split("."))
    return path / "__main__.py" if path.is_dir() else path.with_suffix(".py")


def check_command(command: list[str]) -> None:
    """A command the image can run: python -m <a bxb process> [migrate, for a service with a schema]."""
    assert command[:2] == ["python", "-m"], command
    module, args = command[2], command[3:]
    assert module_file(module).is_file(), f"{module} has no __main__"
    if module == "gateway":
        assert args == [], command
    else:
        assert module in {f"services.{service}" for service in SERVICES}, command
        assert args in ([], ["serve"], ["migrate"]), command
