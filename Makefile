# The two commands are `make run` and `make test`; each sets up .venv itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install console run test test-claude-latest bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## The web console's front-end packages (xterm.js) from npm, by the lockfile, copied into
## api/console/build/ (gitignored; no third-party code is committed).
CONSOLE_DIR   := api/console
CONSOLE_STAMP := $(CONSOLE_DIR)/build/.stamp

$(CONSOLE_STAMP): $(CONSOLE_DIR)/package.json $(CONSOLE_DIR)/package-lock.json $(CONSOLE_DIR)/build.mjs
	cd $(CONSOLE_DIR) && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build
	touch $(CONSOLE_STAMP)

console: $(CONSOLE_STAMP)

## Start the whole system on embedded defaults (Ctrl+C stops it).
run: $(STAMP) $(CONSOLE_STAMP)
	$(VENV)/bin/semo dev

## Run the test suite against real Postgres, Temporal and PTYs.
test: $(STAMP) $(CONSOLE_STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/mypy && $(VENV)/bin/lint-imports && $(VENV)/bin/pytest

## The Claude Code end-to-end and approval tests against npm's newest CLI (make test runs the pinned
## version and the oldest supported one; SEMO_CLAUDE_TEST_VERSIONS picks any others).
test-claude-latest: $(STAMP)
	SEMO_CLAUDE_TEST_VERSIONS=latest $(VENV)/bin/pytest tests/system/test_claude_versions.py tests/system/test_approvals.py

## Run the benchmarks; results go to .semo/bench.json.
bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis $(CONSOLE_DIR)/node_modules $(CONSOLE_DIR)/build
