#!/usr/bin/env bash
# Creates scripts/ppo_parity/.venv: an isolated environment with trl 1.12.0 (the last
# release with PPO) for recording the PPO parity fixture and running the trl benchmark.
# torch is installed FIRST and pinned, so the later installs never replace it (no CUDA wheel).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
VENV="$HERE/.venv"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install --upgrade pip >/dev/null
# 1) CPU torch first (from the local wheel cache / CPU index when available).
$PIP install "torch==2.13.0"
TORCH_VERSION="$($VENV/bin/python -c 'import torch; print(torch.__version__)')"
# 2) trl 1.12.0 and the versions it was verified with (methods.md sec 8); torch stays pinned.
$PIP install "torch==${TORCH_VERSION}" \
    "trl==1.12.0" "transformers==5.23.0" "accelerate==1.15.0" "datasets==5.2.0" "tokenizers==0.23.3"
$VENV/bin/python - <<'PY'
import torch, transformers, trl, accelerate, datasets, tokenizers
print("torch", torch.__version__, "cuda", torch.version.cuda)
print("transformers", transformers.__version__, "trl", trl.__version__,
      "accelerate", accelerate.__version__, "datasets", datasets.__version__,
      "tokenizers", tokenizers.__version__)
assert trl.__version__ == "1.12.0", trl.__version__
assert torch.version.cuda is None, "a CUDA torch was installed"
from trl.experimental.ppo import PPOConfig, PPOTrainer  # noqa: F401
PY
