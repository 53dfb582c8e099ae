"""A process that draws reliability diagrams, so that a training process never runs matplotlib itself.

``python -m calrl.eval.plot_worker`` reads one JSON job per line on stdin, ``{"id": ..., "metrics": PATH,
"label": ..., "out": PATH}``: it draws the diagram of the metrics file (``metrics.json`` as ``calrl eval`` and
the calibration callback write it) with :func:`calrl.eval.plots.render_reliability`, writes it to ``out``
(write, then rename) and answers one JSON line on stdout, ``{"id": ..., "error": null}`` or the error's text.
It ends when stdin closes. :class:`calrl.callbacks.plot_queue.PlotQueue` starts it and reads its answers.
"""

from __future__ import annotations

import json
import sys

from calrl.eval.plots import render_reliability  # imports matplotlib at start, before the first job arrives
from calrl.io import write_bytes


def main() -> int:
    for line in sys.stdin:
        job = json.loads(line)
        try:
            with open(job["metrics"], encoding="utf-8") as f:
                metrics = json.load(f)
            label = job["label"]
            write_bytes(job["out"], render_reliability(metrics, labels=[label], title=f"Reliability, {label}"))
            error = None
        except Exception as exc:  # noqa: BLE001 - answered to the training process, which raises it
            error = f"{type(exc).__name__}: {exc}"
        print(json.dumps({"id": job["id"], "error": error}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
