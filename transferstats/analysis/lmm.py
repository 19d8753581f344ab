"""Linear mixed models with random slopes, fitted as lme4 fits them.

The model, its criterion and the elimination of the largest intercept-only terms that keeps it
fast on transfer grids are in :mod:`transferstats.analysis.profiled`. Here theta is found by
L-BFGS-B on the exact gradient, the diagonal of each relative covariance factor T bounded below
by 0, restarted off that bound where the criterion is lower there, and polished by Newton steps
(:func:`optimise`); :func:`fit_lmm` and :func:`fit_formula` return a :class:`MixedFit` with
lme4's quantities (``vcov``, ``REMLcrit``, ``VarCorr``, theta, ``isSingular``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.optimize
import scipy.sparse
from threadpoolctl import threadpool_limits

from transferstats.analysis.formula import RandomTerm, parse_formula
from transferstats.analysis.profiled import (
    Design,
    Evaluation,
    Products,
    conditional,
    criterion,
    criterion_and_gradient,
    design,
    evaluate,
    products,
    theta_layout,
    variance_slopes,
)

#: lme4's ``isSingular`` tolerance: a diagonal element of a relative covariance factor T below
#: this makes the fit singular (a variance at zero, or a correlation at +-1).
SINGULAR_TOL = 1e-4


# --------------------------------------------------------------------------------------------
# Fitting


def _start(cp: Products) -> np.ndarray:
    """lme4's start: every T the identity."""
    return np.array([1.0 if i == j else 0.0 for _, i, j in cp.layout])


def _gradient_jacobian(theta: np.ndarray, gradient: np.ndarray, cp: Products, reml: bool,
                       free: np.ndarray) -> np.ndarray:
    """Hessian of the criterion in the free thetas, forward differences of the exact gradient."""
    steps = 1e-6 * np.maximum(1.0, np.abs(theta))
    columns = []
    for k in np.flatnonzero(free):
        shifted = theta.copy()
        shifted[k] += steps[k]
        columns.append((criterion_and_gradient(shifted, cp, reml)[1] - gradient)[free] / steps[k])
    H = np.column_stack(columns)
    return (H + H.T) / 2


def _polish(theta: np.ndarray, cp: Products, reml: bool, steps: int = 8) -> tuple[np.ndarray, bool]:
    """Newton steps on the thetas off their bounds, to lme4's precision and beyond.

    L-BFGS-B stops on the relative change of the criterion, near 1e-6 relative in theta on flat
    criteria; Newton steps with the exact gradient and one Hessian (differences of the gradient,
    kept for all steps: the optimum is near) make it tight enough to compare with lme4 to 1e-6.
    Converged: the step is below 1e-7 in every free theta.
    """
    lower = cp.lower_bounds
    value, gradient = criterion_and_gradient(theta, cp, reml)
    free = ~((lower == 0) & (theta <= 1e-8) & (gradient >= 0))
    if not free.any():
        return theta, True
    try:
        factor = scipy.linalg.cho_factor(_gradient_jacobian(theta, gradient, cp, reml, free))
    except np.linalg.LinAlgError:
        return theta, False
    for _ in range(steps):
        step = scipy.linalg.cho_solve(factor, gradient[free])
        candidate = theta.copy()
        candidate[free] -= step
        candidate = np.maximum(candidate, lower)
        new_value, new_gradient = criterion_and_gradient(candidate, cp, reml)
        if new_value > value + 1e-10 * abs(value):
            return theta, bool(np.max(np.abs(step)) < 1e-7)
        theta, value, gradient = candidate, new_value, new_gradient
        if np.max(np.abs(step)) < 1e-7:
            return theta, True
    return theta, False


def _off_the_boundary(theta: np.ndarray, cp: Products, reml: bool) -> np.ndarray | None:
    """A better theta with a diagonal element moved off 0, or None if there is none.

    At a diagonal element of 0 the criterion's gradient in it is 0 whatever the data (the
    variance is its square), so a gradient method that lands on the bound stays there even when
    the variance is not zero at the optimum; lme4's BOBYQA, without gradients, does not have
    this trap. A one-column term is moved off 0 where the derivative in its variance is
    negative (:func:`~transferstats.analysis.profiled.variance_slopes`); the diagonal of a
    larger term is tried at a few positive values.
    """
    ev = evaluate(theta, cp)
    value, slopes = criterion(ev, cp.n, reml), variance_slopes(ev, cp, reml)
    best, best_value = None, value
    for k in np.flatnonzero((cp.lower_bounds == 0) & (theta <= 0)):
        if slopes[k] >= 0:
            continue
        threshold = value if slopes[k] < 0 else value - 1e-8 * abs(value)
        for trial in (1e-3, 0.01, 0.1, 0.5):
            candidate = theta.copy()
            candidate[k] = trial
            trial_value = criterion(evaluate(candidate, cp), cp.n, reml)
            if trial_value < min(best_value, threshold):
                best, best_value = candidate, trial_value
    return best


def _criterion_or_wall(theta: np.ndarray, cp: Products, reml: bool) -> tuple[float, np.ndarray]:
    """The criterion and its gradient, or +inf where theta is too far out to evaluate.

    A long L-BFGS-B step can reach thetas of 1e6 and more, where rounding leaves X'V^-1X short
    of positive definite; the criterion there is far above the optimum's, and +inf makes the
    line search back off instead of failing the fit.
    """
    try:
        value, gradient = criterion_and_gradient(theta, cp, reml)
    except np.linalg.LinAlgError:
        return math.inf, np.zeros_like(theta)
    if not (math.isfinite(value) and np.isfinite(gradient).all()):
        return math.inf, np.zeros_like(theta)
    return value, gradient


def optimise(cp: Products, reml: bool, start: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """The theta minimising the profiled criterion (T's diagonal >= 0), and whether it converged.

    L-BFGS-B with the exact gradient, restarted from any better point off the bounds
    (:func:`_off_the_boundary`; each restart lowers the criterion, at most one per theta), then
    Newton polishing (:func:`_polish`). BLAS runs on one thread: the arrays are small (b x b
    with b of tens to hundreds), and on a busy machine OpenBLAS's threads make each triangular
    solve 100 times slower.
    """
    theta = _start(cp) if start is None else np.asarray(start, dtype=float)
    bounds = scipy.optimize.Bounds(cp.lower_bounds, np.full(len(cp.layout), np.inf))
    with threadpool_limits(1):
        for _ in range(len(cp.layout) + 1):
            theta = scipy.optimize.minimize(_criterion_or_wall, theta, args=(cp, reml),
                                            jac=True, method="L-BFGS-B", bounds=bounds,
                                            options={"ftol": 1e-12, "gtol": 1e-8, "maxiter": 5000}).x
            better = _off_the_boundary(theta, cp, reml)
            if better is None:
                break
            theta = better
        return _polish(theta, cp, reml)


@dataclass(frozen=True)
class SingularComponent:
    """A part of a random term's covariance matrix on the boundary of the parameter space."""

    factor: str
    column: str
    kind: str        # "zero variance" or "correlation at +-1"

    def __str__(self) -> str:
        what = "variance at zero" if self.kind == "zero variance" else \
            "correlated at +-1 with the term's other effects"
        return f"{self.column} by {self.factor}: {what}"


def _relative_factor(term: RandomTerm, t: int, theta: np.ndarray,
                     layout: Sequence[tuple[int, int, int]]) -> np.ndarray:
    T = np.zeros((term.size, term.size))
    for value, (u, i, j) in zip(theta, layout, strict=True):
        if u == t:
            T[i, j] = value
    return T


def singular_components(terms: Sequence[RandomTerm], theta: np.ndarray,
                        tol: float = SINGULAR_TOL) -> list[SingularComponent]:
    """lme4's ``isSingular`` by component: where a diagonal element of a T is below ``tol``.

    Row j of T gives the relative SD of column j (its norm); when that is itself below ``tol``
    the column's variance is at zero, otherwise the covariance matrix is rank-deficient with a
    non-zero variance: column j is a linear function of the term's earlier columns, a
    correlation at +-1.
    """
    layout = theta_layout(terms)
    found = []
    for t, term in enumerate(terms):
        T = _relative_factor(term, t, theta, layout)
        for j, column in enumerate(term.columns):
            if T[j, j] < tol:
                kind = "zero variance" if np.linalg.norm(T[j]) < tol else "correlation at +-1"
                found.append(SingularComponent(term.factor, column, kind))
    return found


def _var_corr(terms: Sequence[RandomTerm], theta: np.ndarray, sigma: float) -> pd.DataFrame:
    layout = theta_layout(terms)
    rows: list[tuple[str, str, str, float, float]] = []
    for t, term in enumerate(terms):
        T = _relative_factor(term, t, theta, layout)
        cov = sigma**2 * T @ T.T
        sd = np.sqrt(np.diag(cov))
        rows.extend((term.factor, c, "", cov[j, j], sd[j]) for j, c in enumerate(term.columns))
        for j, i in itertools.combinations(range(term.size), 2):
            cor = cov[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else np.nan
            rows.append((term.factor, term.columns[j], term.columns[i], cov[i, j], cor))
    rows.append(("Residual", "", "", sigma**2, sigma))
    return pd.DataFrame(rows, columns=["group", "var1", "var2", "vcov", "sdcor"])


def theta_names(terms: Sequence[RandomTerm]) -> list[str]:
    """lme4's names of theta: ``"g.x"`` on the diagonal, ``"g.x.z"`` below it."""
    names = []
    for t, i, j in theta_layout(terms):
        term = terms[t]
        names.append(f"{term.factor}.{term.columns[i]}" if i == j else
                     f"{term.factor}.{term.columns[i]}.{term.columns[j]}")
    return names


@dataclass
class MixedFit:
    """A linear mixed model with random slopes fitted by :func:`fit_lmm` (lme4's model).

    Attributes
    ----------
    params : pandas.Series
        Fixed effects, indexed by term (``"Intercept"`` first when there is one).
    vcov : pandas.DataFrame
        lme4's ``vcov(fit)``: sigma^2 (X' V^-1 X)^-1 at the estimates, conditional on theta
        (it ignores the uncertainty of the variance parameters). ``bse`` and ``cov_params`` are
        this matrix too. This is not the meaning of ``CrossedFit.cov_params`` (statsmodels':
        the inverse of the whole observed information in beta and the variance ratios, a few
        percent wider); statsmodels has no crossed random-slope model to follow here.
    theta : pandas.Series
        The relative covariance factors, in lme4's order and names (``getME(fit, "theta")``).
    sigma : float
        Residual standard deviation.
    criterion : float
        lme4's ``REMLcrit(fit)`` (REML) or ``deviance(fit)`` (ML): -2 x the (RE)ML
        log-likelihood on lme4's scale. ``llf`` is -criterion / 2.
    var_corr : pandas.DataFrame
        lme4's ``as.data.frame(VarCorr(fit))``: group, var1, var2, vcov (variance or
        covariance) and sdcor (standard deviation or correlation), the residual last.
    singular : list of SingularComponent
        Components at zero variance or at correlation +-1 (lme4's ``isSingular``, tolerance
        ``SINGULAR_TOL`` on theta's diagonal); ``is_singular`` says whether there is any.
    random_effects : dict of str to pandas.DataFrame
        Conditional modes (BLUPs) of each term, a row per level, a column per effect, keyed by
        the term's label.
    fitted, residuals : numpy.ndarray
        X beta + Z b and y minus it, in the order of the rows that entered the model.
    """

    params: pd.Series
    vcov: pd.DataFrame
    theta: pd.Series
    sigma: float
    criterion: float
    reml: bool
    var_corr: pd.DataFrame
    singular: list[SingularComponent]
    terms: list[RandomTerm]
    converged: bool
    n_obs: int
    fitted: np.ndarray
    residuals: np.ndarray
    random_effects: dict[str, pd.DataFrame]
    products: Products = field(repr=False)
    method: str = "lmm"

    @property
    def llf(self) -> float:
        """(RE)ML log-likelihood: -criterion / 2."""
        return -self.criterion / 2

    @property
    def residual_variance(self) -> float:
        """sigma^2."""
        return self.sigma**2

    @property
    def is_singular(self) -> bool:
        """lme4's ``isSingular(fit)``."""
        return bool(self.singular)

    @property
    def cov_params(self) -> pd.DataFrame:
        """lme4's ``vcov`` (see the class docstring for how it differs from ``CrossedFit``'s)."""
        return self.vcov

    @property
    def bse(self) -> pd.Series:
        """lme4's standard errors, sqrt(diag(vcov)), conditional on theta."""
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.params.index, name="se")

    def covariance(self, factor: str) -> pd.DataFrame:
        """The covariance matrix of the random effects by ``factor`` (its terms together)."""
        rows = self.var_corr[self.var_corr["group"] == factor]
        if rows.empty:
            raise KeyError(f"no random term on {factor!r}; the groups are "
                           f"{sorted(set(self.var_corr['group']) - {'Residual'})}")
        names = list(dict.fromkeys(rows["var1"]))
        cov = pd.DataFrame(0.0, index=names, columns=names)
        for var1, var2, value in zip(rows["var1"], rows["var2"], rows["vcov"], strict=True):
            cov.loc[var1, var2 or var1] = cov.loc[var2 or var1, var1] = value
        return cov

    def coef(self, factor: str) -> pd.DataFrame:
        """Each level's coefficients, fixed effects plus its random effects (lme4's ``coef``).

        One row per level of ``factor``, one column per fixed effect; e.g. each target's own
        slopes of diversity and volume, to show beside their average (``params``).
        """
        effects = [self.random_effects[term.label] for term in self.terms if term.factor == factor]
        if not effects:
            raise KeyError(f"no random term on {factor!r}; the terms are "
                           f"{[term.label for term in self.terms]}")
        levels = effects[0].index
        table = pd.DataFrame(np.tile(self.params.to_numpy(), (len(levels), 1)), index=levels,
                             columns=self.params.index)
        for frame in effects:
            for column in frame.columns:
                table[column] = table.get(column, 0.0) + frame[column].to_numpy()
        return table

    def summary(self) -> str:
        """The fit as text: random effects as lme4's ``VarCorr``, fixed effects with lme4's SEs."""
        crit = "REML criterion" if self.reml else "deviance"
        random = self.var_corr.to_string(index=False, float_format=lambda v: f"{v:.6g}")
        fixed = pd.DataFrame({"estimate": self.params, "se": self.bse})
        lines = [f"Linear mixed model, {'REML' if self.reml else 'ML'}: "
                 + " + ".join(term.label for term in self.terms),
                 f"observations: {self.n_obs}   {crit}: {self.criterion:.4f}   converged: "
                 f"{'yes' if self.converged else 'no'}", "", "random effects:", random, "",
                 "fixed effects (lme4's standard errors, conditional on theta):",
                 fixed.to_string(float_format=lambda v: f"{v:.6g}")]
        if self.singular:
            lines += ["", "singular fit: " + "; ".join(str(s) for s in self.singular)]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _blups(des: Design, cp: Products, ev: Evaluation) -> tuple[dict[str, pd.DataFrame], np.ndarray]:
    """Conditional modes b = Lambda Lambda' Z'V^-1 (y - X beta), by term, and Z b."""
    cond = conditional(ev, cp)
    coef = np.append(-ev.beta, 1.0)
    b_b = ev.Lam @ (ev.Lam.T @ (cond.ZbViM @ coef))
    b_d = cp.theta_of(cp.d, ev.theta) ** 2 * (cond.ZdViM @ coef)
    b_h = cp.theta_of(cp.h, ev.theta) ** 2 * (cond.ZhViM @ coef)
    Z_times_b = cp.Zb @ b_b
    if cp.d is not None:
        Z_times_b = Z_times_b + b_d[cp.codes_d]
    if cp.h is not None:
        Z_times_b = Z_times_b + b_h[cp.codes_h]
    effects = {}
    for t, term in enumerate(des.terms):
        if t in (cp.d, cp.h):
            values = (b_d if t == cp.d else b_h)[:, None]
        else:
            start = cp.b_offsets[t]
            values = b_b[start:start + des.n_levels[t] * term.size].reshape(-1, term.size)
        effects[term.label] = pd.DataFrame(values, index=des.levels[t], columns=list(term.columns))
    return effects, Z_times_b


def _check_identifiable(des: Design) -> None:
    for term, n_levels in zip(des.terms, des.n_levels, strict=True):
        if n_levels < 2:
            raise ValueError(f"random term {term.label}: {term.factor!r} has {n_levels} level; a "
                             "variance between levels needs at least 2")
    if np.linalg.matrix_rank(des.X) < des.X.shape[1]:
        raise ValueError(f"the fixed effects {des.fixed} are linearly dependent in these rows "
                         "(a predictor constant or a combination of others)")
    if len(des.y) <= des.X.shape[1]:
        raise ValueError(f"{len(des.y)} rows for {des.X.shape[1]} fixed effects")


def fit_lmm(data: pd.DataFrame, outcome: str, fixed: Sequence[str], terms: Sequence[RandomTerm],
            *, reml: bool = True, intercept: bool = True,
            start: Sequence[float] | None = None) -> MixedFit:
    """Fit a linear mixed model with random intercepts and slopes, as lme4's ``lmer`` does.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per observation; rows with a missing value in a column used are left out.
    outcome : str
        The response column.
    fixed : sequence of str
        Numeric predictor columns; ``"a:b"`` enters the product of ``a`` and ``b``.
    terms : sequence of RandomTerm
        The random terms (:func:`~transferstats.analysis.formula.random_terms` builds them from
        factors and slopes; :func:`fit_formula` from a formula).
    reml : bool, default True
        REML (lme4's default) or maximum likelihood.
    intercept : bool, default True
        Whether the fixed part has an intercept.
    start : sequence of float, optional
        Starting theta in lme4's order (e.g. a nearby fit's ``theta``); lme4's default otherwise.

    Returns
    -------
    MixedFit

    References
    ----------
    .. [1] Bates, D., Maechler, M., Bolker, B. & Walker, S. (2015). Fitting linear mixed-effects
       models using lme4. Journal of Statistical Software 67(1), 1-48.
    """
    des = design(data, outcome, fixed, terms, intercept)
    _check_identifiable(des)
    cp = products(des)
    theta, converged = optimise(cp, reml, None if start is None else np.asarray(start, dtype=float))
    ev = evaluate(theta, cp)
    n, p = des.X.shape
    sigma = float(np.sqrt(ev.pwrss / (n - p if reml else n)))
    effects, Zb = _blups(des, cp, ev)
    fitted = des.X @ ev.beta + Zb
    return MixedFit(
        params=pd.Series(ev.beta, index=des.fixed, name="estimate"),
        vcov=pd.DataFrame(sigma**2 * np.linalg.inv(ev.XVX), index=des.fixed, columns=des.fixed),
        theta=pd.Series(theta, index=theta_names(des.terms), name="theta"), sigma=sigma,
        criterion=criterion(ev, n, reml), reml=reml,
        var_corr=_var_corr(des.terms, theta, sigma), singular=singular_components(des.terms, theta),
        terms=list(des.terms), converged=converged, n_obs=n, fitted=fitted,
        residuals=des.y - fitted, random_effects=effects, products=cp)


def fit_formula(formula: str, data: pd.DataFrame, *, reml: bool = True,
                start: Sequence[float] | None = None) -> MixedFit:
    """Fit a model written in lme4's notation, e.g. ``"Reaction ~ Days + (Days | Subject)"``.

    Supports fixed effects ``a + b``, ``a * b`` and ``a:b`` of numeric columns, and random terms
    ``(1 | g)``, ``(1 | g:h)``, ``(1 + x + z | g)`` (correlated), ``(1 + x || g)``
    (uncorrelated) and ``(0 + x | g)`` (see :mod:`transferstats.analysis.formula`).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> g = np.repeat(np.arange(12), 20)
    >>> x = np.tile(np.linspace(-1, 1, 20), 12)
    >>> y = 1 + 2 * x + rng.normal(0, 1, 12)[g] + rng.normal(0, 0.5, 12)[g] * x + rng.normal(0, 0.3, 240)
    >>> fit = fit_formula("y ~ x + (1 + x | g)", pd.DataFrame({"y": y, "x": x, "g": g}))
    >>> round(float(fit.params["x"]))
    2
    """
    parsed = parse_formula(formula)
    return fit_lmm(data, parsed.outcome, parsed.fixed, parsed.random, reml=reml,
                   intercept=parsed.intercept, start=start)
