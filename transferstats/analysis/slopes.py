"""What a model with target-specific slopes reports beside its effects.

When the effects of diversity and volume differ between targets, the question is their average
over targets like the ones in the grid. The primary model then has correlated random slopes by
target (:func:`~transferstats.analysis.model.slope_plan`), reduced only where singular
(:func:`~transferstats.analysis.slope_reduction.reduce_slopes`), and its intervals are Wald t on
Satterthwaite's degrees of freedom (:func:`~transferstats.analysis.fitting.fit_slopes_model`).
This module gives what is read from that fit: each target's own slopes beside the average (lme4's
``coef``), the test of the slopes' variance, the fit summary, and how the intervals were made.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from transferstats.analysis.description import Description
from transferstats.analysis.fitting import BootstrapSettings, SlopesModel
from transferstats.analysis.formula import random_terms
from transferstats.analysis.lmm import fit_lmm
from transferstats.analysis.model import ModelStructure, lme4_notation
from transferstats.analysis.result import PER_TARGET_COLUMNS, FitSummary, Heterogeneity, IntervalMethod


def per_target_slopes(model: SlopesModel, structure: ModelStructure) -> pd.DataFrame:
    """Each target's own slopes (fixed plus its random slope, lme4's ``coef``), one row per
    target and term; conditional modes, so no interval of their own."""
    coef = model.fit.coef("target_task")
    rows = [{"target": str(target), "term": term, "estimate": float(coef.loc[target, term])}
            for target in coef.index for term in structure.mix_terms
            if term in ("diversity", "volume")]
    return pd.DataFrame(rows, columns=PER_TARGET_COLUMNS)


def slope_heterogeneity(data: pd.DataFrame, structure: ModelStructure, model: SlopesModel,
                        level: float) -> tuple[pd.DataFrame, Heterogeneity]:
    """Per-target slopes and the REML likelihood-ratio test of the slopes' (co)variances against
    the model without them. The variances sit on the boundary under the null, so the chi-square
    reference makes the p-value conservative (Self & Liang 1987; Stram & Lee 1994)."""
    fit = model.fit
    sloped = [c for t in fit.terms if t.factor == "target_task" for c in t.columns
              if c != "Intercept"]
    if not sloped:
        return (per_target_slopes(model, structure),
                Heterogeneity(False, "every slope was dropped as singular: the targets' effects "
                                     "do not differ detectably"))
    without = fit_lmm(data, structure.outcome, list(fit.params.index.drop("Intercept")),
                      random_terms(list(structure.random)), reml=True)
    chi2 = max(without.criterion - fit.criterion, 0.0)
    df = len(fit.theta) - len(without.theta)
    p_value = float(stats.chi2.sf(chi2, df))
    heterogeneity = Heterogeneity(
        tested=True, chi2=float(chi2), df=int(df), p_value=p_value, differ=p_value < 1 - level,
        terms=tuple(sloped), targets=tuple(sorted(data["target_task"].unique())),
        random=tuple(structure.random),
        formula=structure.formula(random=lme4_notation(model.reduction.structure)),
        reason="REML likelihood-ratio test of the target-specific slopes against the model "
               "without them (conservative: the variances are on the boundary under the null)")
    return per_target_slopes(model, structure), heterogeneity


def slopes_fit_summary(model: SlopesModel) -> FitSummary:
    """The fit's variances (and each slope's, as ``target_task:diversity``), in squared points."""
    fit = model.fit
    table = fit.var_corr
    variances = table[(table["var2"] == "") & (table["group"] != "Residual")]
    components = {(group if column == "Intercept" else f"{group}:{column}"): float(value)
                  for group, column, value in variances[["group", "var1", "vcov"]].itertuples(
                      index=False)}
    return FitSummary(method=fit.method, converged=bool(fit.converged),
                      variance_components=components,
                      residual_variance=float(fit.sigma ** 2),
                      on_boundary=tuple(str(s) for s in fit.singular),
                      reml_log_likelihood=float(fit.llf))


def wald_interval_method(model: SlopesModel, settings: BootstrapSettings,
                         description: Description) -> IntervalMethod:
    """How the intervals of a slopes model are made, and what they generalise over."""
    n_targets = len(description.targets)
    df = model.table["df"].to_numpy(dtype=float)
    span = (f"{np.nanmin(df):.1f}" if np.nanmin(df) == np.nanmax(df)
            else f"{np.nanmin(df):.1f} to {np.nanmax(df):.1f}")
    return IntervalMethod(
        resampling="wald t", method=f"Wald t, {model.method} df", resamples=0, seed=settings.seed,
        level=settings.level, units=(), replicates="", failed_resamples=None,
        df_method=model.method,
        why=(f"the model has target-specific slopes ({lme4_notation(model.reduction.structure)}), "
             "so each interval "
             f"is about the average effect over targets like these {n_targets}: a Wald t "
             f"interval on {model.method}'s degrees of freedom ({span}), which carries the "
             "variation between targets (a percentile bootstrap of so few targets cannot reach "
             "the nominal coverage)"))
