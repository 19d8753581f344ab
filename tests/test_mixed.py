"""The fast crossed mixed model agrees with statsmodels' MixedLM (the reference) on simulated grids."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import statsmodels.api as sm
from statsmodels.regression.mixed_linear_model import MixedLMParams

import transferstats.analysis.mixed as mixed
from simulated_grids import RANDOM, simulate_grid
from transferstats.analysis.blocks import Blocked
from transferstats.analysis.mixed import (
    ConvergenceError,
    average_information,
    cross_products,
    derivatives,
    fit_crossed,
    fit_crossed_statsmodels,
    fit_theta,
    likelihood_ratio_test,
    model_arrays,
    moment_start,
    profiled_deviance,
    statsmodels_model,
    with_response,
)

GRIDS = {
    "balanced": dict(),
    "missing cells": dict(missing_cells=0.25),
    "unequal seeds": dict(unequal_seeds=True),
    "zero mix variance": dict(sd_mix=0.0),
    "large residual": dict(sd_residual=3.0, n_mixes=16, n_targets=3),
}


def assert_close(fast, reference, rtol=1e-4, atol=1e-6):
    np.testing.assert_allclose(fast, reference, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", list(GRIDS))
def test_fast_fit_agrees_with_statsmodels(name):
    data = simulate_grid(np.random.default_rng(len(name)), **GRIDS[name])
    fixed = ["diversity", "volume"]
    fast = fit_crossed(data, "improvement", fixed, RANDOM)
    reference = fit_crossed_statsmodels(data, "improvement", fixed, RANDOM)
    assert fast.method == "fast" and fast.converged
    assert fast.terms == reference.terms == ["Intercept", "diversity", "volume"]
    assert_close(fast.params, reference.params)
    assert_close(list(fast.variance_components.values()),
                 list(reference.variance_components.values()))
    assert_close(fast.residual_variance, reference.residual_variance)
    # The fast optimum is at least as good as the reference one, and the same up to tolerance.
    assert fast.llf >= reference.llf - 1e-6
    assert_close(fast.llf, reference.llf, rtol=1e-7)
    assert_close(fast.fitted, reference.fitted, rtol=1e-4, atol=1e-4)
    if not reference.on_boundary:
        assert_close(fast.cov_params, reference.cov_params, rtol=1e-3)


def test_zero_variance_component_is_on_the_boundary():
    data = simulate_grid(np.random.default_rng(3), sd_mix=0.0)
    fast = fit_crossed(data, "improvement", ["diversity", "volume"], RANDOM)
    assert fast.variance_components["mix"] == pytest.approx(0.0, abs=1e-6)
    assert fast.on_boundary == ["mix"]


def test_ml_fit_and_interaction_column_agree_with_statsmodels():
    data = simulate_grid(np.random.default_rng(7), unequal_seeds=True)
    data["diversity_x_volume"] = data["diversity"] * data["volume"]
    fixed = ["diversity", "volume", "diversity_x_volume"]
    fast = fit_crossed(data, "improvement", fixed, RANDOM, reml=False)
    reference = fit_crossed_statsmodels(data, "improvement", fixed, RANDOM, reml=False)
    assert_close(fast.params, reference.params)
    assert_close(list(fast.variance_components.values()),
                 list(reference.variance_components.values()))
    assert_close(fast.llf, reference.llf, rtol=1e-7)


def grid_cross_products(data, fixed=("diversity", "volume"), random=RANDOM):
    arrays = model_arrays(data, "improvement", list(fixed), list(random))
    return arrays, cross_products(arrays.X, arrays.y, arrays.codes, [len(lv) for lv in arrays.levels])


@pytest.mark.parametrize("random", [RANDOM, ["mix", "mix_target", "target_task", "language"],
                                    ["language", "mix_target", "mix"]])
def test_blocked_Z_r_Z_r_is_the_dense_product(random):
    """Z_r'Z_r, counted in blocks around the factor the cells are nested in (first, in the
    middle or last of the remaining factors), is the dense product of the indicators."""
    data = grid_with_mix_target(27, n_mixes=10, missing_cells=0.2, unequal_seeds=True)
    arrays, cp = grid_cross_products(data, random=random)
    assert (cp.nested.stop > cp.nested.start) == ("mix" in random)
    Z_r = np.hstack([np.eye(len(arrays.levels[k]))[arrays.codes[k]] for k in cp.remaining])
    np.testing.assert_array_equal(cp.C_rr.dense(), Z_r.T @ Z_r)


@pytest.mark.parametrize("psi", [[0.8, 0.3, 0.2], [0.8, 1e-7, 0.2], [1e-6, 0.3, 1e-5]])
def test_llf_and_hessian_match_statsmodels_at_the_same_parameters(psi):
    """The criterion and its derivatives are statsmodels' own, not just the same optimum.

    The components near zero exercise the rows of :func:`derivatives` computed directly
    rather than through the identities that divide by psi.
    """
    data = simulate_grid(np.random.default_rng(11), n_mixes=8, n_targets=3, n_languages=5)
    arrays, cp = grid_cross_products(data)
    model = statsmodels_model(arrays)
    psi = np.array(psi)
    beta = np.array([0.1, 0.9, 0.4])
    params = MixedLMParams.from_components(fe_params=beta, vcomp=psi)
    params.cov_re = np.zeros((0, 0))
    hessian_sm, _ = model.hessian(params)
    np.testing.assert_allclose(derivatives(psi, beta, cp).hessian, hessian_sm, rtol=1e-8, atol=1e-10)
    model.cov_pen = model.fe_pen = None  # set by fit(); loglike needs them
    deviance, _, _ = profiled_deviance(np.sqrt(psi), cp)
    assert -deviance / 2 == pytest.approx(model.loglike(np.sqrt(psi)), rel=1e-10)


@pytest.mark.parametrize("psi", [[0.8, 0.3, 0.2], [2e-4, 1.5, 0.3], [3.0, 1.01e-4, 1e-2]])
def test_identities_agree_with_the_direct_rows(monkeypatch, psi):
    """The score and Hessian from S^-1 (dividing by psi) equal the direct computation."""
    data = simulate_grid(np.random.default_rng(12), n_mixes=40, n_targets=3, n_languages=6,
                         unequal_seeds=True)
    _, cp = grid_cross_products(data)
    psi, beta = np.array(psi), np.array([0.3, 0.9, 0.4])
    results = []
    for threshold in (0.0, np.inf):
        monkeypatch.setattr(mixed, "IDENTITY_PSI", threshold)
        results.append(derivatives(psi, beta, cp))
    np.testing.assert_allclose(results[0].hessian, results[1].hessian, rtol=1e-9)
    np.testing.assert_allclose(results[0].score_psi, results[1].score_psi, rtol=1e-9, atol=1e-9)


def test_sparse_and_dense_blocks_agree(monkeypatch):
    """Z_r'Z_d stored sparse or dense gives the same criterion and derivatives."""
    data = simulate_grid(np.random.default_rng(13), n_mixes=24, missing_cells=0.3)
    psi, beta = np.array([0.7, 0.4, 0.3]), np.array([0.2, 0.9, 0.4])
    results = []
    for share in (0.0, np.inf):   # always dense, always sparse
        monkeypatch.setattr(mixed, "DENSE_SHARE", share)
        _, cp = grid_cross_products(data)
        results.append((profiled_deviance(np.sqrt(psi), cp)[0], derivatives(psi, beta, cp)))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-12)
    np.testing.assert_allclose(results[0][1].hessian, results[1][1].hessian, rtol=1e-10)


def grid_with_mix_target(seed, **settings):
    """A grid with a mix-by-target random intercept: its cells are nested in the mixes."""
    rng = np.random.default_rng(seed)
    data = simulate_grid(rng, **settings)
    data["mix_target"] = data["mix"].astype(str) + ":" + data["target_task"].astype(str)
    cells = data["mix_target"].unique()
    data["improvement"] += data["mix_target"].map(dict(zip(cells, rng.normal(0, 0.5, len(cells)),
                                                           strict=True)))
    return data


MIX_TARGET = [*RANDOM, "mix_target"]


@pytest.mark.parametrize("dense_share", [0.0, np.inf])   # Z_r'Z_d always dense, always sparse
def test_cells_nested_in_mixes_are_found(monkeypatch, dense_share):
    monkeypatch.setattr(mixed, "DENSE_SHARE", dense_share)
    data = grid_with_mix_target(21, n_mixes=16)
    _, cp = grid_cross_products(data, random=MIX_TARGET)
    assert isinstance(cp.C_rd, np.ndarray) == (dense_share == 0.0)
    assert cp.diagonal_factor == 3                       # mix_target has most levels
    assert cp.blocks[2] == cp.nested                     # the mixes' rows
    _, plain = grid_cross_products(data)
    assert plain.diagonal_factor == 1                    # language-within-target cells...
    assert plain.nested == plain.blocks[0]               # ...are nested in the targets


@pytest.mark.parametrize("psi", [[0.8, 0.3, 0.5, 0.2], [0.8, 0.3, 1e-7, 0.2],
                                 [1.2, 1e-6, 0.4, 1e-5]])
def test_blocked_factor_of_S_agrees_with_the_dense_one(psi):
    """With the mixes' diagonal block of S factorised apart (FactorS), the criterion, score and
    Hessian are those of the dense Cholesky factor of S."""
    data = grid_with_mix_target(22, n_mixes=20, missing_cells=0.2, unequal_seeds=True)
    _, cp = grid_cross_products(data, random=MIX_TARGET)
    dense = dataclasses.replace(cp, nested=slice(0, 0),
                                C_rr=Blocked.from_dense(cp.C_rr.dense(), slice(0, 0)))
    psi, beta = np.array(psi), np.array([0.3, 0.9, 0.4])
    assert profiled_deviance(np.sqrt(psi), cp)[0] == pytest.approx(
        profiled_deviance(np.sqrt(psi), dense)[0], rel=1e-12)
    blocked, reference = derivatives(psi, beta, cp), derivatives(psi, beta, dense)
    # atol: entries near zero in a Hessian whose largest entries are ~30
    np.testing.assert_allclose(blocked.hessian, reference.hessian, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(blocked.score_psi, reference.score_psi, rtol=1e-9, atol=1e-9)


def test_blocked_factor_of_S_inverts_S():
    """FactorS on a matrix whose diagonal block sits between the other rows."""
    rng = np.random.default_rng(23)
    a, b = 30, 6
    E = rng.normal(size=(a, b))
    leading = np.block([[np.diag(rng.uniform(20, 30, a)), E], [E.T, 40 * np.eye(b) + 0.1]])
    order = np.r_[a:a + 5, 0:a, a + 5:a + b]            # 5 other rows, the block, the rest
    S = leading[np.ix_(order, order)]
    nested = slice(5, 5 + a)
    lam = rng.uniform(0.5, 2.0, len(S))    # S = I + diag(lam) T diag(lam)
    T = (S - np.eye(len(S))) / np.outer(lam, lam)
    factor = mixed.FactorS.of(Blocked.from_dense(T, nested), lam)
    assert factor is not None
    S_inv = np.linalg.inv(S)
    np.testing.assert_allclose(factor.inverse().dense(), S_inv, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(factor.inverse_diagonal, np.diag(S_inv), rtol=1e-10)
    assert factor.log_det() == pytest.approx(np.linalg.slogdet(S)[1], rel=1e-12)
    x = rng.normal(size=(a + b, 2))
    y = factor.half_solve(x)
    np.testing.assert_allclose(y.T @ y, x.T @ S_inv @ x, rtol=1e-10)
    np.testing.assert_allclose(factor.solve(x), S_inv @ x, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(factor.back_solve(y), S_inv @ x, rtol=1e-10, atol=1e-14)
    N = rng.normal(size=S.shape)
    N = N + N.T
    N[nested, nested] = np.diag(np.diag(N)[nested])
    assert factor.trace_inverse_times(Blocked.from_dense(N, nested), lam) == pytest.approx(
        np.trace(S_inv @ (lam[:, None] * N * lam[None, :])), rel=1e-10)
    negative = -(S + np.eye(len(S))) / np.outer(lam, lam)    # S = -S_0 is not positive definite
    assert mixed.FactorS.of(Blocked.from_dense(negative, nested), lam) is None


def test_mix_target_fit_agrees_with_statsmodels():
    data = grid_with_mix_target(24, n_mixes=12, n_targets=3, n_languages=5)
    fixed = ["diversity", "volume"]
    fast = fit_crossed(data, "improvement", fixed, MIX_TARGET)
    reference = fit_crossed_statsmodels(data, "improvement", fixed, MIX_TARGET)
    assert_close(fast.params, reference.params)
    assert_close(list(fast.variance_components.values()),
                 list(reference.variance_components.values()))
    assert_close(fast.llf, reference.llf, rtol=1e-7)


def test_with_response_equals_the_cross_products_of_the_new_response():
    """A parametric bootstrap's shortcut: same design, another y, the same cross-products."""
    arrays, cp = grid_cross_products(simulate_grid(np.random.default_rng(16), missing_cells=0.2))
    y = np.random.default_rng(17).normal(size=len(arrays.y))
    sizes = [len(levels) for levels in arrays.levels]
    expected = cross_products(arrays.X, y, arrays.codes, sizes)
    got = with_response(cp, arrays.X, y, arrays.codes)
    for name in ("XyXy", "C_dx", "C_rx", "c_d"):
        np.testing.assert_allclose(getattr(got, name), getattr(expected, name), rtol=1e-12)
    assert not np.allclose(got.C_rx, cp.C_rx), "the original cross-products are left as they were"
    assert got.C_rr is cp.C_rr, "the design's blocks are built once and shared"
    np.testing.assert_allclose(got.C_rr.dense(), expected.C_rr.dense())
    weights = np.random.default_rng(18).uniform(size=len(cp.c_d))
    np.testing.assert_allclose(got.rd_split.gram(weights).dense(),
                               expected.rd_split.gram(weights).dense(), rtol=1e-12)
    psi = np.array([0.5, 0.3, 0.8])
    assert profiled_deviance(np.sqrt(psi), got)[0] == pytest.approx(
        profiled_deviance(np.sqrt(psi), expected)[0], rel=1e-12)
    assert got.moment_system is cp.moment_system
    np.testing.assert_allclose(moment_start(got), moment_start(expected), rtol=1e-10)


@pytest.mark.parametrize("random", [["mix"], ["target_task", "mix"], ["target_language", "mix"]])
def test_fewer_factors_agree_with_statsmodels(random):
    """One factor (nothing left after eliminating it) and two, nested or crossed."""
    data = simulate_grid(np.random.default_rng(14), unequal_seeds=True)
    fast = fit_crossed(data, "improvement", ["diversity", "volume"], random)
    reference = fit_crossed_statsmodels(data, "improvement", ["diversity", "volume"], random)
    assert fast.method == "fast"
    assert_close(fast.params, reference.params)
    assert_close(list(fast.variance_components.values()),
                 list(reference.variance_components.values()))
    assert_close(fast.llf, reference.llf, rtol=1e-7)
    assert_close(fast.cov_params, reference.cov_params, rtol=1e-3)


def test_moment_start_is_the_optimum_on_a_balanced_grid_and_near_it_otherwise():
    """Henderson's moment estimates equal REML on balanced data (when positive)."""
    for grid, rtol in (({}, 1e-6), ({"missing_cells": 0.25}, 0.2)):
        _, cp = grid_cross_products(simulate_grid(np.random.default_rng(15), **grid))
        np.testing.assert_allclose(moment_start(cp), fit_theta(cp).theta, rtol=rtol)


def test_warm_start_reaches_the_same_optimum():
    data = simulate_grid(np.random.default_rng(5))
    fixed = ["diversity", "volume"]
    cold = fit_crossed(data, "improvement", fixed, RANDOM)
    warm = fit_crossed(data, "improvement", fixed, RANDOM,
                       start={"target_task": 3.0, "target_language": 0.1, "mix": 2.0})
    assert_close(warm.params, cold.params, rtol=1e-7)


def test_refit_tolerance_moves_the_estimates_by_a_tiny_fraction_of_their_standard_errors():
    """Bootstrap refits stop at REFIT_TOLERANCE: their fixed effects (the bootstrap's outputs) no
    more than 1e-3 standard errors away, with exact or average-information steps."""
    data = simulate_grid(np.random.default_rng(21), missing_cells=0.2)
    full = fit_crossed(data, "improvement", ["diversity", "volume"], RANDOM)
    arrays = model_arrays(data, "improvement", ["diversity", "volume"], RANDOM)
    rng = np.random.default_rng(22)
    start = np.sqrt(np.array(list(full.variance_components.values())) / full.residual_variance)
    for _ in range(5):   # responses near the data's, refitted from the data's theta
        y = arrays.y + rng.normal(scale=0.3 * np.sqrt(full.residual_variance), size=len(arrays.y))
        cp = cross_products(arrays.X, y, arrays.codes, [len(v) for v in arrays.levels])
        exact = fit_theta(cp, start=start)
        se = full.bse.to_numpy()
        for average in (False, True):   # as bootstrap refits step: with the average information
            loose = fit_theta(cp, start=start, tolerance=mixed.REFIT_TOLERANCE, average=average)
            assert exact.converged and loose.converged
            assert np.max(np.abs(loose.beta - exact.beta) / se) < 1e-3
            np.testing.assert_allclose(loose.theta, exact.theta, rtol=1e-2, atol=1e-3)


def dense_average_information(arrays, psi):
    """The average information of Gilmour, Thompson & Cullis (1995) from n x n matrices:
    -(f/2) u_j'P u_k / Q + (f/2) (y'P u_j)(y'P u_k) / Q^2 with u_j = Z_j Z_j'P y."""
    n, X, y = len(arrays.y), arrays.X, arrays.y
    Z = []
    for code, levels in zip(arrays.codes, arrays.levels, strict=True):
        Z_k = np.zeros((n, len(levels)))
        Z_k[np.arange(n), code] = 1.0
        Z.append(Z_k)
    V_inv = np.linalg.inv(np.eye(n) + sum(p_k * Z_k @ Z_k.T for p_k, Z_k in zip(psi, Z, strict=True)))
    P = V_inv - V_inv @ X @ np.linalg.solve(X.T @ V_inv @ X, X.T @ V_inv)
    f, Q = n - X.shape[1], y @ P @ y
    u = [Z_k @ (Z_k.T @ (P @ y)) for Z_k in Z]
    return np.array([[-0.5 * f * (u_j @ P @ u_k) / Q + 0.5 * f * (y @ P @ u_j) * (y @ P @ u_k) / Q ** 2
                      for u_k in u] for u_j in u])


@pytest.mark.parametrize(("random", "psi"), [
    (RANDOM, [0.8, 0.3, 0.2]),
    (RANDOM, [0.8, 0.0, 0.2]),                      # the eliminated factor at zero
    (MIX_TARGET, [0.8, 0.3, 0.5, 0.2]),             # blocked S (cells nested in mixes)
    (MIX_TARGET, [1.2, 0.3, 0.4, 0.0]),
])
def test_average_information_is_the_formula_and_the_score_is_exact(random, psi):
    data = grid_with_mix_target(23, n_mixes=12, n_languages=4, missing_cells=0.2,
                                unequal_seeds=True)
    arrays, cp = grid_cross_products(data, random=random)
    psi = np.array(psi)
    _, beta, _ = profiled_deviance(np.sqrt(psi), cp)    # the GLS beta, so w_k = Z_k'P y
    score, information, beta_slope = average_information(psi, beta, cp)
    np.testing.assert_allclose(score, derivatives(psi, beta, cp).score_psi, rtol=1e-9, atol=1e-9)
    reference = dense_average_information(arrays, psi)
    np.testing.assert_allclose(information, reference, rtol=1e-9, atol=1e-9 * np.abs(reference).max())
    assert np.linalg.eigvalsh(information).max() < 1e-9 * np.abs(reference).max(), "ascent"
    # d beta / d psi against central differences of the GLS beta
    for k in range(len(psi)):
        if psi[k] > 0:
            moved = [profiled_deviance(np.sqrt(psi + sign * 1e-5 * np.eye(len(psi))[k]), cp)[1]
                     for sign in (1, -1)]
            np.testing.assert_allclose(beta_slope[:, k], (moved[0] - moved[1]) / 2e-5,
                                       rtol=1e-5, atol=1e-8)


def test_average_information_is_refused_where_the_identities_divide_by_zero():
    _, cp = grid_cross_products(simulate_grid(np.random.default_rng(24), n_mixes=8))
    assert average_information(np.array([0.8, 0.3, 1e-6]), np.zeros(cp.p), cp) is None
    with pytest.raises(ValueError, match="REML"):
        fit_theta(cp, reml=False, average=True)


@pytest.mark.parametrize("name", ["missing cells", "zero mix variance", "mix target"])
def test_average_information_steps_reach_the_exact_optimum(name):
    """Refits with the average information in place of the Hessian end where exact Newton does
    (to full precision, from a start away from the optimum)."""
    if name == "mix target":
        data, random = grid_with_mix_target(25, n_mixes=24, missing_cells=0.2), MIX_TARGET
    else:
        data, random = simulate_grid(np.random.default_rng(26), **GRIDS[name]), RANDOM
    _, cp = grid_cross_products(data, random=random)
    exact = fit_theta(cp)
    start = 1.5 * exact.theta + 0.1
    average = fit_theta(cp, start=start, average=True)
    assert exact.converged and average.converged
    np.testing.assert_allclose(average.beta, exact.beta, rtol=1e-6, atol=1e-8)
    # theta itself only as far as the criterion pins it (flat near a variance close to zero);
    # a last step that was not evaluated leaves the likelihood unknown (NaN)
    llf = -profiled_deviance(average.theta, cp)[0] / 2
    assert llf == pytest.approx(exact.llf, rel=1e-10)
    assert np.isnan(average.llf) or average.llf == pytest.approx(llf, rel=1e-12)
    np.testing.assert_allclose(average.theta, exact.theta, rtol=0.05, atol=1e-3)


def test_entering_step_is_the_optimum_of_a_balanced_one_way_layout():
    """From psi = 0, the score and curvature of l(psi) = -a/2 log(1 + n psi) + a n B psi /
    (2 (1 + n psi)) give its maximiser (B - 1)/n in one step; Newton's step falls short."""
    a, n, B = 40.0, 12.0, np.array([1.3, 2.0, 5.0])
    score = a * n * (B - 1) / 2
    curvature = -a * n ** 2 * (2 * B - 1) / 2
    np.testing.assert_allclose(mixed.entering_psi(score, curvature, np.full(3, a)), (B - 1) / n,
                               rtol=1e-12)
    assert np.all(score / -curvature < (B - 1) / n)


def test_summary_frame_is_a_wald_table():
    data = simulate_grid(np.random.default_rng(1))
    fit = fit_crossed(data, "improvement", ["diversity", "volume"], RANDOM)
    frame = fit.summary_frame()
    assert list(frame.columns) == ["term", "estimate", "se", "z", "p_value"]
    assert frame["p_value"].between(0, 1).all()
    np.testing.assert_allclose(frame["z"], frame["estimate"] / frame["se"])


def test_likelihood_ratio_test_detects_a_real_effect_and_a_random_factor():
    data = simulate_grid(np.random.default_rng(2), diversity_effect=1.5)
    fixed = ["diversity", "volume"]
    lrt = likelihood_ratio_test(data, "improvement", fixed, RANDOM, "diversity")
    assert lrt["df"] == 1 and lrt["p_value"] < 0.01
    full = fit_crossed_statsmodels(data, "improvement", fixed, RANDOM, reml=False)
    reduced = fit_crossed_statsmodels(data, "improvement", ["volume"], RANDOM, reml=False)
    assert lrt["chi2"] == pytest.approx(2 * (full.llf - reduced.llf), rel=1e-4)
    lrt_language = likelihood_ratio_test(data, "improvement", fixed, RANDOM, "target_language")
    assert lrt_language["p_value"] < 0.01


def test_falls_back_to_statsmodels_when_the_fast_path_does_not_converge(monkeypatch):
    data = simulate_grid(np.random.default_rng(6), n_mixes=8, n_targets=3, n_languages=4)
    original = mixed.fit_theta
    monkeypatch.setattr(mixed, "fit_theta", lambda *args, **kwargs: dataclasses.replace(
        original(*args, **kwargs), converged=False))
    with pytest.warns(UserWarning, match="falling back to statsmodels"):
        fit = fit_crossed(data, "improvement", ["diversity", "volume"], RANDOM)
    assert fit.method == "statsmodels" and fit.converged


def test_a_large_problem_that_does_not_converge_raises_instead_of_falling_back(monkeypatch):
    data = simulate_grid(np.random.default_rng(6), n_mixes=8, n_targets=3, n_languages=4)
    original = mixed.fit_theta
    monkeypatch.setattr(mixed, "fit_theta", lambda *args, **kwargs: dataclasses.replace(
        original(*args, **kwargs), converged=False))
    monkeypatch.setattr(mixed, "STATSMODELS_MAX_SIZE", 1000)
    with pytest.raises(ConvergenceError, match=r"Newton from theta = \[.*not tried"):
        fit_crossed(data, "improvement", ["diversity", "volume"], RANDOM)


def test_no_random_factor_is_ordinary_least_squares():
    data = simulate_grid(np.random.default_rng(4))
    fit = fit_crossed(data, "improvement", ["diversity", "volume"], [])
    ols = sm.OLS(data["improvement"], sm.add_constant(data[["diversity", "volume"]])).fit()
    assert_close(fit.params, ols.params.to_numpy(), rtol=1e-10)
    assert fit.residual_variance == pytest.approx(ols.scale)
