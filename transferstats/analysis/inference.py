"""Wald t tests and intervals for fixed effects and their contrasts, with small-sample df.

With few levels of a random-slope factor (5 target tasks), an effect averaged over the
population of targets is estimated from about as many independent pieces of information as there
are targets, and a normal (z) interval is far too narrow. Both methods here give a t reference
distribution whose degrees of freedom reflect that:

- Satterthwaite (lmerTest's definition, Kuznetsova, Brockhoff & Christensen 2017): for a
  contrast L beta, df = 2 (L C L')^2 / (g' A g), with C = sigma^2 (X'V^-1X)^-1 (lme4's
  ``vcov``) a function of the variance parameters (theta, sigma), g its gradient in them and A
  = 2 H^-1, H the Hessian of lmerTest's deviance in (theta, sigma) at the estimates. The
  standard error is lme4's.
- Kenward-Roger (:mod:`transferstats.analysis.kenward_roger`, pbkrtest's ``vcovAdj`` and
  ``Lb_ddf``): the covariance of beta is adjusted for the estimation of the variance parameters
  and the df follow from the adjusted covariance.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats
from threadpoolctl import threadpool_limits

from transferstats.analysis.lmm import MixedFit
from transferstats.analysis.profiled import Evaluation, Products, conditional, derivative_parts, evaluate

#: A contrast: weights by fixed-effect term (missing terms weigh 0), or one weight per term.
Contrast = Mapping[str, float] | Sequence[float]


def contrast_matrix(fit: MixedFit, contrasts: Mapping[str, Contrast] | None = None) -> pd.DataFrame:
    """One row per named contrast, one column per fixed effect; each fixed effect by default.

    Raises
    ------
    ValueError
        A weight on a term that is not in the model, or a vector of the wrong length.
    """
    terms = list(fit.params.index)
    if contrasts is None:
        return pd.DataFrame(np.eye(len(terms)), index=terms, columns=terms)
    rows = {}
    for name, weights in contrasts.items():
        if isinstance(weights, Mapping):
            unknown = sorted(set(weights) - set(terms))
            if unknown:
                raise ValueError(f"contrast {name!r}: terms {unknown} are not fixed effects of the "
                                 f"model ({terms})")
            rows[name] = [float(weights.get(term, 0.0)) for term in terms]
        else:
            if len(weights) != len(terms):
                raise ValueError(f"contrast {name!r}: {len(weights)} weights for {len(terms)} "
                                 f"fixed effects ({terms})")
            rows[name] = [float(w) for w in weights]
    return pd.DataFrame.from_dict(rows, orient="index", columns=terms)


def wald_table(fit: MixedFit, L: pd.DataFrame, se: np.ndarray, df: np.ndarray, method: str,
               level: float = 0.95) -> pd.DataFrame:
    """Estimate, SE, df, t, two-sided p and the t interval of each contrast (lmerTest's
    ``contest(joint = FALSE, confint = TRUE)``)."""
    estimate = L.to_numpy() @ fit.params.to_numpy()
    t = estimate / se
    quantile = scipy.stats.t.ppf(0.5 + level / 2, df)
    return pd.DataFrame({
        "contrast": list(L.index), "estimate": estimate, "se": se, "df": df, "t": t,
        "p_value": 2 * scipy.stats.t.sf(np.abs(t), df),
        "ci_low": estimate - quantile * se, "ci_high": estimate + quantile * se,
        "method": method})


# --------------------------------------------------------------------------------------------
# Satterthwaite


def deviance_at(varpar: np.ndarray, cp: Products, reml: bool) -> tuple[float, np.ndarray]:
    """lmerTest's ``devfun_vp``: -2 (RE)ML log-likelihood at (theta, sigma), and its gradient.

    Unlike the profiled criterion, sigma is a parameter here: the deviance is
    log det V + pwrss / sigma^2 + n log(2 pi sigma^2), plus, for REML,
    log det(X'V^-1X) - p log(2 pi sigma^2).
    """
    theta, sigma = varpar[:-1], float(varpar[-1])
    ev = evaluate(theta, cp)
    n, p = cp.n, cp.p
    dof = n - p if reml else n
    value = ev.log_det_V + ev.pwrss / sigma**2 + dof * np.log(2 * np.pi * sigma**2)
    if reml:
        value += float(np.linalg.slogdet(ev.XVX)[1])
    trace, quadratic = derivative_parts(ev, cp, reml)
    d_sigma = -2 * ev.pwrss / sigma**3 + 2 * dof / sigma
    return float(value), np.append(trace - quadratic / sigma**2, d_sigma)


def varpar_hessian(fit: MixedFit) -> np.ndarray:
    """Hessian of :func:`deviance_at` in (theta, sigma) at the estimates: central differences
    of the exact gradient (lmerTest differentiates the deviance twice numerically)."""
    varpar = np.append(fit.theta.to_numpy(), fit.sigma)
    steps = 1e-5 * np.maximum(1.0, np.abs(varpar))
    columns = []
    for k, step in enumerate(steps):
        shift = np.zeros(len(varpar))
        shift[k] = step
        columns.append((deviance_at(varpar + shift, fit.products, fit.reml)[1]
                        - deviance_at(varpar - shift, fit.products, fit.reml)[1]) / (2 * step))
    H = np.column_stack(columns)
    return (H + H.T) / 2


def varpar_covariance(H: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """A = 2 H^-1 over H's positive eigenvalues, as lmerTest (a variance on the boundary leaves a
    zero or negative eigenvalue, whose direction carries no information); warns, as lmerTest
    does, of negative ones."""
    values, vectors = np.linalg.eigh(H)
    if np.any(values < -tol):
        warnings.warn(
            f"satterthwaite: the Hessian of the deviance in the variance parameters has negative "
            f"eigenvalues ({', '.join(f'{v:.3g}' for v in values[values < -tol])}): the fit is at "
            "a boundary (a singular fit) and its df depend on where on that boundary it stopped; "
            "reduce the random-effects structure (reduce_slopes)", stacklevel=3)
    positive = values > tol
    return 2 * (vectors[:, positive] / values[positive]) @ vectors[:, positive].T


def vcov_jacobian(fit: MixedFit, ev: Evaluation) -> np.ndarray:
    """d vcov(beta) / d (theta, sigma): (p, p, n_theta + 1), exactly.

    d(X'V^-1X) = -X'V^-1 dV V^-1 X with dV as in
    :func:`~transferstats.analysis.lmm.derivative_parts`, and
    d C = -sigma^2 C0 d(X'V^-1X) C0 with C0 = (X'V^-1X)^-1.
    """
    cp, p, sigma = fit.products, fit.products.p, fit.sigma
    cond = conditional(ev, cp)
    ZbViX, ZhViX, ZdViX = cond.ZbViM[:, :p], cond.ZhViM[:, :p], cond.ZdViM[:, :p]
    LtZbViX = ev.Lam.T @ ZbViX
    C0 = np.linalg.inv(ev.XVX)
    jacobian = np.empty((p, p, len(cp.layout) + 1))
    for k, (t, _, _) in enumerate(cp.layout):
        if t in (cp.d, cp.h):
            ZkViX = ZdViX if t == cp.d else ZhViX
            dXVX = -2 * ev.theta[k] * ZkViX.T @ ZkViX
        else:
            B = ZbViX[cp.lambda_rows[k]].T @ LtZbViX[cp.lambda_cols[k]]
            dXVX = -(B + B.T)
        jacobian[:, :, k] = -sigma**2 * C0 @ dXVX @ C0
    jacobian[:, :, -1] = 2 * sigma * C0
    return jacobian


@dataclass(frozen=True)
class SatterthwaiteSetup:
    """What every contrast's Satterthwaite df needs, computed once per fit."""

    vcov: np.ndarray          # C, lme4's vcov
    jacobian: np.ndarray      # dC / d(theta, sigma)
    varpar_cov: np.ndarray    # A = 2 H^-1

    def df(self, L: np.ndarray) -> np.ndarray:
        """2 (L C L')^2 / (g' A g) for each row L."""
        var = np.einsum("ci,ij,cj->c", L, self.vcov, L)
        g = np.einsum("ci,ijk,cj->ck", L, self.jacobian, L)
        return 2 * var**2 / np.einsum("ck,kl,cl->c", g, self.varpar_cov, g)


def satterthwaite_setup(fit: MixedFit) -> SatterthwaiteSetup:
    """The Jacobian of vcov and the covariance of the variance parameters at ``fit``."""
    with threadpool_limits(1):
        ev = evaluate(fit.theta.to_numpy(), fit.products)
        return SatterthwaiteSetup(fit.vcov.to_numpy(), vcov_jacobian(fit, ev),
                                  varpar_covariance(varpar_hessian(fit)))


def satterthwaite(fit: MixedFit, contrasts: Mapping[str, Contrast] | None = None,
                  level: float = 0.95) -> pd.DataFrame:
    """Wald t tests and intervals with Satterthwaite df, as lmerTest's ``contest``.

    Parameters
    ----------
    fit : MixedFit
        A fit of :func:`~transferstats.analysis.lmm.fit_lmm` (REML or ML).
    contrasts : mapping of str to contrast, optional
        Named linear combinations of the fixed effects, e.g. ``{"diversity - volume":
        {"diversity": 1, "volume": -1}}``; each fixed effect alone by default.
    level : float, default 0.95
        Confidence level of the intervals.

    Returns
    -------
    pandas.DataFrame
        One row per contrast: contrast, estimate, se (lme4's), df, t, p_value, ci_low,
        ci_high, method (``"Satterthwaite"``).

    References
    ----------
    .. [1] Satterthwaite, F. E. (1946). An approximate distribution of estimates of variance
       components. Biometrics Bulletin 2(6), 110-114.
    .. [2] Kuznetsova, A., Brockhoff, P. B. & Christensen, R. H. B. (2017). lmerTest package:
       tests in linear mixed effects models. Journal of Statistical Software 82(13), 1-26.
    """
    L = contrast_matrix(fit, contrasts)
    setup = satterthwaite_setup(fit)
    values = L.to_numpy()
    se = np.sqrt(np.einsum("ci,ij,cj->c", values, setup.vcov, values))
    return wald_table(fit, L, se, setup.df(values), "Satterthwaite", level)
