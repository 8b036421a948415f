# Celery Live Dashboard: `make run` (dashboard + demo worker) and `make test` (the whole suite).
# Both install what they need: a .venv with the Python packages, the front-end libraries from
# npm into static/vendor/, and Debian's redis-server (and chromium and nginx for tests) when run as root.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VENDOR := static/vendor
PYTEST_ARGS ?=
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test test-unit lint lint-py lint-js setup setup-test bench bench-viewers clean
.PHONY: system-python system-redis system-chromium system-nginx system-node

run: setup ## the dashboard at http://127.0.0.1:5000 with a demo worker (and a local Redis if none answers)
	$(BIN)/celery-dashboard demo

test: setup-test lint ## the linters and type checks, then the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# No redis-server, worker or browser (tiers: tests/conftest.py): 35-45 s on two busy cores, 13 s of it
# test_reliability's million events through the state.
test-unit: $(BIN)/.test-deps ## the unit tier only, for quick feedback
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

lint: lint-py lint-js ## every linter and type check

# Python: import contracts, lint, format and types (their settings are in pyproject.toml; the tools
# come from the test extra). Run from the checkout, so they read this tree and not an installed copy.
PY_SOURCES := dashboard tests bench app.py
lint-py: setup-test
	$(BIN)/lint-imports
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)
	$(BIN)/mypy

# ESLint (eslint.config.js) on the dashboard's own ES modules; node_modules comes with the vendor step's
# npm ci (--no-install: never fetch an unpinned eslint when it is missing).
lint-js: $(VENDOR)/.stamp
	npx --no-install eslint static/js

setup: system-python system-node $(BIN)/.deps $(VENDOR)/.stamp system-redis
setup-test: setup $(BIN)/.test-deps system-chromium system-nginx

# The bench needs requests and Playwright (test extras) and Chromium, and Flower (+ py-spy) in a
# virtualenv of its own: Flower is what we compare against, never a dependency of the project.
BENCH_VENV := .bench-venv
bench: setup-test $(BENCH_VENV)/.deps ## performance figures (see bench/README.md); BENCH_ARGS=--quick for a smoke run
	$(BIN)/python -m bench $(BENCH_ARGS)

$(BENCH_VENV)/.deps: | system-python
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q 'flower>=2,<3' 'celery[redis]>=5.3,<6' 'redis>=5' packaging py-spy
	@touch $@

bench-viewers: setup-test ## many live viewers, anonymous sockets and slowloris (bench/README.md)
	$(BIN)/python -m bench.viewers --auth --rounds 3 --burst-events 300000 $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules $(VENDOR) .pytest_cache .ruff_cache .mypy_cache

# -- Python -------------------------------------------------------------------------------------
$(BIN)/.deps: pyproject.toml | system-python
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(BIN)/.test-deps: $(BIN)/.deps pyproject.toml  # (the test extra, linters included, is listed there)
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

# -- front-end libraries (npm -> static/vendor, git-ignored) ------------------------------------
$(VENDOR)/.stamp: package.json package-lock.json | system-node
	npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(VENDOR)
	cp node_modules/socket.io-client/dist/socket.io.esm.min.js $(VENDOR)/
	cp node_modules/uplot/dist/uPlot.esm.js node_modules/uplot/dist/uPlot.min.css $(VENDOR)/
	@touch $@

# -- system packages: installed with apt-get when root, otherwise a clear message ----------------
apt_install = if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $(1) with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
	else echo "missing: $(1). Install it, e.g.: sudo apt-get install $(1)"; exit 1; fi

system-python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
		{ echo "Python >= 3.11 is required (found: $$($(PYTHON) --version 2>&1))"; exit 1; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || test -x $(BIN)/python || { $(call apt_install,python3-venv); }

system-node:
	@command -v npm >/dev/null || { $(call apt_install,nodejs npm); }

system-redis:
	@command -v redis-server >/dev/null || test -x /usr/bin/redis-server || { $(call apt_install,redis-server); }

system-chromium:
	@test -x /usr/bin/chromium || { $(call apt_install,chromium); }

# The reverse-proxy test starts its own nginx (own config, port and files in a temp dir); nothing else runs it.
system-nginx:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { $(call apt_install,nginx); }
