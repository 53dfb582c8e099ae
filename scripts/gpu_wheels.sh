#!/usr/bin/env bash
# Download, as Python 3.12 manylinux wheels, the packages a lent GPU machine lacks, into .whl/ (git-ignored),
# and put an offline copy of GSM8K's test split next to them (.whl/gsm8k/test.jsonl), for scripts/gpu_check.sh.
#
#   bash scripts/gpu_wheels.sh            # needs network to PyPI; about 40 MB
#
# Which packages: the dependency closure of calrl's runtime requirements (trl, datasets, wandb, transformers,
# tokenizers, huggingface_hub, safetensors, peft), at the versions installed in .venv, minus what the GPU machine
# already has (see /work/shared/gpu.md: torch, accelerate, torchmetrics, scikit-learn, matplotlib, pandas,
# pyarrow, pyyaml, pytest ... and their own dependencies). Override the roots with ROOTS="a b c".
# On the machine: python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEST=${DEST:-.whl}
ROOTS=${ROOTS:-"trl datasets wandb transformers tokenizers huggingface_hub safetensors peft"}
GSM8K_SRC=${GSM8K_SRC:-/work/shared/data/heldout/gsm8k/test.jsonl}

[ -x "$PY" ] || { echo "gpu_wheels: $PY not found (make install first, or set PY=)" >&2; exit 2; }
mkdir -p "$DEST"

# NAME==VERSION of every package in the closure, from the venv's metadata, markers evaluated for the
# target (CPython 3.12, Linux x86_64), extras not followed.
mapfile -t REQS < <(ROOTS="$ROOTS" "$PY" - <<'EOF'
import importlib.metadata as md
import os
import re

from packaging.requirements import Requirement

TARGET = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
          "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
# On the lent machine already (gpu.md), with what they pull in; never downloaded.
PRESENT = """torch triton numpy scipy scikit-learn pandas pyarrow matplotlib pillow contourpy fonttools kiwisolver
pyparsing cycler python-dateutil six tzdata pytz pyyaml psutil pytest pluggy iniconfig pytest-xdist execnet jinja2
markupsafe networkx sympy mpmath setuptools packaging typing-extensions filelock joblib threadpoolctl torchmetrics
lightning-utilities accelerate certifi idna urllib3 requests charset-normalizer""".split()
# Not needed offline: hf-xet only speeds up hub downloads (huggingface_hub imports it lazily); 4 MB.
PRESENT.append("hf-xet")


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


present = {norm(n) for n in PRESENT}
seen, todo = {}, [norm(r) for r in os.environ["ROOTS"].split()]
while todo:
    name = todo.pop()
    if name in seen or name in present or name.startswith("nvidia-") or name.startswith("cuda-"):
        continue
    dist = md.distribution(name)
    seen[name] = dist.version
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(TARGET):
            todo.append(norm(req.name))
for name in sorted(seen):
    print(f"{name}=={seen[name]}")
EOF
)
echo "gpu_wheels: ${#REQS[@]} packages: ${REQS[*]}"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "${REQS[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

# Keep only the wheels of this list (an older download of another version would be installed too).
keep=$(printf '%s\n' "${REQS[@]}" | sed 's/==/-/; s/[-_.]\+/_/g' | tr 'A-Z' 'a-z')
for whl in "$DEST"/*.whl; do
    base=$(basename "$whl" | tr 'A-Z' 'a-z')
    stem=$(echo "$base" | cut -d- -f1-2 | sed 's/[-_.]\+/_/g')
    grep -qx "$stem" <<<"$keep" || { echo "gpu_wheels: removing stale $(basename "$whl")"; rm -f "$whl"; }
done

if [ -f "$GSM8K_SRC" ]; then
    mkdir -p "$DEST/gsm8k"
    cp "$GSM8K_SRC" "$DEST/gsm8k/test.jsonl"
    echo "gpu_wheels: GSM8K test split copied to $DEST/gsm8k/test.jsonl ($(wc -l < "$DEST/gsm8k/test.jsonl") items)"
else
    echo "gpu_wheels: $GSM8K_SRC not found; gpu_check.sh will use the 6-item fixture tests/fixtures/heldout/gsm8k" >&2
fi
n=$(ls "$DEST"/*.whl | wc -l)
echo "gpu_wheels: $n wheels, $(du -sh "$DEST" | cut -f1) in $DEST (carry it: run(carry=[\"$DEST\"]); limit 64 MiB)"
