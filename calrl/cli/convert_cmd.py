"""``calrl convert-rm``: turn another framework's reward or critic checkpoint into a Hugging Face sequence classifier.

    calrl convert-rm --from openrlhf OpenLLMAI/Llama-3-8b-rm-mixture --out models/llama3-8b-rm

An OpenRLHF checkpoint (base weights plus a ``value_head``, its reward mean and std in ``config.json``) becomes
the architecture's ``*ForSequenceClassification`` with a ``score`` head and calrl's stored reward statistics
(``normalize_reward: true`` reads them), scoring as the original does. SRC is a local folder or a hub id
(downloaded into the Hugging Face cache). The output appears whole or not at all.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from calrl.cli import options
from calrl.errors import InputError, reports_os_errors

FORMATS = ("openrlhf",)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("convert-rm", help="convert an OpenRLHF reward or critic model to a Hugging Face "
                              "sequence classifier", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source_format", required=True, choices=FORMATS, help="the checkpoint's format")
    p.add_argument("source", metavar="SRC", type=options.non_empty_path, help="checkpoint folder or hub id")
    p.add_argument("--out", required=True, metavar="DIR", type=options.non_empty_path, help="output folder")
    p.add_argument("--value-head-prefix", default="value_head",
                   help="name of the value head in the checkpoint (OpenRLHF's --value_head_prefix)")
    options.add_overwrite(p, "a model already in --out")
    p.set_defaults(func=run)


@reports_os_errors
def run(args: argparse.Namespace) -> int:
    # lazy: the conversion loads torch and transformers, which `calrl convert-rm --help` must not
    from calrl.io import check_output, staged_dir
    from calrl.reward_modeling.convert import convert_openrlhf

    source = Path(args.source).expanduser()
    if source.exists() and Path(args.out).expanduser().resolve() == source.resolve():
        raise InputError("--out is the checkpoint being converted; choose another folder", path=args.out)
    out = check_output(args.out, option="--out", kind="dir", inputs=[args.source] if source.exists() else [],
                       outputs=("config.json", "model.safetensors", "model.safetensors.index.json"),
                       overwrite=args.overwrite)
    with staged_dir(out) as stage:
        done = convert_openrlhf(args.source, stage, value_head_prefix=args.value_head_prefix)
        if out.is_dir():  # --overwrite: weights of an earlier conversion that the new one does not replace
            for old in (*out.glob("model*.safetensors"), *out.glob("model*.safetensors.index.json")):
                if not (stage / old.name).exists():
                    old.unlink()
    print(f"converted {args.source} (OpenRLHF, '{args.value_head_prefix}.weight') -> {out}: {done.architecture}, "
          f"{done.tensors} tensors in {len(done.files)} file(s), head '{done.head}'")
    if done.stats is not None:
        print(f"reward statistics from its config: mean {done.stats['mean']:.6g}, std {done.stats['std']:.6g} "
              "(config.json calrl_reward_mean / calrl_reward_std, reward_stats.json; read by normalize_reward)")
    else:
        print("warning: its config holds no mean/std: normalize_reward has no statistics to read")
    return 0
