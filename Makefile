# store-migrate: every target sets up what it needs (a virtual environment in .venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo backfill verify rollback prune lint bench profile clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

demo: install
	bash examples/demo.sh

backfill: install
	scripts/run-rust-ownership-backfill.sh

verify: install
	@test -n "$(MANIFEST)" || { echo "usage: make verify MANIFEST=<manifest-path>" >&2; exit 2; }
	scripts/verify-rust-ownership-backfill.sh "$(MANIFEST)"

rollback: install
	@test -n "$(MANIFEST)" || { echo "usage: make rollback MANIFEST=<manifest-path>" >&2; exit 2; }
	scripts/rollback-rust-ownership-backfill.sh "$(MANIFEST)"

lint: install
	$(BIN)/ruff check store_migrate tests
	$(BIN)/mypy store_migrate
	bash -n scripts/*.sh

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

BENCH_ARGS ?=
bench: install
	cd bench && ../$(BIN)/python bench.py $(BENCH_ARGS)

# A flame graph of one first run on the bench stores, worker processes included.
profile: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,profile]'
	mkdir -p bench-results
	cd bench && ../$(BIN)/python bench.py --profile ../bench-results/profile-run.svg $(BENCH_ARGS)

KEEP ?= 5
prune: install
	$(BIN)/store-migrate prune --keep $(KEEP)
