# The two commands in the README: `make run` and `make test` (`make test-postgres` for PostgreSQL).
# Each creates the virtual environment and installs what it needs on first use,
# and again whenever a requirements file changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: run debug test test-fast test-postgres mutate screenshots lint format clean bench-errors bench profile bench-timing check-python lock

## Serve the blog on http://127.0.0.1:5000 with demo data (SQLite by default).
run: $(VENV)/.installed
	$(BIN)/flask db upgrade
	$(BIN)/flask seed --if-empty
	$(BIN)/flask run --host $(HOST) --port $(PORT)

## The same with Flask's debugger and reloader (never in production).
debug: $(VENV)/.installed
	$(BIN)/flask db upgrade
	$(BIN)/flask seed --if-empty
	$(BIN)/flask --debug run --host $(HOST) --port $(PORT)

## Lint, check formatting, and run the test suite (on SQLite, unless TEST_DATABASE_URL is set).
test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

## The in-process tests only, for the edit-test loop: no gunicorn, browser, mail server or
## subprocess, spread over every core (about 40 s on two). `make test` runs these and the
## system tests, one at a time: those time servers, and would race each other for the CPU.
test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m "not system" -n auto

# The PostgreSQL server `make test-postgres` creates its test databases on;
# override with `make test-postgres TEST_DATABASE_URL=postgresql://user@host:port/dbname`.
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

## The test suite again on PostgreSQL: a new database for the run, dropped at the end.
test-postgres: $(VENV)/.installed-dev
	TEST_DATABASE_URL='$(TEST_DATABASE_URL)' $(BIN)/python -m pytest

## Would the tests notice a broken promise? Mutation testing of the modules that keep the
## error path's promises (an hour or more on 2 cores; not part of CI). One module:
## `make mutate ARGS=app/forms.py`. Equivalent mutants: tests/mutation/equivalent.toml.
mutate: $(VENV)/.installed-dev
	$(BIN)/python tests/mutation/mutate.py $(ARGS)

## The README's pictures: run the browser tests (system Chromium), which then also save
## small PNGs of a few pages into docs/screenshots/ (full-page ones always go to test-artifacts/).
screenshots: $(VENV)/.installed-dev
	$(BIN)/python tests/chromium.py
	DOCS_SCREENSHOTS=1 $(BIN)/python -m pytest tests/test_browser.py

## Measure the error path: 500-page latency with a dead mail server, what a storm costs,
## a 10,000-error storm, two hosts sharing Redis (the one on 127.0.0.1:6379), log rotation.
bench-errors: $(VENV)/.installed-dev
	$(BIN)/python -m bench.errors

## Measure the pages with wrk (`apt-get install wrk`): req/s and latency against a hello-world
## ceiling, and SQL statements per request, at 10 and 25 posts a page, on SQLite, on PostgreSQL
## when one answers, and at 10x the posts (about 9 minutes on 2 cores). Options through ARGS,
## e.g. `make bench ARGS=--quick` or `make bench ARGS="--per-page 25 --no-large"`.
bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.pages $(ARGS)

## Where the hot pages' time goes: plain ms per request and pyinstrument's call tree for the
## index, explore and a profile, on SQLite; on PostgreSQL:
## `make profile ARGS="--database-url postgresql://postgres@127.0.0.1:5432/postgres --per-page 25"`.
profile: $(VENV)/.installed-dev
	$(BIN)/python -m bench.profile $(ARGS)

## Can a stopwatch tell who has an account? Failed logins and reset requests, with and without one.
bench-timing: $(VENV)/.installed-dev
	$(BIN)/python -m bench.timing $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Before creating the environment: an older Python would fail much later, deep
# inside pip ("No matching distribution found"), without saying why.
check-python:
	@if ! command -v $(PYTHON) >/dev/null; then \
	  echo "The blog needs Python 3.11 or newer, and there is no $(PYTHON) here."; \
	  echo "Install one (python.org, or your system's packages) and name it: PYTHON=python3.11 make run"; \
	  exit 1; \
	elif ! $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
	  echo "The blog needs Python 3.11 or newer, and $(PYTHON) is $$($(PYTHON) --version 2>&1)."; \
	  echo "Install a newer one (python.org; Ubuntu 22.04: apt install python3.11 python3.11-venv)"; \
	  echo "and name it: PYTHON=python3.11 make run"; \
	  exit 1; \
	fi

$(BIN)/python: | check-python
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed

## Regenerate requirements.txt and requirements-dev.txt from the .in files, for every
## platform (uv's universal resolution adds markers such as tzdata on Windows). Versions
## already pinned stay unless an .in file changed them; add --upgrade to take the newest.
lock: $(VENV)/.installed-dev
	$(BIN)/uv pip compile --universal --python-version 3.11 --quiet $(ARGS) requirements.in -o requirements.txt
	$(BIN)/uv pip compile --universal --python-version 3.11 --quiet $(ARGS) requirements-dev.in -o requirements-dev.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
