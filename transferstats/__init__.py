"""transferstats: intermediate-task diversity versus volume for zero-shot cross-lingual transfer.

Does the diversity of what a model is trained on before its target task make transfer more robust
than the volume of that data? transferstats runs the three-phase training grid (encoder ->
English intermediate tasks -> English target task, evaluated zero-shot in every XTREME language)
and analyses it.

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
    from transferstats.api import (
        AnalysisResult,
        AnalysisSpec,
        CrossedFit,
        LoadedResults,
        MixedFit,
        Problem,
        ResultsError,
        SimulationSettings,
        Task,
        analyze,
        fit_crossed,
        fit_formula,
        get_task,
        kenward_roger,
        likelihood_ratio_test,
        load_results,
        load_spec,
        reduce_slopes,
        register_task,
        satterthwaite,
        simulate_results,
        task_scope,
    )

__all__ = [
    "AnalysisResult",
    "AnalysisSpec",
    "CrossedFit",
    "LoadedResults",
    "MixedFit",
    "Problem",
    "ResultsError",
    "SimulationSettings",
    "Task",
    "__version__",
    "analyze",
    "fit_crossed",
    "fit_formula",
    "get_task",
    "kenward_roger",
    "likelihood_ratio_test",
    "load_results",
    "load_spec",
    "reduce_slopes",
    "register_task",
    "satterthwaite",
    "simulate_results",
    "task_scope",
]


#: Names served from their own module rather than the API's, so that a first ``ts.fit_crossed``
#: imports the solver alone, not the whole analysis pipeline and its plotting libraries.
_SOLVER = ("CrossedFit", "fit_crossed", "likelihood_ratio_test")


#: Likewise the random-slope model and its inference, each from its own module.
_SLOPES = {"MixedFit": "lmm", "fit_formula": "lmm", "satterthwaite": "inference",
           "kenward_roger": "kenward_roger", "reduce_slopes": "slope_reduction"}


def __getattr__(name: str) -> Any:
    if name in _SOLVER:
        return getattr(importlib.import_module("transferstats.analysis.mixed"), name)
    if name in _SLOPES:
        return getattr(importlib.import_module(f"transferstats.analysis.{_SLOPES[name]}"), name)
    if name in __all__:
        return getattr(importlib.import_module("transferstats.api"), name)
    raise AttributeError(f"module 'transferstats' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
