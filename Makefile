# spark-grpc — the targets a newcomer can guess. `make help` lists them.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
BUF    := tools/node_modules/.bin/buf
REF    ?= HEAD~1
TS     := clients/typescript

.DEFAULT_GOAL := help
.PHONY: help install run demo test lint fmt gen gen-check breaking migrate migrate-check bench bench-smoke clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install the service with its dev tools

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,bench]'
	touch $@

$(BUF): tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(TS)/node_modules/.bin/protoc-gen-es: $(TS)/package.json $(TS)/package-lock.json
	cd $(TS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: install  ## start everything on an embedded Postgres and Redis (127.0.0.1:50051)
	$(VENV)/bin/spark-grpc dev --demo-source

demo: install  ## start only the demo LangFlow-compatible source (127.0.0.1:7860)
	$(VENV)/bin/spark-grpc demo-source

test: install  ## run the whole test suite against real Postgres, Redis and server processes
	$(VENV)/bin/pytest

lint: install $(BUF) $(TS)/node_modules/.bin/protoc-gen-es  ## ruff, mypy --strict, buf lint, gofmt/go vet, tsc
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(BUF) lint
	cd clients/go && test -z "$$(gofmt -l .)" && go vet ./...
	cd $(TS) && npx tsc -p . --noEmit

fmt: install  ## format the Python code
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

gen: install $(BUF) $(TS)/node_modules/.bin/protoc-gen-es  ## regenerate every stub from protos/ (reproducible)
	$(BUF) generate
	$(BUF) build -o $(VENV)/spark.binpb
	$(PY) tools/gen_python.py $(VENV)/spark.binpb
	$(BUF) generate --template clients/go/buf.gen.go.yaml
	$(BUF) generate --template $(TS)/buf.gen.ts.yaml
	BUF=$(BUF) PYTHON=$(PYTHON) clients/python/tools/gen

GENERATED := spark_grpc/_gen clients/go/gen clients/typescript/src/gen clients/python/src/spark_client/_gen

gen-check: gen  ## fail when the committed generated code differs from `make gen`
	@git diff --exit-code --stat -- $(GENERATED) || { echo "generated code is stale: run make gen and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- $(GENERATED))" || { git status --porcelain -- $(GENERATED); echo "untracked generated files: run make gen and commit"; exit 1; }

breaking: $(BUF)  ## buf breaking (FILE) against REF (default HEAD~1)
	$(BUF) breaking protos --against '.git#ref=$(REF),subdir=protos'

bench: $(VENV)/.bench-installed  ## run the benchmark suite (ratios against same-run baselines; slow)
	$(PY) -m bench.run

bench-smoke: $(VENV)/.bench-installed  ## a short run of every benchmark (what CI runs)
	$(PY) -m bench.run --smoke --out .venv/bench-smoke

migrate: install  ## apply migrations to SPARK_DATABASE_URL (or the embedded Postgres)
	$(VENV)/bin/spark-grpc migrate

migrate-check: install  ## alembic check (no drift) and an upgrade/downgrade/upgrade round trip
	$(VENV)/bin/pytest -q tests/integration/test_migrations.py

clean:  ## remove the virtualenv, caches and the local data directory
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .spark tools/node_modules $(TS)/node_modules $(TS)/dist clients/python/.venv-gen clients/python/.venv-test
