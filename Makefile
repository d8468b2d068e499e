# zk0 set-up and entry points. `make demo` and `make test` work on a fresh machine:
# they create .venv with Python 3.12, install zk0 and its test extra (`make test` also
# the tracking extra: the suite checks the TensorBoard and W&B trackers), and run offline.
PYTHON ?= python3.12
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.zk0-installed
TEST_STAMP := $(VENV)/.zk0-tracking-installed
# Offline and headless: tests never reach the Hub; MuJoCo renders through EGL.
export HF_HUB_OFFLINE := 1
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export FLWR_TELEMETRY_ENABLED := 0

.PHONY: install install-test system-deps demo test test-fast lint docs clean

install: $(STAMP)

install-test: $(TEST_STAMP)

$(STAMP): pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,tracking]'
	touch $(TEST_STAMP)

# Offscreen OpenGL for the MuJoCo simulator (Debian: libegl1, libgl1, libgles2).
system-deps:
	@if ! ldconfig -p | grep -q 'libEGL.so.1'; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq libegl1 libgl1 libgles2 >/dev/null; \
	  else echo "Install EGL (Debian/Ubuntu: sudo apt-get install libegl1 libgl1)"; exit 2; fi; \
	fi

demo: install
	$(BIN)/zk0 tiny-run

test: install-test
	$(BIN)/python -m pytest

test-fast: install-test
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check zk0cli tests benchmarks scripts

docs: install
	$(BIN)/python scripts/gen_config_docs.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
