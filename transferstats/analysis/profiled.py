"""lme4's profiled (RE)ML criterion for random intercepts and slopes, and its exact gradient.

The model is lme4's

    y = X beta + Z b + e,    b ~ N(0, sigma^2 Lambda Lambda'),    e ~ N(0, sigma^2 I),

with one term per :class:`~transferstats.analysis.formula.RandomTerm`; theta lists the lower
triangles of the terms' relative covariance factors T, column by column (lme4's order). For
fixed theta, beta and sigma^2 have closed forms and the criterion is lme4's profiled deviance
(Bates, Maechler, Bolker & Walker 2015, section 3). :mod:`transferstats.analysis.lmm` minimises
it; the inference modules differentiate it.

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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeAlias

import numpy as np
import pandas as pd
import scipy.sparse
from scipy.linalg.lapack import dtrtrs

from transferstats.analysis.formula import INTERCEPT, RandomTerm

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


def theta_layout(terms: Sequence[RandomTerm]) -> list[tuple[int, int, int]]:
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
                  theta_layout(des.terms))
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


class Projections(NamedTuple):
    """Z'PZ (its needed blocks) and Z'Py at an evaluation: what every derivative is made of."""

    Q_b: np.ndarray        # Z_b' P Z_b
    Q_h: np.ndarray        # diag(Z_h' P Z_h)
    Q_d: np.ndarray        # diag(Z_d' P Z_d)
    u_b: np.ndarray        # Z_b' P y, and likewise for h and d
    u_h: np.ndarray
    u_d: np.ndarray


def projections(ev: Evaluation, cp: Products, reml: bool) -> Projections:
    """With P = V^-1 - V^-1 X (X'V^-1X)^-1 X'V^-1 for REML, V^-1 for ML."""
    cond = conditional(ev, cp)
    p = cp.p
    Q_b, Q_h, Q_d = cond.ZbViZb, cond.ZhViZh, cond.ZdViZd
    if reml:
        XVX_inv = np.linalg.inv(ev.XVX)
        ZbViX = cond.ZbViM[:, :p]
        Q_b = Q_b - ZbViX @ XVX_inv @ ZbViX.T
        Q_h = Q_h - np.sum((cond.ZhViM[:, :p] @ XVX_inv) * cond.ZhViM[:, :p], axis=1)
        Q_d = Q_d - np.sum((cond.ZdViM[:, :p] @ XVX_inv) * cond.ZdViM[:, :p], axis=1)
    coef = np.append(-ev.beta, 1.0)
    return Projections(Q_b, Q_h, Q_d, cond.ZbViM @ coef, cond.ZhViM @ coef, cond.ZdViM @ coef)


def derivative_parts(ev: Evaluation, cp: Products, reml: bool) -> tuple[np.ndarray, np.ndarray]:
    """The two parts of the criterion's derivatives in theta: tr(P dV) and y'P dV P y.

    With V = I + Z Lambda Lambda' Z' and P as in :func:`projections`, dV = Z_b (E Lambda_b' +
    Lambda_b E') Z_b' for a theta of Lambda_b (E its 0/1 pattern), and 2 theta_k Z_k Z_k' for
    the eliminated terms k = d, h. The profiled criterion's gradient is trace - dof / pwrss x
    quadratic; lmerTest's deviance at a given sigma has trace - quadratic / sigma^2.
    """
    pr = projections(ev, cp, reml)
    theta = ev.theta
    LtQ, Ltu = ev.Lam.T @ pr.Q_b, ev.Lam.T @ pr.u_b
    trace, quadratic = np.empty(len(theta)), np.empty(len(theta))
    for k, (t, _, _) in enumerate(cp.layout):
        if t == cp.d:
            trace[k], quadratic[k] = 2 * theta[k] * pr.Q_d.sum(), 2 * theta[k] * (pr.u_d @ pr.u_d)
        elif t == cp.h:
            trace[k], quadratic[k] = 2 * theta[k] * pr.Q_h.sum(), 2 * theta[k] * (pr.u_h @ pr.u_h)
        else:
            rows, cols = cp.lambda_rows[k], cp.lambda_cols[k]
            trace[k], quadratic[k] = 2 * LtQ[cols, rows].sum(), 2 * (pr.u_b[rows] @ Ltu[cols])
    return trace, quadratic


def variance_slopes(ev: Evaluation, cp: Products, reml: bool) -> np.ndarray:
    """The criterion's derivative in the variance ratio psi = theta^2 of each one-column term
    (NaN for the thetas of larger terms). Unlike the derivative in theta it is not 0 at
    theta = 0: negative there, the variance is not at zero at the optimum."""
    pr = projections(ev, cp, reml)
    weight = (cp.n - cp.p if reml else cp.n) / ev.pwrss
    slopes = np.full(len(ev.theta), np.nan)
    for k, (t, _, _) in enumerate(cp.layout):
        if t == cp.d:
            slopes[k] = pr.Q_d.sum() - weight * (pr.u_d @ pr.u_d)
        elif t == cp.h:
            slopes[k] = pr.Q_h.sum() - weight * (pr.u_h @ pr.u_h)
        elif cp.terms[t].size == 1:
            rows = cp.lambda_rows[k]
            slopes[k] = pr.Q_b[rows, rows].sum() - weight * (pr.u_b[rows] @ pr.u_b[rows])
    return slopes


def criterion_and_gradient(theta: np.ndarray, cp: Products, reml: bool) -> tuple[float, np.ndarray]:
    """The profiled criterion and its exact gradient in theta (:func:`derivative_parts`)."""
    ev = evaluate(theta, cp)
    trace, quadratic = derivative_parts(ev, cp, reml)
    dof = cp.n - cp.p if reml else cp.n
    return criterion(ev, cp.n, reml), trace - dof / ev.pwrss * quadratic
