"""Random-slope structures reduced only where the fit is singular.

The rule (Bates, Kliegl, Vasishth & Baayen 2015, restricted to singularity): fit the requested
slopes correlated with their factor's intercept; if a variance of that fit is at zero, refit
them uncorrelated; while that is singular, drop the slopes whose variance is at zero. A fit
singular only through a correlation at +-1 is kept correlated: refitting it uncorrelated drops
the slopes' covariance, on which the variance of a contrast of slopes (diversity - volume)
depends, and on simulated grids with correlated slopes that made its interval too narrow
(coverage 0.905 against 0.945 on 400 realistic grids; docs/statistics.md). Intercepts are
never dropped: the intercept-only model has them too. Singular components of the
intercept-only factors (a mix variance at zero, say) do not concern the slopes and leave the
structure alone.

Pruning by likelihood-ratio tests is offered (``prune_alpha``) but not the default: dropping a
slope whose variance is real but not significant makes the fixed effect's interval too narrow.
Barr, Levy, Scheepers & Tily (2013) show the anticonservative cost of dropping slopes;
Matuschek, Kliegl, Vasishth, Baayen & Bates (2017) show that pruning at a liberal level
(alpha = 0.2) buys power at a small cost in Type I error. A verdict is published here, so the
default keeps every slope the data can estimate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import scipy.stats

from transferstats.analysis.formula import INTERCEPT, RandomTerm, random_terms
from transferstats.analysis.lmm import MixedFit, SingularComponent, fit_lmm


@dataclass(frozen=True)
class ReductionStep:
    """One fit of the reduction: its structure, what was singular, and what followed."""

    structure: str
    singular: tuple[SingularComponent, ...]
    decision: str


@dataclass
class Reduction:
    """The final fit and the steps that led to it (:func:`reduce_slopes`)."""

    fit: MixedFit
    steps: list[ReductionStep]

    @property
    def structure(self) -> str:
        """The random part of the final model in lme4's notation."""
        return _structure(self.fit.terms)

    def describe(self) -> str:
        """The steps as sentences, for a report."""
        return "\n".join(f"{k}. {step.structure}: {step.decision}"
                         for k, step in enumerate(self.steps, 1))

    def steps_frame(self) -> pd.DataFrame:
        """One row per step: structure, singular components, decision."""
        return pd.DataFrame({"structure": [s.structure for s in self.steps],
                             "singular": ["; ".join(map(str, s.singular)) for s in self.steps],
                             "decision": [s.decision for s in self.steps]})


#: Fewest levels of a factor for slopes between them: with two, a slope variance (and its
#: correlation with the intercept) rests on one difference.
MIN_SLOPE_LEVELS = 3


@dataclass(frozen=True)
class SlopeEligibility:
    """Which requested slopes the design allows, and why the others are not given."""

    slopes: dict[str, tuple[str, ...]]
    reasons: tuple[str, ...]


def eligible_slopes(data: pd.DataFrame, requested: Mapping[str, Sequence[str]],
                    min_levels: int = MIN_SLOPE_LEVELS) -> SlopeEligibility:
    """The slopes a design allows: a factor with at least ``min_levels`` levels, and a
    predictor that varies within at least ``min_levels`` of them (else its slope is not
    separable from the factor's intercepts).

    Parameters
    ----------
    data : pandas.DataFrame
        The rows to be fitted (missing values left out as the fit would).
    requested : mapping of str to sequence of str
        Factor -> predictors, e.g. ``{"target_task": ["diversity", "volume"]}``.
    min_levels : int, default 3
        Fewest levels for slopes.

    Returns
    -------
    SlopeEligibility
        ``slopes`` (factor -> the predictors allowed; a factor with none is left out) and
        ``reasons``, one sentence per slope not given.
    """
    slopes: dict[str, tuple[str, ...]] = {}
    reasons: list[str] = []
    for factor, predictors in requested.items():
        rows = data[[factor, *predictors]].dropna()
        n_levels = rows[factor].nunique()
        if n_levels < min_levels:
            reasons.append(f"no slopes by {factor}: it has {n_levels} level{'s' * (n_levels != 1)} "
                           f"in the data, and slopes between levels need at least {min_levels}")
            continue
        allowed = []
        for predictor in predictors:
            varying = int((rows.groupby(factor)[predictor].nunique() > 1).sum())
            if varying >= min_levels:
                allowed.append(predictor)
            else:
                reasons.append(f"no slope of {predictor} by {factor}: it varies within {varying} of "
                               f"the {n_levels} levels, and a slope needs variation within at "
                               f"least {min_levels}")
        if allowed:
            slopes[factor] = tuple(allowed)
    return SlopeEligibility(slopes, tuple(reasons))


def _structure(terms: Sequence[RandomTerm]) -> str:
    return " + ".join(term.label for term in terms)


def _slope_singularities(fit: MixedFit, slope_factors: set[str]) -> tuple[SingularComponent, ...]:
    return tuple(s for s in fit.singular if s.factor in slope_factors)


def _describe(singular: Sequence[SingularComponent]) -> str:
    return "; ".join(str(s) for s in singular)


def reduce_slopes(data: pd.DataFrame, outcome: str, fixed: Sequence[str], random: Sequence[str],
                  slopes: Mapping[str, Sequence[str]], *, reml: bool = True,
                  prune_alpha: float | None = None) -> Reduction:
    """Fit random slopes, reducing the structure only where the fit is singular (module docstring).

    Parameters
    ----------
    data, outcome, fixed, random
        As :func:`~transferstats.analysis.mixed.fit_crossed`'s.
    slopes : mapping of str to sequence of str
        The requested slopes: a factor of ``random`` -> the predictors whose effects vary
        between its levels, e.g. ``{"target_task": ["diversity", "volume"]}``.
    reml : bool, default True
        REML fits (needed by the Satterthwaite and Kenward-Roger df downstream).
    prune_alpha : float, optional
        Also drop, one at a time, the slope whose likelihood-ratio test (chi-square, df the
        parameters removed) has the largest p-value above ``prune_alpha``. Off by default.

    Returns
    -------
    Reduction
        ``fit`` (the final model), ``steps`` (each fit, what was singular, what was decided),
        ``structure`` and ``describe()``.

    References
    ----------
    .. [1] Bates, D., Kliegl, R., Vasishth, S. & Baayen, H. (2015). Parsimonious mixed models.
       arXiv:1506.04967.
    .. [2] Barr, D. J., Levy, R., Scheepers, C. & Tily, H. J. (2013). Random effects structure
       for confirmatory hypothesis testing: keep it maximal. Journal of Memory and Language
       68(3), 255-278.
    .. [3] Matuschek, H., Kliegl, R., Vasishth, S., Baayen, H. & Bates, D. (2017). Balancing
       Type I error and power in linear mixed models. Journal of Memory and Language 94,
       305-315.
    """
    def fit(terms: Sequence[RandomTerm]) -> MixedFit:
        return fit_lmm(data, outcome, fixed, terms, reml=reml)

    factors = {f for f, columns in slopes.items() if columns}
    steps: list[ReductionStep] = []
    current = fit(random_terms(random, slopes, correlated=True))
    singular = _slope_singularities(current, factors)
    if not singular:
        steps.append(ReductionStep(_structure(current.terms), (), "not singular; kept"))
    elif all(s.kind == "correlation at +-1" for s in singular):
        # An uncorrelated refit would drop the slopes' covariance, which the variance of a
        # contrast of slopes depends on: measured, it made diversity - volume's interval too
        # narrow (docs/statistics.md, "Random slopes by target").
        steps.append(ReductionStep(_structure(current.terms), singular,
                                   f"singular only by a correlation ({_describe(singular)}); "
                                   "kept correlated"))
    else:
        steps.append(ReductionStep(_structure(current.terms), singular,
                                   f"singular ({_describe(singular)}); refitted uncorrelated"))
        current = _drop_zero_slopes(fit, fit(random_terms(random, slopes, correlated=False)),
                                    factors, steps)
    if prune_alpha is not None:
        current = _prune(fit, current, factors, prune_alpha, steps)
    return Reduction(current, steps)


def _drop_zero_slopes(fit, current: MixedFit, factors: set[str], steps: list[ReductionStep]
                      ) -> MixedFit:
    """While singular, drop the slopes at zero variance."""
    while True:
        singular = _slope_singularities(current, factors)
        zero = {(s.factor, s.column) for s in singular
                if s.kind == "zero variance" and s.column != INTERCEPT}
        structure = _structure(current.terms)
        if not singular:
            steps.append(ReductionStep(structure, (), "not singular; kept"))
            return current
        if not zero:
            steps.append(ReductionStep(structure, singular, f"singular ({_describe(singular)}) in "
                                       "intercepts only, which are kept; kept"))
            return current
        dropped = ", ".join(f"{column} by {factor}" for factor, column in sorted(zero))
        steps.append(ReductionStep(structure, singular, f"singular ({_describe(singular)}); "
                                   f"dropped the slopes at zero variance: {dropped}"))
        current = fit([t for t in current.terms
                       if not any((t.factor, c) in zero for c in t.columns)])


def _without(term: RandomTerm, column: str) -> RandomTerm | None:
    columns = tuple(c for c in term.columns if c != column)
    return RandomTerm(term.factor, columns) if columns else None


def _prune(fit, current: MixedFit, factors: set[str], alpha: float, steps: list[ReductionStep]
           ) -> MixedFit:
    """Backward likelihood-ratio pruning of slopes (optional; module docstring)."""
    while True:
        candidates = []
        for k, term in enumerate(current.terms):
            for column in (c for c in term.columns if c != INTERCEPT and term.factor in factors):
                reduced_term = _without(term, column)
                terms = [*current.terms[:k], *([reduced_term] if reduced_term else []),
                         *current.terms[k + 1:]]
                reduced = fit(terms)
                df = len(current.theta) - len(reduced.theta)
                statistic = max(reduced.criterion - current.criterion, 0.0)
                candidates.append((scipy.stats.chi2.sf(statistic, df), statistic, df, column,
                                   term.factor, reduced))
        if not candidates:
            return current
        p, statistic, df, column, factor, reduced = max(candidates, key=lambda c: c[0])
        if p <= alpha:
            return current
        steps.append(ReductionStep(_structure(current.terms), tuple(current.singular),
                                   f"slope of {column} by {factor}: likelihood ratio chi2({df}) = "
                                   f"{statistic:.2f}, p = {p:.3g} > {alpha}; dropped"))
        current = reduced
