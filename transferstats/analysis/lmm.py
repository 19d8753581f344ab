"""Linear mixed models with random slopes: lme4's profiled (RE)ML, one large factor eliminated.

The model is lme4's

    y = X beta + Z b + e,    b ~ N(0, sigma^2 Lambda Lambda'),    e ~ N(0, sigma^2 I),

with one term per :class:`~transferstats.analysis.formula.RandomTerm`: a grouping factor g with
L levels and k columns (an intercept, slopes), whose k x k covariance sigma^2 T T' is shared by
the levels (T lower triangular; Lambda is block diagonal with a block T per level). theta lists
the lower triangles of the T's, column by column, as lme4's ``getME(fit, "theta")``. For fixed
theta, beta and sigma^2 have closed forms and the (RE)ML criterion is lme4's profiled deviance
(Bates, Maechler, Bolker & Walker 2015, section 3), minimised over theta by L-BFGS-B with its
exact gradient (:func:`criterion_and_gradient`), the diagonal of each T bounded below by 0.

Speed on transfer grids comes, as in :mod:`transferstats.analysis.mixed`, from eliminating the
intercept-only term d with most levels (the mixes, or the target-by-mix cells) analytically:
each row has one level of it, so V_0 = I + theta_d^2 Z_d Z_d' has an explicit inverse. When d is
nested in another intercept-only term h (target-by-mix cells in mixes), Z_h'V_0^-1 Z_h is still
diagonal, and h is eliminated the same way: V_1 = V_0 + theta_h^2 Z_h Z_h'. Everything else is a
b x b problem over the columns of the remaining terms (slopes by target and target-languages: b
of a few hundred), written with the metric V_1^-1 (:class:`Products`, :func:`evaluate`). A
criterion and its gradient then cost O(b^3) plus products linear in the number of mixes. The
intercept-only models of :func:`~transferstats.analysis.mixed.fit_crossed` keep that module's
own Newton solver.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeAlias

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.optimize
import scipy.sparse
from scipy.linalg.lapack import dtrtrs
from threadpoolctl import threadpool_limits

from transferstats.analysis.formula import INTERCEPT, RandomTerm, parse_formula

#: lme4's ``isSingular`` tolerance: a diagonal element of a relative covariance factor T below
#: this makes the fit singular (a variance at zero, or a correlation at +-1).
SINGULAR_TOL = 1e-4


# --------------------------------------------------------------------------------------------
# Data -> design


def _column(data: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column, or the product of the columns of ``"a:b"``."""
    values = np.ones(len(data))
    for part in name.split(":"):
        if part not in data.columns:
            raise ValueError(f"column {part!r} (in {name!r}) is not in the data; it has "
                             f"{list(data.columns)}")
        if not pd.api.types.is_numeric_dtype(data[part]):
            raise ValueError(f"column {part!r} (in {name!r}) must be numeric, not "
                             f"{data[part].dtype}; a categorical predictor needs its own 0/1 columns")
        values = values * data[part].to_numpy(dtype=float)
    return values


def _factor_codes(data: pd.DataFrame, factor: str) -> tuple[np.ndarray, np.ndarray]:
    parts = factor.split(":")
    missing = [part for part in parts if part not in data.columns]
    if missing:
        raise ValueError(f"grouping factor {factor!r}: columns {missing} are not in the data")
    keys = data[parts[0]].astype(str) if len(parts) == 1 else \
        data[parts].astype(str).agg(":".join, axis=1)
    codes, levels = pd.factorize(keys, sort=True)
    return codes.astype(np.int64), np.asarray(levels)


@dataclass
class Design:
    """The model's arrays: y, X, and for each random term its level codes and columns."""

    y: np.ndarray
    X: np.ndarray
    fixed: list[str]
    terms: list[RandomTerm]
    codes: list[np.ndarray]
    levels: list[np.ndarray]
    columns: list[np.ndarray]          # per term, (n, k) values of its columns
    row_index: pd.Index

    @property
    def n_levels(self) -> list[int]:
        return [len(levels) for levels in self.levels]


def design(data: pd.DataFrame, outcome: str, fixed: Sequence[str], terms: Sequence[RandomTerm],
           intercept: bool = True) -> Design:
    """Rows with a missing value in any column used are left out, as lme4 does."""
    used_columns = {outcome, *(p for name in fixed for p in name.split(":"))}
    for term in terms:
        used_columns |= set(term.factor.split(":"))
        used_columns |= {p for c in term.columns if c != INTERCEPT for p in c.split(":")}
    absent = sorted(c for c in used_columns if c not in data.columns)
    if absent:
        raise ValueError(f"columns {absent} are not in the data; it has {list(data.columns)}")
    used = data[sorted(used_columns)].dropna()
    names = ([INTERCEPT] if intercept else []) + list(fixed)
    X = np.column_stack([np.ones(len(used)) if name == INTERCEPT else _column(used, name)
                         for name in names])
    codes, levels, columns = [], [], []
    for term in terms:
        code, level = _factor_codes(used, term.factor)
        codes.append(code)
        levels.append(level)
        columns.append(np.column_stack([np.ones(len(used)) if c == INTERCEPT else _column(used, c)
                                        for c in term.columns]))
    return Design(used[outcome].to_numpy(dtype=float), X, names, list(terms), codes, levels,
                  columns, used.index)


# --------------------------------------------------------------------------------------------
# Cross-products, blocked around the eliminated term


def _theta_layout(terms: Sequence[RandomTerm]) -> list[tuple[int, int, int]]:
    """(term, row, column) of each theta in T, lme4's order: lower triangle column by column."""
    return [(t, i, j) for t, term in enumerate(terms)
            for j in range(term.size) for i in range(j, term.size)]


def eliminated_term(terms: Sequence[RandomTerm], n_levels: Sequence[int]) -> int | None:
    """The intercept-only term with most levels (its Z'Z block is diagonal), if any."""
    scalar = [t for t, term in enumerate(terms) if term.columns == (INTERCEPT,)]
    return max(scalar, key=lambda t: n_levels[t]) if scalar else None


def nesting_term(des: Design, d: int | None) -> int | None:
    """The intercept-only term with most levels in which ``d`` is nested, if any.

    Each level of d (a target-by-mix cell) lies in one level of it (a mix), so after d is
    eliminated its block of Z'V_0^-1 Z is still diagonal and it is eliminated the same way.
    """
    if d is None:
        return None
    candidates = [t for t, term in enumerate(des.terms) if t != d and term.columns == (INTERCEPT,)
                  and pd.Series(des.codes[t]).groupby(des.codes[d]).nunique().max() == 1]
    return max(candidates, key=lambda t: des.n_levels[t]) if candidates else None


Matrix: TypeAlias = scipy.sparse.csr_array | np.ndarray


@dataclass
class Products:
    """What the criterion needs, computed once: cross-products of M = [X y] and Z.

    The random effects are split into three blocks: ``d``, the eliminated intercept-only term
    (levels L_d, counts ``D``); ``h``, an intercept-only term in which d is nested, eliminated
    next (levels L_h, counts ``Dh``); and the b columns of all other terms, handled densely.
    Either of d and h may be absent (None, no levels). ``Ct_h`` = Z_d'Z_h (sparse, one non-zero
    a row), ``Ct_b`` = Z_d'Z_b (dense when ``DENSE_SHARE`` of it is non-zero), ``ZhZb``,
    ``ZbZb`` and the products with M. ``lambda_rows``/``lambda_cols`` give, for each theta of
    a term in b, its positions in the b x b Lambda_b.
    """

    n: int
    p: int
    terms: list[RandomTerm]
    d: int | None
    h: int | None
    D: np.ndarray
    Dh: np.ndarray
    Ct_h: scipy.sparse.csr_array
    Ct_b: Matrix
    ZhZb: np.ndarray
    ZbZb: np.ndarray
    ZdM: np.ndarray
    ZhM: np.ndarray
    ZbM: np.ndarray
    MM: np.ndarray
    Zb: scipy.sparse.csr_array
    codes_d: np.ndarray
    codes_h: np.ndarray
    b_offsets: dict[int, int]
    layout: list[tuple[int, int, int]]
    lambda_rows: list[np.ndarray] = field(default_factory=list)
    lambda_cols: list[np.ndarray] = field(default_factory=list)

    @property
    def b(self) -> int:
        return self.ZbZb.shape[0]

    @property
    def q(self) -> int:
        """All random effects."""
        return len(self.D) + len(self.Dh) + self.b

    @property
    def lower_bounds(self) -> np.ndarray:
        return np.array([0.0 if i == j else -np.inf for _, i, j in self.layout])

    def lambda_b(self, theta: np.ndarray) -> np.ndarray:
        Lam = np.zeros((self.b, self.b))
        for value, rows, cols in zip(theta, self.lambda_rows, self.lambda_cols, strict=True):
            Lam[rows, cols] = value
        return Lam

    def theta_of(self, term: int | None, theta: np.ndarray) -> float:
        """The theta of an intercept-only term (0 for an absent one)."""
        if term is None:
            return 0.0
        return float(theta[next(k for k, (t, _, _) in enumerate(self.layout) if t == term)])


#: Z_d'Z_b is kept dense when at least this share of it is non-zero: its weighted Gram matrix
#: is then a BLAS product, faster than the sparse one (as DENSE_SHARE in
#: :mod:`transferstats.analysis.mixed`; a 1,100-mix grid with slopes by target: 30% non-zero,
#: 4 ms dense against 15 ms sparse).
DENSE_SHARE = 0.125


def _sparse_oras_dense(A: scipy.sparse.csr_array) -> Matrix:
    return A.toarray() if A.nnz >= DENSE_SHARE * A.shape[0] * A.shape[1] else A


def _term_block(codes: np.ndarray, columns: np.ndarray, n_levels: int) -> scipy.sparse.csr_array:
    """Z of one term: n x (levels x k), the k columns of a level next to each other (lme4)."""
    n, k = columns.shape
    cols = (codes[:, None] * k + np.arange(k)[None, :]).ravel()
    rows = np.repeat(np.arange(n), k)
    return scipy.sparse.csr_array((columns.ravel(), (rows, cols)), shape=(n, n_levels * k))


def _indicator(des: Design, t: int | None) -> tuple[scipy.sparse.csr_array, np.ndarray]:
    n = len(des.y)
    if t is None:
        return scipy.sparse.csr_array((n, 0)), np.zeros(n, dtype=np.int64)
    codes = des.codes[t]
    return (scipy.sparse.csr_array((np.ones(n), (np.arange(n), codes)), shape=(n, des.n_levels[t])),
            codes)


def products(des: Design, nested: bool = True) -> Products:
    """Cross-products of the design, blocked around the eliminated terms (module docstring).

    ``nested=False`` leaves a term nesting d among the dense ones (the tests compare both).
    """
    n, p = des.X.shape
    M = np.column_stack([des.X, des.y])
    d = eliminated_term(des.terms, des.n_levels)
    h = nesting_term(des, d) if nested else None
    others = [t for t in range(len(des.terms)) if t not in (d, h)]
    blocks = [_term_block(des.codes[t], des.columns[t], des.n_levels[t]) for t in others]
    Zb = scipy.sparse.csr_array(scipy.sparse.hstack(blocks, format="csr") if blocks
                                else scipy.sparse.csr_array((n, 0)))
    (Zd, codes_d), (Zh, codes_h) = _indicator(des, d), _indicator(des, h)
    offsets = dict(zip(others, np.cumsum([0] + [b.shape[1] for b in blocks[:-1]]).tolist(),
                       strict=True))
    cp = Products(n, p, des.terms, d, h, np.asarray(Zd.sum(axis=0)).ravel(),
                  np.asarray(Zh.sum(axis=0)).ravel(), scipy.sparse.csr_array(Zd.T @ Zh),
                  _sparse_oras_dense(scipy.sparse.csr_array(Zd.T @ Zb)), np.asarray((Zh.T @ Zb).toarray()),
                  np.asarray((Zb.T @ Zb).toarray()), np.asarray(Zd.T @ M), np.asarray(Zh.T @ M),
                  np.asarray(Zb.T @ M), M.T @ M, Zb, codes_d, codes_h, offsets,
                  _theta_layout(des.terms))
    for t, i, j in cp.layout:
        base = (offsets[t] + des.terms[t].size * np.arange(des.n_levels[t]) if t in offsets
                else np.empty(0, dtype=np.int64))
        cp.lambda_rows.append(base + i)
        cp.lambda_cols.append(base + j)
    return cp


# --------------------------------------------------------------------------------------------
# The profiled criterion


def _solve_lower(L: np.ndarray, B: np.ndarray, transpose: bool = False) -> np.ndarray:
    """L^-1 B (or L'^-1 B) by LAPACK directly: scipy 1.17's ``solve_triangular`` spends
    milliseconds on input checks, which dominate a criterion of b x b arrays (b ~ 50)."""
    x, info = dtrtrs(L, B, lower=1, trans=int(transpose))
    if info != 0:
        raise np.linalg.LinAlgError(f"triangular solve failed (LAPACK info {info})")
    return np.asarray(x)


def _scale_rows(A: Matrix, scale: np.ndarray) -> Matrix:
    """diag(scale) A, on A's stored values (no sparse product)."""
    if isinstance(A, np.ndarray):
        return A * scale[:, None]
    return scipy.sparse.csr_array((A.data * np.repeat(scale, np.diff(A.indptr)), A.indices, A.indptr),
                                  shape=A.shape)


def as_dense(A: Matrix) -> np.ndarray:
    """A sparse or dense matrix as a numpy array."""
    return A if isinstance(A, np.ndarray) else A.toarray()


def _chol_solve(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(L L')^-1 B."""
    return _solve_lower(L, _solve_lower(L, B), transpose=True)


class Evaluation(NamedTuple):
    """One evaluation at theta: the pieces of the criterion and of its derivatives.

    V_0 = I + theta_d^2 Z_d Z_d' and V_1 = V_0 + theta_h^2 Z_h Z_h' are the metrics after
    eliminating d and then h; V = V_1 + Z_b Lambda_b Lambda_b' Z_b'.
    """

    theta: np.ndarray
    log_det_V: float       # log det(I + Z Lambda Lambda' Z') = lme4's ldL2
    XVX: np.ndarray        # X' V^-1 X (V relative to sigma^2): lme4's RX'RX
    beta: np.ndarray
    pwrss: float           # (y - X beta)' V^-1 (y - X beta): lme4's penalised residual SS
    weights: np.ndarray    # 1 / (1 + theta_d^2 D), by level of d
    t_h: np.ndarray        # diag(Z_h' V_0^-1 Z_h)
    weights_h: np.ndarray  # 1 / (1 + theta_h^2 t_h), by level of h
    T_hb: np.ndarray       # Z_h' V_0^-1 Z_b
    ZhVM: np.ndarray       # Z_h' V_0^-1 M
    T: np.ndarray          # Z_b' V_1^-1 Z_b
    Lam: np.ndarray        # Lambda_b
    chol: np.ndarray       # lower Cholesky factor of I + Lambda_b' T Lambda_b
    ZbVM: np.ndarray       # Z_b' V_1^-1 M


def evaluate(theta: np.ndarray, cp: Products) -> Evaluation:
    """beta, the penalised residual sum of squares and the log determinants at theta."""
    psi = cp.theta_of(cp.d, theta) ** 2
    weights = 1.0 / (1.0 + psi * cp.D)
    e = psi * weights
    eZdM = e[:, None] * cp.ZdM
    t_h = cp.Dh - (cp.Ct_h.multiply(cp.Ct_h)).T @ e
    T_hb = cp.ZhZb - as_dense(_scale_rows(cp.Ct_h, e).T @ cp.Ct_b)
    T_bb = cp.ZbZb - as_dense(_scale_rows(cp.Ct_b, e).T @ cp.Ct_b)
    ZhVM = cp.ZhM - cp.Ct_h.T @ eZdM
    ZbVM = cp.ZbM - cp.Ct_b.T @ eZdM
    MVM = cp.MM - cp.ZdM.T @ eZdM
    psi_h = cp.theta_of(cp.h, theta) ** 2
    weights_h = 1.0 / (1.0 + psi_h * t_h)
    e_h = psi_h * weights_h
    T = T_bb - T_hb.T @ (e_h[:, None] * T_hb)
    ZbVM = ZbVM - T_hb.T @ (e_h[:, None] * ZhVM)
    MVM = MVM - ZhVM.T @ (e_h[:, None] * ZhVM)
    Lam = cp.lambda_b(theta)
    chol = np.linalg.cholesky(Lam.T @ T @ Lam + np.eye(cp.b))
    W = _solve_lower(chol, Lam.T @ ZbVM)
    MViM = MVM - W.T @ W
    p = cp.p
    XVX = MViM[:p, :p]
    beta = _chol_solve(np.linalg.cholesky(XVX), MViM[:p, p])
    pwrss = float(MViM[p, p] - MViM[:p, p] @ beta)
    log_det_V = float(np.sum(np.log1p(psi * cp.D)) + np.sum(np.log1p(psi_h * t_h))
                      + 2 * np.sum(np.log(np.diag(chol))))
    return Evaluation(theta, log_det_V, XVX, beta, pwrss, weights, t_h, weights_h, T_hb, ZhVM,
                      T, Lam, chol, ZbVM)


def _log_det(matrix: np.ndarray) -> float:
    return float(np.linalg.slogdet(matrix)[1])


def criterion(ev: Evaluation, n: int, reml: bool) -> float:
    """lme4's REML criterion (``REMLcrit``) or deviance at this theta, sigma profiled out."""
    p = ev.XVX.shape[0]
    dof = n - p if reml else n
    value = ev.log_det_V + dof * (1 + np.log(2 * np.pi * ev.pwrss / dof))
    return float(value + (_log_det(ev.XVX) if reml else 0.0))


class Conditional(NamedTuple):
    """Z'V^-1 products at an evaluation: the gradient's and the BLUPs' input."""

    ZbViM: np.ndarray      # Z_b' V^-1 M
    ZbViZb: np.ndarray     # Z_b' V^-1 Z_b
    ZhViM: np.ndarray      # Z_h' V^-1 M
    ZhViZh: np.ndarray     # diag(Z_h' V^-1 Z_h)
    ZdViM: np.ndarray      # Z_d' V^-1 M
    ZdViZd: np.ndarray     # diag(Z_d' V^-1 Z_d)


def _diagonal_of_sandwich(F: Matrix, G: np.ndarray) -> np.ndarray:
    """diag(F G F'), computed on F's non-zeros."""
    FG_on_F = F * (F @ G) if isinstance(F, np.ndarray) else F.multiply(F @ G)
    return np.asarray(FG_on_F.sum(axis=1)).ravel()


def conditional(ev: Evaluation, cp: Products) -> Conditional:
    """The products with V^-1 = V_1^-1 - V_1^-1 Z_b G Z_b' V_1^-1, G = Lambda_b A^-1 Lambda_b'.

    With F = Z_k'V_1^-1 Z_b for k = h, d: diag(Z_k'V^-1Z_k) = diag(Z_k'V_1^-1Z_k) - diag(F G F')
    and Z_k'V^-1 M = Z_k'V_1^-1 M - F G Z_b'V_1^-1 M; V_1^-1 itself by Woodbury over h, whose
    levels each hold whole levels of d.
    """
    G = ev.Lam @ _chol_solve(ev.chol, ev.Lam.T)
    G_ZbVM = G @ ev.ZbVM
    e_h = cp.theta_of(cp.h, ev.theta) ** 2 * ev.weights_h
    F_hb = ev.weights_h[:, None] * ev.T_hb
    F_dh = _scale_rows(cp.Ct_h, ev.weights)                          # Z_d' V_0^-1 Z_h
    F_db = as_dense(_scale_rows(cp.Ct_b, ev.weights)) - F_dh @ (e_h[:, None] * ev.T_hb)
    ZdV1Zd = cp.D * ev.weights - ev.weights**2 * (cp.Ct_h.multiply(cp.Ct_h) @ e_h)
    ZdV1M = ev.weights[:, None] * cp.ZdM - F_dh @ (e_h[:, None] * ev.ZhVM)
    return Conditional(
        ZbViM=ev.ZbVM - ev.T @ G_ZbVM, ZbViZb=ev.T - ev.T @ G @ ev.T,
        ZhViM=ev.weights_h[:, None] * ev.ZhVM - F_hb @ G_ZbVM,
        ZhViZh=ev.t_h * ev.weights_h - _diagonal_of_sandwich(F_hb, G),
        ZdViM=ZdV1M - F_db @ G_ZbVM, ZdViZd=ZdV1Zd - _diagonal_of_sandwich(F_db, G))


def derivative_parts(ev: Evaluation, cp: Products, reml: bool) -> tuple[np.ndarray, np.ndarray]:
    """The two parts of the criterion's derivatives in theta: tr(P dV) and y'P dV P y.

    With V = I + Z Lambda Lambda' Z' and P = V^-1 - V^-1 X (X'V^-1X)^-1 X'V^-1 (REML; V^-1
    for ML), dV = Z_b (E Lambda_b' + Lambda_b E') Z_b' for a theta of Lambda_b (E its 0/1
    pattern), and 2 theta_k Z_k Z_k' for the eliminated terms k = d, h. The profiled
    criterion's gradient is trace - dof / pwrss x quadratic; lmerTest's deviance at a given
    sigma has trace - quadratic / sigma^2.
    """
    cond = conditional(ev, cp)
    p, theta = cp.p, ev.theta
    Q_b, Q_h, Q_d = cond.ZbViZb, cond.ZhViZh, cond.ZdViZd
    if reml:
        XVX_inv = np.linalg.inv(ev.XVX)
        ZbViX = cond.ZbViM[:, :p]
        Q_b = Q_b - ZbViX @ XVX_inv @ ZbViX.T
        Q_h = Q_h - np.sum((cond.ZhViM[:, :p] @ XVX_inv) * cond.ZhViM[:, :p], axis=1)
        Q_d = Q_d - np.sum((cond.ZdViM[:, :p] @ XVX_inv) * cond.ZdViM[:, :p], axis=1)
    coef = np.append(-ev.beta, 1.0)
    u_b, u_h, u_d = cond.ZbViM @ coef, cond.ZhViM @ coef, cond.ZdViM @ coef
    LtQ, Ltu = ev.Lam.T @ Q_b, ev.Lam.T @ u_b
    trace, quadratic = np.empty(len(theta)), np.empty(len(theta))
    for k, (t, _, _) in enumerate(cp.layout):
        if t == cp.d:
            trace[k], quadratic[k] = 2 * theta[k] * Q_d.sum(), 2 * theta[k] * (u_d @ u_d)
        elif t == cp.h:
            trace[k], quadratic[k] = 2 * theta[k] * Q_h.sum(), 2 * theta[k] * (u_h @ u_h)
        else:
            rows, cols = cp.lambda_rows[k], cp.lambda_cols[k]
            trace[k], quadratic[k] = 2 * LtQ[cols, rows].sum(), 2 * (u_b[rows] @ Ltu[cols])
    return trace, quadratic


def criterion_and_gradient(theta: np.ndarray, cp: Products, reml: bool) -> tuple[float, np.ndarray]:
    """The profiled criterion and its exact gradient in theta (:func:`derivative_parts`)."""
    ev = evaluate(theta, cp)
    trace, quadratic = derivative_parts(ev, cp, reml)
    dof = cp.n - cp.p if reml else cp.n
    return criterion(ev, cp.n, reml), trace - dof / ev.pwrss * quadratic


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
    this trap. Each such element is tried at a few positive values.
    """
    value = criterion(evaluate(theta, cp), cp.n, reml)
    best, best_value = None, value - 1e-8 * abs(value)
    for k in np.flatnonzero((cp.lower_bounds == 0) & (theta <= 0)):
        for trial in (0.01, 0.1, 0.5):
            candidate = theta.copy()
            candidate[k] = trial
            trial_value = criterion(evaluate(candidate, cp), cp.n, reml)
            if trial_value < best_value:
                best, best_value = candidate, trial_value
    return best


def optimise(cp: Products, reml: bool, start: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """The theta minimising the profiled criterion (T's diagonal >= 0), and whether it converged.

    L-BFGS-B with the exact gradient, restarted from any better point off the bounds
    (:func:`_off_the_boundary`), then Newton polishing (:func:`_polish`). BLAS runs on one
    thread: the arrays are small (r x r with r of tens to hundreds), and on a busy machine
    OpenBLAS's threads make each triangular solve 100 times slower.
    """
    theta: np.ndarray | None = _start(cp) if start is None else np.asarray(start, dtype=float)
    bounds = scipy.optimize.Bounds(cp.lower_bounds, np.full(len(cp.layout), np.inf))
    with threadpool_limits(1):
        for _ in range(len(cp.layout) + 1):
            result = scipy.optimize.minimize(criterion_and_gradient, theta, args=(cp, reml),
                                             jac=True, method="L-BFGS-B", bounds=bounds,
                                             options={"ftol": 1e-12, "gtol": 1e-8, "maxiter": 5000})
            theta = _off_the_boundary(result.x, cp, reml)
            if theta is None:
                break
        return _polish(result.x, cp, reml)


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
    layout = _theta_layout(terms)
    found = []
    for t, term in enumerate(terms):
        T = _relative_factor(term, t, theta, layout)
        for j, column in enumerate(term.columns):
            if T[j, j] < tol:
                kind = "zero variance" if np.linalg.norm(T[j]) < tol else "correlation at +-1"
                found.append(SingularComponent(term.factor, column, kind))
    return found


def _var_corr(terms: Sequence[RandomTerm], theta: np.ndarray, sigma: float) -> pd.DataFrame:
    layout = _theta_layout(terms)
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
    for t, i, j in _theta_layout(terms):
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
    Zb = cp.Zb @ b_b + b_d[cp.codes_d] if cp.d is not None else cp.Zb @ b_b
    if cp.h is not None:
        Zb = Zb + b_h[cp.codes_h]
    effects = {}
    for t, term in enumerate(des.terms):
        if t in (cp.d, cp.h):
            values = (b_d if t == cp.d else b_h)[:, None]
        else:
            start = cp.b_offsets[t]
            values = b_b[start:start + des.n_levels[t] * term.size].reshape(-1, term.size)
        effects[term.label] = pd.DataFrame(values, index=des.levels[t], columns=list(term.columns))
    return effects, Zb


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
