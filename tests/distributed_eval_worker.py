"""torchrun worker for tests/test_callback_distributed.py: one calibration eval of the callback per process.

Usage: torchrun --standalone --nproc_per_node 2 tests/distributed_eval_worker.py MODEL_DIR OUT_DIR
Each rank writes OUT_DIR/rank-<r>.json with the metrics and predictions it ended with; rank 0 also writes
the eval files under OUT_DIR/limit-<n>/calibration_eval/.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, TrainerState

from calrl.callbacks.calibration_eval import CalibrationEvalCallback, CalibrationEvalConfig

sys.path.insert(0, str(Path(__file__).parent))
from callback_helpers import ITEMS

LIMITS = (8, 7)  # all items (4 + 4 per rank) and an odd count (uneven shards)


def main(model_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist = PartialState(cpu=True)  # a MULTI_CPU (gloo) world under torchrun
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    # AutoTokenizer maps a folder with a qwen2 config.json to Qwen2Tokenizer, not the tiny word-level one
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    out = Path(out_dir)
    result = {"world_size": dist.num_processes, "rank": dist.process_index,
              "distributed_type": str(dist.distributed_type), "evals": {}}
    for limit in LIMITS:
        callback = CalibrationEvalCallback(CalibrationEvalConfig(
            eval_items=ITEMS, eval_limit=limit, batch_size=2, max_new_tokens=12))
        args = SimpleNamespace(output_dir=str(out / f"limit-{limit}"))
        state = TrainerState(epoch=1.0, global_step=5, is_world_process_zero=dist.is_main_process,
                             is_local_process_zero=dist.is_local_main_process)
        evaluated = callback.evaluate("epoch-1", args, state, model=model, processing_class=tokenizer)
        result["evals"][str(limit)] = {
            "metrics": evaluated.metrics,
            "logged": evaluated.logged,
            "records": [r.to_json() for r in evaluated.records],
        }
    (out / f"rank-{dist.process_index}.json").write_text(json.dumps(result, allow_nan=True))
    dist.wait_for_everyone()
    torch.distributed.destroy_process_group()  # a gloo group left open can abort the process at exit


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
