# bxb: `make run` starts the whole stack, `make test` runs the whole suite.
# Everything installs from PyPI through uv into .venv; uv itself is
# bootstrapped with pip when missing.

PYTHON ?= python3
UV := $(PYTHON) -m uv
VENV := .venv
PY := $(VENV)/bin/python
# Bytecode is cached in __pycache__ even where the environment asks Python not
# to write it: every process the suite and `make run` start would otherwise
# compile each module it imports again (pytest's collection alone took twice as long).
unexport PYTHONDONTWRITEBYTECODE
# pytest-xdist workers: each starts its own PostgreSQL, NATS, chdb and services;
# each takes half the tests in order, and one that runs out takes from the other.
TEST_WORKERS ?= 2

.PHONY: install run test lint proto proto-check clients breaking bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --python 3.12 --compile-bytecode
	@touch $@

run: install
	$(PY) -m deploy.stack

test: install proto-check lint breaking
	$(PY) -m coverage erase
	$(PY) -m coverage run -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)
	$(PY) -m coverage combine -q
	$(PY) -m coverage report --fail-under=100

# buf reads the protos as one image protoc builds (buf/validate is known by its descriptor only);
# mypy --strict checks what pyproject.toml's [tool.mypy] names.
lint: install
	$(PY) scripts/gen_proto.py --image build/bxb.binpb
	$(VENV)/bin/buf lint build/bxb.binpb --config proto/buf.yaml --path bxb
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

proto: install
	$(PY) scripts/gen_proto.py

proto-check: install
	$(PY) scripts/gen_proto.py --check

# The descriptor set and the TypeScript, Java (and Go, with its plugins) clients, under clients/.
clients: install
	$(PY) scripts/clients.py

# buf breaking (WIRE_JSON) against the newest v* tag; nothing to compare before the first.
breaking: install
	$(PY) scripts/breaking.py

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .bxb .coverage .coverage.* node_modules clients/bxb.binpb clients/ts clients/java clients/go
