"""Satterthwaite and Kenward-Roger t tests agree with lmerTest and pbkrtest.

References: tests/fixtures/lme4/*_lme4.csv, written by benchmarks/lme4/make_slope_fixtures.R
(lmerTest's ``contest(fit, L, joint = FALSE, confint = TRUE)`` with each ``ddf``): sleepstudy and
a transfer grid with slopes by target, correlated and uncorrelated, balanced and (rows left out
at random) unbalanced, where Kenward-Roger's adjustment of the covariance is not zero.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from test_lmm_lme4 import CASES, GRID, fitted, lme4_reference
from transferstats.analysis.formula import parse_formula
from transferstats.analysis.inference import (
    contrast_matrix,
    satterthwaite,
    satterthwaite_setup,
    vcov_jacobian,
)
from transferstats.analysis.kenward_roger import kenward_roger, kenward_roger_affordable, vcov_adjusted
from transferstats.analysis.lmm import MixedFit, fit_formula
from transferstats.analysis.profiled import design, evaluate, products

STATISTICS = {"estimate": "estimate", "se": "se", "df": "df", "t": "t", "p": "p_value",
              "lower": "ci_low", "upper": "ci_high"}


def contrasts_of(fit: MixedFit) -> dict[str, dict[str, float]]:
    named = {term: {term: 1.0} for term in fit.params.index}
    if "div" in fit.params.index:
        named["div - vol"] = {"div": 1.0, "vol": -1.0}
    return named


def assert_agrees(table: pd.DataFrame, reference: dict[str, float], rtol: float) -> None:
    rows = table.set_index("contrast")
    for key, value in reference.items():
        contrast, statistic = key.split("|")
        ours = rows.loc[contrast, STATISTICS[statistic]]
        assert ours == pytest.approx(value, rel=rtol, abs=1e-12), key


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    return lme4_reference(request.param), fitted(request.param)[1]


def test_satterthwaite_agrees_with_lmertest(case):
    reference, fit = case
    assert_agrees(satterthwaite(fit, contrasts_of(fit)), reference["satterthwaite"], rtol=1e-4)


def test_kenward_roger_agrees_with_pbkrtest(case):
    reference, fit = case
    assert_agrees(kenward_roger(fit, contrasts_of(fit)), reference["kenward_roger"], rtol=1e-4)


def test_kenward_roger_adjusts_the_covariance_of_an_unbalanced_design():
    _, fit = fitted("slope_grid_unbalanced_correlated")
    adjusted = vcov_adjusted(fit)
    assert np.all(np.diag(adjusted.vcov) > np.diag(fit.vcov.to_numpy()))


def test_balanced_random_slope_design_has_subjects_minus_one_df():
    """With every subject observed on every day, the slope's F test is exact: df = 18 - 1."""
    _, fit = fitted("sleepstudy_correlated")
    assert kenward_roger(fit).set_index("contrast").loc["Days", "df"] == pytest.approx(17, rel=1e-10)
    assert satterthwaite(fit).set_index("contrast").loc["Days", "df"] == pytest.approx(17, rel=1e-6)


def test_vcov_jacobian_is_the_derivative_of_vcov():
    _, fit = fitted("slope_grid_correlated")
    cp, theta, sigma = fit.products, fit.theta.to_numpy(), fit.sigma
    jacobian = vcov_jacobian(fit, evaluate(theta, cp))

    def vcov_at(th, s):
        return s**2 * np.linalg.inv(evaluate(th, cp).XVX)

    h = 1e-5
    for k in range(len(theta)):
        step = np.zeros(len(theta))
        step[k] = h
        numeric = (vcov_at(theta + step, sigma) - vcov_at(theta - step, sigma)) / (2 * h)
        np.testing.assert_allclose(jacobian[:, :, k], numeric, rtol=1e-4,
                                   atol=1e-6 * np.abs(numeric).max())
    np.testing.assert_allclose(jacobian[:, :, -1], 2 / sigma * fit.vcov.to_numpy())


def test_satterthwaite_df_are_those_of_the_formula():
    _, fit = fitted("slope_grid_uncorrelated")
    setup = satterthwaite_setup(fit)
    L = np.array([0.0, 1.0, -1.0, 0.0])
    var = L @ fit.vcov.to_numpy() @ L
    g = np.einsum("i,ijk,j->k", L, setup.jacobian, L)
    assert setup.df(L[None])[0] == pytest.approx(2 * var**2 / (g @ setup.varpar_cov @ g))


def test_contrasts_are_checked_against_the_model():
    _, fit = fitted("sleepstudy_correlated")
    assert contrast_matrix(fit, {"d": [0, 1]}).loc["d", "Days"] == 1
    with pytest.raises(ValueError, match="not fixed effects"):
        contrast_matrix(fit, {"x": {"volume": 1}})
    with pytest.raises(ValueError, match="3 weights for 2"):
        contrast_matrix(fit, {"x": [1, 0, 0]})


def test_kenward_roger_refuses_ml_fits_and_large_models():
    data = pd.read_csv("tests/fixtures/lme4/sleepstudy.csv")
    ml = fit_formula("Reaction ~ Days + (Days | Subject)", data, reml=False)
    assert not kenward_roger_affordable(ml)[0]
    with pytest.raises(ValueError, match="REML"):
        kenward_roger(ml)
    _, fit = fitted("sleepstudy_correlated")
    affordable, reason = kenward_roger_affordable(fit, max_random_effects=30)
    assert not affordable and "36 x 36" in reason


def test_inference_is_the_same_with_the_nesting_mixes_eliminated():
    data = pd.read_csv("tests/fixtures/lme4/slope_grid.csv")
    formula = ("y ~ div * vol + (1 + div + vol | target_task) + (1 | target_task:language)"
               " + (1 | mix) + (1 | target_task:mix)")
    fit = fit_formula(formula, data)
    assert fit.products.h is not None
    parsed = parse_formula(formula)
    flat = dataclasses.replace(fit, products=products(
        design(data, parsed.outcome, parsed.fixed, parsed.random), nested=False))
    contrasts = {"div - vol": {"div": 1.0, "vol": -1.0}}
    for method in (satterthwaite, kenward_roger):
        ours, reference = method(fit, contrasts), method(flat, contrasts)
        np.testing.assert_allclose(ours[["se", "df", "ci_low"]], reference[["se", "df", "ci_low"]],
                                   rtol=1e-6)


def test_a_singular_fit_with_a_saddle_in_the_variance_parameters_warns():
    """Grid 8 of the varied fixtures: the slope of div at correlation +-1 and target_task:mix at
    zero; the deviance's Hessian has a negative eigenvalue there, as lmerTest warns."""
    grids = pd.read_csv("tests/fixtures/lme4/varied_grids.csv")
    fit = fit_formula(GRID.format(bar="|") + " + (1 | target_task:mix)", grids[grids["grid"] == 8])
    assert fit.is_singular
    with pytest.warns(UserWarning, match="negative eigenvalues"):
        satterthwaite(fit, {"div - vol": {"div": 1, "vol": -1}})
