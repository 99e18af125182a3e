# The two commands of the README:
#   make run   - install what is missing, then start the whole exchange with its defaults
#   make test  - install everything, lint (ruff, mypy), then run the full test suite
# Both work on a fresh Debian/Ubuntu machine with Python 3.11, git, make and apt (as root, or
# with the apt packages below already installed).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
WEB    := feed/web
CHARTS := $(WEB)/node_modules/.package-lock.json
# The engine's kernel, compiled with Cython (engine/__init__.py says how the build is chosen).
KERNEL := $(VENV)/.kernel
KERNEL_SRC := $(addprefix engine/,book.py core.py ledger.py money.py views.py) $(wildcard engine/*.pxd) setup.py

.PHONY: run test install lint bench clean

run: $(STAMP) $(KERNEL) $(CHARTS)
	$(PY) -m stack

# The whole suite on the compiled kernel, then the engine's own tests on the interpreted one
# (the same source, run by CPython: both builds must pass).
test: $(STAMP) $(KERNEL) $(CHARTS) $(VENV)/.browser $(VENV)/.openssl $(VENV)/.nats lint
	EXCHANGE_ENGINE_BUILD=compiled $(PY) -m pytest tests
	EXCHANGE_ENGINE_BUILD=interpreted $(PY) -m pytest $(ENGINE_TESTS)

ENGINE_TESTS := tests/test_engine_orders.py tests/test_engine_property.py \
  tests/test_engine_deadlines.py tests/test_engine_codes.py tests/test_engine_surface.py \
  tests/test_engine_compat.py tests/test_engine_money.py tests/test_engine_build.py \
  tests/test_engine_advanced.py tests/test_engine_iceberg_trailing_oco.py

install: $(STAMP) $(KERNEL) $(CHARTS) $(VENV)/.nats

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python venv missing: installing it with apt"; \
	  apt-get update -q && apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); }
	@command -v g++ >/dev/null && $(PYTHON) -c "$$HAS_HEADERS" || { \
	  echo "g++ or the Python headers missing (quickfix builds from source): installing them with apt"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q g++ python3-dev; }
	$(PY) -m pip install -q --upgrade pip
	EXCHANGE_ENGINE_BUILD=interpreted $(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# Compiled in place (engine/*.so, ignored by git) whenever a kernel source changes.
$(KERNEL): $(STAMP) $(KERNEL_SRC)
	$(PY) setup.py -q build_ext --inplace -j 2
	@touch $@

# True where Python.h is there for the interpreter that builds quickfix.
define HAS_HEADERS
import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))
endef
export HAS_HEADERS

# The dashboard's chart library, from the npm registry, pinned by package-lock.json.
$(CHARTS): $(WEB)/package.json $(WEB)/package-lock.json
	@command -v npm >/dev/null || { echo "npm missing: installing it with apt"; \
	  apt-get update -q && apt-get install -y -q npm; }
	cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error

# Debian's Chromium, for the browser test of the dashboard.
$(VENV)/.browser:
	@command -v chromium >/dev/null || { echo "chromium missing: installing it with apt"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	@touch $@

# The openssl command, which the TLS tests use to make a throwaway certificate.
$(VENV)/.openssl:
	@command -v openssl >/dev/null || { echo "openssl missing: installing it with apt"; \
	  apt-get update -q && apt-get install -y -q openssl; }
	@touch $@

# Debian's NATS server: the replicated journal's log (engine/replication.py; off by default).
$(VENV)/.nats:
	@command -v nats-server >/dev/null || { echo "nats-server missing: installing it with apt"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nats-server; }
	@touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP) $(KERNEL)
	$(PY) -m bench engine

clean:
	rm -rf $(VENV) var build *.egg-info $(WEB)/node_modules engine/*.so engine/*.c
