PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# calrl and what it runs on (all that `make demo` needs); DEV_STAMP adds the test and benchmark tools on top, so a
# first `make demo` does not wait for pytest, scikit-learn and the rest (about 25 s of its install here)
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install test test-all test-cpu-paths demo demo-quick bench bench-eval bench-startup bench-hook bench-ppo gpu-check lint clean

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(DEV_STAMP)

install: $(DEV_STAMP)

# DeepSpeed for the ZeRO-3 tests (test-all): no compiled ops up front; on CPU it JIT-builds one op at its first
# start (a few minutes, once; cached in ~/.cache/calrl/torch_extensions)
DS_STAMP := $(VENV)/.deepspeed
$(DS_STAMP): $(DEV_STAMP)
	DS_BUILD_OPS=0 $(BIN)/pip install -q -c constraints.txt -e '.[dev,deepspeed]'
	touch $(DS_STAMP)

# the everyday suite: everything but the end-to-end multi-process and demo tests (marked slow)
test: $(DEV_STAMP)
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow" tests

# every test, the slow ones included (what CI runs), DeepSpeed's ZeRO-3 run too
test-all: $(DS_STAMP)
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests

# the golden-file and metric tests again as another CPU would run them: MKL's other code paths (MKL_CBWR) and
# torch's kernels for a CPU without AVX2 (ATEN_CPU_CAPABILITY=default); floats may change in their last digits,
# the tests must not (CI runs this after test-all)
CPU_PATH_TESTS := tests/test_eval_golden.py tests/test_metrics.py tests/test_metrics_bootstrap.py \
	tests/test_metrics_consistency.py tests/test_metrics_smooth.py tests/test_eval_runner.py tests/test_calibrators.py \
	tests/test_ppo_parity.py tests/test_metrics_doctests.py
CPU_PATHS := MKL_CBWR=AVX2 MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default
test-cpu-paths: $(DEV_STAMP)
	@for path in $(CPU_PATHS); do \
		echo "== $$path"; \
		env $$path WANDB_MODE=offline HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider \
			$(CPU_PATH_TESTS) || exit 1; \
	done

demo: $(STAMP)
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(BIN)/calrl demo

demo-quick: $(STAMP)
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(BIN)/calrl demo --quick

bench: $(DEV_STAMP)
	$(BIN)/python evals/bench_metrics.py

# calrl eval --predictions on a 10^6-row file against pandas reading it (CPU time, peak memory)
bench-eval: $(DEV_STAMP)
	$(BIN)/python evals/bench_eval_file.py --scaling

# calrl --help and every calrl COMMAND --help against python -c pass and import torch
bench-startup: $(DEV_STAMP)
	$(BIN)/python scripts/bench_startup.py

# the per-epoch calibration eval's share of train() on the tiny PPO-C recipe
bench-hook: $(DEV_STAMP)
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(BIN)/python scripts/bench_eval_hook.py

# calrl's PPO update against trl 1.12.0's (own venv: scripts/ppo_parity/setup_venv.sh)
bench-ppo: $(DEV_STAMP)
	test -x scripts/ppo_parity/.venv/bin/python || bash scripts/ppo_parity/setup_venv.sh
	$(BIN)/python scripts/bench_ppo.py --trl-without-gc

# on a lent GPU machine: bash scripts/gpu_check.sh (wheels from scripts/gpu_wheels.sh); here, a CPU dry run
gpu-check: $(DEV_STAMP)
	PY=$(BIN)/python bash scripts/gpu_check.sh --cpu-dry-run

lint: $(DEV_STAMP)
	$(BIN)/ruff check calrl tests scripts evals

clean:
	rm -rf $(VENV) runs wandb
