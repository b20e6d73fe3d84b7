# Masthead: `make serve` runs it, `make test` proves it. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test test-sqlite test-postgres test-e2e install install-dev messages clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

serve: install
	$(BIN)/masthead serve

# The whole suite: SQLite, then PostgreSQL 15 (+ Redis integration), then the browser tests.
test: install-dev
	scripts/test.sh all

test-sqlite: install-dev
	scripts/test.sh sqlite

test-postgres: install-dev
	scripts/test.sh postgres

test-e2e: install-dev
	scripts/test.sh e2e

# Recompile translation catalogs after editing src/masthead/locale/*/LC_MESSAGES/django.po
messages: install-dev
	cd src/masthead && ../../$(BIN)/masthead manage compilemessages

clean:
	rm -rf $(VENV) var build *.egg-info
