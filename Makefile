# Two commands for a fresh machine (see README):
#   make demo   - create/reuse .venv, install, train + evaluate the quickstart on CPU
#   make test   - create/reuse .venv, install, run the whole test suite (make test-quick: without slow tests)
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install render-libs demo test test-quick lint clean-venv

# headless rendering (MuJoCo and MiniWorld through EGL) needs the system's libEGL and libGL; installed when missing
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
render-libs:
	@ldconfig -p | grep -q 'libEGL.so.1' && ldconfig -p | grep -q 'libGL.so.1' || { \
	  command -v apt-get >/dev/null && $(SUDO) apt-get update -qq && \
	  $(SUDO) apt-get install -y -qq --no-install-recommends libegl1 libgl1 libgles2 ; } || \
	  echo "headless rendering needs libEGL and libGL (e.g. apt-get install libegl1 libgl1)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU build; an open range would pull a multi-GB CUDA wheel
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,timeseries,slurm,planning,video,videogen]"
	touch $(STAMP)

install: $(STAMP) render-libs

demo: install
	$(PY) main.py

# two pytest workers (pytest-xdist), one torch thread each: the suite's wall time on a 2-core machine
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# the suite without the tests marked slow, for quick local runs (CI runs `make test`)
test-quick: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-venv:
	rm -rf $(VENV)
