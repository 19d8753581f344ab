"""Linear mixed models with crossed random intercepts, fitted fast enough to bootstrap.

The model is

    y = X beta + sum_k Z_k u_k + e,    u_k ~ N(0, sigma_k^2 I),    e ~ N(0, sigma^2 I),

with one random intercept per categorical column k (target task, language within target, mix) and
the seeds as residual replicates. It is the model statsmodels fits with ``MixedLM`` given a single
group covering every row and one variance component per factor; :func:`fit_crossed_statsmodels` is
that reference.

The fast path (:func:`fit_crossed`) follows the profiled-likelihood formulation of lme4 (Bates,
Maechler, Bolker & Walker 2015, "Fitting linear mixed-effects models using lme4", J. Stat. Softw.
67(1), section 3): with relative covariance factors theta_k = sigma_k / sigma the fixed effects and
sigma^2 have closed forms, and the (RE)ML criterion is a function of theta alone, evaluated from the
cross-products Z'Z, Z'X, Z'y, X'X, X'y, y'y. These are computed once per data set with
``np.bincount``: the random effects have a few hundred levels while the rows are tens of thousands,
so after that every evaluation costs one Cholesky factorisation of a small matrix. The block of
Z'Z belonging to a single factor is diagonal (each row has exactly one level), so the largest
factor is eliminated by a Schur complement and only the remaining levels need a dense Cholesky.

The optimum is found by projected Newton steps (a variance component may be exactly zero) with the
exact score and Hessian of the log-likelihood in the variance ratios psi_k = theta_k^2 -- the
parameterisation statsmodels uses -- falling back to L-BFGS-B when Newton fails. The same
Hessian gives the covariance of the fixed effects exactly as ``MixedLMResults.cov_params()``
reports it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.optimize
import scipy.stats

#: A factor whose relative standard deviation sigma_k / sigma is below this is reported on the
#: boundary (its variance is below 1e-8 of the residual variance).
BOUNDARY_THETA = 1e-4


@dataclass
class CrossedFit:
    """A fitted crossed random-intercept linear mixed model (see :func:`fit_crossed`).

    Attributes
    ----------
    params : pandas.Series
        Fixed effects, indexed by term (``"Intercept"`` first).
    cov_params : pandas.DataFrame
        Covariance of the fixed effects: the fixed-effect block of the inverse of the negative
        Hessian of the log-likelihood in (beta, variance ratios), as statsmodels' ``MixedLM``
        reports it.
    variance_components : dict of str to float
        Variance of each random intercept, by factor.
    residual_variance : float
        Variance of the residual (the replicates).
    llf : float
        REML (``reml=True``) or ML log-likelihood at the optimum, on statsmodels' scale, so fits
        of the same data can be compared with either implementation.
    reml : bool
        Whether the fit is REML.
    converged : bool
        Whether the optimiser met its convergence criterion.
    on_boundary : list of str
        Factors whose variance is estimated at zero (relative SD below ``BOUNDARY_THETA``).
    fitted, residuals : numpy.ndarray
        Conditional fitted values X beta + Z u (u the BLUPs) and residuals, in the order of the
        rows that entered the model.
    method : str
        ``"fast"`` (this module's solver) or ``"statsmodels"`` (the fallback and reference).
    n_obs : int
        Rows that entered the model (rows with a missing value are left out).
    random_effects : dict of str to pandas.Series
        The BLUPs of each factor, indexed by level (fast path only).
    """

    params: pd.Series
    cov_params: pd.DataFrame
    variance_components: dict[str, float]
    residual_variance: float
    llf: float
    reml: bool
    converged: bool
    on_boundary: list[str]
    fitted: np.ndarray
    residuals: np.ndarray
    method: str
    n_obs: int = 0
    random_effects: dict[str, pd.Series] = field(default_factory=dict)

    @property
    def terms(self) -> list[str]:
        """Names of the fixed effects, in model order."""
        return list(self.params.index)

    @property
    def bse(self) -> pd.Series:
        """Standard errors of the fixed effects."""
        return pd.Series(np.sqrt(np.diag(self.cov_params.to_numpy())), index=self.params.index,
                         name="se")

    def summary_frame(self) -> pd.DataFrame:
        """One row per fixed effect: estimate, standard error, Wald z and its two-sided p-value."""
        se = self.bse.to_numpy()
        z = self.params.to_numpy() / se
        return pd.DataFrame({
            "term": self.terms,
            "estimate": self.params.to_numpy(),
            "se": se,
            "z": z,
            "p_value": 2 * scipy.stats.norm.sf(np.abs(z)),
        })

    def summary(self) -> str:
        """The fit as text: fixed effects with Wald tests, variance components, fit statistics."""
        criterion = "REML" if self.reml else "ML"
        lines = [f"Crossed random-intercept linear mixed model, {criterion} ({self.method} solver)",
                 f"observations: {self.n_obs}   log-likelihood: {self.llf:.4f}   "
                 f"converged: {'yes' if self.converged else 'no'}", "",
                 self.summary_frame().to_string(index=False, float_format=lambda v: f"{v:.6g}"), "",
                 "variance components:"]
        width = max(len(name) for name in [*self.variance_components, "residual"])
        for factor, variance in self.variance_components.items():
            boundary = "  (on the boundary)" if factor in self.on_boundary else ""
            lines.append(f"  {factor:<{width}}  {variance:.6g}  (SD {np.sqrt(variance):.4g}){boundary}")
        lines.append(f"  {'residual':<{width}}  {self.residual_variance:.6g}  "
                     f"(SD {np.sqrt(self.residual_variance):.4g})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _fixed_effects(terms: list[str], beta: np.ndarray, cov: np.ndarray) -> tuple[pd.Series, pd.DataFrame]:
    return (pd.Series(beta, index=terms, name="estimate"),
            pd.DataFrame(cov, index=terms, columns=terms))


# --------------------------------------------------------------------------------------------
# Data -> arrays


@dataclass
class ModelArrays:
    """The model's data as compact arrays: what the fast path and the bootstrap workers need."""

    y: np.ndarray                 # (n,)
    X: np.ndarray                 # (n, p), first column the intercept
    codes: list[np.ndarray]       # per random factor, level index of each row
    levels: list[np.ndarray]      # per random factor, the level labels
    terms: list[str]
    factors: list[str]
    row_index: pd.Index           # index labels of the rows that entered the model


def model_arrays(data: pd.DataFrame, outcome: str, fixed: Sequence[str],
                 random: Sequence[str]) -> ModelArrays:
    """Rows with a missing outcome, fixed or random value are left out (as statsmodels does)."""
    fixed, random = list(fixed), list(random)
    used = data[[outcome, *fixed, *random]].dropna()
    y = used[outcome].to_numpy(dtype=float)
    X = np.column_stack([np.ones(len(used)), used[fixed].to_numpy(dtype=float)]) if fixed \
        else np.ones((len(used), 1))
    codes, levels = [], []
    for factor in random:
        code, uniques = pd.factorize(used[factor], sort=True)
        codes.append(code.astype(np.int64))
        levels.append(np.asarray(uniques))
    return ModelArrays(y, X, codes, levels, ["Intercept", *fixed], random, used.index)


# --------------------------------------------------------------------------------------------
# Cross-products


@dataclass
class CrossProducts:
    """Every data quantity the likelihood needs. Z stacks one indicator block per factor."""

    n: int
    n_levels: np.ndarray          # levels per factor
    C: np.ndarray                 # Z'Z (q, q)
    ZtXy: np.ndarray              # [Z'X, Z'y] (q, p + 1)
    XyXy: np.ndarray              # [X y]'[X y] (p + 1, p + 1)
    diagonal_factor: int          # the factor eliminated by the Schur complement
    dense_index: np.ndarray       # columns of Z outside that factor
    diagonal_slice: slice
    C_rr: np.ndarray              # Z'Z blocks: dense-dense, dense-diagonal, diagonal counts
    C_rd: np.ndarray
    c_d: np.ndarray

    @property
    def p(self) -> int:
        return self.XyXy.shape[0] - 1

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.n_levels)])


def cross_products(X: np.ndarray, y: np.ndarray, codes: Sequence[np.ndarray],
                   n_levels: Sequence[int]) -> CrossProducts:
    """Z'Z, Z'X, Z'y, X'X, X'y and y'y from level codes, with one pass of bincount per block."""
    n_levels = np.asarray(n_levels, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_levels)])
    q = int(offsets[-1])
    Xy = np.column_stack([X, y])
    C = np.zeros((q, q))
    ZtXy = np.empty((q, Xy.shape[1]))
    for i, (code_i, L_i) in enumerate(zip(codes, n_levels)):
        block_i = slice(offsets[i], offsets[i + 1])
        C[block_i, block_i] = np.diag(np.bincount(code_i, minlength=L_i))
        for col in range(Xy.shape[1]):
            ZtXy[block_i, col] = np.bincount(code_i, weights=Xy[:, col], minlength=L_i)
        for j in range(i + 1, len(codes)):
            L_j = n_levels[j]
            block_j = slice(offsets[j], offsets[j + 1])
            table = np.bincount(code_i * L_j + codes[j], minlength=L_i * L_j).reshape(L_i, L_j)
            C[block_i, block_j] = table
            C[block_j, block_i] = table.T
    diagonal_factor = int(np.argmax(n_levels)) if len(n_levels) else 0
    diagonal_slice = slice(offsets[diagonal_factor], offsets[min(diagonal_factor + 1, len(codes))])
    dense_index = np.setdiff1d(np.arange(q), np.arange(q)[diagonal_slice])
    return CrossProducts(len(y), n_levels, C, ZtXy, Xy.T @ Xy, diagonal_factor, dense_index,
                         diagonal_slice, C[np.ix_(dense_index, dense_index)],
                         C[dense_index, diagonal_slice], np.diag(C)[diagonal_slice].copy())


# --------------------------------------------------------------------------------------------
# The profiled criterion in theta (fast; used by the optimiser)


def factor_m(theta: np.ndarray, cp: CrossProducts):
    """Factorise M = I + Lambda Z'Z Lambda; return log|M| and a function applying M^-1.

    The block of M belonging to the diagonal factor is diagonal (D), so M is factorised
    through the Schur complement S = M_rr - B D^-1 B' of that block: one Cholesky of the
    remaining levels only.
    """
    lam = np.repeat(theta, cp.n_levels)
    d, r = cp.diagonal_slice, cp.dense_index
    theta_d = theta[cp.diagonal_factor] if len(theta) else 0.0
    D = 1.0 + theta_d ** 2 * cp.c_d
    log_det = float(np.sum(np.log(D)))
    if len(r):
        lam_r = lam[r]
        B = lam_r[:, None] * cp.C_rd * theta_d
        B_over_D = B / D[None, :]
        S = np.eye(len(r)) + lam_r[:, None] * cp.C_rr * lam_r[None, :] - B_over_D @ B.T
        chol = scipy.linalg.cho_factor(S, lower=True, check_finite=False)
        log_det += 2 * float(np.sum(np.log(np.diag(chol[0]))))

    def solve(rhs: np.ndarray) -> np.ndarray:
        out = np.empty_like(rhs)
        rhs_d = rhs[d]
        if len(r):
            x_r = scipy.linalg.cho_solve(chol, rhs[r] - B_over_D @ rhs_d, check_finite=False)
            out[r] = x_r
            rhs_d = rhs_d - B.T @ x_r
        out[d] = rhs_d / D[:, None]
        return out

    return log_det, solve


def profiled_deviance(theta: np.ndarray, cp: CrossProducts, reml: bool = True
                      ) -> tuple[float, np.ndarray, float]:
    """-2 x the profiled (RE)ML log-likelihood at relative factors ``theta``; also beta and r^2.

    With Lambda = diag(theta_k per level) and M = I + Lambda Z'Z Lambda (Bates et al. 2015,
    eqs. 34-42): r^2 = penalised residual sum of squares, and

        REML: log|M| + log|X'V^-1 X| + (n - p) (1 + log(2 pi r^2 / (n - p)))
        ML:   log|M| + n (1 + log(2 pi r^2 / n))

    which is -2 x statsmodels' MixedLM ``loglike`` at the same parameters.
    """
    p = cp.p
    log_det_M, solve = factor_m(theta, cp)
    W = np.repeat(theta, cp.n_levels)[:, None] * cp.ZtXy
    WMW = W.T @ solve(W)
    A = cp.XyXy - WMW
    L = np.linalg.cholesky(A)
    r2 = L[p, p] ** 2
    beta = scipy.linalg.solve_triangular(L[:p, :p].T, L[p, :p], lower=False, check_finite=False)
    dof = cp.n - p if reml else cp.n
    deviance = log_det_M + dof * (1 + np.log(2 * np.pi * r2 / dof))
    if reml:
        deviance += 2 * np.sum(np.log(np.diag(L)[:p]))
    return float(deviance), beta, float(r2)


# --------------------------------------------------------------------------------------------
# Exact derivatives in psi = theta^2 (polishing and standard errors)


@dataclass
class Derivatives:
    """Score in psi and Hessian in (beta, psi) of statsmodels' scale-profiled log-likelihood."""

    score_psi: np.ndarray
    hessian: np.ndarray           # (p + K, p + K), fixed effects first

    def profiled(self, p: int) -> np.ndarray:
        """Hessian in psi with beta profiled out (Schur complement)."""
        H = self.hessian
        return H[p:, p:] - H[p:, :p] @ np.linalg.solve(H[:p, :p], H[:p, p:])


def derivatives(psi: np.ndarray, beta: np.ndarray, cp: CrossProducts, reml: bool = True
                ) -> Derivatives:
    """Exact score and Hessian of l(beta, psi) = -1/2 log|V| [-1/2 log|X'V^-1 X|] - f/2 log r'V^-1 r.

    V = I + sum_k psi_k Z_k Z_k' is the marginal covariance over sigma^2 and f = n - p (REML) or n
    (ML); this is the function whose Hessian ``MixedLM.hessian`` returns, so inverting its negative
    reproduces ``MixedLMResults.cov_params()``. Everything reduces to q-dimensional quantities
    through Z'V^-1 = (I + Z'Z Psi)^-1 Z' = Z' - Z'Z Lambda M^-1 Lambda Z'; the formulas are the standard ones (e.g. Searle,
    Casella & McCulloch 1992, "Variance Components", ch. 6).
    """
    p, C = cp.p, cp.C
    q = C.shape[0]
    Psi = np.repeat(psi, cp.n_levels)
    ZtX, Zty = cp.ZtXy[:, :p], cp.ZtXy[:, p]
    XtX, Xty, yty = cp.XyXy[:p, :p], cp.XyXy[:p, p], cp.XyXy[p, p]
    Ztr = Zty - ZtX @ beta
    # Z'V^-1 F = F - C Lambda M^-1 Lambda F for F = [Z'Z, Z'X, Z'r] (Woodbury).
    lam = np.sqrt(Psi)
    F = np.column_stack([C, ZtX, Ztr])
    _, solve = factor_m(np.sqrt(psi), cp)
    solved = F - (C * lam[None, :]) @ solve(lam[:, None] * F)
    G, W, w = solved[:, :q], solved[:, q:q + p], solved[:, q + p]
    G = (G + G.T) / 2  # Z'V^-1 Z is symmetric; remove rounding asymmetry
    A = XtX - ZtX.T @ (Psi[:, None] * W)
    Q = yty - 2 * beta @ Xty + beta @ XtX @ beta - Ztr @ (Psi * w)
    fac = cp.n - p if reml else cp.n
    offsets = cp.offsets
    blocks = [slice(offsets[k], offsets[k + 1]) for k in range(len(psi))]
    K = len(psi)
    A_inv = np.linalg.inv(A)
    WtW = [W[b].T @ W[b] for b in blocks]
    wtw = np.array([w[b] @ w[b] for b in blocks])
    score = np.empty(K)
    H = np.zeros((p + K, p + K))
    H[:p, :p] = -fac * A / Q
    for j, bj in enumerate(blocks):
        score[j] = -0.5 * np.trace(G[bj, bj]) + 0.5 * fac * wtw[j] / Q
        if reml:
            score[j] += 0.5 * np.sum(A_inv * WtW[j])
        H[:p, p + j] = H[p + j, :p] = -fac * (W[bj].T @ w[bj]) / Q
        for k in range(j + 1):
            bk = blocks[k]
            G_jk = G[bj, bk]
            h = 0.5 * np.sum(G_jk ** 2)
            h -= 0.5 * fac * (2 * w[bj] @ G_jk @ w[bk] / Q - wtw[j] * wtw[k] / Q ** 2)
            if reml:
                cross = W[bj].T @ G_jk @ W[bk]
                h -= 0.5 * np.sum(A_inv * (cross + cross.T))
                h += 0.5 * np.sum((A_inv @ WtW[j]) * (A_inv @ WtW[k]).T)
            H[p + j, p + k] = H[p + k, p + j] = h
    return Derivatives(score, H)


# --------------------------------------------------------------------------------------------
# Optimisation


@dataclass
class ThetaFit:
    """The optimum of the profiled criterion for one set of cross-products."""

    theta: np.ndarray
    beta: np.ndarray
    sigma2: float
    llf: float
    converged: bool

    @property
    def psi(self) -> np.ndarray:
        return self.theta ** 2


def fit_theta(cp: CrossProducts, reml: bool = True, start: np.ndarray | None = None
              ) -> ThetaFit:
    """Maximise the profiled (RE)ML likelihood over theta >= 0.

    Projected Newton steps in the variance ratios psi = theta^2, with the exact profiled score
    and Hessian, from ``start`` (relative standard deviations, e.g. a full-data fit's when
    refitting a bootstrap resample: then a few steps suffice). Should that fail, L-BFGS-B on
    theta >= 0 finds the region of the optimum and Newton finishes from there.
    """
    K = len(cp.n_levels)
    dof = cp.n - cp.p if reml else cp.n
    if K == 0:  # ordinary least squares: nothing to optimise
        deviance, beta, r2 = profiled_deviance(np.zeros(0), cp, reml)
        return ThetaFit(np.zeros(0), beta, r2 / dof, -deviance / 2, True)
    theta0 = np.ones(K) if start is None else np.asarray(start, dtype=float)
    psi, deviance, beta, r2, converged = _newton(theta0 ** 2, cp, reml)
    if not converged:
        theta = _lbfgsb(np.maximum(theta0, 1e-3), cp, reml)
        psi, deviance, beta, r2, converged = _newton(theta ** 2, cp, reml)
    return ThetaFit(np.sqrt(psi), beta, r2 / dof, -deviance / 2, converged)


def _newton(psi: np.ndarray, cp: CrossProducts, reml: bool, max_steps: int = 50):
    """Projected Newton ascent on psi >= 0 with step halving.

    Components at zero whose score is negative stay fixed at zero (the boundary optimum);
    converged means the Newton decrement on the free components is negligible and their
    Hessian negative definite. Where the Hessian is not negative definite, a diagonally scaled
    gradient step is taken instead.
    """
    K = len(psi)
    deviance, beta, r2 = profiled_deviance(np.sqrt(psi), cp, reml)
    for _ in range(max_steps):
        dv = derivatives(psi, beta, cp, reml)
        score, H = dv.score_psi, dv.profiled(cp.p)
        free = (psi > 0) | (score > 0)
        if not free.any():
            return psi, deviance, beta, r2, True
        H_free = H[np.ix_(free, free)]
        step = np.zeros(K)
        try:
            np.linalg.cholesky(-H_free)
            step[free] = np.linalg.solve(-H_free, score[free])
            is_newton = True
        except np.linalg.LinAlgError:
            step[free] = score[free] / np.maximum(np.abs(np.diag(H_free)), 1e-8)
            is_newton = False
        decrement = score[free] @ step[free]
        if is_newton and decrement < 1e-10:
            return psi, deviance, beta, r2, True
        # Newton converges quadratically: once the decrement is this small, the step lands on
        # the optimum to rounding, and checking it would cost another set of derivatives.
        final = is_newton and decrement < 1e-6
        for _halving in range(40):
            candidate = np.maximum(psi + step, 0.0)
            try:
                cand = profiled_deviance(np.sqrt(candidate), cp, reml)
            except np.linalg.LinAlgError:
                cand = (np.inf, None, None)
            if cand[0] <= deviance + 1e-12 * abs(deviance):
                psi, (deviance, beta, r2) = candidate, cand
                if final:
                    return psi, deviance, beta, r2, True
                break
            step /= 2
        else:  # no step improves: at the optimum to rounding if the decrement is tiny
            return psi, deviance, beta, r2, bool(is_newton and decrement < 1e-6)
    return psi, deviance, beta, r2, False


def _lbfgsb(theta0: np.ndarray, cp: CrossProducts, reml: bool) -> np.ndarray:
    """A robust (slower) first pass: L-BFGS-B on theta >= 0 with finite-difference gradients."""

    def objective(theta):
        try:
            return profiled_deviance(theta, cp, reml)[0]
        except np.linalg.LinAlgError:
            return np.inf

    result = scipy.optimize.minimize(objective, theta0, method="L-BFGS-B",
                                     bounds=[(0.0, None)] * len(theta0),
                                     options={"ftol": 1e-12, "maxiter": 500})
    return result.x


# --------------------------------------------------------------------------------------------
# Public fits


def fit_crossed(data: pd.DataFrame, outcome: str, fixed: Sequence[str], random: Sequence[str],
                *, reml: bool = True, start: dict[str, float] | Sequence[float] | None = None
                ) -> CrossedFit:
    """Fit a linear mixed model with crossed random intercepts, fast enough to bootstrap.

    The model is ``outcome ~ 1 + fixed + (1 | random[0]) + (1 | random[1]) + ...``: one fixed
    slope per numeric column in ``fixed`` and one random intercept per categorical column in
    ``random``, the factors crossed or nested in any way, the residuals independent. It is what
    lme4 fits with ``lmer(y ~ x + (1 | a) + (1 | b) + (1 | c))`` and statsmodels with ``MixedLM``
    given one group and a variance component per factor, for any data, not only transfer grids.

    The optimum of the profiled (RE)ML criterion is found by Newton steps on exact derivatives
    computed from cross-products built once (module docstring). It agrees with statsmodels to
    optimiser precision (the tests compare them); when it cannot fit the model (a singular
    design) or does not converge, statsmodels' fit is returned instead, with a warning, and
    ``method`` says so. With no random factor the model is ordinary least squares.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per observation. Rows with a missing value in any column used are left out.
    outcome : str
        The response column.
    fixed : sequence of str
        Numeric predictor columns; an interaction enters as its own product column.
    random : sequence of str
        Categorical columns, each given a random intercept.
    reml : bool, default True
        REML (unbiased variance components) or maximum likelihood (needed to compare models
        with different fixed effects by a likelihood-ratio test).
    start : dict or sequence of float, optional
        Starting relative standard deviations sigma_k / sigma (by factor, or in ``random``'s
        order), e.g. from an earlier fit, to warm-start the optimiser.

    Returns
    -------
    CrossedFit
        ``params``, ``bse``, ``cov_params``, ``variance_components``, ``residual_variance``,
        ``llf``, ``converged``, ``method``, ``random_effects`` and ``summary()``.

    See Also
    --------
    likelihood_ratio_test : ML likelihood-ratio test of one fixed or random term.
    fit_crossed_statsmodels : the same model fitted by statsmodels (the reference).

    References
    ----------
    .. [1] Bates, D., Maechler, M., Bolker, B. & Walker, S. (2015). Fitting linear mixed-effects
       models using lme4. Journal of Statistical Software 67(1), 1-48. (The profiled criterion.)
    .. [2] Baayen, R. H., Davidson, D. J. & Bates, D. M. (2008). Mixed-effects modeling with
       crossed random effects for subjects and items. Journal of Memory and Language 59, 390-412.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from transferstats import fit_crossed
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"a": rng.integers(0, 8, 400), "b": rng.integers(0, 6, 400),
    ...                    "x": rng.normal(size=400)})
    >>> df["y"] = (2 + 0.5 * df["x"] + rng.normal(0, 1, 8)[df["a"]]
    ...            + rng.normal(0, 0.5, 6)[df["b"]] + rng.normal(0, 0.3, 400))
    >>> fit = fit_crossed(df, "y", fixed=["x"], random=["a", "b"])
    >>> round(float(fit.params["x"]), 1)
    0.5
    >>> sorted(fit.variance_components)
    ['a', 'b']
    """
    arrays = model_arrays(data, outcome, fixed, random)
    if isinstance(start, dict):
        start = [start[factor] for factor in arrays.factors]
    try:
        cp = cross_products(arrays.X, arrays.y, arrays.codes, [len(lv) for lv in arrays.levels])
        state = fit_theta(cp, reml, start)
    except np.linalg.LinAlgError as error:
        return _fallback(data, outcome, fixed, random, reml, f"linear algebra failure ({error})")
    if not state.converged:
        return _fallback(data, outcome, fixed, random, reml, "the fast path did not converge")
    return _crossed_fit(arrays, cp, state, reml)


def _fallback(data, outcome, fixed, random, reml, reason: str) -> CrossedFit:
    warnings.warn(f"fit_crossed: {reason}; falling back to statsmodels MixedLM", stacklevel=3)
    return fit_crossed_statsmodels(data, outcome, fixed, random, reml=reml)


def _crossed_fit(arrays: ModelArrays, cp: CrossProducts, state: ThetaFit, reml: bool
                 ) -> CrossedFit:
    """Assemble the public result: covariance, BLUPs, fitted values."""
    p = cp.p
    psi = state.psi
    H = derivatives(psi, state.beta, cp, reml).hessian
    cov = np.linalg.inv(-H)[:p, :p]
    lam = np.repeat(state.theta, cp.n_levels)
    # Conditional modes: b = Lambda M^-1 Lambda Z'(y - X beta) (Henderson's equations).
    Ztr = cp.ZtXy[:, p] - cp.ZtXy[:, :p] @ state.beta
    b = lam * factor_m(state.theta, cp)[1]((lam * Ztr)[:, None])[:, 0]
    offsets = cp.offsets
    fitted = arrays.X @ state.beta
    random_effects = {}
    for k, (factor, code) in enumerate(zip(arrays.factors, arrays.codes)):
        b_k = b[offsets[k]:offsets[k + 1]]
        fitted = fitted + b_k[code]
        random_effects[factor] = pd.Series(b_k, index=arrays.levels[k], name=factor)
    params, cov_params = _fixed_effects(arrays.terms, state.beta, cov)
    return CrossedFit(
        params=params,
        cov_params=cov_params,
        variance_components={f: float(v) for f, v in zip(arrays.factors, psi * state.sigma2)},
        residual_variance=state.sigma2,
        llf=state.llf,
        reml=reml,
        converged=state.converged,
        on_boundary=[f for f, t in zip(arrays.factors, state.theta) if t < BOUNDARY_THETA],
        fitted=fitted,
        residuals=arrays.y - fitted,
        method="fast",
        n_obs=len(arrays.y),
        random_effects=random_effects,
    )


def fit_crossed_statsmodels(data: pd.DataFrame, outcome: str, fixed: Sequence[str],
                            random: Sequence[str], *, reml: bool = True) -> CrossedFit:
    """The reference: statsmodels ``MixedLM`` with one group and a variance component per factor.

    The optimiser's tolerance is tightened so that the reference itself converges to the
    precision the fast path is tested against.
    """
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    arrays = model_arrays(data, outcome, fixed, random)
    model = statsmodels_model(arrays, reml)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = model.fit(reml=reml, method="bfgs", gtol=1e-12, maxiter=5000)
    # The tight gtol asks for more than floating point gives in flat directions, so BFGS may
    # stop on precision loss and say "not converged" at what is the optimum; judge by the score.
    score = model.score(result.params_object, profile_fe=True)
    converged = bool(result.converged) or bool(np.max(np.abs(score), initial=0.0) < 1e-4)
    n, p = arrays.X.shape
    params, cov_params = _fixed_effects(arrays.terms, np.asarray(result.fe_params),
                                        np.asarray(result.cov_params())[:p, :p])
    vcomp = np.asarray(result.vcomp)
    fitted = np.asarray(result.fittedvalues)
    return CrossedFit(
        params=params,
        cov_params=cov_params,
        variance_components={f: float(v) for f, v in zip(arrays.factors, vcomp)},
        residual_variance=float(result.scale),
        llf=float(result.llf),
        reml=reml,
        converged=converged,
        on_boundary=[f for f, v in zip(arrays.factors, vcomp)
                     if v < BOUNDARY_THETA ** 2 * result.scale],
        fitted=fitted,
        residuals=arrays.y - fitted,
        method="statsmodels",
        n_obs=n,
    )


def statsmodels_model(arrays: ModelArrays, reml: bool = True):
    """``MixedLM`` with one group covering every row and one variance component per factor."""
    import statsmodels.api as sm
    from statsmodels.regression.mixed_linear_model import VCSpec

    n = len(arrays.y)
    matrices = []
    for code, levels in zip(arrays.codes, arrays.levels):
        dummies = np.zeros((n, len(levels)))
        dummies[np.arange(n), code] = 1.0
        matrices.append([dummies])
    # VCSpec keeps the factors in the caller's order (a dict would be sorted by name).
    exog_vc = VCSpec(list(arrays.factors), [[[str(v) for v in lv]] for lv in arrays.levels],
                     matrices)
    model = sm.MixedLM(arrays.y, arrays.X, groups=np.ones(n), exog_vc=exog_vc)
    model.reml = reml
    model.exog_names[:] = arrays.terms
    return model


def likelihood_ratio_test(data: pd.DataFrame, outcome: str, fixed: Sequence[str],
                          random: Sequence[str], term: str) -> dict:
    """Likelihood-ratio test of one term, from ML fits with and without it.

    For a fixed term the statistic is referred to chi^2(1). For a random factor the null value
    (variance zero) is on the boundary of the parameter space, so the reference distribution is
    the 50:50 mixture of chi^2(0) and chi^2(1) (Self & Liang 1987, JASA 82:605-610).
    Both models are fitted by maximum likelihood because REML likelihoods of models with
    different fixed effects are not comparable.
    """
    fixed, random = list(fixed), list(random)
    if term in fixed:
        reduced_fixed, reduced_random = [f for f in fixed if f != term], random
    elif term in random:
        reduced_fixed, reduced_random = fixed, [r for r in random if r != term]
    else:
        raise KeyError(f"{term!r} is neither a fixed nor a random term of the model")
    rows = data.dropna(subset=[outcome, *fixed, *random])
    full = fit_crossed(rows, outcome, fixed, random, reml=False)
    reduced = fit_crossed(rows, outcome, reduced_fixed, reduced_random, reml=False)
    chi2 = max(2 * (full.llf - reduced.llf), 0.0)
    if term in fixed:
        p_value = scipy.stats.chi2.sf(chi2, 1)
    else:
        p_value = 0.5 * scipy.stats.chi2.sf(chi2, 1) if chi2 > 0 else 1.0
    return {"term": term, "chi2": float(chi2), "df": 1, "p_value": float(p_value)}
