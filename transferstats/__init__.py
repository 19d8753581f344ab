"""transferstats: does intermediate-task diversity make zero-shot cross-lingual transfer more robust
than intermediate data volume? Runs the three-phase training grid and analyses it.

The Python API lives in :mod:`transferstats.api` and is available here::

    import transferstats as ts
    result = ts.analyze("results/")
    result.verdict, result.effects, result.summary(), result.write_report("reports/x")

It is imported on first use, so that ``import transferstats`` (and the command line) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from transferstats.api import (AnalysisResult, AnalysisSpec, CrossedFit, LoadedResults, Problem,
                                   ResultsError, SimulationSettings, Task, analyze, fit_crossed,
                                   get_task, likelihood_ratio_test, load_results, load_spec,
                                   register_task, simulate_results, task_scope)

_API = ("AnalysisResult", "AnalysisSpec", "CrossedFit", "LoadedResults", "Problem", "ResultsError",
        "SimulationSettings", "Task", "analyze", "fit_crossed", "get_task", "likelihood_ratio_test",
        "load_results", "load_spec", "register_task", "simulate_results", "task_scope")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("transferstats.api"), name)
    raise AttributeError(f"module 'transferstats' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
