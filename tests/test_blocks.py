"""The diagonal-plus-low-rank block algebra against the same operations on dense arrays."""

import numpy as np
import pytest
import scipy.sparse

from transferstats.analysis.blocks import Blocked, RowSplit, other_rows

#: r = 4 + 25 + 3: the block A (25 levels) sits between other rows, as a factor's may.
A = slice(4, 29)
R = 32


def random_blocked(rng, rank, A=A, r=R):
    B = other_rows(A, r)
    a, b = A.stop - A.start, len(B)
    return Blocked(A, B, rng.normal(size=a), rng.normal(size=(a, rank)),
                   rng.normal(size=(a, rank)), rng.normal(size=(a, b)), rng.normal(size=(b, a)),
                   rng.normal(size=(b, b)))


@pytest.mark.parametrize("block", [A, slice(0, 0)], ids=["nested", "dense"])
def test_operations_agree_with_dense_arrays(block):
    rng = np.random.default_rng(0)
    X, Y = random_blocked(rng, 3, block), random_blocked(rng, 2, block)
    x, y = X.dense(), Y.dense()
    F = rng.normal(size=(R, 4))
    lam = rng.uniform(0.5, 2, R)
    np.testing.assert_allclose((X @ Y).dense(), x @ y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(X.matmul(F), x @ F, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(X.scaled(lam).dense(), lam[:, None] * x * lam[None, :],
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(X.identity_minus().dense(), np.eye(R) - x, atol=1e-12)
    np.testing.assert_allclose((X - Y).dense(), x - y, atol=1e-12)
    np.testing.assert_allclose(X.transpose().dense(), x.T, atol=1e-12)
    np.testing.assert_allclose(X.symmetrised().dense(), (x + x.T) / 2, atol=1e-12)
    np.testing.assert_allclose(X.diagonal(), np.diag(x), atol=1e-12)
    assert X.trace_dot(Y) == pytest.approx(np.trace(x @ y), rel=1e-12)
    np.testing.assert_allclose(X.diagonal_of_product(Y), np.diag(x @ y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("block", [A, slice(0, 0)], ids=["nested", "dense"])
def test_symmetric_matrices_keep_one_off_diagonal_block(block):
    """Arithmetic on symmetric matrices computes AB only and keeps BA its transpose (a view),
    with the same results as the general operations."""
    rng = np.random.default_rng(4)
    s = np.diag(rng.uniform(1, 2, R))
    off = rng.normal(size=(R, R))
    s[:block.start] = off[:block.start]
    s[block.stop:] = off[block.stop:]
    s = (s + s.T) / 2
    t = rng.normal(size=(R, R))
    t = t + t.T
    t[block, block] = np.diag(np.diag(t)[block])
    X, Y = Blocked.from_dense(s, block), Blocked.from_dense(t, block)
    assert X.symmetric and Y.symmetric
    general = Blocked.from_dense(rng.normal(size=(R, R)), block)
    assert general.symmetric == (block.stop == block.start)  # no off-diagonal blocks: trivially
    lam = rng.uniform(0.5, 2, R)
    results = {"scaled": (X.scaled(lam), lam[:, None] * s * lam[None, :]),
               "identity_minus": (X.identity_minus(), np.eye(R) - s),
               "difference": (X - Y, s - t),
               "transpose": (X.transpose(), s),
               "symmetrised": ((X @ Y).symmetrised(), (s @ t + t @ s) / 2)}
    for name, (got, expected) in results.items():
        assert got.symmetric, name
        assert got.AB.size == 0 or np.shares_memory(got.AB, got.BA), name
        np.testing.assert_allclose(got.dense(), expected, atol=1e-12, err_msg=name)
    assert not (X @ Y).symmetric


def test_factor_blocks_norms_and_bilinear_forms():
    """Blocks of two factors' levels, both A, A and another, two others."""
    rng = np.random.default_rng(1)
    X = random_blocked(rng, 3)
    x = X.dense()
    factors = [slice(0, 4), A, slice(29, 32)]
    for rows in factors:
        for cols in factors:
            dense_block = x[rows, cols]
            assert X.squared_norm(rows, cols) == pytest.approx(np.sum(dense_block ** 2),
                                                               rel=1e-12)
            F, G = rng.normal(size=(rows.stop - rows.start, 2)), rng.normal(
                size=(cols.stop - cols.start, 3))
            np.testing.assert_allclose(X.bilinear(F, rows, G, cols), F.T @ dense_block @ G,
                                       rtol=1e-12, atol=1e-12)
            if not rows == cols == A:
                np.testing.assert_allclose(X.block(rows, cols), dense_block)


@pytest.mark.parametrize(("sparse", "dense_share"), [(False, 0.0), (True, 0.0), (True, 2.0)],
                         ids=["dense", "sparse, other rows dense", "sparse"])
def test_gram_of_rows_with_disjoint_supports(sparse, dense_share):
    """C diag(w) C' whose rows in A meet disjoint columns (cells nested in mixes)."""
    rng = np.random.default_rng(2)
    L = 60
    C = rng.poisson(1.0, size=(R, L)).astype(float)
    C[A] = 0.0
    C[A.start + rng.integers(0, A.stop - A.start, L), np.arange(L)] = rng.uniform(1, 3, L)
    w = rng.uniform(0.1, 1, L)
    expected = (C * w[None, :]) @ C.T
    split = RowSplit.of(scipy.sparse.csr_array(C) if sparse else C, A, dense_share)
    assert isinstance(split.C_B, np.ndarray) == (dense_share == 0.0)
    gram = split.gram(w)
    np.testing.assert_allclose(gram.dense(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Blocked.from_dense(expected, A).dense(), expected, atol=1e-12)


@pytest.mark.parametrize(("nested", "dense_share"), [(A, 0.0), (A, 2.0), (slice(0, 0), 0.0),
                                                    (slice(0, 0), 2.0)],
                         ids=["dense", "sparse", "no nested rows, dense",
                              "no nested rows, sparse"])
def test_gram_by_column_groups_equals_the_direct_product(nested, dense_share):
    """With columns grouped (by their counts), a weight per group is summed from precomputed
    Gram matrices; weights that differ within a group fall back to the direct product."""
    rng = np.random.default_rng(3)
    L = 60
    C = rng.poisson(1.0, size=(R, L)).astype(float)
    C[nested] = 0.0
    if nested.stop > nested.start:
        C[nested.start + rng.integers(0, nested.stop - nested.start, L),
          np.arange(L)] = rng.uniform(1, 3, L)
    groups = rng.choice([20.0, 40.0, 60.0], L)
    base = rng.normal(size=(R, R))
    base = base + base.T
    base[nested, nested] = np.diag(np.diag(base)[nested])
    split = RowSplit.of(scipy.sparse.csr_array(C), nested, dense_share, groups=groups,
                        base=Blocked.from_dense(base, nested))
    assert isinstance(split.C_B, np.ndarray) == (dense_share == 0.0)
    b = R - (nested.stop - nested.start)
    assert split.group_grams is not None and split.group_grams[2].shape == (1 + 3, b, b)
    for w in (1.0 / (1.0 + 0.3 * groups), rng.uniform(0.1, 1, L)):   # by group; per column
        np.testing.assert_allclose(split.gram(w).dense(), (C * w[None, :]) @ C.T, rtol=1e-12,
                                   atol=1e-12)
        np.testing.assert_allclose(split.minus_gram(w).dense(), base - (C * w[None, :]) @ C.T,
                                   rtol=1e-12, atol=1e-12)
    many = RowSplit.of(C, A, 0.0, groups=np.arange(L))                 # too many groups
    assert many.group_grams is None
