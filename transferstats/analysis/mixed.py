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
cross-products Z'Z, Z'X, Z'y, X'X, X'y, y'y, computed once per data set with ``np.bincount``.

Like MixedModels.jl's blocked Cholesky factor (Bates, Alday & Kokandakar 2025, "Mixed-model
log-likelihood evaluation via a blocked Cholesky factorization", arXiv:2505.11674; lme4 leaves
this to CHOLMOD), it exploits that the block of Z'Z of a single factor is diagonal (each row has
exactly one level). The factor with most levels, d (students in InstEval, mixes in a grid of many
mixes), is eliminated analytically: V_0 = I + psi_d Z_d Z_d' has an explicit inverse, and by
Woodbury everything else reduces to the r x r matrix S = I + Lambda_r T Lambda_r over the r levels
of the other factors, T = Z_r' V_0^-1 Z_r = Z_r'Z_r - Z_r'Z_d diag(e) Z_d'Z_r (see
:class:`Factorisation`). This elimination is carried through the score and Hessian too
(:func:`derivatives`): no matrix over all q = r + L_d levels is ever formed, and the cost of an
evaluation is O(r^3) plus sparse products over the non-zeros of Z_r'Z_d, linear in L_d. Z_r'Z_d is
kept sparse unless it is dense enough for BLAS to be faster (``DENSE_SHARE``).

S itself is factorised densely with LAPACK. A sparse Cholesky (CHOLMOD through scikit-sparse)
would not pay: after eliminating d, T couples two levels whenever some level of d meets both, so
it is dense in practice (InstEval: 20% non-zero before any fill-in), and CHOLMOD's supernodal
factorisation of it would be a dense one; scikit-sparse also does not build from PyPI without the
SuiteSparse headers, and scipy has no sparse Cholesky. The limit of this design is a second
factor with many thousands of levels: S is dense r x r (InstEval: r = 1,142; a 1,000,000-row
grid of 10,000 mixes and 200 target-languages: r = 205). One such second factor is common and
handled apart: when d is nested in it (the mix-by-target cells of ``target_mix`` in the mixes),
S's block over its levels is diagonal, S is factorised in two blocks (:class:`FactorS`), and every
r x r matrix of an evaluation is kept diagonal plus low rank over those levels
(:mod:`transferstats.analysis.blocks`), so an evaluation costs O(r b^2) with b the levels of the
factors left (a grid of 1,100 mixes and 100 target-languages: b = 105, r = 1,205; a Newton
step's score and Hessian in 13 ms instead of 89 ms with dense r x r arrays). Only Z_r'Z_r is still
stored densely.

The optimum is found by projected Newton steps in theta (a variance component may be exactly
zero) with the exact score and Hessian of the log-likelihood in the variance ratios
psi_k = theta_k^2 -- the parameterisation statsmodels uses -- from moment estimates
(:func:`moment_start`), falling back to L-BFGS-B when Newton fails. The same Hessian gives the
covariance of the fixed effects exactly as ``MixedLMResults.cov_params()`` reports it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple, overload

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse

from transferstats.analysis.blocks import Blocked, RowSplit, other_rows
from transferstats.parallel import blas_threads_for

if TYPE_CHECKING:
    from transferstats.analysis.lmm import MixedFit

#: A factor whose relative standard deviation sigma_k / sigma is below this is reported on the
#: boundary (its variance is below 1e-8 of the residual variance).
BOUNDARY_THETA = 1e-4

#: Largest rows x levels (of all random factors together) that :func:`fit_crossed` hands to
#: statsmodels when its own solver fails. ``MixedLM`` works with the dense n x q design, and its
#: time grows faster than n q: measured (one core, REML, transfer grids) 0.5 s at 55,000, 7 s at
#: 420,000, 37 s at 1.5 million and a minute at 2.9 million; InstEval's 300 million would take
#: hours. Up to this size the fallback costs seconds.
STATSMODELS_MAX_SIZE = 300_000


def _stats():
    """Return scipy.stats, imported where a p-value needs it.

    Its import costs about as much CPU time as a whole REML fit of lme4's InstEval, which a first
    fit in a fresh process should not pay.
    """
    import scipy.stats

    return scipy.stats


class ConvergenceError(ValueError):
    """The fast solver could not fit a model too large to hand to statsmodels.

    A ``ValueError``, as for other data that cannot be fitted (callers that report an
    unfittable model catch it with them); the message says what was tried.
    """


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
    def relative_sds(self) -> dict[str, float]:
        """sigma_k / sigma by factor: where a fit of the same or a nearby model can start."""
        scale = self.residual_variance if self.residual_variance > 0 else 1.0
        return {f: float(np.sqrt(v / scale)) for f, v in self.variance_components.items()}

    def fits(self, fixed: Sequence[str], random: Sequence[str], n_obs: int) -> bool:
        """Whether this is a fit of the model with these terms to ``n_obs`` rows."""
        return (self.terms == ["Intercept", *fixed] and list(self.variance_components) == list(random)
                and self.n_obs == n_obs)

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
            "p_value": 2 * _stats().norm.sf(np.abs(z)),
        })

    def summary(self) -> str:
        """Return the fit as text: fixed effects with Wald tests, variance components, fit statistics."""
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

#: Z_r'Z_d (levels of the other factors x levels of the eliminated one) is kept dense when at
#: least this share of its entries is non-zero. Its weighted Gram matrix Z_r'Z_d E Z_d'Z_r is
#: then a BLAS product costing 2 r^2 L_d flops; sparse, it costs about sum over levels of d of
#: (non-zeros in the column)^2 operations at 20-50 times BLAS's cost each, so sparse wins below
#: a density of about 1/8 (InstEval: 3% dense, 15x faster sparse; a grid of 10,000 mixes by 200
#: target-languages: 50% dense, 40x faster dense).
DENSE_SHARE = 0.125


@dataclass
class CrossProducts:
    """Every data quantity the likelihood needs, blocked around the eliminated factor.

    Z = [Z_1 ... Z_K] stacks one indicator block per factor. The factor with most levels, d, is
    eliminated analytically (its block Z_d'Z_d is diagonal); ``r`` indexes the levels of the
    other ("remaining") factors, in model order.
    """

    n: int
    n_levels: np.ndarray          # levels per factor, in model order
    XyXy: np.ndarray              # [X y]'[X y] (p + 1, p + 1)
    diagonal_factor: int          # d; -1 when there is no random factor
    remaining: list[int]          # the other factors, in model order
    c_d: np.ndarray               # Z_d'Z_d = diag(c_d): rows per level of d
    C_dx: np.ndarray              # Z_d'[X y] (L_d, p + 1)
    C_rd: np.ndarray | scipy.sparse.csr_array   # Z_r'Z_d (r, L_d), dense or sparse (DENSE_SHARE)
    C_rr: Blocked                 # Z_r'Z_r (r, r) in blocks around ``nested``
    C_rx: np.ndarray              # Z_r'[X y] (r, p + 1)
    #: The rows in r of the largest remaining factor within which d is nested (each level of d
    #: meets at most one of its levels, as mix-by-target cells meet one mix): S's block over
    #: them is diagonal (:class:`FactorS`), as C_rr's is. An empty slice when there is none.
    nested: slice

    @property
    def p(self) -> int:
        """Number of fixed effects."""
        return self.XyXy.shape[0] - 1

    @property
    def dense_order(self) -> int:
        """The order of the dense block of S factorised at each evaluation (:class:`FactorS`).

        The remaining levels, less those of the nested factor, whose block is diagonal.
        """
        r = int(self.n_levels[self.remaining].sum()) if self.remaining else 0
        return r - len(range(r)[self.nested])

    @property
    def offsets(self) -> np.ndarray:
        """Where each factor's levels start in a vector over all levels, in model order."""
        return np.concatenate([[0], np.cumsum(self.n_levels)])

    @cached_property
    def rd_split(self) -> RowSplit:
        """Z_r'Z_d split at the nested factor's rows, for the Gram matrices of each evaluation."""
        return RowSplit.of(self.C_rd, self.nested, DENSE_SHARE, groups=self.c_d, base=self.C_rr)

    @cached_property
    def moment_system(self) -> MomentSystem:
        """The design side of the moment equations of :func:`moment_start`."""
        return _moment_system(self)

    @property
    def blocks(self) -> dict[int, slice]:
        """Each remaining factor's rows in the r-indexed arrays."""
        ends = np.cumsum(self.n_levels[self.remaining])
        return {k: slice(int(end - self.n_levels[k]), int(end))
                for k, end in zip(self.remaining, ends, strict=True)}


def cross_products(X: np.ndarray, y: np.ndarray, codes: Sequence[np.ndarray],
                   n_levels: Sequence[int]) -> CrossProducts:
    """Z'Z, Z'X, Z'y, X'X, X'y and y'y from level codes, blocked around the largest factor."""
    return cross_products_of(np.ascontiguousarray(np.column_stack([X, y])), codes, n_levels)


def cross_products_of(Xy: np.ndarray, codes: Sequence[np.ndarray], n_levels: Sequence[int]
                      ) -> CrossProducts:
    """:func:`cross_products` of ``Xy`` = [X y] (n, p + 1), row-major.

    One pass over the rows per block; Z_r'Z_d, the only block that can be both large and
    sparse, is assembled as a sparse matrix and densified only when dense enough to pay.
    """
    sizes = np.asarray(n_levels, dtype=np.int64)
    n = len(Xy)
    K = len(codes)

    def totals(code: np.ndarray, n_level: int) -> np.ndarray:  # Z_k'[X y]
        # Z_k' as a sparse matrix with one entry per column needs no sorting to build, and its
        # product with [X y] is one pass over the rows: on a 1,000,000-row resample it took
        # two thirds of the time of a weighted np.bincount per column.
        Z_t = scipy.sparse.csc_array((np.ones(n), code, np.arange(n + 1)), shape=(n_level, n))
        return Z_t @ Xy

    if K:
        d = int(np.argmax(sizes))
        code_d, L_d = codes[d], int(sizes[d])
        c_d = np.bincount(code_d, minlength=L_d).astype(float)
        C_dx = totals(code_d, L_d)
    else:  # no random factor: nothing to eliminate
        d, code_d, L_d = -1, np.zeros(0, dtype=np.int64), 0
        c_d, C_dx = np.zeros(0), np.zeros((0, Xy.shape[1]))
    remaining = [k for k in range(K) if k != d]
    starts = np.concatenate([[0], np.cumsum(sizes[remaining])]).astype(np.int64)
    C_rd, d_nested_in = _cross_table([codes[k] for k in remaining],
                                     [int(sizes[k]) for k in remaining], code_d, c_d)
    # d is nested in the largest factor it can be.
    nested_in = next((i for i, _k in sorted(enumerate(remaining), key=lambda item: -sizes[item[1]])
                      if d_nested_in[i]), None)
    C_rx = np.empty((int(starts[-1]), Xy.shape[1]))
    for i, k in enumerate(remaining):
        C_rx[starts[i]:starts[i + 1]] = totals(codes[k], sizes[k])
    C_rr = _blocked_counts([codes[k] for k in remaining], sizes[remaining], nested_in)
    return CrossProducts(n, sizes, Xy.T @ Xy, d, remaining, c_d, C_dx, C_rd, C_rr, C_rx,
                         C_rr.A)


def _blocked_counts(codes: list[np.ndarray], sizes: np.ndarray, nested_in: int | None
                    ) -> Blocked:
    """Z_r'Z_r of the factors with level ``codes``, in blocks around factor ``nested_in``'s rows.

    A factor's block with itself is diagonal, and the blocks are counted directly rather than
    cut from a dense r x r array (on a 1,100-mix grid's resamples, zeroing that array and
    cutting it into blocks cost 3 of a refit's 50 ms).
    """
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    A = slice(0, 0) if nested_in is None else slice(starts[nested_in], starts[nested_in + 1])
    B = other_rows(A, int(starts[-1]))
    starts_in_B = np.searchsorted(B, starts[:-1])  # of the factors other than A's

    def in_B(i: int) -> slice:
        return slice(starts_in_B[i], starts_in_B[i] + sizes[i])

    diag, AB, BB = np.zeros(0), np.zeros((A.stop - A.start, len(B))), np.zeros((len(B), len(B)))
    for i, code in enumerate(codes):
        counts = np.bincount(code, minlength=sizes[i]).astype(float)
        if i == nested_in:
            diag = counts
        else:
            at = np.arange(in_B(i).start, in_B(i).stop)
            BB[at, at] = counts
        for j in range(i + 1, len(codes)):
            table = np.bincount(code * sizes[j] + codes[j],
                                minlength=sizes[i] * sizes[j]).reshape(sizes[i], sizes[j])
            if i == nested_in:
                AB[:, in_B(j)] = table
            elif j == nested_in:
                AB[:, in_B(i)] = table.T
            else:
                BB[in_B(i), in_B(j)] = table
                BB[in_B(j), in_B(i)] = table.T
    return Blocked.from_blocks(A, B, diag, AB, BB)


def with_response(cp: CrossProducts, X: np.ndarray, y: np.ndarray,
                  codes: Sequence[np.ndarray]) -> CrossProducts:
    """Return the cross-products of the same design (``X``, ``codes``) with another response ``y``.

    Only the y column of Z'[X y] and the y row and column of [X y]'[X y] change, so a parametric
    bootstrap, which redraws y on a fixed design, needs p + K + 1 passes over the rows rather than
    :func:`cross_products`' (p + 1) K.
    """
    XyXy = cp.XyXy.copy()
    Xty = X.T @ y
    XyXy[:-1, -1] = XyXy[-1, :-1] = Xty
    XyXy[-1, -1] = y @ y
    C_dx = cp.C_dx.copy()
    C_rx = cp.C_rx.copy()
    if cp.diagonal_factor >= 0:
        C_dx[:, -1] = np.bincount(codes[cp.diagonal_factor], weights=y, minlength=len(cp.c_d))
    for k, block in cp.blocks.items():
        C_rx[block, -1] = np.bincount(codes[k], weights=y, minlength=int(cp.n_levels[k]))
    # Z_r'Z_r and Z_r'Z_d in blocks and the moment equations' design side do not depend on y:
    # built once, on cp, for every response.
    design = {name: getattr(cp, name) for name in ("rd_split", "moment_system")}
    new = replace(cp, XyXy=XyXy, C_dx=C_dx, C_rx=C_rx)
    new.__dict__.update(design)
    return new


def _cross_table(codes: list[np.ndarray], sizes: list[int], code_d: np.ndarray,
                 c_d: np.ndarray) -> tuple[np.ndarray | scipy.sparse.csr_array, list[bool]]:
    """Z_r'Z_d, dense or sparse by ``DENSE_SHARE``, and whether d is nested in each factor.

    Counts the rows each level of the remaining factors (``codes``, with ``sizes`` levels each)
    shares with each level of d (``c_d`` rows each), one factor's block at a time. A factor that
    d is nested in (each level of d meets one of its levels, as mix-by-target cells meet one
    mix and one target) has one entry per level of d, the level's row count, placed without
    counting pairs; a small block is counted into a dense table; a large one is assembled from
    the pairs as a sparse matrix, which sorts them (on a 1,100-mix grid's resamples this
    took 4 ms for all three factors, where the nested two now take none of it).
    """
    L_d, n = len(c_d), len(code_d)
    blocks: list[np.ndarray | scipy.sparse.csr_array] = []
    nested = []
    for code, size in zip(codes, sizes, strict=True):
        level_of_d = np.zeros(L_d, dtype=np.int64)
        level_of_d[code_d] = code
        nested.append(bool(np.array_equal(level_of_d[code_d], code)))
        if nested[-1]:
            present = np.flatnonzero(c_d)
            blocks.append(scipy.sparse.csr_array((c_d[present], (level_of_d[present], present)),
                                                 shape=(size, L_d)))
        elif size * L_d <= max(4 * n, 2 ** 16):
            # At most a few entries per row: counting into a dense table is cheaper than sorting
            # the pairs (a resample of a 1,000,000-row grid of 10,000 mixes: 2 million entries,
            # 50 ms counted against 190 ms sorted).
            blocks.append(np.bincount(code * L_d + code_d, minlength=size * L_d)
                          .reshape(size, L_d).astype(float))
        else:
            # Converting to CSR sums the duplicate (row, column) entries: the counts of each pair.
            blocks.append(scipy.sparse.coo_array((np.ones(n), (code, code_d)),
                                                 shape=(size, L_d)).tocsr())
    n_entries = sum(sizes) * L_d
    non_zeros = sum(np.count_nonzero(b) if isinstance(b, np.ndarray) else b.nnz for b in blocks)
    if non_zeros >= DENSE_SHARE * n_entries:
        dense = [b if isinstance(b, np.ndarray) else b.toarray() for b in blocks]
        return np.vstack([np.zeros((0, L_d)), *dense]), nested
    return scipy.sparse.csr_array(scipy.sparse.vstack(
        [scipy.sparse.csr_array(b) for b in blocks], format="csr")), nested


# --------------------------------------------------------------------------------------------
# The factorisation at one psi and the profiled criterion


@dataclass
class Factorisation:
    """V = I + sum_k psi_k Z_k Z_k' factorised by eliminating the diagonal factor d.

    V_0 = I + psi_d Z_d Z_d' has the explicit inverse I - Z_d diag(e) Z_d' with
    e = psi_d / (1 + psi_d c_d). By Woodbury, V^-1 = V_0^-1 - V_0^-1 Z_r Lambda_r S^-1 Lambda_r
    Z_r' V_0^-1 with S = I + Lambda_r T Lambda_r and T = Z_r' V_0^-1 Z_r = C_rr - C_rd diag(e)
    C_dr: S is the Schur complement that the diagonal first block leaves in the blocked
    Cholesky factor of MixedModels.jl. A product a' V^-1 b of any two column blocks of
    [Z X y] is then P_ab - P_ar Lambda_r S^-1 Lambda_r P_rb with P_ab = a' V_0^-1 b, and
    log|V| = sum(log(1 + psi_d c_d)) + log|S|.
    """

    h: np.ndarray                 # 1 / (1 + psi_d c_d), over levels of d
    g: np.ndarray                 # c_d h: Z_d' V_0^-1 Z_d = diag(g)
    lam_r: np.ndarray             # sqrt(psi) over the remaining levels
    T: Blocked                    # Z_r' V_0^-1 Z_r (r, r), diagonal over the nested factor
    S_factor: FactorS             # the Cholesky factor of S
    P_rx: np.ndarray              # Z_r' V_0^-1 [X y]
    P_dx: np.ndarray              # Z_d' V_0^-1 [X y] = h C_dx
    half_P: np.ndarray            # L^-1 Lambda_r P_rx (S = L L'), rows in FactorS's order
    A_xy: np.ndarray              # [X y]' V^-1 [X y]
    log_det: float                # log |V|

    @cached_property
    def S_inv_P(self) -> np.ndarray:
        """S^-1 Lambda_r P_rx, from the half of the solve that the factorisation made."""
        return self.S_factor.back_solve(self.half_P)


def factorise(psi: np.ndarray, cp: CrossProducts) -> Factorisation:
    """Factorise V at variance ratios ``psi``: one Cholesky of the remaining levels only.

    Raises ``numpy.linalg.LinAlgError`` if S is not positive definite (negative psi).
    """
    psi = np.asarray(psi, dtype=float)
    psi_d = psi[cp.diagonal_factor] if len(psi) else 0.0
    denominator = 1.0 + psi_d * cp.c_d
    h = 1.0 / denominator
    e = psi_d * h
    lam_r = np.sqrt(np.repeat(psi[cp.remaining], cp.n_levels[cp.remaining]))
    T = cp.rd_split.minus_gram(e)                  # C_rr - C_rd diag(e) C_dr
    S_factor = FactorS.of(T, lam_r)
    if S_factor is None:
        raise np.linalg.LinAlgError(f"S is not positive definite at psi = {psi}")
    eC_dx = e[:, None] * cp.C_dx
    P_rx = cp.C_rx - cp.C_rd @ eC_dx
    Y = S_factor.half_solve(lam_r[:, None] * P_rx)
    A_xy = cp.XyXy - cp.C_dx.T @ eC_dx - Y.T @ Y
    log_det = float(np.sum(np.log(denominator)) + S_factor.log_det())
    return Factorisation(h, cp.c_d * h, lam_r, T, S_factor, P_rx, h[:, None] * cp.C_dx, Y,
                         A_xy, log_det)


@dataclass
class FactorS:
    """The Cholesky factor of S = I + Lambda_r T Lambda_r, in two blocks.

    When d is nested in a remaining factor (``CrossProducts.nested``: mix-by-target cells in
    mixes), T, and so S, is diagonal over that factor's levels A, and only the other levels B
    couple: S = [[diag(a), E], [E', F]] has the factor L = [[diag(sqrt a), 0], [W', L_B]] with
    W = diag(1/sqrt a) E and L_B the Cholesky factor of the Schur complement F - W'W (b x b):
    the next step of MixedModels.jl's blocked Cholesky, whose first block is diagonal. S^-1 is
    then diag(1/a) + U C U' over A (U = diag(1/a) E, C the Schur complement's inverse), so that
    a grid of a thousand mixes with a mix-by-target term costs O(mixes b^2) per evaluation.
    With no nested factor A is empty and L_B is the dense factor of S.
    """

    A: slice
    B: np.ndarray                 # the other levels' rows in r
    a: np.ndarray                 # the diagonal of S over A
    W: np.ndarray                 # diag(1/sqrt a) S_AB (|A|, b)
    chol_B: np.ndarray            # lower Cholesky factor of the Schur complement over B

    @classmethod
    def of(cls, T: Blocked, lam: np.ndarray) -> FactorS | None:
        """Factorise S = I + diag(lam) T diag(lam); None when S is not positive definite.

        T is symmetric and exactly diagonal over A, with no low-rank part.
        """
        la, lb = lam[T.A], lam[T.B]
        a = 1.0 + la ** 2 * T.diag
        if np.any(a <= 0):
            return None
        # W = diag(la / sqrt a) T_AB diag(lb) in one new array, the per-evaluation scalings
        # fused: each pass over an |A| x b array costs as much as the Cholesky of the b x b.
        W = T.AB * lb
        W *= (la / np.sqrt(a))[:, None]
        S_BB = lb[:, None] * T.BB * lb[None, :]
        S_BB[np.diag_indices_from(S_BB)] += 1.0
        # numpy computes the product of an array with its own transpose by a rank-k update.
        chol_B, info = scipy.linalg.lapack.dpotrf(S_BB - W.T @ W, lower=1, clean=1)
        return None if info != 0 else cls(T.A, T.B, a, W, chol_B)

    @cached_property
    def root_a(self) -> np.ndarray:
        """sqrt(a)."""
        return np.sqrt(self.a)

    @cached_property
    def U(self) -> np.ndarray:
        """diag(1/a) S_AB = diag(1/sqrt a) W (|A| x b)."""
        return self.W / self.root_a[:, None]

    def half_solve(self, x: np.ndarray) -> np.ndarray:
        """L^-1 x, its rows in the order [A, B] (only inner products of it are used)."""
        y_A = x[self.A] / self.root_a[:, None]
        y_B = scipy.linalg.solve_triangular(self.chol_B, x[self.B] - self.W.T @ y_A, lower=True,
                                            check_finite=False)
        return np.concatenate([y_A, y_B])

    def back_solve(self, y: np.ndarray) -> np.ndarray:
        """L^-T y for y in :meth:`half_solve`'s row order, in r's."""
        n_A = len(self.a)
        out = np.empty_like(y)
        s_B = scipy.linalg.solve_triangular(self.chol_B, y[n_A:], lower=True, trans="T",
                                            check_finite=False)
        out[self.A] = (y[:n_A] - self.W @ s_B) / self.root_a[:, None]
        out[self.B] = s_B
        return out

    def solve(self, x: np.ndarray) -> np.ndarray:
        """S^-1 x = L^-T L^-1 x: two passes over W (a product with the blocked S^-1 takes four)."""
        y_A = x[self.A] / self.root_a[:, None]
        s_B = scipy.linalg.cho_solve((self.chol_B, True), x[self.B] - self.W.T @ y_A,
                                     check_finite=False)
        out = np.empty_like(x)
        out[self.A] = (y_A - self.W @ s_B) / self.root_a[:, None]
        out[self.B] = s_B
        return out

    def log_det(self) -> float:
        """Return log |S|."""
        return float(np.sum(np.log(self.a)) + 2 * np.sum(np.log(np.diag(self.chol_B))))

    @cached_property
    def C(self) -> np.ndarray:
        """The inverse of the Schur complement over B (b x b)."""
        return _inverse(self.chol_B)

    @cached_property
    def WC(self) -> np.ndarray:
        """W C (|A| x b): the O(|A| b^2) product every use of S^-1's blocks needs."""
        return self.W @ self.C

    @cached_property
    def UC(self) -> np.ndarray:
        """U C (|A| x b)."""
        return self.WC / self.root_a[:, None]

    def inverse(self) -> Blocked:
        """S^-1: [[diag(1/a) + U C U', -U C], [-C U', C]]."""
        AB = -self.UC
        return Blocked(self.A, self.B, 1 / self.a, self.U, self.UC, AB, AB.T, self.C, True)

    @cached_property
    def inverse_diagonal(self) -> np.ndarray:
        """diag(S^-1) without S^-1's blocks: (1 + (W C)_i . W_i) / a_i over A, diag(C) over B."""
        out = np.empty(len(self.a) + len(self.B))
        out[self.A] = (1.0 + np.einsum("ib,ib->i", self.WC, self.W)) / self.a
        out[self.B] = np.diag(self.C)
        return out

    def trace_inverse_times(self, N: Blocked, lam: np.ndarray) -> float:
        """tr(S^-1 M), M = diag(lam) N diag(lam), N symmetric and exactly diagonal over A.

        tr(S^-1 M) = sum(diag(S^-1)_A m) - 2 sum(U C o M_AB) + tr(C M_BB), with the scalings
        by lam applied to vectors rather than to N's |A| x b block.
        """
        la, lb = lam[self.A], lam[self.B]
        diagonal = self.inverse_diagonal
        off = (la / self.root_a) @ ((self.WC * N.AB) @ lb)
        return float(diagonal[self.A] @ (la ** 2 * N.diag) - 2 * off
                     + np.sum(self.C * (lb[:, None] * N.BB * lb[None, :])))

    def sandwich(self, M: Blocked) -> tuple[np.ndarray, float, float]:
        """Return diag(S^-1 M S^-1), tr(S^-1 M S^-1 M) and tr(S^-1 M), in O(|A| b^2).

        M is symmetric and exactly diagonal over A (``M.diag``); no r x r product is formed.

        With E = [U; -I] (rows A, B) S^-1 = D + E C E', D = diag(1/a) on A and 0 on B, so
        S^-1 M S^-1 = D M D + P C E' + E C P' + E C G C E' with P = D M E (zero on B; on A,
        H / a with H = diag(m) U - M_AB) and G = E' M E = U'H - M_BA U + M_BB (b x b); then
        tr(S^-1 M S^-1 M) = sum(m^2 / a^2) + 2 tr(C H' diag(1/a) H) + tr(C G C G) and
        tr(S^-1 M) = sum(m / a) + tr(C G).
        """
        a, U, C, UC, m = self.a, self.U, self.C, self.UC, M.diag
        H = m[:, None] * U - M.AB
        G = U.T @ H - M.BA @ U + M.BB
        CG = C @ G
        diagonal = np.empty(len(a) + len(self.B))
        diagonal[self.A] = (m / a ** 2 + 2 * np.einsum("ib,ib->i", H, UC) / a
                            + np.einsum("ib,ib->i", UC @ G, UC))
        diagonal[self.B] = np.einsum("bc,bc->b", CG, C)
        square = (np.sum(m ** 2 / a ** 2) + 2 * np.sum(C * (H.T @ (H / a[:, None])))
                  + np.sum(CG * CG.T))
        return diagonal, float(square), float(np.sum(m / a) + np.trace(CG))


def _profile(fact: Factorisation, cp: CrossProducts, reml: bool) -> tuple[float, np.ndarray, float]:
    """-2 x the profiled (RE)ML log-likelihood, beta and r^2 from a factorisation."""
    p = cp.p
    L = np.linalg.cholesky(fact.A_xy)
    r2 = L[p, p] ** 2
    beta = scipy.linalg.solve_triangular(L[:p, :p].T, L[p, :p], lower=False, check_finite=False)
    dof = cp.n - p if reml else cp.n
    deviance = fact.log_det + dof * (1 + np.log(2 * np.pi * r2 / dof))
    if reml:
        deviance += 2 * np.sum(np.log(np.diag(L)[:p]))
    return float(deviance), beta, float(r2)


def profiled_deviance(theta: np.ndarray, cp: CrossProducts, reml: bool = True
                      ) -> tuple[float, np.ndarray, float]:
    """-2 x the profiled (RE)ML log-likelihood at relative factors ``theta``; also beta and r^2.

    With V = I + Z Lambda^2 Z' (Bates et al. 2015, eqs. 34-42), [X y]'V^-1[X y] has the
    Cholesky factor [[R_X, 0], [r_X', r]], r^2 is the penalised residual sum of squares, and

        REML: log|V| + log|X'V^-1 X| + (n - p) (1 + log(2 pi r^2 / (n - p)))
        ML:   log|V| + n (1 + log(2 pi r^2 / n))

    which is -2 x statsmodels' MixedLM ``loglike`` at the same parameters.
    """
    theta = np.asarray(theta, dtype=float)
    return _profile(factorise(theta ** 2, cp), cp, reml)


# --------------------------------------------------------------------------------------------
# Exact derivatives in psi = theta^2 (Newton steps and standard errors)


@dataclass
class Derivatives:
    """Score in psi and Hessian in (beta, psi) of statsmodels' scale-profiled log-likelihood."""

    score_psi: np.ndarray
    hessian: np.ndarray           # (p + K, p + K), fixed effects first
    blups: np.ndarray             # Psi Z'V^-1 (y - X beta), over all levels in model order

    def profiled(self, p: int) -> np.ndarray:
        """Hessian in psi with beta profiled out (Schur complement)."""
        H = self.hessian
        return H[p:, p:] - H[p:, :p] @ np.linalg.solve(H[:p, :p], H[:p, p:])


def derivatives(psi: np.ndarray, beta: np.ndarray, cp: CrossProducts, reml: bool = True,
                fact: Factorisation | None = None) -> Derivatives:
    """Exact score and Hessian of l(beta, psi) = -1/2 log|V| [-1/2 log|X'V^-1 X|] - f/2 log r'V^-1 r.

    V = I + sum_k psi_k Z_k Z_k' is the marginal covariance over sigma^2 and f = n - p (REML) or n
    (ML); this is the function whose Hessian ``MixedLM.hessian`` returns, so inverting its negative
    reproduces ``MixedLMResults.cov_params()``. The formulas are the standard ones (e.g. Searle,
    Casella & McCulloch 1992, "Variance Components", ch. 6) in the blocks G_jk = Z_j'V^-1 Z_k,
    W_j = Z_j'V^-1 X and w_j = Z_j'V^-1 r: the score needs tr G_jj, the Hessian ||G_jk||_F^2 and
    the bilinear forms w_j'G_jk w_k, W_j'G_jk W_k. They are computed without any matrix over all
    levels (see :class:`Factorisation`; K = Lambda_r S^-1 Lambda_r, P_rd = Z_r'V_0^-1 Z_d =
    C_rd diag(h), N = P_rd P_dr, N_g = P_rd diag(g) P_dr and M = Lambda_r N Lambda_r):

        G_rr = T - T K T = Lambda_r^-1 (I - S^-1) Lambda_r^-1
        G_rd = (I - T K) P_rd = Lambda_r^-1 S^-1 Lambda_r P_rd,
               so ||G_jd||_F^2 = sum over the levels i of j of (S^-1 M S^-1)_ii / psi_i
        G_dd = diag(g) - P_dr K P_rd,
               so tr G_dd = sum(g) - tr(S^-1 M) and
               ||G_dd||_F^2 = sum(g^2) - 2 tr(K N_g) + tr(S^-1 M S^-1 M)

    A call thus costs S^-1 (LAPACK potri) and the products S^-1 M and S^-1 M S^-1, whatever
    the number of levels of d, plus sparse products over the non-zeros of Z_r'Z_d
    (:func:`_remaining_blocks` has the factors at or near psi = 0, where the identities divide
    by zero; there two more products). Every r x r matrix is kept diagonal plus low rank over
    the factor d is nested in (:class:`~transferstats.analysis.blocks.Blocked`), so with a
    mix-by-target term a call costs O(mixes b^2), b the levels of the other factors. Fisher
    scoring would need the same ||G_jk||^2, the costly part, so Newton steps use the exact
    Hessian.
    """
    if fact is None:
        fact = factorise(psi, cp)
    p, K, d = cp.p, len(psi), cp.diagonal_factor
    f = cp.n - p if reml else cp.n
    h, g, T, C_rd = fact.h, fact.g, fact.T, cp.C_rd
    S_inv = fact.S_factor.inverse()
    Kmat = S_inv.scaled(fact.lam_r)             # K = Lambda_r S^-1 Lambda_r
    F_r, F_d, A, Q = _residual_products(fact, cp, beta)

    N = cp.rd_split.gram(h ** 2)
    # diag(S^-1 M S^-1), tr(S^-1 M S^-1 M), tr(S^-1 M)
    sandwich, trace_SMSM, trace_SM = fact.S_factor.sandwich(N.scaled(fact.lam_r))
    G_rr, G_rd_square = _remaining_blocks(fact, S_inv, Kmat, sandwich, N)
    PF_d = C_rd @ (h[:, None] * F_d)               # P_rd F_d
    K_PF_d = Kmat.matmul(PF_d)
    GF_rd = PF_d - T.matmul(K_PF_d)                # G_rd F_d = (I - T K) P_rd F_d
    GF_dd = g[:, None] * F_d - h[:, None] * (C_rd.T @ K_PF_d)

    blocks = cp.blocks
    F = {k: F_d if k == d else F_r[blocks[k]] for k in range(K)}
    trace = np.empty(K)
    square = np.empty((K, K))
    FGF = {}                      # F_j' G_jk F_k for k <= j
    G_rr_diagonal = G_rr.diagonal()
    for j in range(K):
        if j == d:
            trace[j] = np.sum(g) - trace_SM
        else:
            trace[j] = np.sum(G_rr_diagonal[blocks[j]])
        for k in range(j + 1):
            if j == d and k == d:
                N_g = cp.rd_split.gram(h ** 2 * g)
                square[j, k] = np.sum(g ** 2) - 2 * Kmat.trace_dot(N_g) + trace_SMSM
                FGF[j, k] = F_d.T @ GF_dd
            elif d in (j, k):
                other = k if j == d else j
                square[j, k] = np.sum(G_rd_square[blocks[other]])
                FGF[j, k] = F[other].T @ GF_rd[blocks[other]]
            else:
                square[j, k] = G_rr.squared_norm(blocks[j], blocks[k])
                FGF[j, k] = G_rr.bilinear(F[j], blocks[j], F[k], blocks[k])

    A_inv = np.linalg.inv(A)
    FF = [F[k].T @ F[k] for k in range(K)]
    WtW = [ff[:p, :p] for ff in FF]
    wtw = np.array([ff[p, p] for ff in FF])
    score = np.empty(K)
    H = np.zeros((p + K, p + K))
    H[:p, :p] = -f * A / Q
    for j in range(K):
        score[j] = -0.5 * trace[j] + 0.5 * f * wtw[j] / Q
        if reml:
            score[j] += 0.5 * np.sum(A_inv * WtW[j])
        H[:p, p + j] = H[p + j, :p] = -f * FF[j][:p, p] / Q
        for k in range(j + 1):
            h_jk = 0.5 * square[j, k]
            h_jk -= 0.5 * f * (2 * FGF[j, k][p, p] / Q - wtw[j] * wtw[k] / Q ** 2)
            if reml:
                cross = FGF[j, k][:p, :p]
                h_jk -= 0.5 * np.sum(A_inv * (cross + cross.T))
                h_jk += 0.5 * np.sum((A_inv @ WtW[j]) * (A_inv @ WtW[k]).T)
            H[p + j, p + k] = H[p + k, p + j] = h_jk
    # Conditional modes (BLUPs): b_k = psi_k Z_k'V^-1 (y - X beta) = psi_k w_k.
    blups = np.concatenate([psi[k] * F[k][:, p] for k in range(K)] or [np.zeros(0)])
    return Derivatives(score, H, blups)


def _residual_products(fact: Factorisation, cp: CrossProducts, beta: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Return F_r, F_d, A and Q of :func:`derivatives` at ``beta``.

    F_r and F_d are Z'V^-1 [X, y - X beta] split at the eliminated factor; A = X'V^-1 X and
    Q = (y - X beta)'V^-1 (y - X beta).
    """
    p, h, lam = cp.p, fact.h, fact.lam_r[:, None]
    # Z'V^-1 [X y], then its columns recombined into [W w] with w = Z'V^-1 (y - X beta).
    coef = np.append(-beta, 1.0)
    K_Prx = lam * fact.S_inv_P
    if np.all(lam ** 2 >= IDENTITY_PSI):
        # P_rx - T K P_rx without the product with T: S = I + Lambda T Lambda gives
        # I - T K = Lambda^-1 S^-1 Lambda (dividing by lambda >= sqrt(IDENTITY_PSI)).
        F_r = fact.S_inv_P / lam
    else:
        F_r = fact.P_rx - fact.T.matmul(K_Prx)
    F_d = fact.P_dx - h[:, None] * (cp.C_rd.T @ K_Prx)
    F_r = np.column_stack([F_r[:, :p], F_r @ coef])
    F_d = np.column_stack([F_d[:, :p], F_d @ coef])
    return F_r, F_d, fact.A_xy[:p, :p], float(coef @ fact.A_xy @ coef)


#: When every remaining level's variance ratio psi is at least this, :func:`_remaining_blocks`
#: uses the identities that divide by psi; otherwise it computes the blocks directly.
#: The identities lose digits to cancellation (1 - (S^-1)_ii with S_ii = 1 + psi_i T_ii):
#: about eps / (psi_i T_ii) relatively, T_ii being a level's row count reduced by the
#: elimination: 2e-10 even at T_ii = 0.01 (tests/test_mixed.py compares both ways).
IDENTITY_PSI = 1e-4


def _inverse(chol: np.ndarray) -> np.ndarray:
    """S^-1 from the lower Cholesky factor of S (LAPACK potri: a third of a product's flops)."""
    if not len(chol):
        return np.zeros((0, 0))
    inverse, info = scipy.linalg.lapack.dpotri(chol, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError("S could not be inverted")
    return np.tril(inverse) + np.tril(inverse, -1).T


def _remaining_blocks(fact: Factorisation, S_inv: Blocked, Kmat: Blocked, sandwich: np.ndarray,
                      N: Blocked) -> tuple[Blocked, np.ndarray]:
    """G_rr = Z_r'V^-1 Z_r and the squared norms of the rows of G_rd = Z_r'V^-1 Z_d.

    Since Lambda G_rr Lambda = I - S^-1 and Lambda G_rd = S^-1 Lambda P_rd (Woodbury with
    S = I + Lambda T Lambda), both follow from S^-1 and ``sandwich`` = diag(S^-1 M S^-1),
    M = Lambda N Lambda, by dividing by lambda_i lambda_l. When a remaining level's psi is
    below IDENTITY_PSI (a factor at or near the boundary), they are computed directly instead,
    as G_rr = T - T K T and G_rd = (I - T K) P_rd: three products, which with no nested factor
    are dense r x r ones (a second factor of a thousand levels at its boundary: about a second
    per call).
    """
    psi = fact.lam_r ** 2
    if np.all(psi >= IDENTITY_PSI):
        G_rr = S_inv.identity_minus().scaled(1 / fact.lam_r)
        return G_rr, sandwich / psi
    T = fact.T
    R = (T @ Kmat).identity_minus()                # I - T K
    G_rr = (R @ T).symmetrised()
    return G_rr, (R @ N).diagonal_of_product(R.transpose())


class AverageInformation(NamedTuple):
    """What one evaluation of :func:`average_information` gives."""

    score: np.ndarray             # of the profiled REML log-likelihood in psi (K)
    information: np.ndarray       # the average information, negative semi-definite (K x K)
    beta_slope: np.ndarray        # d beta / d psi (p x K)


def average_information(psi: np.ndarray, beta: np.ndarray, cp: CrossProducts,
                        fact: Factorisation | None = None) -> AverageInformation | None:
    """Return the REML score in psi, the average information and beta's slope in psi, or None.

    The matrix stands in for the Hessian in the Newton steps of bootstrap refits. None where a
    remaining level's psi is below ``IDENTITY_PSI`` (the identities below divide by it).

    With P = V^-1 - V^-1 X (X'V^-1 X)^-1 X'V^-1, V_j = Z_j Z_j', Q = y'Py and f = n - p, the
    profiled REML log-likelihood has Hessian

        0.5 tr(P V_j P V_k) - f y'P V_j P V_k P y / Q + (f / 2) (y'P V_j P y)(y'P V_k P y) / Q^2.

    The trace is the costly part (the O(mixes b^2) products of :func:`derivatives`). Its
    expectation is that of f y'P V_j P V_k P y / Q, and replacing it by that gives the average of
    the observed and expected information (Gilmour, Thompson & Cullis 1995, "Average
    information REML: an efficient algorithm for variance parameter estimation in linear mixed
    models", Biometrics 51(4):1440-1450; the algorithm of ASReml):

        AI_jk = -(f / 2) y'P V_j P V_k P y / Q + (f / 2) (y'P V_j P y)(y'P V_k P y) / Q^2,

    negative semi-definite (f / Q times the Gram matrix of the u_j = V_j P y in the P inner
    product, projected off P y), so its Newton steps always ascend. u_j'P u_k = w_j'G_jk w_k -
    (W_j'w_j)'A^-1 (W_k'w_k) with w_j = Z_j'P y: the G operator applied to K vectors, O(mixes
    b K) with the blocked S^-1 (derivation as in :func:`derivatives`). The score needs only
    the diagonal of S^-1 and tr(S^-1 M): one O(mixes b^2) product (U C) in all. Refits of
    bootstrap resamples start near their optimum, where the two Hessians nearly agree: on 170
    refits of a 1,100-mix grid's three bootstraps, 2.6 evaluations per refit against exact
    Newton's 3.0, and 71 ms per refit against 119 ms (one thread, same run).

    The slope of beta(psi) = A^-1 X'V^-1 y comes with it at no cost: differentiating V^-1,
    d beta / d psi_k = -A^-1 X'V^-1 V_k P y = -A^-1 W_k'w_k, the X'V^-1 u_k above.
    """
    if fact is None:
        fact = factorise(psi, cp)
    psi_r = fact.lam_r ** 2
    if np.any(psi_r < IDENTITY_PSI):
        return None
    p, K, d = cp.p, len(psi), cp.diagonal_factor
    f = cp.n - p
    h, g, T, C_rd = fact.h, fact.g, fact.T, cp.C_rd
    F_r, F_d, A, Q = _residual_products(fact, cp, beta)
    A_inv = np.linalg.inv(A)
    blocks = cp.blocks
    F = {k: F_d if k == d else F_r[blocks[k]] for k in range(K)}
    # tr G_jj: (1 - (S^-1)_ii) / psi_i over factor j's levels (Lambda G_rr Lambda = I - S^-1),
    # and sum(g) - tr(S^-1 M) for d (see derivatives).
    S_factor = fact.S_factor
    G_rr_diagonal = (1 - S_factor.inverse_diagonal) / psi_r
    trace = np.array([np.sum(g) - S_factor.trace_inverse_times(cp.rd_split.gram(h ** 2),
                                                                fact.lam_r)
                      if k == d else np.sum(G_rr_diagonal[blocks[k]]) for k in range(K)])
    w = [F[k][:, p] for k in range(K)]                   # Z_k'P y
    wtw = np.array([w_k @ w_k for w_k in w])             # y'P V_k P y
    XVu = np.column_stack([F[k][:, :p].T @ w[k] for k in range(K)])   # X'V^-1 u_k
    score = -0.5 * trace + 0.5 * f * wtw / Q + 0.5 * np.array(
        [np.sum(A_inv * (F[k][:, :p].T @ F[k][:, :p])) for k in range(K)])
    # G [x_r; x_d] for the K columns x_k = w_k on factor k's levels: with z = T x_r + P_rd x_d,
    # G_rr x_r + G_rd x_d = z - T K z and G_dr x_r + G_dd x_d = P_dr (x_r - K z) + g x_d.
    x_r, x_d = np.zeros((len(psi_r), K)), np.zeros((len(g), K))
    for k in range(K):
        if k == d:
            x_d[:, k] = w[k]
        else:
            x_r[blocks[k], k] = w[k]
    z = T.matmul(x_r) + C_rd @ (h[:, None] * x_d)
    S_inv_z = S_factor.solve(fact.lam_r[:, None] * z)
    Kz = fact.lam_r[:, None] * S_inv_z
    G_r = S_inv_z / fact.lam_r[:, None]      # z - T K z, as I - T K = Lambda^-1 S^-1 Lambda
    G_d = h[:, None] * (C_rd.T @ (x_r - Kz)) + g[:, None] * x_d
    uVu = np.array([[w[j] @ (G_d[:, k] if j == d else G_r[blocks[j], k]) for k in range(K)]
                    for j in range(K)])
    uPu = uVu - XVu.T @ A_inv @ XVu
    information = -0.5 * f * (uPu + uPu.T) / 2 / Q + 0.5 * f * np.outer(wtw, wtw) / Q ** 2
    return AverageInformation(score, information, -A_inv @ XVu)


# --------------------------------------------------------------------------------------------
# Optimisation


@dataclass
class ThetaFit:
    """The optimum of the profiled criterion for one set of cross-products."""

    theta: np.ndarray
    beta: np.ndarray
    sigma2: float                 # NaN, as llf, where the last step was not evaluated
    llf: float
    converged: bool
    attempts: list[str] = field(default_factory=list)   # what was tried, for error messages

    @property
    def psi(self) -> np.ndarray:
        """Variance ratios sigma_k^2 / sigma^2."""
        return self.theta ** 2


#: Newton decrement g'(-H)^-1 g of the log-likelihood in theta below which a fit takes its last
#: step without evaluating the derivatives again to confirm it. The decrement is the squared
#: distance to the optimum in standard errors (the Hessian is the observed information) and a
#: Newton step squares that distance, so the step lands at about 1e-6 standard errors.
FIT_TOLERANCE = 1e-6

#: The same for refits of bootstrap resamples and simulated draws, which report the fixed effects
#: only. beta and theta are orthogonal parameters (their expected cross-information is zero: the
#: GLS beta at any theta is unbiased), so an error in theta moves beta by a small fraction of it,
#: and theta need not be found to a small fraction of its standard error: a decrement of 0.1 is
#: a third of a standard error away, and the unchecked last step lands closer still. On 170
#: captured refits of a 1,100-mix grid's three bootstraps (benchmarks/bootstrap_speed.py's
#: ``manymix`` shape) it moved the fixed effects by at most 1.8e-4 of their bootstrap standard
#: deviations (a 1,000-draw interval endpoint carries a Monte Carlo error of ~0.085 of it) and
#: cost 1.96 evaluations of the derivatives and 2.96 factorisations per refit, against 2.62 and
#: 4.27 at 1e-3 (33 against 45 ms per refit). Moving beta along its slope over the last step
#: instead of factorising there (:func:`_newton`) saves one factorisation per refit (1.96) and
#: left the largest error at 1.7e-4 of a standard deviation (25.4 -> 22.6-24.4 ms per refit).
REFIT_TOLERANCE = 0.1


def fit_theta(cp: CrossProducts, reml: bool = True,
              start: np.ndarray | Sequence[float] | None = None,
              tolerance: float = FIT_TOLERANCE, average: bool = False) -> ThetaFit:
    """Maximise the profiled (RE)ML likelihood over theta >= 0.

    Projected Newton steps in the relative standard deviations theta, with the exact profiled
    score and Hessian, from ``start`` (e.g. a full-data fit's when refitting a bootstrap
    resample: then a few steps suffice) or else from :func:`moment_start`. Should that fail,
    L-BFGS-B on theta >= 0 finds the region of the optimum and Newton finishes from there.
    ``tolerance`` is the Newton decrement below which the last step is taken unchecked
    (``FIT_TOLERANCE``; ``REFIT_TOLERANCE`` for refits whose estimates only feed a bootstrap).
    ``average=True`` (REML only; for refits, which need beta and not its covariance) steps with
    the average information (:func:`average_information`) wherever it is defined (every
    remaining level's psi at least ``IDENTITY_PSI``), and with the exact Hessian elsewhere; an
    unchecked last step with the average information is not evaluated either: beta moves along
    its slope in psi, and ``llf`` and ``sigma2`` are NaN.
    ``attempts`` says what was tried.
    """
    if average and not reml:
        raise ValueError("the average information is that of the REML criterion")
    K = len(cp.n_levels)
    dof = cp.n - cp.p if reml else cp.n
    if K == 0:  # ordinary least squares: nothing to optimise
        deviance, beta, r2 = profiled_deviance(np.zeros(0), cp, reml)
        return ThetaFit(np.zeros(0), beta, r2 / dof, -deviance / 2, True)
    theta0 = moment_start(cp) if start is None else np.asarray(start, dtype=float)
    theta, deviance, beta, r2, converged, attempt = _newton(theta0, cp, reml, tolerance, average)
    attempts = [f"Newton from theta = {_fmt(theta0)}: {attempt}"]
    if not converged:
        restart = np.maximum(theta0, 1e-3)
        theta = _lbfgsb(restart, cp, reml)
        attempts.append(f"L-BFGS-B from theta = {_fmt(restart)} reached theta = {_fmt(theta)}")
        theta, deviance, beta, r2, converged, attempt = _newton(theta, cp, reml, tolerance,
                                                                average)
        attempts.append(f"Newton from there: {attempt}")
    return ThetaFit(theta, beta, r2 / dof, -deviance / 2, converged, attempts)


#: Slope of the log-likelihood in theta below which a direction without curvature counts as
#: flat (it would change the log-likelihood by less than 1e-6 over a unit of theta).
FLAT_SLOPE = 1e-6

#: Floor of the starting relative standard deviations: a component whose moment estimate is
#: zero starts here, from where Newton reaches zero in a few steps if that is the optimum.
START_FLOOR = 1e-2


def _squares(C: np.ndarray | scipy.sparse.csr_array) -> np.ndarray | scipy.sparse.csr_array:
    return C ** 2 if isinstance(C, np.ndarray) else C.power(2)


@dataclass(frozen=True)
class MomentSystem:
    """What the moment equations of :func:`moment_start` take from the design (X and Z) alone."""

    inverse_XtX: np.ndarray       # (X'X)^-1 (pseudo-inverse)
    system: np.ndarray            # (K + 1, K + 1): expectations of [B_1 .. B_K, e'e] per variance
    sizes: list[np.ndarray]       # rows per level, per factor (at least 1)


def moment_start(cp: CrossProducts) -> np.ndarray:
    """Estimate a starting theta from moments of the OLS residuals.

    This is Henderson's method 1 (1953, Biometrics 9:226-252) with expectations that account
    for the OLS fit of the fixed effects. With e = (I - H) y the OLS residuals,
    H = X (X'X)^-1 X', the quadratic forms e'e and, per factor k, B_k = e'Z_k D_k^-1 Z_k'e
    (D_k = Z_k'Z_k: the level totals of e, squared, over the level sizes) have expectations
    linear in the variances:

        E[B_k] = sigma^2 tr(D_k^-1 Z_k'(I - H) Z_k) + sum_j sigma_j^2 tr(D_k^-1 M_kj M_jk)
        E[e'e] = sigma^2 (n - p) + sum_j sigma_j^2 tr(Z_j'(I - H) Z_j)

    with M_kj = Z_k'(I - H) Z_j = C_kj - C_kX (X'X)^-1 C_Xj. Every trace is a sum over the
    non-zero cross-tabulations C_kj or a p x p product, so solving the K + 1 equations costs
    nothing next to one factorisation, and lands near the optimum, where Newton converges in a
    few steps (InstEval: 3 steps from here, 8 from lme4's start theta = 1). The expectations
    depend on the design only (``CrossProducts.moment_system``, shared by every response
    :func:`with_response` puts in), so for a new response the estimate costs O(levels x p).
    """
    K, d, p = len(cp.n_levels), cp.diagonal_factor, cp.p
    moments = cp.moment_system
    coef = np.append(-moments.inverse_XtX @ cp.XyXy[:p, p], 1.0)
    observed = np.empty(K + 1)
    for k in range(K):
        totals = cp.C_dx if k == d else cp.C_rx[cp.blocks[k]]
        observed[k] = np.sum((totals @ coef) ** 2 / moments.sizes[k])
    observed[K] = coef @ cp.XyXy @ coef
    variances = np.linalg.lstsq(moments.system, observed, rcond=None)[0]
    residual = max(variances[K], 1e-3 * observed[K] / cp.n)
    return np.maximum(np.sqrt(np.maximum(variances[:K], 0.0) / residual), START_FLOOR)


def _moment_system(cp: CrossProducts) -> MomentSystem:
    """Compute the expectations in :func:`moment_start`'s equations from the design alone."""
    K, d, n, p = len(cp.n_levels), cp.diagonal_factor, cp.n, cp.p
    inverse_XtX = np.linalg.pinv(cp.XyXy[:p, :p])
    blocks = cp.blocks
    ZX = {k: cp.C_dx[:, :p] if k == d else cp.C_rx[blocks[k], :p] for k in range(K)}  # Z_k'X
    diagonal = cp.C_rr.diagonal()
    sizes = [np.maximum(cp.c_d if k == d else diagonal[blocks[k]], 1.0) for k in range(K)]

    def table(k: int, j: int) -> np.ndarray | scipy.sparse.csr_array:  # C_kj = Z_k'Z_j, k != j
        if k == d:
            return cp.C_rd[blocks[j]].T
        return cp.C_rd[blocks[k]] if j == d else cp.C_rr.block(blocks[k], blocks[j])

    system = np.zeros((K + 1, K + 1))
    Q = {j: ZX[j].T @ ZX[j] for j in range(K)}                                # C_Xj C_jX
    for k in range(K):
        ZX_k, size = ZX[k], sizes[k]
        P_k = ZX_k.T @ (ZX_k / size[:, None])                                 # C_Xk D_k^-1 C_kX
        system[k, K] = cp.n_levels[k] - np.trace(inverse_XtX @ P_k)
        for j in range(K):
            if j == k:
                first, middle = float(n), ZX_k
            else:
                C = table(k, j)
                first = float(np.sum(_squares(C).T @ (1.0 / size)))
                middle = np.asarray(C @ ZX[j]) / size[:, None]
            system[k, j] = (first - 2 * np.sum(middle * (ZX_k @ inverse_XtX))
                            + np.trace(inverse_XtX @ P_k @ inverse_XtX @ Q[j]))
    system[K, K] = n - p
    system[K, :K] = [n - np.trace(inverse_XtX @ Q[j]) for j in range(K)]
    return MomentSystem(inverse_XtX, system, sizes)


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def entering_psi(score: np.ndarray, curvature: np.ndarray, n_levels: np.ndarray) -> np.ndarray:
    """Variance ratios at which components at zero with a positive score re-enter.

    The step is the one that is exact for a balanced one-way layout. There, a factor of ``a``
    levels of n rows each with between-level mean square B (over the residual variance) has
    score and Hessian in psi at 0 of s = a n (B - 1) / 2 and h = -a n^2 (2B - 1) / 2, from
    which n = -2s/a + sqrt(4s^2/a^2 - 2h/a) and psi = (B - 1)/n = 2s / (a n^2): the optimum.
    Newton's step in psi, s / |h| = (B - 1) / (n (2B - 1)), falls short by the factor 2B - 1,
    which on bootstrap resamples of a target-by-mix term cost an extra Newton step in most
    refits. Elsewhere it is a starting guess that the Newton steps after it correct.
    """
    a = np.asarray(n_levels, dtype=float)
    magnitude = np.maximum(np.abs(curvature), 1e-8)
    n = -2 * score / a + np.sqrt(4 * score ** 2 / a ** 2 + 2 * magnitude / a)
    return 2 * score / (a * n ** 2)


def _newton(theta: np.ndarray, cp: CrossProducts, reml: bool, tolerance: float,
            average: bool = False, max_steps: int = 50):
    """Projected Newton ascent on theta >= 0 with step halving.

    The steps are taken in theta, which lme4 optimises too, rather than in psi = theta^2: near
    a small variance the likelihood behaves like log psi, on which Newton in psi only doubles
    psi per step from below and overshoots to zero from above, while in theta it converges
    from either side. The derivatives are in psi; by the chain rule g = 2 theta s and
    H_theta = 4 (theta theta') o H_psi + 2 diag(s). The likelihood is even in each theta_k,
    so g_k = 0 at theta_k = 0: a component at zero stays there while its score in psi is not
    positive (the boundary optimum), and re-enters at :func:`entering_psi` (its square root)
    otherwise. Converged means the Newton decrement on the other components is negligible and
    their Hessian negative definite but in flat directions (``FLAT_SLOPE``); elsewhere a
    diagonally scaled gradient step is taken instead. Returns theta, the deviance, beta, r^2,
    whether it converged and a line saying how it ended (steps, the last score). With
    ``average``, H_psi is the average information wherever :func:`average_information` gives
    it, its curvature also setting the re-entering step: at zero it is smaller than the exact
    one where the level means vary strongly, so the step is longer, and step halving keeps it
    an ascent (on 170 refits of a 1,100-mix grid, 2.6 evaluations per refit against 3.3 when
    re-entering used the exact curvature).
    """
    K = len(theta)
    theta = np.asarray(theta, dtype=float)
    fact = factorise(theta ** 2, cp)
    deviance, beta, r2 = _profile(fact, cp, reml)
    score = np.full(K, np.nan)
    for n_steps in range(max_steps):
        information = average_information(theta ** 2, beta, cp, fact) if average else None
        if information is None:
            dv = derivatives(theta ** 2, beta, cp, reml, fact)
            score, H = dv.score_psi, dv.profiled(cp.p)
        else:
            score, H = information.score, information.information
        inner = theta > 0
        entering = ~inner & (score > 0)
        gradient = 2 * theta * score
        H_inner = (4 * np.outer(theta, theta) * H + 2 * np.diag(score))[np.ix_(inner, inner)]
        step = np.zeros(K)
        step[entering] = np.sqrt(entering_psi(score[entering], np.diag(H)[entering],
                                              cp.n_levels[entering]))
        # A direction along which the likelihood is flat (a variance not identifiable, e.g. a
        # mix factor whose levels the mix-level fixed effects fit exactly) has zero curvature
        # and zero slope: Newton leaves it alone rather than failing on a singular Hessian.
        curvature, directions = np.linalg.eigh(-H_inner)
        slope = directions.T @ gradient[inner]
        concave = curvature > 1e-10 * np.max(np.abs(curvature), initial=1.0)
        is_newton = bool(np.all(concave | (np.abs(slope) <= FLAT_SLOPE)))
        if is_newton:
            step[inner] = directions[:, concave] @ (slope[concave] / curvature[concave])
        else:
            step[inner] = gradient[inner] / np.maximum(np.abs(np.diag(H_inner)), 1e-8)
        decrement = gradient[inner] @ step[inner]
        if is_newton and decrement < 1e-10 and not entering.any():
            return theta, deviance, beta, r2, True, f"converged in {n_steps} steps"
        # Newton converges quadratically: once the decrement is below the tolerance, the step
        # lands close enough (FIT_TOLERANCE), and checking it would cost another evaluation.
        final = is_newton and decrement < tolerance and not entering.any()
        if final and information is not None:
            # A refit needs beta alone, and along so short a step beta is linear in psi to
            # well within the tolerance: no factorisation at the new theta.
            candidate = np.maximum(theta + step, 0.0)
            beta = beta + information.beta_slope @ (candidate ** 2 - theta ** 2)
            return candidate, np.nan, beta, np.nan, True, f"converged in {n_steps + 1} steps"
        for _halving in range(40):
            candidate = np.maximum(theta + step, 0.0)
            try:
                cand_fact = factorise(candidate ** 2, cp)
                cand = _profile(cand_fact, cp, reml)
            except np.linalg.LinAlgError:
                step /= 2
                continue
            if cand[0] <= deviance + 1e-12 * abs(deviance):
                theta, fact, (deviance, beta, r2) = candidate, cand_fact, cand
                if final:
                    return theta, deviance, beta, r2, True, f"converged in {n_steps + 1} steps"
                break
            step /= 2
        else:  # no step improves: at the optimum to rounding if the decrement is tiny
            converged = bool(is_newton and decrement < tolerance and not entering.any())
            return theta, deviance, beta, r2, converged, (
                f"no step improved the criterion after {n_steps} steps "
                f"(score in psi {_fmt(score)}, Newton decrement {decrement:.3g})")
    return theta, deviance, beta, r2, False, (
        f"not converged in {max_steps} steps (score in psi {_fmt(score)})")


def _lbfgsb(theta0: np.ndarray, cp: CrossProducts, reml: bool) -> np.ndarray:
    """Minimise the deviance by L-BFGS-B on theta >= 0 (finite differences): a robust first pass."""

    def objective(theta):
        try:
            return profiled_deviance(theta, cp, reml)[0]
        except np.linalg.LinAlgError:
            return np.inf

    import scipy.optimize  # where used: a first fit in a fresh process would pay for it

    result = scipy.optimize.minimize(objective, theta0, method="L-BFGS-B",
                                     bounds=[(0.0, None)] * len(theta0),
                                     options={"ftol": 1e-12, "maxiter": 500})
    return result.x


# --------------------------------------------------------------------------------------------
# Public fits


@overload
def fit_crossed(data: pd.DataFrame, outcome: str, fixed: Sequence[str], random: Sequence[str],
                *, reml: bool = True, start: dict[str, float] | Sequence[float] | None = None,
                slopes: None = None, correlated: bool = True) -> CrossedFit: ...


@overload
def fit_crossed(data: pd.DataFrame, outcome: str, fixed: Sequence[str], random: Sequence[str],
                *, reml: bool = True, start: Sequence[float] | None = None,
                slopes: Mapping[str, Sequence[str]], correlated: bool = True) -> MixedFit: ...


def fit_crossed(data: pd.DataFrame, outcome: str, fixed: Sequence[str], random: Sequence[str],
                *, reml: bool = True, start: dict[str, float] | Sequence[float] | None = None,
                slopes: Mapping[str, Sequence[str]] | None = None, correlated: bool = True
                ) -> CrossedFit | MixedFit:
    """Fit a linear mixed model with crossed random intercepts, fast enough to bootstrap.

    The model is ``outcome ~ 1 + fixed + (1 | random[0]) + (1 | random[1]) + ...``: one fixed
    slope per numeric column in ``fixed`` and one random intercept per categorical column in
    ``random``, the factors crossed or nested in any way, the residuals independent. It is what
    lme4 fits with ``lmer(y ~ x + (1 | a) + (1 | b) + (1 | c))`` and statsmodels with ``MixedLM``
    given one group and a variance component per factor, for any data, not only transfer grids.

    The optimum of the profiled (RE)ML criterion is found by Newton steps on exact derivatives
    computed from cross-products built once (module docstring). It agrees with statsmodels to
    optimiser precision (the tests compare them). When it cannot fit the model (a singular
    design) or does not converge, a small problem (``STATSMODELS_MAX_SIZE``) is fitted by
    statsmodels instead, with a warning, and ``method`` says so; a larger one raises
    :class:`ConvergenceError`, which says what was tried. With no random factor the model is
    ordinary least squares.

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
        order), e.g. from an earlier fit, to warm-start the optimiser. With ``slopes``, a
        starting theta in lme4's order (a nearby :class:`~transferstats.analysis.lmm.MixedFit`'s
        ``theta``).
    slopes : mapping of str to sequence of str, optional
        Random slopes: a factor of ``random`` -> the numeric columns whose effects vary between
        its levels, e.g. ``{"target_task": ["diversity", "volume"]}``. The model is then fitted
        by :func:`~transferstats.analysis.lmm.fit_lmm` (lme4's criterion) and a
        :class:`~transferstats.analysis.lmm.MixedFit` is returned, whose ``bse`` are lme4's.
    correlated : bool, default True
        With ``slopes``: the intercept and slopes of a factor correlated (lme4's
        ``(1 + x | g)``), or independent (``(1 + x || g)``).

    Returns
    -------
    CrossedFit or MixedFit
        Without ``slopes``, a ``CrossedFit``: ``params``, ``bse``, ``cov_params``,
        ``variance_components``, ``residual_variance``, ``llf``, ``converged``, ``method``,
        ``random_effects`` and ``summary()``. With ``slopes``, a ``MixedFit``.

    Raises
    ------
    ConvergenceError
        If the fast path fails on a problem too large for the statsmodels fallback.

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
    if slopes is not None:
        # Imported here: the slopes model needs scipy.optimize, which a cold intercept-only fit
        # does not load.
        from transferstats.analysis.formula import random_terms
        from transferstats.analysis.lmm import fit_lmm

        if isinstance(start, dict):
            raise TypeError("fit_crossed: with slopes, start is a theta sequence in lme4's order")
        return fit_lmm(data, outcome, fixed, random_terms(random, slopes, correlated), reml=reml,
                       start=start)
    arrays = model_arrays(data, outcome, fixed, random)
    if isinstance(start, dict):
        start = [start[factor] for factor in arrays.factors]
    try:
        cp = cross_products(arrays.X, arrays.y, arrays.codes, [len(lv) for lv in arrays.levels])
        with blas_threads_for(cp.dense_order):
            state = fit_theta(cp, reml, start)
    except np.linalg.LinAlgError as error:
        reason = f"linear algebra failure ({error})"
    else:
        if state.converged:
            with blas_threads_for(cp.dense_order):
                return _crossed_fit(arrays, cp, state, reml)
        reason = "the fast path did not converge: " + "; ".join(state.attempts)
    size = len(arrays.y) * sum(len(levels) for levels in arrays.levels)
    if size > STATSMODELS_MAX_SIZE:
        raise ConvergenceError(
            f"fit_crossed: {reason}. statsmodels' MixedLM is not tried as a fallback: with "
            f"{len(arrays.y):,} rows x {size // max(len(arrays.y), 1):,} levels it would take "
            f"hours (it is tried up to {STATSMODELS_MAX_SIZE:,} rows x levels).")
    warnings.warn(f"fit_crossed: {reason}; falling back to statsmodels MixedLM", stacklevel=2)
    return fit_crossed_statsmodels(data, outcome, fixed, random, reml=reml)


def _crossed_fit(arrays: ModelArrays, cp: CrossProducts, state: ThetaFit, reml: bool
                 ) -> CrossedFit:
    """Assemble the public result: covariance, BLUPs, fitted values."""
    p = cp.p
    psi = state.psi
    dv = derivatives(psi, state.beta, cp, reml)
    cov = np.linalg.inv(-dv.hessian)[:p, :p]
    offsets = cp.offsets
    fitted = arrays.X @ state.beta
    random_effects = {}
    for k, (factor, code) in enumerate(zip(arrays.factors, arrays.codes, strict=True)):
        b_k = dv.blups[offsets[k]:offsets[k + 1]]
        fitted = fitted + b_k[code]
        random_effects[factor] = pd.Series(b_k, index=arrays.levels[k], name=factor)
    params, cov_params = _fixed_effects(arrays.terms, state.beta, cov)
    return CrossedFit(
        params=params,
        cov_params=cov_params,
        variance_components={f: float(v) for f, v in zip(arrays.factors, psi * state.sigma2, strict=True)},
        residual_variance=state.sigma2,
        llf=state.llf,
        reml=reml,
        converged=state.converged,
        on_boundary=[f for f, t in zip(arrays.factors, state.theta, strict=True) if t < BOUNDARY_THETA],
        fitted=fitted,
        residuals=arrays.y - fitted,
        method="fast",
        n_obs=len(arrays.y),
        random_effects=random_effects,
    )


def fit_crossed_statsmodels(data: pd.DataFrame, outcome: str, fixed: Sequence[str],
                            random: Sequence[str], *, reml: bool = True) -> CrossedFit:
    """Fit the reference: statsmodels ``MixedLM``, one group, a variance component per factor.

    The optimiser's tolerance is tightened so that the reference itself converges to the
    precision the fast path is tested against.
    """
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
        variance_components={f: float(v) for f, v in zip(arrays.factors, vcomp, strict=True)},
        residual_variance=float(result.scale),
        llf=float(result.llf),
        reml=reml,
        converged=converged,
        on_boundary=[f for f, v in zip(arrays.factors, vcomp, strict=True)
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
    for code, levels in zip(arrays.codes, arrays.levels, strict=True):
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
        p_value = _stats().chi2.sf(chi2, 1)
    else:
        p_value = 0.5 * _stats().chi2.sf(chi2, 1) if chi2 > 0 else 1.0
    return {"term": term, "chi2": float(chi2), "df": 1, "p_value": float(p_value)}
