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

.PHONY: run test setup system browser lint clean

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
# Debian's chromium runs the browser tests (Playwright drives it; its own download is not used).
APT := apt-get install -y -q --no-install-recommends
system:
	@command -v tesseract >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { $(APT) tesseract-ocr tesseract-ocr-eng >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && $(APT) tesseract-ocr tesseract-ocr-eng >/dev/null; }; }; } || \
	  echo "note: tesseract is not installed: scanned PDF pages will be recorded as needing OCR"

browser:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { $(APT) chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && $(APT) chromium >/dev/null; }; }; } || \
	  { echo "error: the browser tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)"; exit 1; }

run: setup
	$(BIN)/python manage.py migrate --no-input -v0
	$(BIN)/python manage.py bootstrap --matter $(MATTER)
	$(BIN)/python manage.py ingest "$(FOLDER)" --matter $(MATTER)
	$(BIN)/python manage.py serve $(ADDR)

lint: setup
	$(BIN)/ruff check docqa ingest inference tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy docqa ingest inference

test: lint browser
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) var
