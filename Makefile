# One command file, run the same way by people and CI.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HTMX := static/vendor/htmx.min.js
OIDC := tests/node_modules/.package-lock.json

.PHONY: run setup test test-llama test-slow lint fmt migrate demo bench bench-smoke bench-pages clean

run: setup
	$(BIN)/gpuclub migrate
	$(BIN)/gpuclub serve

setup: $(VENV)/.installed $(HTMX)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(HTMX): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	mkdir -p static/vendor
	cp node_modules/htmx.org/dist/htmx.min.js $@

$(OIDC): tests/package.json tests/package-lock.json
	npm ci --prefix tests --no-audit --no-fund --silent

# Two workers, a test file each at a time (module fixtures such as a live hub stay within one worker).
test: setup $(OIDC)
	$(BIN)/pytest -n 2 --dist loadfile

# Against a real llama.cpp llama-server: built once per machine (about 5 minutes on 2 cores) into ~/.cache/gpuclub.
test-llama: setup $(OIDC)
	$(BIN)/python -m tests.support.llama_build
	$(BIN)/pytest -m llama

# The container image under a real dockerd and a real nginx in front of the hub (tests/slow/README.md).
test-slow: setup $(OIDC)
	$(BIN)/pytest -m slow

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# A hub, a demo model server and an agent, with a little history; GPUCLUB_PORT (and _HOST, _DATA_DIR) say where.
demo: setup
	$(BIN)/python -m tests.support.demo

# The benchmark (bench/README.md): a few minutes; installs LiteLLM into bench/.venv-litellm on first use.
bench: setup
	$(BIN)/python -m bench

# The same harness with tiny numbers, in seconds (the test suite runs it too).
bench-smoke: setup
	$(BIN)/python -m bench --smoke

# Every signed-in page with 1,000,000 usage rows, on SQLite and PostgreSQL (127.0.0.1:5432): a few minutes.
bench-pages: setup
	$(BIN)/python -m bench pages

migrate: setup
	$(BIN)/gpuclub migrate

clean:
	rm -rf $(VENV) node_modules tests/node_modules static/vendor
