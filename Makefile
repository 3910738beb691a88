# Two commands do all set-up on a fresh machine with only Python on it:
#   make demo   - the main job end to end on the embedded default
#   make test   - the test suite (what .ci/run calls)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU-only machine gets the CPU build of torch (here it lies on local disk); a
# GPU machine takes whatever the project's range resolves to. Override TORCH_SPEC
# or TORCH_PIP_ARGS (e.g. an index of CPU wheels) for other machines.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: demo test clean

# The demo installs only what it runs; the tests add their servers (moto, validators) on top.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"; fi
	$(BIN)/pip install -e .
	touch $@

# The report page's render test uses Debian's chromium: installed here where apt-get runs as root, else skipped.
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -e ".[test]"
	command -v chromium >/dev/null || ! command -v apt-get >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		 chromium fonts-liberation >/dev/null) || echo "chromium not installed: the report's render test skips"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/cvae run

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs mlflow.db mlruns mlartifacts .pytest_cache
