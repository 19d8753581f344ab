"""Covariates: extra fixed effects, centred at their mean and never part of the contrast.

A covariate is a numeric column of a flat table, a key of run.json's ``covariates``, or one the
analysis derives itself (:data:`~transferstats.analysis.derive.BUILTIN_COVARIATES`). Each must
have a value on every modelled row and vary; it is centred so that the other effects hold at
its average value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from transferstats.analysis.derive import (
    BUILTIN_COVARIATES,
    OUTCOMES,
    ROW_OUTCOMES,
    builtin_covariate_values,
)
from transferstats.loading import LoadedResults
from transferstats.problems import Problem, ResultsError
from transferstats.results import BASELINE_MIX, SOURCE_KIND_COLUMN

#: Columns of the model data a covariate may not be named like (and names with ``[`` or ``:``,
#: which name model terms).
RESERVED_COLUMNS = frozenset({
    "Intercept", "run_id", "model", "mix", "mix_tasks", SOURCE_KIND_COLUMN, "target_task", "seed",
    "language", "metric", "split", "value", "stderr", "n_examples", "score_row", "baseline",
    "target_language", "n_tasks", "n_formats", "effective_tasks", "examples", "diversity",
    "volume", "fitted", "residual", "english", "mix_target", *OUTCOMES})


@dataclass(frozen=True)
class Covariate:
    """One covariate as modelled: where it comes from and its spread before centring."""

    name: str
    source: str
    mean: float
    sd: float
    min: float
    max: float

    @property
    def unit(self) -> str:
        return f"points per unit of {self.name} (centred at its mean {self.mean:.3g})"


def add_covariate_columns(scores: pd.DataFrame, loaded: LoadedResults, names: Sequence[str],
                          kind: str) -> pd.DataFrame:
    """Check that each requested covariate exists; add the built-in ones as columns."""
    errors = []
    available = sorted(loaded.covariate_problems)
    for name in names:
        if name in RESERVED_COLUMNS or "[" in name or ":" in name:
            errors.append(Problem(loaded.source, f"covariates.{name}", "error",
                                  f"{name!r} cannot be a covariate: it names a column or term the "
                                  "analysis derives itself"))
        elif name in BUILTIN_COVARIATES:
            if name in scores.columns:
                errors.append(Problem(loaded.source, f"covariates.{name}", "error",
                                      f"the results have a column {name!r}, which is also a "
                                      "built-in covariate; rename the column"))
            else:
                try:
                    scores = scores.assign(**{name: builtin_covariate_values(scores, name, kind)})
                except ValueError as error:
                    errors.append(Problem(loaded.source, f"covariates.{name}", "error", str(error)))
        elif name not in available:
            errors.append(Problem(loaded.source, f"covariates.{name}", "error",
                                  f"no covariate {name!r}: expected a numeric column of the flat "
                                  "table, a key of run.json's 'covariates', or one of "
                                  f"{', '.join(BUILTIN_COVARIATES)} (available: "
                                  f"{', '.join(available) or 'none'})"))
    if errors:
        raise ResultsError(list(loaded.problems) + errors)
    return scores


def _value_errors(rows: pd.DataFrame, loaded: LoadedResults, name: str) -> list[Problem]:
    """The loader's problems (file and row or key) of the rows whose value of ``name`` is missing."""
    known = loaded.covariate_problems.get(name, {})
    bad = rows.loc[rows[name].isna(), "score_row"]
    found = dict.fromkeys(known[row] for row in bad if row in known)
    return list(found) or [Problem(loaded.source, f"covariates.{name}", "error",
                                   f"{len(bad)} rows have no value of covariate {name!r}")]


def check_run_covariates(scores: pd.DataFrame, loaded: LoadedResults, names: Sequence[str],
                         outcome: str) -> None:
    """Run-level outcomes need each covariate once per run: present and constant in the run."""
    if outcome in ROW_OUTCOMES:
        return
    rows = scores[scores["mix"] != BASELINE_MIX]
    files = dict(zip(loaded.runs["run_id"], loaded.runs["file"], strict=True))
    errors = []
    for name in names:
        if rows[name].isna().any():
            errors += _value_errors(rows, loaded, name)
            continue
        varying = rows.groupby("run_id")[name].nunique()
        for run_id in varying[varying > 1].index:
            errors.append(Problem(files.get(run_id, loaded.source), f"covariates.{name}", "error",
                                  f"covariate {name!r} takes several values in run {run_id!r}; "
                                  f"the run-level outcome {outcome!r} needs one per run"))
    if errors:
        raise ResultsError(list(loaded.problems) + errors)


def centre_covariates(data: pd.DataFrame, loaded: LoadedResults, names: Sequence[str],
                      kind: str) -> tuple[pd.DataFrame, tuple[Covariate, ...]]:
    """Every modelled row needs a value of every covariate, and a covariate must vary; each is
    centred at its mean over the modelled rows. Returns the data and each covariate."""
    errors, described = [], []
    for name in names:
        values = data[name].astype(float)
        if values.isna().any():
            errors += _value_errors(data, loaded, name)
            continue
        if np.ptp(values.to_numpy()) == 0:
            errors.append(Problem(loaded.source, f"covariates.{name}", "error",
                                  f"covariate {name!r} is {values.iloc[0]:g} in every modelled row: "
                                  "its effect cannot be estimated"))
            continue
        mean = float(values.mean())
        data = data.assign(**{name: values - mean})
        source = ("built in: " + BUILTIN_COVARIATES[name][kind] if name in BUILTIN_COVARIATES
                  else "from the results")
        described.append(Covariate(name, source, mean, float(values.std(ddof=1)),
                                   float(values.min()), float(values.max())))
    if errors:
        raise ResultsError(list(loaded.problems) + errors)
    return data, tuple(described)
