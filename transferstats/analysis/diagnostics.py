"""Design diagnostics computed before any fit: which bootstrap resamples will lose a factor's
variation, and how collinear the fixed effects are.

A crossed cluster bootstrap (Owen 2007) draws the levels of each unit (mixes, languages) with
replacement. A level is left out of a resample of ``n`` draws from ``n`` with probability
``(1 - 1/n)^n`` (about ``e^-1 = 0.368``; Efron 1983), so a factor carried by one or a few levels
(the only mix of 52 languages in a fixed-budget grid) is constant in a large share of resamples,
whose refits then fail. :func:`predict_resample_failures` computes that share from the design and
names the levels responsible; :func:`variance_inflation` reports the variance inflation factors
of the fixed effects (for example a share covariate against diversity at a fixed budget, where
the share of a mix of ``n`` equal parts is ``1/n``).

References
----------
Efron, B. (1983). Estimating the error rate of a prediction rule: improvement on
cross-validation. *Journal of the American Statistical Association* 78(382), 316-331.
Owen, A. B. (2007). The pigeonhole bootstrap. *Annals of Applied Statistics* 1(2), 386-411.
Belsley, D. A., Kuh, E. & Welsch, R. E. (1980). *Regression Diagnostics*. Wiley, ch. 3.
Kutner, M. H., Nachtsheim, C. J., Neter, J. & Li, W. (2005). *Applied Linear Statistical
Models*, 5th ed., section 10.5 (variance inflation factors).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from statsmodels.stats.outliers_influence import variance_inflation_factor

#: Above this share of failed resamples a bootstrap interval is not to be printed as if it were
#: fine (issue 25; the resamples left are no longer a draw from the design).
FAILURE_SHARE_LIMIT = 0.05
#: A variance inflation factor above this is reported with a warning (Kutner et al. 2005 give 10
#: as the usual limit; 5 is the stricter one common in applied work).
VIF_LIMIT = 5.0
#: At most this many levels are named in a sentence; more are counted.
NAMED_LEVELS = 5

ValueLabel = Callable[[float], str]


def _plural(word: str) -> str:
    word = word.replace("_", " ")
    if word.endswith(("s", "x", "sh", "ch")):
        return word + "es"
    return word + "s"


def _share(p: float) -> str:
    """A probability as a percentage a reader can use: '36%', '0.21%', '< 0.01%'."""
    if p == 0 or p == 1:
        return f"{p:.0%}"
    if p < 1e-4:
        return "< 0.01%"
    if p > 0.995:
        return "> 99.5%"
    return f"{100 * p:.2g}%" if p < 0.095 else f"{p:.0%}"


def _default_label(factor: str) -> ValueLabel:
    return lambda value: f"{factor} = {value:.4g}"


@dataclass(frozen=True)
class ResampleFailurePrediction:
    """What :func:`predict_resample_failures` predicts.

    ``table`` has one row per factor: ``factor``, ``unit`` (the unit column the factor is a
    property of, or ``None``), ``method`` (``"exact"`` or ``"monte carlo"``), ``failure_share``
    (the share of resamples in which the factor is constant), ``n_levels`` and ``n_values``
    (of that unit, and the factor's distinct values over them), and ``cause`` (a sentence
    computed from the data). ``any_failure_share`` is the Monte Carlo share of resamples in which
    the factors, with an intercept, are not of full rank (any factor constant or the factors
    collinear): the share of refits that will fail for want of variation; NaN without Monte
    Carlo draws.
    """

    table: pd.DataFrame
    any_failure_share: float
    n_monte_carlo: int
    unit_columns: tuple[str, ...]

    def failure_share(self, factor: str) -> float:
        return float(self.table.set_index("factor")["failure_share"].loc[factor])

    def cause(self, factor: str) -> str:
        return str(self.table.set_index("factor").loc[factor, "cause"])

    def warnings(self, limit: float = FAILURE_SHARE_LIMIT) -> list[str]:
        """The causes of the factors predicted to be lost in more than ``limit`` of resamples."""
        return [str(cause) for cause in self.table.loc[self.table["failure_share"] > limit, "cause"]]

    def summary(self) -> str:
        lines = [f"Resampling {', '.join(self.unit_columns)} with replacement:"]
        for factor, share, method, cause in self.table[
                ["factor", "failure_share", "method", "cause"]].itertuples(index=False):
            lines.append(f"  {factor}: constant in {_share(share)} of resamples ({method}). "
                         f"{cause}")
        if self.n_monte_carlo:
            lines.append(f"  The fixed effects lose full rank in {_share(self.any_failure_share)} "
                         f"of {self.n_monte_carlo} simulated resamples.")
        return "\n".join(lines)


def predict_resample_failures(data: pd.DataFrame, unit_columns: Sequence[str] = ("language", "mix"),
                              factor_columns: Sequence[str] = ("diversity", "volume"), *,
                              value_labels: Mapping[str, ValueLabel] | None = None,
                              n_monte_carlo: int = 2000, seed: int = 0
                              ) -> ResampleFailurePrediction:
    """Predict the share of crossed cluster resamples in which each factor loses its variation.

    A resample draws the ``n_u`` levels of each unit column ``u`` with replacement, ``n_u``
    times, independently across units, and keeps the rows of the drawn levels (as
    :func:`transferstats.analysis.bootstrap.crossed_bootstrap` does; the seeds it also draws
    within cells cannot remove a factor value). For a factor that is a property of one unit (one
    value per mix, say) in a fully crossed design the share is exact: the drawn levels all hold
    one value with probability ``sum_j (k_j / n)^n`` over the factor's values ``j`` held by
    ``k_j`` of the ``n`` levels. Other factors are estimated by ``n_monte_carlo`` simulated
    resamples (their binomial standard error is at most ``0.5 / sqrt(n_monte_carlo)``).

    Parameters
    ----------
    data : DataFrame
        The modelled rows, one column per unit and per factor.
    unit_columns : sequence of str
        The columns whose levels are resampled.
    factor_columns : sequence of str
        The fixed-effect columns whose variation the refits need.
    value_labels : mapping, optional
        Factor -> function of a value giving its words ("52 languages" for a log2 diversity of
        5.70); by default "factor = value".
    n_monte_carlo : int
        Simulated resamples for the joint rank check and the factors without an exact share;
        0 skips them (those factors then get NaN).
    seed : int
        Seed of the simulated resamples.

    Returns
    -------
    ResampleFailurePrediction

    Examples
    --------
    A fixed-budget grid of 18 mixes of 14 languages and one of 52: the lone mix is left out of
    ``(18/19)^19 = 36%`` of resamples, and the diversity of those is constant.
    """
    missing = [c for c in [*unit_columns, *factor_columns] if c not in data.columns]
    if missing:
        raise ValueError(f"no column {', '.join(map(repr, missing))} in the data (columns: "
                         f"{', '.join(map(str, data.columns))})")
    used = data[[*unit_columns, *factor_columns]].dropna().reset_index(drop=True)
    labels = dict(value_labels or {})
    crossed = _fully_crossed(used, unit_columns)
    monte_carlo = (_monte_carlo(used, unit_columns, factor_columns, n_monte_carlo, seed)
                   if n_monte_carlo else None)
    rows = []
    for factor in factor_columns:
        simulated = float(monte_carlo[0][factor]) if monte_carlo is not None else float("nan")
        rows.append(_factor_row(used, unit_columns, factor, crossed, simulated, n_monte_carlo,
                                labels.get(factor, _default_label(factor))))
    table = pd.DataFrame(rows, columns=["factor", "unit", "method", "failure_share", "n_levels",
                                        "n_values", "cause"])
    joint = float(monte_carlo[1]) if monte_carlo is not None else float("nan")
    return ResampleFailurePrediction(table, joint, n_monte_carlo, tuple(unit_columns))


def _factor_row(used: pd.DataFrame, unit_columns: Sequence[str], factor: str, crossed: bool,
                simulated: float, n_monte_carlo: int, label: ValueLabel) -> dict:
    """One row of the prediction: exact where the factor is constant or a property of one unit
    of a fully crossed design, else the simulated share."""
    n_values = int(used[factor].nunique())
    if n_values <= 1:
        where = f" ({label(float(used[factor].iloc[0]))} in every row)" if len(used) else ""
        return {"factor": factor, "unit": None, "method": "exact", "failure_share": 1.0,
                "n_levels": None, "n_values": n_values,
                "cause": f"{factor} does not vary in the data{where}"}
    owner = _owning_unit(used, unit_columns, factor)
    if owner is not None and crossed:
        per_level = used.groupby(owner, sort=True)[factor].first()
        return {"factor": factor, "unit": owner, "method": "exact",
                **_exact(per_level, factor, owner, label)}
    cause = (_simulated_cause(factor, n_values, simulated, n_monte_carlo) if owner is None
             else _spread_cause(factor, n_values, simulated, owner)
             + " (simulated: not every combination of the units has rows)")
    return {"factor": factor, "unit": owner, "method": "monte carlo",
            "failure_share": simulated,
            "n_levels": None if owner is None else int(used[owner].nunique()),
            "n_values": n_values, "cause": cause}


def _fully_crossed(data: pd.DataFrame, unit_columns: Sequence[str]) -> bool:
    """Every combination of unit levels has rows: then a drawn level always brings its rows."""
    combinations = data[list(unit_columns)].drop_duplicates()
    return len(combinations) == int(np.prod([data[u].nunique() for u in unit_columns]))


def _owning_unit(data: pd.DataFrame, unit_columns: Sequence[str], factor: str) -> str | None:
    """The only unit within whose levels the factor is constant (a property of that unit)."""
    owners = [u for u in unit_columns if (data.groupby(u)[factor].nunique() <= 1).all()]
    return owners[0] if len(owners) == 1 else None


def _exact(per_level: pd.Series, factor: str, unit: str, label: ValueLabel) -> dict:
    """The exact share for a factor with one value per level of ``unit``, and its cause."""
    n = len(per_level)
    counts = per_level.round(12).value_counts()
    share = float(((counts / n) ** n).sum())
    result = {"failure_share": share, "n_levels": n, "n_values": len(counts)}
    majority = float(counts.index[0])
    others = per_level[per_level.round(12) != majority]
    m = len(others)
    left_out = ((n - m) / n) ** n
    # Name the levels only when leaving them all out is most of the failures (not when, say,
    # two values split the levels evenly and either can be drawn alone).
    if m > NAMED_LEVELS or left_out < 0.9 * share:
        return result | {"cause": _spread_cause(factor, len(counts), share, unit)}
    if m == 1:
        level, value = others.index[0], float(others.iloc[0])
        cause = (f"the only {unit.replace('_', ' ')} with {label(value)} ({level!r}) is left out "
                 f"of {_share(left_out)} of resamples, which then have no variation in {factor}")
    else:
        names = ", ".join(repr(level) for level in others.index)
        cause = (f"the {m} {_plural(unit)} with {factor} other than {label(majority)} ({names}) "
                 f"are all left out of {_share(left_out)} of resamples, which then have no "
                 f"variation in {factor}")
    return result | {"cause": cause}


def _simulated_cause(factor: str, n_values: int, share: float, n_resamples: int) -> str:
    if not n_resamples:
        return f"{factor} is not a property of one resampled unit; not simulated"
    return (f"{factor} takes {n_values} values, not as a property of one resampled unit; it was "
            f"constant in {_share(share)} of {n_resamples} simulated resamples")


def _spread_cause(factor: str, n_values: int, share: float, unit: str) -> str:
    if np.isnan(share):
        return f"{factor} takes {n_values} values over the {_plural(unit)}; not simulated"
    return (f"{factor} takes {n_values} values over the {_plural(unit)}; a resample holds only "
            f"one of them in {_share(share)} of resamples")


def _monte_carlo(data: pd.DataFrame, unit_columns: Sequence[str], factor_columns: Sequence[str],
                 n_resamples: int, seed: int, batch: int = 200) -> tuple[pd.Series, float]:
    """Simulated resamples: the share in which each factor is constant, and the share in which
    the factors are not of full column rank once centred (with the intercept, the design).

    Only which unit levels are drawn matters (copies repeat rows, which changes neither), so the
    distinct rows are summed into a table indexed by the unit levels holding, per combination,
    the row count, the factors' sums and their cross-products. A resample's kept rows are the
    combinations of drawn levels, so its moments are that table contracted with the 0/1 drawn
    indicators unit by unit: matrix products, not a pass over rows per resample.
    """
    codes = [pd.factorize(data[u], sort=True)[0] for u in unit_columns]
    sizes = [int(data[u].nunique()) for u in unit_columns]
    values = data[list(factor_columns)].to_numpy(float)
    _, index = np.unique(np.column_stack([*codes, values]), axis=0, return_index=True)
    scale = values.std(axis=0)
    # Standardised over the data, so 1e-9 below is a tolerance relative to each factor's spread.
    standard = ((values - values.mean(axis=0)) / np.where(scale > 0, scale, 1.0))[index]
    p = standard.shape[1]
    moments = np.column_stack([np.ones(len(standard)), standard,
                               (standard[:, :, None] * standard[:, None, :]).reshape(-1, p * p)])
    table = np.zeros((*sizes, moments.shape[1]))
    np.add.at(table, tuple(c[index] for c in codes), moments)
    rng = np.random.default_rng(seed)
    constant = np.zeros(p)
    deficient = 0
    for start in range(0, n_resamples, batch):
        b = min(batch, n_resamples - start)
        summed = _contract(table, [_drawn(rng, b, n) for n in sizes])
        count = np.maximum(summed[:, 0], 1.0)
        mean = summed[:, 1:p + 1] / count[:, None]
        covariance = (summed[:, p + 1:].reshape(b, p, p) / count[:, None, None]
                      - mean[:, :, None] * mean[:, None, :])
        constant += (np.diagonal(covariance, axis1=1, axis2=2) < 1e-9).sum(axis=0)
        smallest = np.linalg.eigvalsh(covariance)[:, 0]
        deficient += int(((smallest < 1e-9) | (summed[:, 0] < p + 1)).sum())
    return (pd.Series(constant / n_resamples, index=list(factor_columns)),
            deficient / n_resamples)


def _drawn(rng: np.random.Generator, n_resamples: int, n_levels: int) -> np.ndarray:
    """Per resample, 1.0 for each level drawn at least once in ``n_levels`` draws."""
    drawn = np.zeros((n_resamples, n_levels))
    np.put_along_axis(drawn, rng.integers(n_levels, size=(n_resamples, n_levels)), 1.0, axis=1)
    return drawn


def _contract(table: np.ndarray, drawn: list[np.ndarray]) -> np.ndarray:
    """Sum ``table`` (unit levels..., moments) over the drawn levels of every unit, per
    resample: (resamples, moments)."""
    first, *rest = drawn
    summed = (first @ table.reshape(table.shape[0], -1)).reshape(len(first), *table.shape[1:])
    for indicator in rest:
        summed = np.einsum("bi,bi...->b...", indicator, summed)
    return summed


@dataclass(frozen=True)
class VarianceInflation:
    """What :func:`variance_inflation` reports: ``table`` (``term``, ``vif``, ``r_squared`` of
    the term on the others, ``closest`` term and their correlation ``correlation``) and the
    ``warning`` sentence naming the terms past ``limit`` (None when there are none)."""

    table: pd.DataFrame
    limit: float
    warning: str | None

    def summary(self) -> str:
        lines = [f"{row.term}: VIF {row.vif:.3g}" for row in self.table.itertuples()]
        return "\n".join([*lines, *([self.warning] if self.warning else [])])


def variance_inflation(data: pd.DataFrame, terms: Sequence[str], *,
                       limit: float = VIF_LIMIT) -> VarianceInflation:
    """Variance inflation factors of the fixed-effect ``terms``, with a warning past ``limit``.

    The VIF of a term is ``1 / (1 - R^2)`` of its regression on the other terms and an
    intercept: how much collinearity inflates its variance (Belsley, Kuh & Welsch 1980; Kutner et
    al. 2005, section 10.5). Computed by statsmodels' ``variance_inflation_factor`` on the
    design with a constant. A term ``a:b`` that is not a column is the product of ``a`` and
    ``b``, as in the model: pass the columns centred as the model has them (the analysis centres
    diversity and volume at their mean over the mixes), since a product's VIF against its
    factors depends on where they are centred, the main effects' VIFs do not.

    Parameters
    ----------
    data : DataFrame
        The modelled rows.
    terms : sequence of str
        At least two fixed-effect terms (columns, or ``a:b`` products).
    limit : float
        VIFs above it are named in the warning.

    Returns
    -------
    VarianceInflation
    """
    if len(terms) < 2:
        raise ValueError(f"variance inflation needs at least two terms, got {list(terms)}")
    design = pd.DataFrame({term: _term_column(data, term) for term in terms}).dropna()
    exog = np.column_stack([np.ones(len(design)), design.to_numpy(float)])
    vif = [float(variance_inflation_factor(exog, i + 1)) for i in range(len(terms))]
    correlation = design.corr().to_numpy(copy=True)
    np.fill_diagonal(correlation, 0.0)
    closest = np.nanargmax(np.abs(correlation), axis=1)
    table = pd.DataFrame({
        "term": list(terms), "vif": vif,
        "r_squared": [1 - 1 / v if np.isfinite(v) and v > 0 else 1.0 for v in vif],
        "closest": [terms[j] for j in closest],
        "correlation": [correlation[i, j] for i, j in enumerate(closest)]})
    return VarianceInflation(table, limit, _vif_warning(table, limit))


def _term_column(data: pd.DataFrame, term: str) -> pd.Series:
    if term in data.columns:
        return data[term].astype(float)
    parts = term.split(":")
    missing = [p for p in parts if p not in data.columns]
    if missing:
        raise ValueError(f"no column {', '.join(map(repr, missing))} for term {term!r} (columns: "
                         f"{', '.join(map(str, data.columns))})")
    return data[parts].astype(float).prod(axis=1)


def _vif_warning(table: pd.DataFrame, limit: float) -> str | None:
    high = table[table["vif"] > limit]
    if high.empty:
        return None
    parts = [f"{row.term} ({row.vif:.3g}; r = {row.correlation:+.2f} with {row.closest})"
             for row in high.itertuples()]
    return (f"variance inflation factor above {limit:g} for {', '.join(parts)}: these terms are "
            f"largely predictable from the other fixed effects, so their separate effects are "
            f"estimated imprecisely and each reads as the effect with the others held fixed")
