"""The image recipe (deploy/Dockerfile), tested without a container runtime:
its stages and instructions parse (through `dockerfile`, Docker's own parser)
into what is expected, and its builder step is run here as written (`uv sync
--frozen --no-dev` from the lock, offline, into a fresh environment) with the
copied source beside it: every module imports, and every command the
manifests run answers --help."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "deploy" / "Dockerfile"
SERVICES = ("catalog", "metering", "invoicing", "payments")


def instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(RECIPE)))


def stages() -> dict[str, list[dockerfile.Command]]:
    """The instructions of each named stage (FROM image AS name)."""
    found: dict[str, list[dockerfile.Command]] = {}
    current: list[dockerfile.Command] = []
    for command in instructions():
        if command.cmd == "FROM":
            assert len(command.value) == 3 and command.value[1].upper() == "AS", command.original
            current = found.setdefault(command.value[2], [])
        current.append(command)
    return found


def build_args() -> dict[str, str]:
    return dict(command.value[0].split("=", 1) for command in instructions() if command.cmd == "ARG")


def env(stage: list[dockerfile.Command]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for command in stage:
        if command.cmd == "ENV":
            pairs.update(zip(command.value[::2], command.value[1::2], strict=True))
    return pairs


def copied_sources() -> list[str]:
    """What the builder copies from the build context after the lock: the source packages."""
    return [
        command.value[0]
        for command in stages()["builder"]
        if command.cmd == "COPY" and not command.flags and command.value[0] not in ("pyproject.toml",)
    ]


def test_a_builder_with_uv_and_a_slim_python_312_runtime():
    found = stages()
    assert list(found)[-1] == "runtime"  # what `docker build` produces without --target
    python = build_args()["PYTHON_IMAGE"]
    assert python.startswith("python:3.12-slim")
    assert found["builder"][0].value[0] == found["runtime"][0].value[0] == "${PYTHON_IMAGE}"
    assert build_args()["UV_IMAGE"].startswith("ghcr.io/astral-sh/uv:")


def test_the_builder_installs_the_locked_dependencies_without_the_dev_group():
    runs = [command.value[0] for command in stages()["builder"] if command.cmd == "RUN"]
    syncs = [run.split() for run in runs if run.startswith("uv sync")]
    assert len(syncs) == 1
    assert {"--frozen", "--no-dev"} <= set(syncs[0])
    assert env(stages()["builder"])["UV_PROJECT_ENVIRONMENT"] == "/app/.venv"
    assert env(stages()["builder"])["UV_PYTHON_DOWNLOADS"] == "never"  # the runtime's interpreter, not uv's


def test_the_runtime_copies_only_the_builders_app_and_runs_as_a_non_root_user():
    runtime = stages()["runtime"]
    copies = [command for command in runtime if command.cmd == "COPY"]
    assert [(c.flags, c.value) for c in copies] == [(("--from=builder",), ("/app", "/app"))]
    users = [command.value[0] for command in runtime if command.cmd == "USER"]
    assert users, "the runtime stage must name a USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000  # numeric: Kubernetes' runAsNonRoot can verify it
    assert "/app/.venv/bin" in env(runtime)["PATH"]
    assert env(runtime)["PYTHONPATH"] == "/app"
    assert env(runtime)["BXB_HOME"].startswith("/tmp/")  # writable under a read-only root filesystem


def test_the_image_copies_every_source_package_and_its_context_holds_them():
    assert sorted(copied_sources()) == ["buf", "bxb", "gateway", "services"]
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().split()
    for source in ["pyproject.toml", "uv.lock", *(f"{name}/**" for name in copied_sources())]:
        assert f"!{source}" in ignore, f"{source} is left out of the build context"


def test_the_default_command_is_the_gateway():
    [cmd] = [command for command in stages()["runtime"] if command.cmd == "CMD"]
    assert cmd.json and cmd.value == ("python", "-m", "gateway")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """/app as the builder leaves it: the no-dev environment from the lock (offline: uv's cache
    from `make install`) and the copied source packages. uv runs as the Makefile runs it."""
    app = tmp_path_factory.mktemp("image") / "app"
    app.mkdir()
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, app / name)
    for source in copied_sources():
        shutil.copytree(ROOT / source, app / source, ignore=shutil.ignore_patterns("__pycache__"))
    interpreter = os.path.realpath(sys.executable)  # the project's CPython 3.12, as the runtime's
    sync = ["sync", "--frozen", "--no-dev", "--no-install-project", "--offline", "--python", interpreter]
    synced = subprocess.run(
        ["python3", "-m", "uv", "--directory", str(app), *sync],
        cwd=ROOT,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(app / ".venv"), "UV_LINK_MODE": "symlink"}
        | {"UV_PYTHON_DOWNLOADS": "never"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert synced.returncode == 0, synced.stderr
    return app


def in_image(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV", "COV"))}
    return subprocess.run(
        [str(app / ".venv" / "bin" / "python"), *args],
        cwd=app,
        env={**clean, "PYTHONPATH": str(app), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


IMPORT_ALL = """
import importlib, pkgutil, sys
count = 0
for root in sys.argv[1:]:
    for module in pkgutil.walk_packages(importlib.import_module(root).__path__, root + "."):
        if ".migrations" not in module.name and not module.name.endswith("__main__"):
            importlib.import_module(module.name)
            count += 1
print(count)
"""


def test_every_module_of_the_image_imports_with_only_the_runtime_dependencies(image: Path):
    imported = in_image(image, "-c", IMPORT_ALL, *copied_sources())
    assert imported.returncode == 0, imported.stderr
    assert int(imported.stdout) > 200
    dev_only = ["pytest", "coverage", "mypy", "hypothesis", "kubernetes_validate", "dockerfile"]
    found = in_image(
        image, "-c", f"import importlib.util; print([m for m in {dev_only!r} if importlib.util.find_spec(m)])"
    )
    assert found.stdout.strip() == "[]", f"dev dependencies in the image: {found.stdout}{found.stderr}"


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_command_of_the_image_answers_help(image: Path, service: str):
    helped = in_image(image, "-m", f"services.{service}", "--help")
    assert helped.returncode == 0, helped.stderr
    assert f"python -m services.{service}" in helped.stdout and "{serve,migrate}" in helped.stdout


def test_the_gateway_command_of_the_image_is_a_runnable_module(image: Path):
    assert (image / "gateway" / "__main__.py").is_file()
    found = in_image(image, "-c", "import gateway.app, uvicorn; print('ok')")
    assert found.stdout.strip() == "ok", found.stderr
