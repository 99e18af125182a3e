# The two commands of the README:
#   make run   - install what is missing, then start the whole exchange with its defaults
#   make test  - install everything, then run the full test suite
# Both work on a fresh Debian/Ubuntu machine with Python 3.11, git, make and apt.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test install lint bench clean

run: $(STAMP)
	$(PY) -m stack

test: $(STAMP)
	$(PY) -m pytest tests

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python venv missing: installing it with apt"; \
	  apt-get update -q && apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m bench engine

clean:
	rm -rf $(VENV) var build *.egg-info
