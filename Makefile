# heap-dbt: every target sets up what it needs, from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
EMULATOR_PORT ?= 8765
DEMO_APP_ID ?= 1234567890
SAMPLE := sample_dbt_project
# The Snowflake connector probes cloud metadata addresses on connect unless this is set before it
# is imported; nothing here may leave loopback.
export SNOWFLAKE_DISABLE_PLATFORM_DETECTION := true

.PHONY: help venv browser demo test test-fast lint docs bench bench-10m bench-wide bench-smoke bench-throttle bench-postgres reliability reliability-quick clean

help:
	@echo "make demo   - build the sample dbt project, start the Heap emulator, sync, show what Heap received"
	@echo "make test   - install everything (the venv; Debian chromium for the browser test, as root) and run the whole test suite"
	@echo "make test-fast - the unit tests only (no dbt run, no server): the loop while developing"
	@echo "make docs   - build the manual (docs/, MkDocs) into site/, failing on any broken link"
	@echo "make lint   - ruff check, ruff format --check, mypy --strict (heap_dbt, benchmarks)"
	@echo "make bench  - the performance benchmark (not part of CI)"
	@echo "make bench-10m, make bench-wide - 10M rows; a 151-column model (memory per column)"
	@echo "make bench-throttle - event syncs against the emulator's rate limits (a minute in 3 s)"
	@echo "make reliability - the fault and load suite: one Markdown table (RELIABILITY=quick: the CI size)"

$(STAMP): requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# The status page of `heap-dbt serve` is tested in a real headless browser: Debian's chromium.
# Installed from Debian's packages when missing and apt-get can run (as root); otherwise the
# browser test skips and says how to install it.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's chromium for the status page test"; \
		apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; \
	else echo "No chromium and no root apt-get: the status page browser test will skip (apt-get install chromium)"; fi

# A fresh DuckDB file each time: the emulator starts empty, so the sync state must too.
demo: $(STAMP)
	rm -f $(SAMPLE)/heap_demo.duckdb $(SAMPLE)/heap_demo.duckdb.wal
	cd $(SAMPLE) && ../$(BIN)/dbt build --profiles-dir . --quiet
	@set -e; \
	$(PY) -m heap_dbt.emulator --host 127.0.0.1 --port $(EMULATOR_PORT) & emu=$$!; \
	trap 'kill $$emu 2>/dev/null || true' EXIT; \
	for i in $$(seq 50); do $(PY) -m heap_dbt.emulator show --url http://127.0.0.1:$(EMULATOR_PORT) >/dev/null 2>&1 && break; sleep 0.1; done; \
	export HEAP_BASE_URL=http://127.0.0.1:$(EMULATOR_PORT) HEAP_APP_ID=$(DEMO_APP_ID); \
	echo "== heap-dbt ls"; \
	$(BIN)/heap-dbt ls --project-dir $(SAMPLE); \
	echo; echo "== heap-dbt sync (against the local Heap emulator)"; \
	$(BIN)/heap-dbt sync --project-dir $(SAMPLE); \
	echo; echo "== heap-dbt sync again: nothing changed, so nothing is sent"; \
	$(BIN)/heap-dbt sync --project-dir $(SAMPLE); \
	echo; echo "== heap-dbt history"; \
	$(BIN)/heap-dbt history --project-dir $(SAMPLE) --limit 6; \
	echo; echo "== What Heap received"; \
	$(PY) -m heap_dbt.emulator show --url http://127.0.0.1:$(EMULATOR_PORT)

# The PostgreSQL tests skip without a server; here one must answer (127.0.0.1:5432, user postgres).
test: $(STAMP) browser
	HEAP_DBT_REQUIRE_POSTGRES=1 $(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest tests/unit -q

# NO_MKDOCS_2_WARNING: Material prints a notice about its successor on every build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

lint: $(STAMP)
	$(BIN)/ruff check heap_dbt tests benchmarks
	$(BIN)/ruff format --check heap_dbt tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(PY) -m benchmarks.run --rows 100000,1000000

# 1M users from PostgreSQL (127.0.0.1:5432, user postgres) against the limit of Postgres JSON or ADBC + DuckDB.
bench-postgres: $(STAMP)
	$(PY) -m benchmarks.postgres --rows 1000000

bench-10m: $(STAMP)
	$(PY) -m benchmarks.run --rows 10000000 --repeat 1 --baseline-rows 2000 --out benchmarks/out/results-10m.json

bench-wide: $(STAMP)
	$(PY) -m benchmarks.run --rows 100000,1000000 --objects wide --repeat 1 --baseline-rows 2000 --no-incremental --out benchmarks/out/results-wide.json

bench-smoke: $(STAMP)
	$(PY) -m benchmarks.run --smoke

bench-throttle: $(STAMP)
	$(PY) -m benchmarks.throttle --window 3

# The Snowflake connector probes cloud metadata endpoints on import unless this is set.
reliability: $(STAMP)
	SNOWFLAKE_DISABLE_PLATFORM_DETECTION=true $(PY) -m benchmarks.reliability $(if $(filter quick,$(RELIABILITY)),--quick)

reliability-quick: $(STAMP)
	SNOWFLAKE_DISABLE_PLATFORM_DETECTION=true $(PY) -m benchmarks.reliability --quick

clean:
	rm -rf $(VENV) $(SAMPLE)/target $(SAMPLE)/logs $(SAMPLE)/*.duckdb .pytest_cache .mypy_cache .ruff_cache
