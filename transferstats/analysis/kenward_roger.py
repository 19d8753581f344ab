"""Kenward-Roger's adjusted covariance of the fixed effects and denominator df (pbkrtest).

pbkrtest (Halekoh & Hoejsgaard 2014) computes ``vcovAdj`` with the n x n marginal covariance
Sigma = sum_i gamma_i G_i (gamma: the variances and covariances of each random term, then the
residual variance; G_i = Z E_i Z' with E_i the 0/1 pattern of gamma_i in the covariance of b,
and I for the residual) and its inverse. Here every product is taken through Woodbury,
Sigma^-1 = sigma^-2 (I - Z B Z') with B = Lambda (Lambda'Z'Z Lambda + I)^-1 Lambda', so the cost
is in q x q matrices (q the random effects: a few hundred to a couple of thousand on transfer
grids), not n x n. The formulae are pbkrtest's ``vcovAdj16_internal`` and ``Lb_ddf``, with
its notation (P, Q, K, IE2, W, U).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse
from threadpoolctl import threadpool_limits

from transferstats.analysis.inference import Contrast, contrast_matrix, wald_table
from transferstats.analysis.lmm import MixedFit
from transferstats.analysis.profiled import Products, as_dense

#: Most random effects q for which :func:`kenward_roger_affordable` accepts a model: the dense
#: q x q products cost about 10 q^3 flops and 8 q^2 bytes each (q = 2,500: tens of seconds on a
#: core and 50 MB per matrix).
KR_MAX_RANDOM_EFFECTS = 2500


def kenward_roger_affordable(fit: MixedFit, max_random_effects: int = KR_MAX_RANDOM_EFFECTS
                             ) -> tuple[bool, str]:
    """Whether Kenward-Roger is affordable for ``fit``, and why not when it is not.

    Its cost is in dense q x q matrices over all q random effects (levels x columns of every
    term); Satterthwaite's is that of a few criterion evaluations.
    """
    q = fit.products.q
    if not fit.reml:
        return False, "Kenward-Roger is defined for REML fits; this fit is ML"
    if q > max_random_effects:
        return False, (f"Kenward-Roger needs dense {q:,} x {q:,} matrices over the {q:,} random "
                       f"effects of this model (at most {max_random_effects:,} are accepted: about "
                       f"{10 * q**3 / 1e9:,.0f} GFLOP); use Satterthwaite's df")
    return True, f"{q:,} random effects"


def _full_design(cp: Products, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z'Z, Z'X and Lambda over all q random effects: d's, h's, then the others'."""
    L_d, L_h, p = len(cp.D), len(cp.Dh), cp.p
    Ct_h, Ct_b = cp.Ct_h.toarray(), as_dense(cp.Ct_b)
    ZtZ = np.block([[np.diag(cp.D), Ct_h, Ct_b],
                    [Ct_h.T, np.diag(cp.Dh), cp.ZhZb],
                    [Ct_b.T, cp.ZhZb.T, cp.ZbZb]])
    ZtX = np.vstack([cp.ZdM[:, :p], cp.ZhM[:, :p], cp.ZbM[:, :p]])
    Lam = np.zeros_like(ZtZ)
    Lam[:L_d, :L_d] = np.eye(L_d) * cp.theta_of(cp.d, theta)
    Lam[L_d:L_d + L_h, L_d:L_d + L_h] = np.eye(L_h) * cp.theta_of(cp.h, theta)
    Lam[L_d + L_h:, L_d + L_h:] = cp.lambda_b(theta)
    return ZtZ, ZtX, Lam


def _patterns(cp: Products) -> list[scipy.sparse.csr_array]:
    """E_i for each variance or covariance (theta's layout): q x q, symmetric 0/1."""
    L_d, L_h = len(cp.D), len(cp.Dh)
    q = cp.q
    patterns = []
    for k, (t, i, j) in enumerate(cp.layout):
        if t == cp.d:
            rows = cols = np.arange(L_d)
        elif t == cp.h:
            rows = cols = L_d + np.arange(L_h)
        else:
            rows, cols = cp.lambda_rows[k] + L_d + L_h, cp.lambda_cols[k] + L_d + L_h
            if i != j:
                rows, cols = np.concatenate([rows, cols]), np.concatenate([cols, rows])
        patterns.append(scipy.sparse.csr_array((np.ones(len(rows)), (rows, cols)), shape=(q, q)))
    return patterns


@dataclass(frozen=True)
class Adjusted:
    """pbkrtest's ``vcovAdj``: the adjusted covariance and the P and W it keeps for the df."""

    vcov: np.ndarray          # Phi_A
    vcov0: np.ndarray         # Phi, lme4's vcov
    P: list[np.ndarray]
    W: np.ndarray


class _Products:
    """Sigma^-1 products through Woodbury (module docstring), in absolute units."""

    def __init__(self, fit: MixedFit) -> None:
        cp = fit.products
        ZtZ, ZtX, Lam = _full_design(cp, fit.theta.to_numpy())
        q, s2 = len(ZtZ), fit.sigma**2
        XtX = cp.MM[:cp.p, :cp.p]
        B = Lam @ np.linalg.solve(Lam.T @ ZtZ @ Lam + np.eye(q), Lam.T)
        R = np.eye(q) - B @ ZtZ
        BZtX = B @ ZtX
        YtY = XtX - 2 * ZtX.T @ BZtX + BZtX.T @ ZtZ @ BZtX       # Y = X - Z B Z'X = sigma^2 Sigma^-1 X
        ZtY = R.T @ ZtX
        self.SZ = (ZtZ - ZtZ @ B @ ZtZ) / s2                       # Z' Sigma^-1 Z
        self.SX = ZtY / s2                                         # Z' Sigma^-1 X
        self.XSX = (XtX - ZtX.T @ BZtX) / s2                       # X' Sigma^-1 X
        self.S2Z = R.T @ ZtZ @ R / s2**2                           # Z' Sigma^-2 Z
        self.S2X = R.T @ ZtY / s2**2                               # Z' Sigma^-2 X
        self.XS2X = YtY / s2**2                                    # X' Sigma^-2 X
        self.XS3X = (YtY - ZtY.T @ B @ ZtY) / s2**3                # X' Sigma^-3 X
        BZtZ = B @ ZtZ
        self.trace_S2 = (cp.n - 2 * np.trace(BZtZ) + np.sum(BZtZ * BZtZ.T)) / s2**2


def _pieces(fit: MixedFit) -> tuple[list[np.ndarray], dict[tuple[int, int], np.ndarray], np.ndarray]:
    """pbkrtest's P_i, Q_ij (i <= j) and K_ij = tr(G_i Sigma^-1 G_j Sigma^-1)."""
    s = _Products(fit)
    E = _patterns(fit.products)
    m = len(E) + 1                                                 # the residual last
    ESX = [e @ s.SX for e in E]
    P = [-s.SX.T @ e_sx for e_sx in ESX] + [-s.XS2X]
    ESZ = [np.asarray(e @ s.SZ) for e in E]
    Q: dict[tuple[int, int], np.ndarray] = {}
    K = np.empty((m, m))
    for i in range(m):
        for j in range(i, m):
            if j < m - 1:                                          # two random-effect parameters
                Q[i, j] = ESX[i].T @ s.SZ @ ESX[j]
                K[i, j] = np.sum(ESZ[i] * ESZ[j].T)
            elif i < m - 1:                                        # one and the residual
                Q[i, j] = ESX[i].T @ s.S2X
                K[i, j] = float((E[i] @ s.S2Z).trace())
            else:
                Q[i, j] = s.XS3X
                K[i, j] = s.trace_S2
            K[j, i] = K[i, j]
    return P, Q, K


def vcov_adjusted(fit: MixedFit) -> Adjusted:
    """pbkrtest's ``vcovAdj``: Phi_A = Phi + 2 Phi U Phi (Kenward & Roger 1997, eq. 5)."""
    if not fit.reml:
        raise ValueError("Kenward-Roger's adjustment is defined for REML fits; refit with reml=True")
    Phi = fit.vcov.to_numpy()
    with threadpool_limits(1):
        P, Q, K = _pieces(fit)
    m = len(P)
    IE2 = np.empty((m, m))
    for i in range(m):
        for j in range(i, m):
            IE2[i, j] = IE2[j, i] = (K[i, j] - 2 * np.sum(Phi * Q[i, j])
                                     + np.sum((Phi @ P[i]) * (P[j] @ Phi)))
    eigen = np.linalg.eigvalsh(IE2)
    W = 2 * (np.linalg.inv(IE2) if np.min(np.abs(eigen)) > 1e-10 else np.linalg.pinv(IE2))
    U = sum((W[i, j] * (Q[i, j] - P[i] @ Phi @ P[j]) for i in range(m) for j in range(i + 1, m)),
            np.zeros_like(Phi))
    U = U + U.T + sum((W[i, i] * (Q[i, i] - P[i] @ Phi @ P[i]) for i in range(m)), np.zeros_like(Phi))
    return Adjusted(Phi + 2 * Phi @ U @ Phi, Phi, P, W)


def kenward_roger_df(adjusted: Adjusted, L: np.ndarray) -> float:
    """pbkrtest's ``Lb_ddf``: the denominator df of the F test of L beta = 0 (q = rows of L)."""
    L = np.atleast_2d(L)
    V0, P, W = adjusted.vcov0, adjusted.P, adjusted.W
    ThetaV0 = L.T @ np.linalg.solve(L @ V0 @ L.T, L) @ V0
    A1 = A2 = 0.0
    for i in range(len(P)):
        for j in range(i, len(P)):
            e = 1 if i == j else 2
            ui, uj = ThetaV0 @ P[i] @ V0, ThetaV0 @ P[j] @ V0
            A1 += e * W[i, j] * np.trace(ui) * np.trace(uj)
            A2 += e * W[i, j] * np.sum(ui * uj.T)
    q = L.shape[0]
    B = (A1 + 6 * A2) / (2 * q)
    g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
    c1, c2, c3 = (g / (3 * q + 2 * (1 - g)), (q - g) / (3 * q + 2 * (1 - g)),
                  (q + 2 - g) / (3 * q + 2 * (1 - g)))
    v0, v1, v2 = 1 + c1 * B, 1 - c2 * B, 1 - c3 * B
    v0 = 0.0 if abs(v0) < 1e-10 else v0
    ratio = 1.0 if abs(1 - A2 / q) < 1e-14 and abs(v1) < 1e-14 else (1 - A2 / q) / v1
    rho = ratio**2 * v0 / (q * v2)
    return float(4 + (q + 2) / (q * rho - 1))


def kenward_roger(fit: MixedFit, contrasts: Mapping[str, Contrast] | None = None,
                  level: float = 0.95) -> pd.DataFrame:
    """Wald t tests and intervals with Kenward-Roger's covariance and df (lmerTest's ``contest``
    with ``ddf = "Kenward-Roger"``, which calls pbkrtest).

    The standard error is sqrt(L Phi_A L'), from the adjusted covariance; the df are pbkrtest's
    ``Lb_ddf`` for each contrast alone. See :func:`kenward_roger_affordable` for its cost.

    Parameters
    ----------
    fit : MixedFit
        A REML fit of :func:`~transferstats.analysis.lmm.fit_lmm`.
    contrasts : mapping of str to contrast, optional
        As :func:`~transferstats.analysis.inference.satterthwaite`'s; each fixed effect by default.
    level : float, default 0.95
        Confidence level of the intervals.

    Returns
    -------
    pandas.DataFrame
        One row per contrast: contrast, estimate, se, df, t, p_value, ci_low, ci_high, method
        (``"Kenward-Roger"``).

    Raises
    ------
    ValueError
        For an ML fit, or a model too large (:func:`kenward_roger_affordable` gives the reason).

    References
    ----------
    .. [1] Kenward, M. G. & Roger, J. H. (1997). Small sample inference for fixed effects from
       restricted maximum likelihood. Biometrics 53(3), 983-997.
    .. [2] Halekoh, U. & Hoejsgaard, S. (2014). A Kenward-Roger approximation and parametric
       bootstrap methods for tests in linear mixed models -- the R package pbkrtest. Journal of
       Statistical Software 59(9), 1-30.
    """
    affordable, reason = kenward_roger_affordable(fit)
    if not affordable:
        raise ValueError(f"kenward_roger: {reason}")
    L = contrast_matrix(fit, contrasts)
    adjusted = vcov_adjusted(fit)
    values = L.to_numpy()
    se = np.sqrt(np.einsum("ci,ij,cj->c", values, adjusted.vcov, values))
    df = np.array([kenward_roger_df(adjusted, row) for row in values])
    return wald_table(fit, L, se, df, "Kenward-Roger", level)
