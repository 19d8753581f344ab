"""Fit a built model: REML fit, likelihood-ratio tests, bootstrap, intervals.

:func:`fit_model` is the step after :func:`transferstats.analysis.model.build_model`: it fits
the model by REML with :func:`~transferstats.analysis.mixed.fit_crossed`, tests each term by an
ML likelihood-ratio test and bootstraps every output -- crossed cluster resamples, or
parametric ones for a model with identity effects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from threadpoolctl import threadpool_limits

from transferstats.analysis.bootstrap import BootstrapResult, crossed_bootstrap
from transferstats.analysis.mixed import CrossedFit, fit_crossed
from transferstats.analysis.parametric import ParametricBootstrap, parametric_bootstrap

#: Bootstrap output -> ``{"ci_low", "ci_high", "se"}``.
Intervals = dict[str, dict[str, float]]


@dataclass(frozen=True)
class BootstrapSettings:
    """How to bootstrap: the analysis settings the bootstraps read."""

    outcome: str
    resamples: int
    seed: int
    level: float
    interval: str
    units: tuple[str, ...]
    n_jobs: int | None = None
    progress: bool = True
    scheduler: str = ""


@dataclass
class FittedModel:
    """One model, fitted by REML, its terms tested by ML likelihood-ratio tests and bootstrapped.

    ``core`` are the outputs a resample must estimate to count (the effects and the contrast):
    where one of them is missing the resample is failed for all of them, so that every core
    interval rests on the same resamples. Identity outputs may be missing on their own, in the
    resamples that hold no mix with the task (:func:`transferstats.analysis.bootstrap.refit`).
    """

    fixed: list[str]
    random: list[str]
    fit: CrossedFit
    boot: BootstrapResult | ParametricBootstrap
    intervals: Intervals
    percentile: Intervals
    tests: dict[str, dict]
    n_failed: int

    @property
    def failed_share(self) -> float:
        return self.n_failed / self.boot.n_resamples


def bootstrap(data: pd.DataFrame, settings: BootstrapSettings, fixed: Sequence[str],
              random: Sequence[str], contrasts: dict[str, dict[str, float]],
              parametric_df: float | None, fit: CrossedFit | None = None
              ) -> BootstrapResult | ParametricBootstrap:
    """The crossed cluster bootstrap; the parametric one (with its t widening on
    ``parametric_df`` degrees of freedom) for a model with identity effects, whose many
    mix-level coefficients make resampling mixes badly conservative
    (:mod:`transferstats.analysis.parametric`). ``fit``: the model's REML fit, if made."""
    if parametric_df is not None:
        return parametric_bootstrap(data, settings.outcome, fixed, random, df=parametric_df,
                                    contrasts=contrasts, n_resamples=settings.resamples,
                                    seed=settings.seed, n_jobs=settings.n_jobs, fit=fit,
                                    progress=settings.progress, scheduler=settings.scheduler)
    return crossed_bootstrap(data, settings.outcome, fixed, random, units=settings.units,
                             contrasts=contrasts, n_resamples=settings.resamples,
                             seed=settings.seed, n_jobs=settings.n_jobs,
                             progress=settings.progress, fit=fit,
                             scheduler=settings.scheduler)


def fit_model(data: pd.DataFrame, settings: BootstrapSettings, fixed: list[str],
              random: list[str], contrasts: dict[str, dict[str, float]], core: list[str], *,
              tested: list[str], parametric_df: float | None = None) -> FittedModel:
    """REML fit, ML likelihood-ratio tests of ``tested``, bootstrap of every output.

    The fits run on one BLAS thread, as the bootstrap's workers do: their matrices are small
    (levels of the random factors other than the largest), and several threads on them cost more
    in synchronisation than they save, badly so on shared cores (measured on the 455-mix grid of
    benchmarks/single_factor_speed.py: 0.9 s against 0.25 s for one REML fit). Raises
    ``ValueError`` (or ``LinAlgError``) when the model cannot be fitted."""
    with threadpool_limits(1):
        fit = fit_crossed(data, settings.outcome, fixed, random, reml=True)
        tests = term_tests(data, settings.outcome, fixed, random, tested, fit.relative_sds)
    boot = bootstrap(data, settings, fixed, random, contrasts, parametric_df, fit)
    core = [c for c in core if c in boot.draws.columns]
    failed = boot.draws[core].isna().any(axis=1)
    boot.draws.loc[failed, core] = np.nan
    return FittedModel(fixed, random, fit, boot, intervals_of(boot, settings.level, settings.interval),
                       intervals_of(boot, settings.level, "percentile"), tests, int(failed.sum()))


def intervals_of(boot: BootstrapResult | ParametricBootstrap, level: float, kind: str) -> Intervals:
    """Interval and bootstrap SE of every output (NaN where fewer than 10 resamples gave one)."""
    intervals = {}
    for name in boot.draws.columns:
        draws = boot.draws[name].to_numpy(dtype=float)
        finite = int(np.isfinite(draws).sum())
        low, high = boot.interval(name, level, kind) if finite >= 10 else (np.nan, np.nan)
        intervals[str(name)] = {"ci_low": float(low), "ci_high": float(high),
                                "se": float(np.nanstd(draws, ddof=1)) if finite >= 2 else np.nan}
    return intervals


def term_tests(data: pd.DataFrame, outcome: str, fixed: list[str], random: list[str],
               terms: list[str], start: dict[str, float] | None = None) -> dict[str, dict]:
    """ML likelihood-ratio test of each term, chi2(1): the full model is fitted once, from
    ``start`` (the REML fit's theta), and each reduced model from the full model's optimum."""
    full = fit_crossed(data, outcome, fixed, random, reml=False, start=start)
    tests = {}
    for term in terms:
        reduced = fit_crossed(data, outcome, [f for f in fixed if f != term], random,
                              reml=False, start=full.relative_sds)
        chi2 = max(2 * (full.llf - reduced.llf), 0.0)
        tests[term] = {"chi2": float(chi2), "df": 1, "p_value": float(stats.chi2.sf(chi2, 1))}
    return tests


def nested_test(data: pd.DataFrame, outcome: str, fixed: list[str], reduced: list[str],
                random: list[str]) -> dict:
    """ML likelihood-ratio test of a model against a nested one with fewer fixed terms (on one
    BLAS thread, as in :func:`fit_model`)."""
    with threadpool_limits(1):
        full_fit = fit_crossed(data, outcome, fixed, random, reml=False)
        reduced_fit = fit_crossed(data, outcome, reduced, random, reml=False,
                                  start=full_fit.relative_sds)
    chi2 = max(2 * (full_fit.llf - reduced_fit.llf), 0.0)
    df = len(fixed) - len(reduced)
    return {"chi2": float(chi2), "df": int(df), "p_value": float(stats.chi2.sf(chi2, df))}
