"""One ``calrl eval``: generate from a checkpoint or read a predictions file, score, and write every output.

:func:`run_eval` is what the command does once its options are parsed (``calrl/cli/eval_cmd.py`` only parses
them, fills the defaults from a trained run's recipe and prints the summary). Writes ``metrics.json`` (metrics,
and ``config`` and ``versions`` blocks to run it again), ``samples.jsonl``, ``reliability.png``, ``report.md``,
``report.html``, ``resolved.jsonl`` and, when generating, ``predictions.jsonl``: all together or none.
"""

from __future__ import annotations

import datetime
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calrl.confidence import ConfidenceReader
from calrl.data.columns import PredictionColumns
from calrl.data.records import RESOLVED_ROWS, SAMPLE_ROWS, sample_pairs
from calrl.errors import InputError
from calrl.eval.loading import ResolvedPredictions, resolve_predictions
from calrl.eval.plots import plot_reliability
from calrl.eval.report import write_report
from calrl.eval.resolving import resolve_records
from calrl.eval.runner import compute_results
from calrl.eval.schema import SCHEMA_VERSION, Generation, Provenance, RunConfig, collect_versions
from calrl.generation.adapters import split_adapter_folder
from calrl.generation.prompt_template import load_prompt_template
from calrl.generation.prompts import ElicitationPrompt
from calrl.io import input_hashes, staged_dir
from calrl.jsonio import write_json, write_jsonl
from calrl.progress import is_main_process, quiet_library_bars


@dataclass(frozen=True)
class EvalRequest:
    """Everything one eval needs, named as ``calrl eval``'s options (``--no-hedges`` is ``no_hedges``); every
    value is given (the command fills the defaults)."""

    out: Path
    predictions: str | None
    model: str | None
    adapter: str | None
    dataset: str | None
    split: str | None
    limit: int | None
    sample_seed: int | None
    prompt_template: str | None
    option_format: str | None
    prompt_scale: str
    reasons_first: bool
    distractor: bool
    prompt_style: str
    batch_size: int
    max_new_tokens: int
    num_samples: int
    temperature: float
    do_sample: bool
    top_k: int
    generation_seed: int | None
    retry_when: str
    forced_retry_tokens: int | None
    confidence_retries: int
    confidence_parser: str
    no_hedges: bool
    grader: str
    missing_confidence: str
    bins: int
    min_slice_size: int
    bootstrap: int
    seed: int
    title: str | None


def run_eval(req: EvalRequest) -> Any:
    """Run one eval and write its outputs into ``req.out`` (checked by the caller); the EvalResults, or None on a
    process other than the main one under ``accelerate launch`` / ``torchrun`` (every rank generates its shard,
    the main one writes)."""
    started = time.time()
    if req.model is not None:
        records = generate_records(req)
        source = f"{req.model} on {req.dataset}"
        if not is_main_process():
            return None
        resolved = resolve_records(records, use_hedges=not req.no_hedges, grader=req.grader,
                                   confidence_parser=req.confidence_parser)
        done = ResolvedPredictions(PredictionColumns.of(records), resolved, None)
    else:  # errors name the file and line of the item
        done = resolve_predictions(req.predictions, use_hedges=not req.no_hedges, grader=req.grader,
                                   confidence_parser=req.confidence_parser)
        records, source = None, str(req.predictions)
    gc.freeze()  # the records are acyclic and kept to the end: later collections need not walk them again
    try:
        return _score_and_write(req, req.out, source, records, done, started)
    finally:
        gc.unfreeze()


def _score_and_write(req: EvalRequest, out: Path, source: str, records: list[Any] | None,
                     done: ResolvedPredictions, started: float) -> Any:
    """Metrics, then every output file into a staging folder renamed onto ``out``; ``records`` are the
    generated ones (None for a predictions file)."""
    resolved, groups = done.resolved, done.groups

    try:
        results = compute_results(resolved, n_bins=req.bins, missing_policy=req.missing_confidence,
                                  min_slice_size=req.min_slice_size, n_boot=req.bootstrap, seed=req.seed,
                                  groups=groups)
    except InputError as exc:
        if exc.path is not None or req.predictions is None:
            raise
        raise InputError(str(exc), path=str(req.predictions)) from None
    _describe_run(results, req, source, records, started)
    title = req.title or f"Calibration report: {results.model_label}"

    with staged_dir(out) as tmp:
        if records is not None:
            write_jsonl(tmp / "predictions.jsonl", (r.to_json() for r in records))
        _write_items(tmp, done)
        write_json(tmp / "metrics.json", results.to_json())
        plot_reliability(results, tmp / "reliability.png", labels=[_legend_label(results)],
                         title="Reliability diagram")
        write_report(results, tmp, title, examples=resolved, groups=groups)

    return results



def _write_items(folder: Path, done: ResolvedPredictions) -> None:
    """resolved.jsonl (item level, what calrl compare reads) and samples.jsonl (lm-evaluation-harness' names
    too); a group's shared part written once (calrl.eval.resolving.group_records)."""
    table, resolved, groups = done.table, done.resolved, done.groups
    if groups is None:
        records = table.records()
        RESOLVED_ROWS.write(folder / "resolved.jsonl", zip(resolved))
        SAMPLE_ROWS.write(folder / "samples.jsonl", sample_pairs(records, resolved))
        return
    RESOLVED_ROWS.write_grouped(folder / "resolved.jsonl", [table["id"]], groups, lambda g: (resolved[g],))
    SAMPLE_ROWS.write_grouped(folder / "samples.jsonl", [table["id"], range(len(table)), table["prompt"],
                                                         table["question"]], groups,
                              lambda g: (g, table.record(g), resolved[g]))  # a group is named by its first row


def _describe_run(results: Any, req: EvalRequest, source: str, records: list[Any] | None, started: float) -> None:
    """Fill the reproducibility blocks of metrics.json: what was evaluated, how, when, from which files, and
    with which versions."""

    config = RunConfig(missing_confidence=req.missing_confidence, grader=req.grader,
                       confidence_parser=req.confidence_parser, use_hedges=not req.no_hedges, bins=req.bins)
    if req.model is not None:
        model, adapter = (req.model, req.adapter) if req.adapter else split_adapter_folder(req.model)
        config.model, config.adapter, config.dataset, config.split = model, adapter, req.dataset, req.split
        config.limit, config.sample_seed = req.limit, req.sample_seed
        config.prompt_scale = req.prompt_scale
        config.prompt_template, config.option_format = req.prompt_template, req.option_format
        config.prompt_style = "template" if req.prompt_template else req.prompt_style
        config.reasons_first, config.distractor = req.reasons_first, req.distractor
        config.generation = Generation(batch_size=req.batch_size, max_new_tokens=req.max_new_tokens,
                                       num_samples=req.num_samples, temperature=req.temperature,
                                       do_sample=req.do_sample, top_k=req.top_k, seed=req.generation_seed,
                                       retry_when=req.retry_when, forced_max_new_tokens=req.forced_retry_tokens,
                                       **retry_counts(records, req.confidence_retries))
    else:
        config.predictions = str(req.predictions)
    date = datetime.datetime.fromtimestamp(started, tz=datetime.UTC).isoformat(timespec="seconds")
    results.source, results.config = source, config
    results.provenance = Provenance(date=date, duration_s=round(time.time() - started, 3),
                                    inputs=input_hashes(_local_inputs(req)))
    results.versions, results.schema_version = collect_versions(), SCHEMA_VERSION



def _local_inputs(req: EvalRequest) -> list[Path]:
    """The local files and folders the command read: the predictions, or the dataset when it is a local copy
    (``PATH`` or ``NAME:PATH``; a set read from the hub has no local file to hash) and the prompt template."""
    if req.model is None:
        return [Path(req.predictions)]
    paths = [Path(req.prompt_template)] if req.prompt_template else []
    for candidate in (req.dataset, req.dataset.partition(":")[2]):
        if candidate and Path(candidate).exists():
            return [Path(candidate), *paths]
    return paths



def _legend_label(results: Any) -> str:
    """The reliability legend's name for what was evaluated: the model, else the predictions file's name."""
    if results.config is not None and results.config.model:
        return results.model_label
    return Path(results.source).name or results.source



def predict_from_checkpoint(**kwargs: Any) -> list[Any]:
    """:func:`calrl.generation.checkpoint.predict_from_checkpoint`, imported when first called: it loads
    transformers (about 1 s), which scoring a predictions file does not need."""
    from calrl.generation.checkpoint import predict_from_checkpoint as predict  # transformers: see above

    return predict(**kwargs)


def generate_records(req: EvalRequest) -> list[Any]:
    template = None
    if req.prompt_template:
        template = load_prompt_template(req.prompt_template)
    quiet_library_bars()  # in a log: no weight-loading bar (generation shows its own progress)
    prompt = ElicitationPrompt(scale=req.prompt_scale, reasons_first=req.reasons_first,
                               distractor=req.distractor, style=req.prompt_style, template=template,
                               option_format=req.option_format)
    return predict_from_checkpoint(model=req.model, adapter=req.adapter, dataset=req.dataset,
                                   split=req.split, limit=req.limit, sample_seed=req.sample_seed, prompt=prompt,
                                   batch_size=req.batch_size, max_new_tokens=req.max_new_tokens,
                                   num_samples=req.num_samples, temperature=req.temperature,
                                   confidence_retries=req.confidence_retries,
                                   reader=ConfidenceReader(req.confidence_parser, purpose="eval",
                                                           use_hedges=not req.no_hedges),
                                   do_sample=req.do_sample, top_k=req.top_k, seed=req.generation_seed,
                                   retry_when=req.retry_when, forced_max_new_tokens=req.forced_retry_tokens)



def retry_counts(records: list[Any], tries: int) -> dict[str, int]:
    """metrics.json's retry fields: the rule's N, items retried, extra generations in all."""
    counts = [r.retries or 0 for r in records]
    return {"confidence_retries": tries, "retried_items": sum(1 for c in counts if c),
            "retry_generations": sum(counts)}
