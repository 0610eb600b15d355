# Two commands for a fresh machine (see README):
#   make demo   - create/reuse .venv, install, train + evaluate the quickstart on CPU
#   make test   - create/reuse .venv, install, run the whole test suite (make test-quick: without slow tests)
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-quick lint clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU build; an open range would pull a multi-GB CUDA wheel
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,timeseries,slurm,planning,videogen]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) main.py

test: install
	$(PY) -m pytest -q

# the suite without the tests marked slow, for quick local runs (CI runs `make test`)
test-quick: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-venv:
	rm -rf $(VENV)
