# store-migrate: every target sets up what it needs in a virtual environment (.venv).
# Operator targets (install, demo, backfill, verify, rollback, prune) install what the tool needs
# at run time; test, lint, bench and profile add the developer tools (the `dev` extra).
# tools/ensure_venv.py decides: it rebuilds an environment whose install did not finish or that
# another Python made (PYTHON=...), updates one whose pyproject.toml changed, and says in one
# sentence what stops it (a Python too old, a missing python3.X-venv package, no package index).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ENSURE = @command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found" \
	"(set PYTHON= to a Python 3.11 or newer, or install one: apt-get install python3)" >&2; exit 1; }; \
	$(PYTHON) tools/ensure_venv.py --venv $(VENV)

.PHONY: install dev test demo backfill verify rollback prune lint bench profile wheels readme clean

install:
	$(ENSURE)

dev:
	$(ENSURE) --extras dev

test: lint
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

lint: dev
	$(BIN)/ruff check store_migrate tests tools
	$(BIN)/mypy store_migrate tools
	bash -n scripts/*.sh

# The README's transcripts as the tool prints them now (tests/cli/test_readme.py checks they are current).
readme: install
	$(BIN)/python tools/readme.py --write

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

BENCH_ARGS ?=
bench: dev
	cd bench && ../$(BIN)/python bench.py $(BENCH_ARGS)

# A flame graph of one first run on the bench stores, worker processes included.
profile:
	$(ENSURE) --extras dev,profile
	mkdir -p bench-results
	cd bench && ../$(BIN)/python bench.py --profile ../bench-results/profile-run.svg $(BENCH_ARGS)

# A folder of wheels for a machine without a package index (README, "Installing without a package
# index"): this project's wheel, every dependency and extra, and what pip needs to build it.
WHEELS ?= wheels
wheels: install
	$(BIN)/python -m pip wheel --disable-pip-version-check --wheel-dir $(WHEELS) '.[dev,profile]' editables \
		$$($(BIN)/python -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')

KEEP ?= 5
prune: install
	$(BIN)/store-migrate prune --keep $(KEEP)
