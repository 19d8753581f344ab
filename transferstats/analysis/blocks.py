"""Matrices over the remaining random-effect levels that are diagonal plus low rank on one block.

After the solver (:mod:`transferstats.analysis.mixed`) eliminates the factor with most levels,
d, every matrix it needs is indexed by the levels of the other ("remaining") factors. When d is
nested in one of them, A (mix-by-target cells in mixes), these matrices are diagonal over A's
levels (Z_A'Z_A and Z_A'V_0^-1 Z_A: a row meets one level of A and each level of d one level of
A), and the inverse of S and the products the score and Hessian need are diagonal plus a matrix
of low rank there (rank a few times the number b of the other levels). Kept in that form, a
grid of a thousand mixes and a hundred target-languages costs O(mixes x b^2) per evaluation
rather than O(mixes^2 x b) with dense mixes-by-mixes arrays. This is the structure lme4 and
MixedModels.jl (Bates et al. 2015, section 3.2) exploit with sparse and blocked Cholesky
factors; it is written here because scipy's sparse tools have no dense-block Cholesky and the
low-rank form also keeps the products sparse, which a sparse factorisation would not.
With no nested factor, A is empty and a :class:`Blocked` is a dense matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse


@dataclass
class Blocked:
    """An r x r matrix X with X[A, A] = diag(diag) + left @ right.T, the other blocks dense.

    ``A`` is a slice of the rows (one factor's levels) and ``B`` the other rows, in order.
    ``symmetric`` marks BA as the transpose of AB (a view of it), as for the symmetric matrices
    of the likelihood: arithmetic then computes AB only, not both (each is |A| x b).
    """

    A: slice
    B: np.ndarray
    diag: np.ndarray              # (|A|,)
    left: np.ndarray              # (|A|, q)
    right: np.ndarray             # (|A|, q)
    AB: np.ndarray                # X[A, B] (|A|, b)
    BA: np.ndarray                # X[B, A] (b, |A|)
    BB: np.ndarray                # X[B, B] (b, b)
    symmetric: bool = False

    @classmethod
    def from_blocks(cls, A: slice, B: np.ndarray, diag: np.ndarray, AB: np.ndarray,
                    BB: np.ndarray, BA: np.ndarray | None = None) -> Blocked:
        """A matrix whose block over A is exactly diagonal (symmetric when ``BA`` is None)."""
        empty = np.zeros((len(diag), 0))
        return cls(A, B, diag, empty, empty, AB, AB.T if BA is None else BA, BB, BA is None)

    @classmethod
    def from_dense(cls, X: np.ndarray, A: slice) -> Blocked:
        """The form of a dense X whose block over A is diagonal (its off-diagonal is dropped)."""
        B = other_rows(A, len(X))
        AB, BA = X[A][:, B], X[B][:, A]
        return cls.from_blocks(A, B, np.diag(X)[A].copy(), AB, X[np.ix_(B, B)],
                               None if np.array_equal(AB.T, BA) else BA)

    # -- shape and conversions ---------------------------------------------------------------

    @property
    def size(self) -> int:
        """r, the number of rows."""
        return len(self.diag) + len(self.B)

    def dense(self) -> np.ndarray:
        """The full r x r array (tests and small problems)."""
        out = np.empty((self.size, self.size))
        A, B = self.A, self.B
        out[A, A] = self.left @ self.right.T
        out[A, A][np.diag_indices(len(self.diag))] += self.diag
        out[A, B] = self.AB
        out[B, A] = self.BA
        out[np.ix_(B, B)] = self.BB
        return out

    def diagonal(self) -> np.ndarray:
        """diag(X)."""
        out = np.empty(self.size)
        out[self.A] = self.diag + np.einsum("iq,iq->i", self.left, self.right)
        out[self.B] = np.diag(self.BB)
        return out

    # -- arithmetic ----------------------------------------------------------------------------

    def scaled(self, lam: np.ndarray) -> Blocked:
        """diag(lam) X diag(lam)."""
        la, lb = lam[self.A], lam[self.B]
        AB = la[:, None] * self.AB * lb[None, :]
        BA = AB.T if self.symmetric else lb[:, None] * self.BA * la[None, :]
        return Blocked(self.A, self.B, la ** 2 * self.diag, la[:, None] * self.left,
                       la[:, None] * self.right, AB, BA, lb[:, None] * self.BB * lb[None, :],
                       self.symmetric)

    def identity_minus(self) -> Blocked:
        """I - X."""
        AB = -self.AB
        return Blocked(self.A, self.B, 1.0 - self.diag, -self.left, self.right, AB,
                       AB.T if self.symmetric else -self.BA, np.eye(len(self.B)) - self.BB,
                       self.symmetric)

    def __sub__(self, other: Blocked) -> Blocked:
        symmetric = self.symmetric and other.symmetric
        AB = self.AB - other.AB
        return Blocked(self.A, self.B, self.diag - other.diag,
                       np.hstack([self.left, -other.left]), np.hstack([self.right, other.right]),
                       AB, AB.T if symmetric else self.BA - other.BA, self.BB - other.BB,
                       symmetric)

    def transpose(self) -> Blocked:
        """X'."""
        return Blocked(self.A, self.B, self.diag, self.right, self.left, self.BA.T, self.AB.T,
                       self.BB.T, self.symmetric)

    def symmetrised(self) -> Blocked:
        """(X + X') / 2."""
        AB = (self.AB + self.BA.T) / 2
        return Blocked(self.A, self.B, self.diag, np.hstack([self.left, self.right]) / 2,
                       np.hstack([self.right, self.left]), AB, AB.T, (self.BB + self.BB.T) / 2,
                       True)

    def matmul(self, F: np.ndarray) -> np.ndarray:
        """X F for a dense F (r x k)."""
        F_A, F_B = F[self.A], F[self.B]
        out = np.empty((self.size, F.shape[1]))
        out[self.A] = (self.diag[:, None] * F_A + self.left @ (self.right.T @ F_A)
                       + self.AB @ F_B)
        out[self.B] = self.BA @ F_A + self.BB @ F_B
        return out

    def __matmul__(self, other: Blocked) -> Blocked:
        """X Y, the rank of the low-rank part being the sum of both ranks and b."""
        dx, Lx, Rx = self.diag, self.left, self.right
        dy, Ly, Ry = other.diag, other.left, other.right
        left = np.hstack([dx[:, None] * Ly + Lx @ (Rx.T @ Ly), Lx, self.AB])
        right = np.hstack([Ry, dy[:, None] * Rx, other.BA.T])
        AB = dx[:, None] * other.AB + Lx @ (Rx.T @ other.AB) + self.AB @ other.BB
        BA = self.BA * dy[None, :] + (self.BA @ Ly) @ Ry.T + self.BB @ other.BA
        BB = self.BA @ other.AB + self.BB @ other.BB
        return Blocked(self.A, self.B, dx * dy, left, right, AB, BA, BB)

    # -- scalar summaries ------------------------------------------------------------------------

    def trace_dot(self, other: Blocked) -> float:
        """tr(X Y), in O(|A| q^2)."""
        dx, Lx, Rx = self.diag, self.left, self.right
        dy, Ly, Ry = other.diag, other.left, other.right
        low_x = np.einsum("iq,iq->i", Lx, Rx)               # diag(Lx Rx')
        low_y = np.einsum("iq,iq->i", Ly, Ry)
        aa = dx @ dy + dx @ low_y + dy @ low_x + np.sum((Rx.T @ Ly) * (Lx.T @ Ry))
        return float(aa + np.sum(self.AB * other.BA.T) + np.sum(self.BA * other.AB.T)
                     + np.sum(self.BB * other.BB.T))

    def diagonal_of_product(self, other: Blocked) -> np.ndarray:
        """diag(X Y) without forming X Y, in O(|A| q^2)."""
        dx, Lx, Rx = self.diag, self.left, self.right
        dy, Ly, Ry = other.diag, other.left, other.right
        out = np.empty(self.size)
        out[self.A] = (dx * dy + dx * np.einsum("iq,iq->i", Ly, Ry)
                       + dy * np.einsum("iq,iq->i", Lx, Rx)
                       + np.einsum("iq,iq->i", Lx @ (Rx.T @ Ly), Ry)
                       + np.einsum("ib,bi->i", self.AB, other.BA))
        out[self.B] = (np.einsum("bi,ib->b", self.BA, other.AB)
                       + np.einsum("bc,cb->b", self.BB, other.BB))
        return out

    def block(self, rows: slice, cols: slice) -> np.ndarray:
        """The dense block X[rows, cols] of two factors' levels, not both A's."""
        if rows == self.A:
            return self.AB[:, _positions(self.B, cols)]
        if cols == self.A:
            return self.BA[_positions(self.B, rows)]
        return self.BB[_positions(self.B, rows), _positions(self.B, cols)]

    def squared_norm(self, rows: slice, cols: slice) -> float:
        """||X[rows, cols]||_F^2 for the blocks of two factors' levels."""
        if rows == cols == self.A and rows.stop > rows.start:
            d, L, R = self.diag, self.left, self.right
            return float(d @ d + 2 * d @ np.einsum("iq,iq->i", L, R)
                         + np.sum((L.T @ L) * (R.T @ R)))
        return float(np.sum(self.block(rows, cols) ** 2))

    def bilinear(self, F_rows: np.ndarray, rows: slice, F_cols: np.ndarray, cols: slice
                 ) -> np.ndarray:
        """F_rows' X[rows, cols] F_cols."""
        if rows == cols == self.A and rows.stop > rows.start:
            return (F_rows.T @ (self.diag[:, None] * F_cols)
                    + (F_rows.T @ self.left) @ (self.right.T @ F_cols))
        return F_rows.T @ self.block(rows, cols) @ F_cols


#: Most distinct column groups for which :class:`RowSplit` precomputes one Gram matrix each.
MAX_GROUPS = 8


@dataclass
class RowSplit:
    """A matrix C (r x L) whose rows over A have disjoint supports (each column meets at most
    one of them: Z_r'Z_d when d is nested in A's factor), split for the Gram matrices
    C diag(w) C' that every evaluation of the likelihood forms with new weights w.

    The rows over A are kept sparse, with the row of each stored entry; the others dense when
    at least ``dense_share`` of their entries are non-zero (BLAS then beats sparse products),
    sparse otherwise. The likelihood's weights are functions of a column's count (rows per level
    of d), and grids have few distinct counts (often one: every mix-by-target cell holds the
    same languages and seeds), so when the columns fall into at most ``MAX_GROUPS`` groups, the
    Gram matrix of each group is computed once and C diag(w) C' is their weighted sum, an
    O(groups x r b) sum instead of a product over all L columns. ``base - C diag(w) C'``
    (:meth:`minus_gram`, the likelihood's T = Z_r'Z_r - Z_r'Z_d diag(e) Z_d'Z_r) is then the
    same sum with ``base`` as one more term, one pass instead of two.
    """

    A: slice
    B: np.ndarray
    C_A: scipy.sparse.csr_array
    row_of_entry: np.ndarray
    C_B: np.ndarray | scipy.sparse.csr_array
    C_B_T: np.ndarray | scipy.sparse.csr_array
    base: Blocked | None = None              # symmetric, exactly diagonal over A
    group_of: np.ndarray | None = None      # each column's group
    first_of_group: np.ndarray | None = None
    #: diag, AB and BB of ``base`` (zero without one), then of each group's Gram, stacked
    group_grams: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @classmethod
    def of(cls, C: np.ndarray | scipy.sparse.csr_array, A: slice, dense_share: float,
           groups: np.ndarray | None = None, base: Blocked | None = None) -> RowSplit:
        """Split C's rows at A; ``groups`` (one value per column, e.g. its count) groups the
        columns whose weights are always equal; ``base`` is the matrix :meth:`minus_gram`
        subtracts from."""
        B = other_rows(A, C.shape[0])
        C_A = scipy.sparse.csr_array(C[A])
        C_B = C[B]
        if not isinstance(C_B, np.ndarray):
            C_B = scipy.sparse.csr_array(C_B)
            if C_B.nnz >= dense_share * np.prod(C_B.shape):
                C_B = C_B.toarray()
        C_B_T = C_B.T if isinstance(C_B, np.ndarray) else scipy.sparse.csr_array(C_B.T)
        row_of_entry = np.repeat(np.arange(C_A.shape[0]), np.diff(C_A.indptr))
        split = cls(A, B, C_A, row_of_entry, C_B, C_B_T, base)
        if groups is not None:
            _, first, group_of = np.unique(groups, return_index=True, return_inverse=True)
            if 0 < len(first) <= MAX_GROUPS:
                split.group_of, split.first_of_group = group_of, first
                split.group_grams = split._group_grams(group_of, len(first))
        return split

    def _group_grams(self, group_of: np.ndarray, n_groups: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The diagonal over A and the blocks AB and BB of each group's C_g C_g' (C_g: the
        group's columns), stacked along a first axis: all groups together cost one product
        over the columns, not one per group."""
        C_A, n_A, b = self.C_A, self.C_A.shape[0], len(self.B)
        # A's rows have disjoint supports: each stored entry is one (group, row of A) pair.
        stacked_row = group_of[C_A.indices] * n_A + self.row_of_entry
        diag = np.bincount(stacked_row, C_A.data ** 2, minlength=n_groups * n_A)
        C_A_by_group = scipy.sparse.csr_array((C_A.data, (stacked_row, C_A.indices)),
                                              shape=(n_groups * n_A, C_A.shape[1]))
        AB = C_A_by_group @ self.C_B_T
        AB = AB if isinstance(AB, np.ndarray) else AB.toarray()
        order = np.argsort(group_of, kind="stable")
        bounds = np.searchsorted(group_of[order], np.arange(n_groups + 1))
        columns = self.C_B_T[order]  # each group's columns (as rows of C_B') together
        BB = np.zeros((n_groups, b, b))
        for g, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True) if b else []):
            if isinstance(columns, np.ndarray):
                # A symmetric rank-k update: half the work of the general product numpy
                # would run for C_g @ C_g.T from two arrays.
                upper = scipy.linalg.blas.dsyrk(1.0, columns[lo:hi].T)
                BB[g] = np.triu(upper) + np.triu(upper, 1).T
            else:
                BB[g] = (columns[lo:hi].T @ columns[lo:hi]).toarray()
        base = self.base or Blocked.from_blocks(self.A, self.B, np.zeros(n_A), np.zeros((n_A, b)),
                                                np.zeros((b, b)))
        return (np.concatenate([base.diag[None], diag.reshape(n_groups, n_A)]),
                np.concatenate([base.AB[None], AB.reshape(n_groups, n_A, b)]),
                np.concatenate([base.BB[None], BB]))

    def _weights_by_group(self, weights: np.ndarray) -> np.ndarray | None:
        """One weight per group, or None if the weights differ within a group (or no groups)."""
        if self.group_grams is None:
            return None
        by_group = weights[self.first_of_group]
        return by_group if np.array_equal(weights, by_group[self.group_of]) else None

    def gram(self, weights: np.ndarray) -> Blocked:
        """C diag(weights) C', exactly diagonal over A."""
        by_group = self._weights_by_group(weights)
        if by_group is not None:
            diag, AB, BB = (np.tensordot(by_group, stacked[1:], 1)
                            for stacked in self.group_grams or ())
            return Blocked.from_blocks(self.A, self.B, diag, AB, BB)
        return Blocked.from_blocks(self.A, self.B, *self._product(weights))

    def minus_gram(self, weights: np.ndarray) -> Blocked:
        """base - C diag(weights) C'."""
        if self.base is None:
            raise ValueError("minus_gram needs the base given to RowSplit.of")
        by_group = self._weights_by_group(weights)
        if by_group is not None:
            coefficients = np.concatenate([[1.0], -by_group])
            diag, AB, BB = (np.tensordot(coefficients, stacked, 1)
                            for stacked in self.group_grams or ())
            return Blocked.from_blocks(self.A, self.B, diag, AB, BB)
        return self.base - self.gram(weights)

    def _product(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The diagonal over A and the blocks AB and BB of C diag(weights) C'."""
        C_A, C_B, C_B_T, row_of_entry = self.C_A, self.C_B, self.C_B_T, self.row_of_entry
        weighted = C_A.data * weights[C_A.indices]
        diag = np.bincount(row_of_entry, weighted * C_A.data, minlength=C_A.shape[0])
        C_A_w = scipy.sparse.csr_array((weighted, C_A.indices, C_A.indptr), shape=C_A.shape)
        if isinstance(C_B, np.ndarray):
            AB = C_A_w @ C_B_T
            BB = (C_B * weights[None, :]) @ C_B_T
        else:
            C_B_w = scipy.sparse.csr_array((C_B.data * weights[C_B.indices], C_B.indices,
                                            C_B.indptr), shape=C_B.shape)
            AB = (C_A_w @ C_B_T).toarray()
            BB = (C_B_w @ C_B_T).toarray()
        return diag, np.asarray(AB), BB


def other_rows(A: slice, r: int) -> np.ndarray:
    """The rows of r outside A, in order."""
    return np.r_[0:A.start, A.stop:r] if A.stop > A.start else np.arange(r)


def _positions(B: np.ndarray, rows: slice) -> slice:
    """Where a factor's rows (a slice of r outside A) sit within B."""
    start = int(np.searchsorted(B, rows.start))
    return slice(start, start + rows.stop - rows.start)
