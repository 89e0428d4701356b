# One command to set up and run the server, one to set up and run the tests.
#   make serve                                        # config.toml (Qwen2.5-0.5B-Instruct from the hub)
#   make serve MODEL=../shared/models/stories260K     # one local model, no config needed
#   make test
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
ARGS   ?=
# An outside plugin package (its own pyproject.toml), installed as users would install
# it; `make test` runs its tests with inferd's.
EXAMPLE := examples/inferd-guardrails

.PHONY: serve test lint bench bench-engine clean

$(BIN)/inferd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

serve: $(BIN)/inferd
	$(BIN)/inferd serve $(if $(MODEL),--model $(MODEL),--config config.toml) $(ARGS)

$(VENV)/.example-installed: $(BIN)/inferd $(shell find $(EXAMPLE) -name '*.py' -o -name '*.toml')
	$(BIN)/pip install --quiet ./$(EXAMPLE)
	touch $@

test: $(BIN)/inferd $(VENV)/.example-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest $(ARGS)

bench: $(BIN)/inferd
	$(BIN)/python benchmarks/bench_stream.py $(ARGS)
	$(BIN)/python benchmarks/bench_plugins.py

# The engine benchmark of issue #11 (~15 min): make bench-engine ARGS="--quick"
bench-engine: $(BIN)/inferd
	$(BIN)/python benchmarks/bench_engine.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
