# saltext-slurm: `make demo` stands up a demo cluster, `make test` runs lint and every test.
SHELL := /bin/bash
VENV ?= .venv
CLEAN_VENV ?= .venv-clean
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test lint unit functional integration demo demo-down demo-status demo-logs bench clean

# Host packages and accounts (root), then the project's venv; both are no-ops when done.
setup: $(VENV)/.installed $(CLEAN_VENV)/.installed
	bash tests/testbed/setup_host.sh

# A venv with Salt only (no saltext-slurm): the test bed's "clean node" minion runs from it.
$(CLEAN_VENV)/.installed: $(VENV)/.installed
	test -x $(CLEAN_VENV)/bin/python || python3 -m venv $(CLEAN_VENV)
	$(CLEAN_VENV)/bin/python -m pip install -q "salt==$$($(PY) -c 'import salt.version; print(salt.version.__version__)')"
	touch $@

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[tests]'
	touch $@

lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/salt-lint $$(find states -name '*.sls')

# two lanes (pytest-xdist workers), each module whole on one: see tests/conftest.py
test: setup lint
	$(PY) -m pytest tests -n 2 --durations=15 $(PYTEST_ARGS)

unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

functional: $(VENV)/.installed
	$(PY) -m pytest tests/functional $(PYTEST_ARGS)

integration: setup
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

demo: setup
	$(PY) -m tests.testbed up

demo-status: $(VENV)/.installed
	$(PY) -m tests.testbed status

demo-logs: $(VENV)/.installed
	$(PY) -m tests.testbed logs

demo-down: $(VENV)/.installed
	$(PY) -m tests.testbed down

bench: setup
	$(PY) -m bench

clean: demo-down
	rm -rf $(VENV) $(CLEAN_VENV) build *.egg-info
