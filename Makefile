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

.PHONY: run test setup system browser lint clean secrets deploy

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The stamp is rebuilt whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]' $(QUIET)
	# unstructured-inference's own dependency set breaks sentence-transformers here: no deps.
	$(PIP) install --no-deps unstructured-inference==1.6.14 $(QUIET)
	# The Compose specification's JSON schema, for the test that validates compose.yaml offline:
	# docker-compose 1.29.2's wheel ships it (compose/config/compose_spec.json); nothing is installed.
	$(PIP) download --no-deps docker-compose==1.29.2 -d $(VENV)/share/compose-spec $(QUIET)
	$(BIN)/python -c "import zipfile, glob; zipfile.ZipFile(glob.glob('$(VENV)/share/compose-spec/*.whl')[0]).extract('compose/config/compose_spec.json', '$(VENV)/share/compose-spec')"
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

# The harmony vocabulary vLLM needs offline (compose.yaml mounts deploy/tiktoken), taken from the
# bpe-openai package installed here and checked against the sha256 in ../shared/design/VLLM.md.
deploy/tiktoken/o200k_base.tiktoken: | $(VENV)/.installed
	mkdir -p deploy/tiktoken
	$(BIN)/python -c "import gzip, hashlib, pathlib, bpe_openai; \
	data = gzip.decompress((pathlib.Path(bpe_openai.__file__).parent / 'data' / 'o200k_base.tiktoken.gz').read_bytes()); \
	assert hashlib.sha256(data).hexdigest() == '446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d', 'unexpected vocabulary'; \
	pathlib.Path('$@').write_bytes(data)"

# Random secrets for compose.yaml, written once (never overwritten). The folder is the host's lock
# (root only); the files stay readable because Compose mounts each one, with its mode, into
# containers whose processes do not run as root.
secrets:
	mkdir -p secrets && chmod 700 secrets
	for name in postgres_password qdrant_api_key vllm_api_key django_secret_key; do \
	  test -s secrets/$$name || python3 -c "import secrets; print(secrets.token_urlsafe(48))" > secrets/$$name; done
	chmod 644 secrets/*

deploy: secrets deploy/tiktoken/o200k_base.tiktoken

lint: setup
	$(BIN)/ruff check docqa ingest inference tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy docqa ingest inference

test: lint browser
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) var
