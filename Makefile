PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo demo-quick bench lint clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests

demo: $(STAMP)
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(BIN)/calrl demo

demo-quick: $(STAMP)
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(BIN)/calrl demo --quick

bench: $(STAMP)
	$(BIN)/python evals/bench_metrics.py

lint: $(STAMP)
	$(BIN)/ruff check calrl tests scripts evals

clean:
	rm -rf $(VENV) runs wandb
