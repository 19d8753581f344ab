"""Fit a built model: REML fit, tests, intervals.

The step after :func:`transferstats.analysis.model.build_model`. A model of random intercepts
(:func:`fit_model`) is fitted by REML with :func:`~transferstats.analysis.mixed.fit_crossed`,
each term tested by an ML likelihood-ratio test, every output bootstrapped -- crossed cluster
resamples, or parametric ones where the design calls for them. A model with target-specific
slopes (:func:`fit_slopes_model`) is about the average effect over targets like these: its
intervals and p-values are Wald t on Satterthwaite's degrees of freedom, which a percentile
bootstrap of a few targets cannot match. Both give :func:`output_table`'s columns.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from threadpoolctl import threadpool_limits

from transferstats.analysis.bootstrap import BootstrapResult, crossed_bootstrap
from transferstats.analysis.inference import satterthwaite
from transferstats.analysis.kenward_roger import kenward_roger, kenward_roger_affordable
from transferstats.analysis.lmm import MixedFit
from transferstats.analysis.mixed import CrossedFit, fit_crossed
from transferstats.analysis.parametric import ParametricBootstrap, parametric_bootstrap
from transferstats.analysis.slope_reduction import Reduction, reduce_slopes

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
    df_method: str = "satterthwaite"


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


#: The columns of every fitted model's :func:`output_table`.
OUTPUT_COLUMNS = ["estimate", "se", "df", "ci_low", "ci_high", "p_value", "p_value_wald", "chi2",
                  "bootstrap_se", "percentile_ci_low", "percentile_ci_high"]


def output_table(model: FittedModel) -> pd.DataFrame:
    """Every output of a bootstrapped model (terms, contrast, identity outputs), one row each:
    the estimate, the model's Wald SE (the bootstrap SE for outputs that are not terms), the
    chosen bootstrap interval, the ML likelihood-ratio test of a term, the percentile interval."""
    frame = model.fit.summary_frame().set_index("term")
    wald_se, wald_p = frame["se"].to_dict(), frame["p_value"].to_dict()
    rows = {}
    for name, interval in model.intervals.items():
        test = model.tests.get(name, {})
        rows[name] = {"estimate": float(model.boot.estimate[name]),
                      "se": float(wald_se.get(name, interval["se"])),
                      "df": np.nan, "ci_low": interval["ci_low"], "ci_high": interval["ci_high"],
                      "p_value": test.get("p_value", np.nan),
                      "p_value_wald": float(wald_p.get(name, np.nan)),
                      "chi2": test.get("chi2", np.nan),
                      "bootstrap_se": interval["se"],
                      "percentile_ci_low": model.percentile[name]["ci_low"],
                      "percentile_ci_high": model.percentile[name]["ci_high"]}
    return pd.DataFrame.from_dict(rows, orient="index", columns=OUTPUT_COLUMNS)


@dataclass
class SlopesModel:
    """A model with target-specific slopes: REML fit, reduced only where singular, and Wald t
    inference on every output with Satterthwaite's (or Kenward-Roger's) degrees of freedom."""

    reduction: Reduction
    table: pd.DataFrame
    method: str
    #: What the fit and its inference warned of (a singular fit's Satterthwaite df, say).
    notes: tuple[str, ...] = ()
    n_failed: int = 0
    failed_share: float = 0.0

    @property
    def fit(self) -> MixedFit:
        return self.reduction.fit


def fit_slopes_model(data: pd.DataFrame, outcome: str, fixed: list[str], random: list[str],
                     slopes: dict[str, tuple[str, ...]], contrasts: dict[str, dict[str, float]],
                     level: float, df_method: str) -> SlopesModel:
    """Fit the slopes model (:func:`~transferstats.analysis.slope_reduction.reduce_slopes`) and
    test each term and contrast by a Wald t on Satterthwaite's degrees of freedom (lmerTest), or
    Kenward-Roger's (pbkrtest) where ``df_method`` asks for it and the model is small enough."""
    with threadpool_limits(1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reduction = reduce_slopes(data, outcome, fixed, random, slopes)
        outputs = {term: {term: 1.0} for term in fixed} | contrasts
        method = "Satterthwaite"
        sloped = any(c != "Intercept" for t in reduction.fit.terms for c in t.columns)
        if df_method == "kenward-roger" and sloped:
            affordable, why = kenward_roger_affordable(reduction.fit)
            if not affordable:
                raise ValueError(f"df_method = \"kenward-roger\": {why}; use \"satterthwaite\"")
            table, method = kenward_roger(reduction.fit, outputs, level), "Kenward-Roger"
        else:
            table = satterthwaite(reduction.fit, outputs, level)
    table = table.set_index("contrast")
    table = table.assign(p_value_wald=table["p_value"], chi2=np.nan, bootstrap_se=np.nan,
                                               percentile_ci_low=np.nan,
                                               percentile_ci_high=np.nan)
    notes = tuple(dict.fromkeys(str(w.message) for w in caught))
    return SlopesModel(reduction, table[OUTPUT_COLUMNS], method, notes)
