"""The random-slope mixed model: formulae, the criterion's gradient, known effects recovered,
singular fits recognised, and the intercept-only model equal to the fast crossed solver's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from transferstats.analysis.formula import INTERCEPT, RandomTerm, parse_formula, random_terms
from transferstats.analysis.lmm import fit_formula, fit_lmm
from transferstats.analysis.mixed import fit_crossed
from transferstats.analysis.profiled import (
    criterion_and_gradient,
    design,
    evaluate,
    products,
    variance_slopes,
)

FIXTURES = Path(__file__).parent / "fixtures" / "lme4"


def orthogonal_noise(groups, columns, sd, rng):
    """Noise orthogonal, within each group, to [1, columns]: each group's least-squares intercept
    and slopes are then exactly the signal's, so the group effects' covariance is estimated
    on its boundary when the signal's is singular (a sample of noise would not be)."""
    noise = rng.normal(0, sd, len(groups))
    for level in np.unique(groups):
        rows = groups == level
        basis = np.column_stack([np.ones(rows.sum()), *(c[rows] for c in columns)])
        noise[rows] -= basis @ np.linalg.lstsq(basis, noise[rows], rcond=None)[0]
    return noise


def simulated(n_groups=40, per_group=30, slope_sd=0.5, corr=0.5, seed=0, scale=1.0):
    """y = 1 + 2 x + a_g + b_g x + e with (a_g, b_g) ~ N(0, [[1, c s], [c s, s^2]])."""
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, corr * slope_sd], [corr * slope_sd, slope_sd**2]])
    effects = rng.multivariate_normal([0, 0], cov, n_groups) * scale
    g = np.repeat(np.arange(n_groups), per_group)
    x = rng.normal(size=len(g))
    y = 1 + 2 * x + effects[g, 0] + effects[g, 1] * x + rng.normal(0, 0.5, len(g))
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{k:02d}" for k in g]}), effects


def test_formula_expands_products_and_uncorrelated_terms():
    parsed = parse_formula("y ~ a * b + c + (1 + a || g) + (1 | g:h) + (0 + b | g)")
    assert parsed.outcome == "y" and parsed.intercept
    assert parsed.fixed == ("a", "b", "a:b", "c")
    assert parsed.random == (RandomTerm("g", (INTERCEPT,)), RandomTerm("g", ("a",)),
                             RandomTerm("g:h", (INTERCEPT,)), RandomTerm("g", ("b",)))
    assert parse_formula("y ~ x + (x | g)").random == (RandomTerm("g", (INTERCEPT, "x")),)
    assert not parse_formula("y ~ 0 + x + (1 | g)").intercept


@pytest.mark.parametrize("bad", ["y ~ x", "y ~ x + (1 g)", "y x + (1 | g)", "y ~ x + (1 | g$)"])
def test_unreadable_formulae_are_refused_with_the_formula(bad):
    with pytest.raises(ValueError, match="formula"):
        parse_formula(bad)


def test_random_terms_of_fit_crossed_arguments():
    assert random_terms(["t", "m"], {"t": ["d", "v"]}) == [
        RandomTerm("t", (INTERCEPT, "d", "v")), RandomTerm("m")]
    assert random_terms(["t"], {"t": ["d"]}, correlated=False) == [
        RandomTerm("t"), RandomTerm("t", ("d",))]
    with pytest.raises(ValueError, match="not among the random factors"):
        random_terms(["t"], {"mix": ["d"]})


@pytest.mark.parametrize("reml", [True, False])
def test_gradient_is_the_derivative_of_the_criterion(reml):
    data = pd.read_csv(FIXTURES / "slope_grid.csv")
    parsed = parse_formula("y ~ div * vol + (1 + div + vol | target_task) + (1 | target_task:language)"
                           " + (1 | mix)")
    cp = products(design(data, parsed.outcome, parsed.fixed, parsed.random))
    assert cp.d is not None  # the largest intercept-only factor is eliminated
    theta = np.random.default_rng(1).uniform(0.2, 1.5, len(cp.layout))
    _, gradient = criterion_and_gradient(theta, cp, reml)
    h = 1e-5
    numeric = [(criterion_and_gradient(theta + h * e, cp, reml)[0]
                - criterion_and_gradient(theta - h * e, cp, reml)[0]) / (2 * h)
               for e in np.eye(len(theta))]
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("reml", [True, False])
def test_intercept_only_model_equals_the_fast_crossed_solver(reml):
    data = pd.read_csv(FIXTURES / "many_mix_grid.csv")
    random = ["target_task", "target_language", "mix"]
    fast = fit_crossed(data, "score", ["diversity", "volume"], random, reml=reml)
    general = fit_lmm(data, "score", ["diversity", "volume"], random_terms(random), reml=reml)
    assert general.llf == pytest.approx(fast.llf, abs=1e-6)
    np.testing.assert_allclose(general.params, fast.params, rtol=1e-6)
    variances = general.var_corr.set_index("group")["vcov"]
    for factor in random:
        assert variances[factor] == pytest.approx(fast.variance_components[factor], rel=1e-4)
    np.testing.assert_allclose(general.fitted, fast.fitted, atol=1e-5)


def test_known_slope_covariance_is_recovered():
    data, _ = simulated(n_groups=200, per_group=20, slope_sd=0.5, corr=0.5)
    fit = fit_formula("y ~ x + (1 + x | g)", data)
    cov = fit.covariance("g")
    assert cov.loc[INTERCEPT, INTERCEPT] == pytest.approx(1.0, rel=0.25)
    assert cov.loc["x", "x"] == pytest.approx(0.25, rel=0.25)
    assert cov.loc[INTERCEPT, "x"] / np.sqrt(cov.loc["x", "x"]) == pytest.approx(0.5, abs=0.15)
    assert fit.sigma == pytest.approx(0.5, rel=0.05)
    assert fit.params["x"] == pytest.approx(2.0, abs=4 * fit.bse["x"])


def test_blups_follow_the_groups_and_fitted_values_add_up():
    data, effects = simulated(n_groups=30, per_group=200, slope_sd=1.0, corr=0.0, seed=3)
    fit = fit_formula("y ~ x + (1 + x | g)", data)
    blups = fit.random_effects["(1 + x | g)"]
    assert np.corrcoef(blups["x"], effects[:, 1])[0, 1] > 0.99
    np.testing.assert_allclose(fit.fitted + fit.residuals, data["y"])


def test_fit_crossed_with_slopes_is_the_formula_fit():
    data = pd.read_csv(FIXTURES / "slope_grid.csv")
    by_args = fit_crossed(data, "y", ["div", "vol", "div:vol"], ["target_task", "mix"],
                          slopes={"target_task": ["div", "vol"]}, correlated=False)
    by_formula = fit_formula("y ~ div * vol + (1 + div + vol || target_task) + (1 | mix)", data)
    assert by_args.criterion == pytest.approx(by_formula.criterion, rel=1e-10)
    np.testing.assert_allclose(by_args.params, by_formula.params)


def test_a_slope_without_variation_is_singular_at_zero_variance():
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(12), 30)
    x = rng.normal(size=len(g))
    y = 1 + 2 * x + rng.normal(0, 1, 12)[g] + orthogonal_noise(g, [x], 0.5, rng)
    fit = fit_formula("y ~ x + (1 + x || g)", pd.DataFrame({"y": y, "x": x, "g": g}))
    assert fit.is_singular
    assert [(s.factor, s.column, s.kind) for s in fit.singular] == [("g", "x", "zero variance")]
    assert fit.covariance("g").loc["x", "x"] < 1e-8


def test_slopes_proportional_to_intercepts_are_singular_at_correlation_one():
    rng = np.random.default_rng(7)
    a = rng.normal(0, 1, 15)
    g = np.repeat(np.arange(15), 40)
    x = rng.normal(size=len(g))
    y = a[g] + 0.8 * a[g] * x + x + orthogonal_noise(g, [x], 0.2, rng)
    fit = fit_formula("y ~ x + (1 + x | g)", pd.DataFrame({"y": y, "x": x, "g": g}))
    assert fit.is_singular
    assert [(s.column, s.kind) for s in fit.singular] == [("x", "correlation at +-1")]
    corr = fit.var_corr.query("var2 == 'x'")["sdcor"].iloc[0]
    assert corr == pytest.approx(1.0, abs=1e-4)


def test_bad_input_names_the_column():
    data, _ = simulated(n_groups=5)
    with pytest.raises(ValueError, match="'z'"):
        fit_formula("y ~ z + (1 | g)", data)
    with pytest.raises(ValueError, match="must be numeric"):
        fit_formula("y ~ g + (1 | g)", data)
    with pytest.raises(ValueError, match="at least 2"):
        fit_formula("y ~ x + (1 | one)", data.assign(one="a"))


@pytest.fixture(scope="module")
def target_mix_grid():
    data = pd.read_csv(FIXTURES / "slope_grid.csv")
    parsed = parse_formula("y ~ div * vol + (1 + div + vol | target_task) + (1 | target_task:language)"
                           " + (1 | mix) + (1 | target_task:mix)")
    return design(data, parsed.outcome, parsed.fixed, parsed.random)


@pytest.mark.parametrize("reml", [True, False])
def test_eliminating_the_nesting_mixes_changes_nothing(target_mix_grid, reml):
    """target_task:mix is eliminated first and the mixes, in which it is nested, next: the
    criterion and its gradient equal those with the mixes among the dense terms."""
    nested, flat = products(target_mix_grid), products(target_mix_grid, nested=False)
    terms = target_mix_grid.terms
    assert terms[nested.d].factor == "target_task:mix" and terms[nested.h].factor == "mix"
    assert flat.h is None and flat.b == nested.b + 30
    theta = np.random.default_rng(2).uniform(0.2, 1.5, len(nested.layout))
    value, gradient = criterion_and_gradient(theta, nested, reml)
    flat_value, flat_gradient = criterion_and_gradient(theta, flat, reml)
    assert value == pytest.approx(flat_value, rel=1e-12)
    np.testing.assert_allclose(gradient, flat_gradient, rtol=1e-8, atol=1e-8)
    h = 1e-5
    numeric = [(criterion_and_gradient(theta + h * e, nested, reml)[0]
                - criterion_and_gradient(theta - h * e, nested, reml)[0]) / (2 * h)
               for e in np.eye(len(theta))]
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-4)


def test_variance_slopes_are_the_derivatives_in_the_variance_ratios(target_mix_grid):
    """At theta_k = 0 the derivative in theta_k is 0, the one in psi_k = theta_k^2 is not."""
    cp = products(target_mix_grid)
    theta = np.random.default_rng(3).uniform(0.2, 1.5, len(cp.layout))
    scalar = [k for k, (t, _, _) in enumerate(cp.layout) if cp.terms[t].size == 1]
    assert len(scalar) == 3  # target_task:language, mix, target_task:mix
    for k in scalar:
        at_zero = theta.copy()
        at_zero[k] = 0.0
        slopes = variance_slopes(evaluate(at_zero, cp), cp, True)
        assert criterion_and_gradient(at_zero, cp, True)[1][k] == 0.0
        h = 1e-7
        shifted = at_zero.copy()
        shifted[k] = np.sqrt(h)
        numeric = (criterion_and_gradient(shifted, cp, True)[0]
                   - criterion_and_gradient(at_zero, cp, True)[0]) / h
        assert slopes[k] == pytest.approx(numeric, rel=1e-3)
    assert np.isnan(variance_slopes(evaluate(theta, cp), cp, True)[0])  # the slope term's


def test_coef_adds_each_levels_random_effects_to_the_fixed_effects():
    data, effects = simulated(n_groups=30, per_group=200, slope_sd=1.0, corr=0.0, seed=3)
    fit = fit_formula("y ~ x + (1 + x || g)", data)
    coef = fit.coef("g")
    assert list(coef.columns) == ["Intercept", "x"] and len(coef) == 30
    np.testing.assert_allclose(coef["x"], fit.params["x"] + fit.random_effects["(0 + x | g)"]["x"])
    np.testing.assert_allclose(coef["x"], 2 + effects[:, 1], atol=0.1)  # each group's own slope
    with pytest.raises(KeyError, match="no random term on 'h'"):
        fit.coef("h")
