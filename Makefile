# docqa: two commands do everything.
#   make run [FOLDER=/path/to/docs] [MATTER=default]  set up, ingest, serve on 127.0.0.1:8000
#   make test                                          set up and run the whole test suite

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
FOLDER ?= sample
MATTER ?= default
ADDR ?= 127.0.0.1:8000
PIP := $(BIN)/pip --disable-pip-version-check -q
# This machine's pip config lists index folders that may not exist; hide those warnings only.
QUIET := 2>&1 | { grep -v '^WARNING: Location' || true; }
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: run test setup system lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The stamp is rebuilt whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]' $(QUIET)
	# unstructured-inference's own dependency set breaks sentence-transformers here: no deps.
	$(PIP) install --no-deps unstructured-inference==1.6.14 $(QUIET)
	touch $@

setup: system $(VENV)/.installed

# Debian's tesseract reads scanned PDF pages; without it they are recorded as "needs OCR".
system:
	@command -v tesseract >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q --no-install-recommends tesseract-ocr tesseract-ocr-eng >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends tesseract-ocr tesseract-ocr-eng >/dev/null; }; }; } || \
	  echo "note: tesseract is not installed: scanned PDF pages will be recorded as needing OCR"

run: setup
	$(BIN)/python manage.py migrate --no-input -v0
	$(BIN)/python manage.py bootstrap --matter $(MATTER)
	$(BIN)/python manage.py ingest "$(FOLDER)" --matter $(MATTER)
	$(BIN)/python manage.py serve $(ADDR)

lint: setup
	$(BIN)/ruff check docqa ingest inference tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy docqa ingest inference

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) var
