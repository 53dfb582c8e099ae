#!/usr/bin/env bash
# One prepared check of calrl on a lent GPU machine (one H100; see /work/shared/gpu.md), in under 8 minutes.
#
#   bash scripts/gpu_wheels.sh                 # here, once: wheels the machine lacks + GSM8K copy into .whl/
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=540)      # on the lent machine
#   bash scripts/gpu_check.sh --cpu-dry-run    # here: the same steps, tiny models on the CPU (1-2 minutes)
#
# Steps (each under `timeout`, log in $LOGS/<step>.log, a failed step is marked FAIL and the rest still run;
# steps that would pass the overall deadline are marked SKIP):
#   setup        install .whl/*.whl into /tmp/site (GPU mode), a `calrl` launcher on PATH, versions, GPU name
#   cuda_tests   pytest tests/test_metrics_device.py (the tests that need an accelerator; must not skip on GPU)
#   bench_metrics evals/bench_metrics.py on the GPU (10^7 items)
#   ppo_c        PPO-C recipe, 12-layer hidden-1024 tiny policy, bf16, warm-up + 2 epochs with a 256-item GSM8K
#                calibration eval per epoch: step time, eval share of the training time, reward-pipeline share
#                of the update time, where the warm-up ran and the GPU memory it took, nvidia-smi sampling
#   eval_gsm8k   calrl eval --model <the PPO-C policy> on 256 GSM8K items
#   ppo, grpo, rm  the other tiny recipes at the same size (step time, eval share)
#   bench_ppo    scripts/bench_ppo.py on cuda (--skip-trl): calrl's update time, pipeline share at two sizes
# One summary at the end (stdout, and $OUT/gpu_summary.md when $OUT is set).
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
MODE=gpu
BUDGET_S=${GPU_CHECK_BUDGET_S:-450}   # the whole run; the device call's limit should be above this
for arg in "$@"; do
    case "$arg" in
        --cpu-dry-run) MODE=cpu ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown option $arg (use --cpu-dry-run)" >&2; exit 2 ;;
    esac
done
if [ -n "${OUT:-}" ]; then LOGS=$OUT/gpu_check; else LOGS=$REPO/runs/gpu_check_$MODE; fi
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)
RUNS=$WORK/runs
mkdir -p "$LOGS" "$RUNS" "$WORK/bin"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled WANDB_SILENT=true HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
START=$(date +%s)
SUMMARY=$WORK/summary.tsv      # step \t status \t seconds \t notes
DETAILS=$WORK/details.md
: > "$SUMMARY"; : > "$DETAILS"

# ------------------------------------------------------------------------------------------ settings per mode
GSM8K=$REPO/.whl/gsm8k/test.jsonl
[ -f "$GSM8K" ] || GSM8K=$REPO/tests/fixtures/heldout/gsm8k/test.jsonl   # 6 items: run gpu_wheels.sh first
# The GPU size: 12-layer, hidden-1024 tiny models, bf16 mixed precision: float32 master weights for what trains, the
# frozen reference and reward model stored in bf16.
GPU_SIZE=(model.tiny.num_layers=12 model.tiny.hidden_size=1024 training.use_cpu=false training.bf16=true
          model.dtype=float32 model.frozen_dtype=bfloat16)
if [ "$MODE" = gpu ]; then
    PY=python3
    SIZE=("${GPU_SIZE[@]}")
    EVAL_N=256
    METRICS_ARGS=(--device cuda --n 10000000 --repeats 5)
    BENCH_PPO_ARGS=(--device cuda --skip-trl --rounds 1 --warmup 2 --steps 10 --share-rounds 1 --share-steps 6)
    T_SETUP=120 T_TESTS=120 T_METRICS=90 T_PPO_C=150 T_EVAL=90 T_RECIPE=90 T_RM=60 T_BENCH=120
else
    PY=${PY:-$REPO/.venv/bin/python}
    [ -x "$PY" ] || PY=python3
    SIZE=(training.use_cpu=true model.tiny.warmup_steps=20)
    EVAL_N=16
    METRICS_ARGS=(--device cpu --n 100000 --repeats 2)
    BENCH_PPO_ARGS=(--device cpu --skip-trl --quick)
    T_SETUP=60 T_TESTS=60 T_METRICS=60 T_PPO_C=90 T_EVAL=60 T_RECIPE=60 T_RM=60 T_BENCH=90
fi
PPO_C_EVAL=(eval.heldout="gsm8k:$GSM8K" eval.split=test eval.limit=$EVAL_N eval.batch_size=64 eval.max_new_tokens=12)

note() { printf '%s\n' "$*" >> "$DETAILS"; }

# step NAME TIMEOUT CMD...: run under timeout (capped by what is left of the budget), log, record status.
step() {
    local name=$1 limit=$2; shift 2
    local now left rc t0 secs status log=$LOGS/$name.log
    now=$(date +%s); left=$((START + BUDGET_S - now - 5))
    if [ "$left" -lt 15 ]; then
        printf '%s\tSKIP\t0\tout of time (budget %ss)\n' "$name" "$BUDGET_S" >> "$SUMMARY"
        echo "== $name: SKIP (out of time)"; return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (timeout ${limit}s, log $log)"
    t0=$(date +%s)
    timeout -k 10 "$limit" "$@" > "$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - t0 ))
    if [ $rc -eq 0 ]; then status=PASS
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="FAIL (timeout ${limit}s)"
    else status="FAIL (exit $rc)"; fi
    printf '%s\t%s\t%s\t\n' "$name" "$status" "$secs" >> "$SUMMARY"
    echo "   $status in ${secs}s"
    [ $rc -eq 0 ] || tail -n 5 "$log" | sed 's/^/   | /'
    return 0
}

# mark_fail NAME REASON: turn a finished step into a FAIL (a check on its output failed).
mark_fail() {
    "$PY" - "$SUMMARY" "$1" "$2" <<'EOF'
import sys
path, name, reason = sys.argv[1:]
rows = [line.rstrip("\n").split("\t") for line in open(path)]
for row in rows:
    if row[0] == name and row[1] == "PASS":
        row[1] = f"FAIL ({reason})"
open(path, "w").write("".join("\t".join(r) + "\n" for r in rows))
EOF
}

# add_note NAME TEXT: append to the step's notes column.
add_note() {
    "$PY" - "$SUMMARY" "$1" "$2" <<'EOF'
import sys
path, name, text = sys.argv[1:]
text = "; ".join(part.strip() for part in text.replace("\t", " ").splitlines() if part.strip())
if not text:
    sys.exit(0)
rows = [line.rstrip("\n").split("\t") for line in open(path)]
for row in rows:
    if row[0] == name:
        row[3] = (row[3] + "; " if row[3] else "") + text
open(path, "w").write("".join("\t".join(r) + "\n" for r in rows))
EOF
}
status_of() { awk -F'\t' -v n="$1" '$1 == n {print $2}' "$SUMMARY"; }

# ------------------------------------------------------------------------------ the timed recipe driver
# Runs a recipe in-process through calrl.runners.runner.run_recipe and measures: update/step time (on_step_begin
# to on_step_end), the calibration evals (CalibrationEvalCallback.evaluate) against the training time, the
# reward pipeline (CalibratedPPOTrainer.compute_rewards) against the update time, and the tiny warm-up (device,
# seconds, peak CUDA memory). Writes a JSON file and prints "@@ " result lines.
cat > "$WORK/timed_recipe.py" <<'EOF'
import json
import statistics
import sys
import time

import torch
from transformers import TrainerCallback

method, config, out_json, *overrides = sys.argv[1:]
from calrl.runners.recipe import load_recipe  # noqa: E402

recipe = load_recipe(config, overrides, method=method)
cuda = torch.cuda.is_available() and not getattr(recipe.training, "use_cpu", False)


def sync():
    if cuda:
        torch.cuda.synchronize()


facts, evals, rewards = {"method": method, "cuda": cuda}, [], []
import calrl.tiny.warmup as warmup_module  # noqa: E402

original_warmup = warmup_module.warm_up_tiny_policy


def timed_warmup(model, *a, **k):
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    out = original_warmup(model, *a, **k)
    sync()
    facts.update(warmup_s=time.perf_counter() - t0, warmup_device=str(device), warmup_steps=k.get("steps"))
    if device.type == "cuda":
        facts["warmup_max_cuda_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


warmup_module.warm_up_tiny_policy = timed_warmup
from calrl.callbacks.calibration_eval import CalibrationEvalCallback  # noqa: E402

original_eval = CalibrationEvalCallback.evaluate


def timed_eval(self, *a, **k):
    sync()
    t0 = time.perf_counter()
    try:
        return original_eval(self, *a, **k)
    finally:
        sync()
        evals.append((t0, time.perf_counter()))


CalibrationEvalCallback.evaluate = timed_eval
if method == "ppo":
    from calrl.trainers.ppo import CalibratedPPOTrainer

    original_rewards = CalibratedPPOTrainer.compute_rewards

    def timed_rewards(self, *a, **k):
        sync()
        t0 = time.perf_counter()
        try:
            return original_rewards(self, *a, **k)
        finally:
            sync()
            rewards.append(time.perf_counter() - t0)

    CalibratedPPOTrainer.compute_rewards = timed_rewards


class Timer(TrainerCallback):
    def __init__(self):
        self.begin = self.end = self.step0 = None
        self.steps, self.epochs = [], 0

    def on_train_begin(self, args, state, control, **kwargs):
        sync()
        self.begin = time.perf_counter()
        if cuda:
            facts["model_device"] = str(next(kwargs["model"].parameters()).device)

    def on_step_begin(self, args, state, control, **kwargs):
        sync()
        self.step0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        sync()
        self.steps.append(time.perf_counter() - self.step0)

    def on_epoch_end(self, args, state, control, **kwargs):
        self.epochs += 1

    def on_train_end(self, args, state, control, **kwargs):
        sync()
        self.end = time.perf_counter()


timer = Timer()
from calrl.runners.runner import run_recipe  # noqa: E402

t0 = time.perf_counter()
result = run_recipe(recipe, [timer])
total = time.perf_counter() - t0
train_evals = [(a, b) for a, b in evals if a >= timer.begin]
end = max([timer.end] + [b for _, b in train_evals])
train_s = end - timer.begin
eval_s = sum(b - a for a, b in train_evals)
facts.update(total_s=total, train_s=train_s, steps=len(timer.steps), epochs=timer.epochs,
             median_step_s=statistics.median(timer.steps) if timer.steps else None,
             evals=len(train_evals), eval_s=eval_s, eval_share=eval_s / train_s if train_s else None,
             output_dir=result.output_dir)
if rewards:
    n = min(len(rewards), len(timer.steps))
    facts.update(rewards_s=sum(rewards[:n]), pipeline_share=sum(rewards[:n]) / sum(timer.steps[:n]))
if cuda:
    facts["max_cuda_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    facts["gpu"] = torch.cuda.get_device_name(0)
json.dump(facts, open(out_json, "w"), indent=2)


def fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


print("@@ " + " ".join(f"{k}={fmt(v)}" for k, v in facts.items() if k != "output_dir"))
EOF

# describe_recipe NAME: one-line notes from the driver's JSON.
describe_recipe() {
    [ -f "$LOGS/$1.json" ] || return 0
    "$PY" - "$LOGS/$1.json" <<'EOF'
import json, sys
f = json.load(open(sys.argv[1]))
parts = [f"{f['steps']} steps, median step {f['median_step_s']:.3f} s" if f.get("median_step_s") else "no steps",
         f"train {f['train_s']:.1f} s of {f['total_s']:.1f} s total"]
if f.get("evals"):
    parts.append(f"calibration eval {f['eval_share']:.1%} of training ({f['evals']} evals, {f['eval_s']:.1f} s)")
if "pipeline_share" in f:
    parts.append(f"reward pipeline {f['pipeline_share']:.1%} of update time")
if "warmup_device" in f:
    w = f"warm-up {f['warmup_steps']} steps on {f['warmup_device']} in {f['warmup_s']:.1f} s"
    if "warmup_max_cuda_mem_mb" in f:
        w += f", max CUDA memory {f['warmup_max_cuda_mem_mb']:.0f} MiB"
    parts.append(w)
if "max_cuda_mem_mb" in f:
    parts.append(f"peak CUDA memory {f['max_cuda_mem_mb']:.0f} MiB")
print("; ".join(parts))
EOF
}

run_recipe_step() {  # NAME METHOD CONFIG TIMEOUT OVERRIDES...
    local name=$1 method=$2 config=$3 limit=$4; shift 4
    step "$name" "$limit" "$PY" "$WORK/timed_recipe.py" "$method" "$config" "$LOGS/$name.json" \
        training.output_dir="$RUNS/$name" "$@"
    add_note "$name" "$(describe_recipe "$name")"
    if [ "$MODE" = gpu ] && [ -f "$LOGS/$name.json" ]; then
        "$PY" -c "import json,sys; f=json.load(open(sys.argv[1])); sys.exit(0 if f.get('cuda') and \
f.get('warmup_device', 'cuda').startswith('cuda') else 1)" "$LOGS/$name.json" \
            || mark_fail "$name" "not on the GPU"
    fi
}

# ------------------------------------------------------------------------------------------------ steps
setup() {
    set -e
    if [ "$MODE" = gpu ]; then
        ls .whl/*.whl > /dev/null 2>&1 || { echo "no .whl/*.whl: run scripts/gpu_wheels.sh and carry .whl"; exit 1; }
        python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
        export PYTHONPATH=/tmp/site:$REPO
        nvidia-smi -L
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    elif ls .whl/*.whl > /dev/null 2>&1; then  # the wheels resolve for the GPU machine's Python 3.12
        "$PY" -m pip install --dry-run -q --no-index --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --target "$WORK/site" .whl/*.whl 2>&1 | grep -v "is ignored" || true
        echo "@@ .whl: $(ls .whl/*.whl | wc -l) wheels install for CPython 3.12 (pip --dry-run), $(du -sh .whl | cut -f1)"
    else
        echo "@@ no .whl/ here (run scripts/gpu_wheels.sh before the GPU run)"
    fi
    printf '#!/bin/sh\nexec %s -m calrl.cli.main "$@"\n' "$PY" > "$WORK/bin/calrl"
    chmod +x "$WORK/bin/calrl"
    "$PY" - <<'EOF'
import platform, torch, transformers, trl, datasets, calrl
cuda = torch.cuda.is_available()
print(f"@@ python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"trl {trl.__version__}, datasets {datasets.__version__}, calrl {calrl.__version__}, "
      f"device {torch.cuda.get_device_name(0) if cuda else 'cpu'}")
EOF
    calrl --help > /dev/null
    echo "launcher: $(command -v calrl)"
}
if [ "$MODE" = gpu ]; then export PYTHONPATH=/tmp/site:$REPO; else export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}; fi
export PATH=$WORK/bin:$PATH

echo "gpu_check ($MODE mode): logs in $LOGS, budget ${BUDGET_S}s"
step setup "$T_SETUP" bash -c "$(declare -f setup); MODE=$MODE PY=$PY REPO=$REPO WORK=$WORK setup"
add_note setup "$(grep -h '^@@ ' "$LOGS/setup.log" | sed 's/^@@ //')"

if [ "$MODE" = cpu ]; then  # the GPU overrides of every recipe validate (no model is loaded)
    GPU_EVAL=(eval.heldout="gsm8k:$GSM8K" eval.split=test eval.limit=256 eval.batch_size=64 eval.max_new_tokens=12)
    step gpu_recipes 60 bash -c "set -e
        calrl train-ppo --config configs/tests/tiny_ppo_c.yaml --dry-run ${GPU_SIZE[*]} ${GPU_EVAL[*]}
        calrl train-ppo --config configs/tests/tiny_ppo.yaml --dry-run ${GPU_SIZE[*]}
        calrl train-grpo --config configs/tests/tiny_grpo_brier.yaml --dry-run ${GPU_SIZE[*]}
        calrl train-rm --config configs/tests/tiny_rm.yaml --dry-run ${GPU_SIZE[*]}"
    add_note gpu_recipes "GPU-size overrides validate: $(grep -c ': ok' "$LOGS/gpu_recipes.log") of 4 recipes"
fi

step cuda_tests "$T_TESTS" "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_metrics_device.py
tests_line=$(grep -E '[0-9]+ (passed|skipped|failed)' "$LOGS/cuda_tests.log" | tail -n 1)
add_note cuda_tests "$tests_line"
if [ "$MODE" = gpu ] && ! grep -qE '[0-9]+ passed' <<<"$tests_line"; then mark_fail cuda_tests "nothing ran on CUDA"; fi
if [ "$MODE" = gpu ] && grep -qE '[0-9]+ skipped' <<<"$tests_line"; then mark_fail cuda_tests "tests skipped"; fi

step bench_metrics "$T_METRICS" "$PY" evals/bench_metrics.py "${METRICS_ARGS[@]}"
add_note bench_metrics "$(grep -E '^(total of|PASS|FAIL)' "$LOGS/bench_metrics.log" | paste -sd';' -)"

if [ "$MODE" = gpu ]; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 250 \
        > "$LOGS/nvidia_smi_ppo_c.csv" 2>/dev/null &
    SMI_PID=$!
fi
run_recipe_step ppo_c ppo configs/tests/tiny_ppo_c.yaml "$T_PPO_C" "${SIZE[@]}" "${PPO_C_EVAL[@]}"
if [ "$MODE" = gpu ]; then
    kill "$SMI_PID" 2>/dev/null; wait "$SMI_PID" 2>/dev/null
    add_note ppo_c "$("$PY" - "$LOGS/nvidia_smi_ppo_c.csv" <<'EOF'
import sys
rows = [line.split(",") for line in open(sys.argv[1]) if line.count(",") == 2]
util = [float(r[1]) for r in rows if r[1].strip().replace(".", "").isdigit()]
mem = [float(r[2]) for r in rows if r[2].strip().replace(".", "").isdigit()]
if util:
    busy = sum(u > 0 for u in util)
    print(f"nvidia-smi: {len(util)} samples, GPU busy in {busy} ({busy / len(util):.0%}), max util {max(util):.0f}%, "
          f"mean {sum(util) / len(util):.0f}%, max memory used {max(mem):.0f} MiB")
else:
    print("nvidia-smi: no samples")
EOF
)"
fi

PPO_C_MODEL=$RUNS/ppo_c
step eval_gsm8k "$T_EVAL" calrl eval --model "$PPO_C_MODEL" --dataset "gsm8k:$GSM8K" --split test --limit "$EVAL_N" \
    --batch-size 64 --max-new-tokens 32 --missing-confidence half --bootstrap 50 --out "$LOGS/eval_gsm8k" --overwrite
add_note eval_gsm8k "$("$PY" - "$LOGS/eval_gsm8k/metrics.json" <<'EOF' 2>/dev/null
import json, sys
m = json.load(open(sys.argv[1]))
flat = m.get("metrics", m)
keys = [k for k in ("n", "n_items", "n_answered", "accuracy", "ece", "brier", "auroc") if isinstance(flat.get(k), (int, float))]
print(", ".join(f"{k} {flat[k]:.4g}" for k in keys) or "metrics.json read")
EOF
)"

run_recipe_step ppo ppo configs/tests/tiny_ppo.yaml "$T_RECIPE" "${SIZE[@]}"
run_recipe_step grpo grpo configs/tests/tiny_grpo_brier.yaml "$T_RECIPE" "${SIZE[@]}"


run_recipe_step rm rm configs/tests/tiny_rm.yaml "$T_RM" "${SIZE[@]}"

step bench_ppo "$T_BENCH" "$PY" scripts/bench_ppo.py "${BENCH_PPO_ARGS[@]}" --json "$LOGS/bench_ppo.json"
add_note bench_ppo "$(grep -E '^(calrl_update_median_s|share_overhead|share [^ ]+ (ppo_c|vanilla))' \
    "$LOGS/bench_ppo.log" | sed -E 's/ \(rewards.*//' | paste -sd';' -)"

# -------------------------------------------------------------------------------------------------- summary
ELAPSED=$(( $(date +%s) - START ))
FAILS=$(awk -F'\t' '$2 !~ /^PASS/' "$SUMMARY" | wc -l)
{
    echo "# calrl gpu_check ($MODE mode): $( [ "$FAILS" -eq 0 ] && echo "all steps PASS" || echo "$FAILS step(s) not PASS" ), ${ELAPSED} s"
    echo
    echo "| step | status | s | results |"
    echo "| --- | --- | --- | --- |"
    awk -F'\t' '{gsub(/\|/, "/", $4); printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4}' "$SUMMARY"
    echo
    echo "Sizes: ${SIZE[*]}; GSM8K: $GSM8K ($EVAL_N items). Logs: $LOGS."
    cat "$DETAILS"
} > "$WORK/gpu_summary.md"
echo
echo "================================================================ SUMMARY"
cat "$WORK/gpu_summary.md"
if [ -n "${OUT:-}" ]; then cp "$WORK/gpu_summary.md" "$OUT/gpu_summary.md"; fi
cp "$WORK/gpu_summary.md" "$LOGS/gpu_summary.md"
rm -rf "$WORK"
[ "$FAILS" -eq 0 ]
