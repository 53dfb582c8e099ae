"""The runnable examples in calrl.metrics' docstrings: every one passes, and every public metric has one.

The examples print rounded floats (or values exact in binary), so they pass on every CPU code path
(``make test-cpu-paths`` runs this file under MKL_CBWR=AVX2/COMPATIBLE and ATEN_CPU_CAPABILITY=default).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import calrl.metrics

MODULES = sorted(f"calrl.metrics.{info.name}" for info in pkgutil.iter_modules(calrl.metrics.__path__))


def test_the_modules_are_found():
    assert {"calrl.metrics.binning", "calrl.metrics.calibration", "calrl.metrics.scores"} <= set(MODULES)


@pytest.mark.parametrize("name", ["calrl.metrics", *MODULES])
def test_docstring_examples_pass(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see stdout)"


@pytest.mark.parametrize("name", calrl.metrics.__all__)
def test_every_public_metric_has_an_example(name):
    fn = getattr(calrl.metrics, name)
    tests = doctest.DocTestFinder(recurse=False).find(fn, name)
    examples = sum(len(t.examples) for t in tests)
    assert examples > 0, f"calrl.metrics.{name} has no '>>>' example in its docstring"
    # test_docstring_examples_pass runs it only if the function lives in one of the modules it runs
    assert fn.__module__ in MODULES, f"calrl.metrics.{name} is defined outside calrl.metrics: {fn.__module__}"
