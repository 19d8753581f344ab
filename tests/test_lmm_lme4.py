"""Random-slope fits agree with lme4 reference fits committed as fixtures.

The data and lme4's estimates are in tests/fixtures/lme4/ (written by
benchmarks/lme4/make_slope_fixtures.R, which needs R with lme4; these tests do not): lme4's
``sleepstudy`` with correlated and uncorrelated slopes of Days by subject, and a simulated
transfer grid (5 targets x 8 languages x 30 mixes) with slopes of diversity and volume by target,
and both with rows left out at random (unbalanced).
The references were fitted with BOBYQA run to rhoend = 1e-12, so they are converged far beyond
the tolerances here.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from transferstats.analysis.formula import random_terms
from transferstats.analysis.lmm import fit_formula, fit_lmm
from transferstats.analysis.profiled import criterion_and_gradient, design, products

FIXTURES = Path(__file__).parent / "fixtures" / "lme4"
GRID = "y ~ div * vol + (1 + div + vol {bar} target_task) + (1 | target_task:language) + (1 | mix)"
CASES = {  # fixture: (data file, formula)
    "sleepstudy_correlated": ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
    "sleepstudy_uncorrelated": ("sleepstudy", "Reaction ~ Days + (Days || Subject)"),
    "slope_grid_correlated": ("slope_grid", GRID.format(bar="|")),
    "slope_grid_uncorrelated": ("slope_grid", GRID.format(bar="||")),
    "sleepstudy_unbalanced_correlated": ("sleepstudy_unbalanced", "Reaction ~ Days + (Days | Subject)"),
    "slope_grid_unbalanced_correlated": ("slope_grid_unbalanced", GRID.format(bar="|")),
}


def lme4_reference(name: str) -> dict[str, dict[str, float]]:
    table = pd.read_csv(FIXTURES / f"{name}_lme4.csv", dtype=str, keep_default_na=False)
    reference: dict[str, dict[str, float]] = {}
    for kind, rows in table[table["kind"] != "version"].groupby("kind"):
        # lme4 names the crossing of an uncorrelated model's factors "a.b" in VarCorr.
        names = rows["name"].str.replace("target_task.language", "target_task:language")
        reference[str(kind)] = {n: float(v) for n, v in zip(names, rows["value"], strict=True)}
    return reference


def fitted(name: str):
    data_file, formula = CASES[name]
    data = pd.read_csv(FIXTURES / f"{data_file}.csv")
    return data, fit_formula(formula, data)


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    return request.param, lme4_reference(request.param), fitted(request.param)[1]


def test_criterion_and_fixed_effects_agree_with_lme4(case):
    _, reference, fit = case
    assert fit.converged and not fit.is_singular
    assert bool(reference["singular"]["isSingular"]) is fit.is_singular
    assert fit.criterion == pytest.approx(reference["criterion"]["REML"], rel=1e-9)
    terms = list(reference["fixef"])
    np.testing.assert_allclose(fit.params[terms], list(reference["fixef"].values()), rtol=1e-6)


def test_variance_components_agree_with_lme4(case):
    _, reference, fit = case
    ours = {f"{g}|{v1}|{v2}": (vc, sc) for g, v1, v2, vc, sc in fit.var_corr.itertuples(index=False)}
    assert set(ours) == set(reference["varcorr"])
    for key, value in reference["varcorr"].items():
        assert ours[key][0] == pytest.approx(value, rel=1e-4), key
        assert ours[key][1] == pytest.approx(reference["sdcor"][key], rel=1e-4), key


def test_vcov_agrees_with_lme4(case):
    _, reference, fit = case
    for key, value in reference["vcov"].items():
        row, column = key.split("|")
        assert fit.vcov.loc[row, column] == pytest.approx(value, rel=1e-4, abs=1e-8), key
    np.testing.assert_allclose(fit.bse, np.sqrt(np.diag(fit.vcov)))


def test_a_variance_started_at_zero_leaves_the_boundary():
    """At theta = 0 the gradient in theta is 0 (the variance is its square): started there, the
    mix variance must still reach lme4's optimum, not stay at the stationary point."""
    reference = lme4_reference("slope_grid_correlated")
    data = pd.read_csv(FIXTURES / "slope_grid.csv")
    start = [1, 0, 0, 1, 0, 1, 1, 0]  # target_task's T, target_task:language, mix
    fit = fit_formula(GRID.format(bar="|"), data, start=start)
    assert list(fit.theta.index)[-1] == "mix.Intercept"
    assert fit.criterion == pytest.approx(reference["criterion"]["REML"], rel=1e-9)


@pytest.mark.slow  # 48 fits, about 20 s
def test_varied_grids_reach_lme4s_optimum_and_singularity():
    """Twelve grids (3-9 targets, 20-80 mixes, slope SDs 0 to 3, correlations 0 to -0.95, mix
    SDs 0 to 1), correlated and uncorrelated, without and with (1 | target_task:mix) (nested in
    the mixes): the same REML optimum as lme4 in all 48 fits, and lmerTest's Satterthwaite SE
    of div - vol; the same isSingular where the variances are identified, and the same df
    where the fit is not singular (at a singular optimum the df depend on where on the boundary
    each optimiser stopped). With 3 targets each mix is evaluated on one target, so
    target_task:mix is mix, and only the sum of their variances is estimated
    (benchmarks/lme4/make_varied_fixtures.R)."""
    from transferstats.analysis.inference import satterthwaite

    grids = pd.read_csv(FIXTURES / "varied_grids.csv")
    reference = pd.read_csv(FIXTURES / "varied_grids_lme4.csv")
    for grid, bar, target_mix, criterion, singular, div, vol, se, df in reference.itertuples(
            index=False):
        formula = GRID.format(bar=bar) + (" + (1 | target_task:mix)" if target_mix else "")
        data = grids[grids["grid"] == grid]
        fit = fit_formula(formula, data)
        label = f"grid {grid}, {formula}"
        assert fit.criterion == pytest.approx(criterion, rel=1e-9), label
        confounded = target_mix and data.groupby("mix")["target_task"].nunique().max() == 1
        if not confounded:
            assert fit.is_singular is bool(singular), label
        assert fit.params[["div", "vol"]].tolist() == pytest.approx([div, vol], rel=1e-4), label
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row = satterthwaite(fit, {"div - vol": {"div": 1, "vol": -1}}).iloc[0]
        assert row["se"] == pytest.approx(se, rel=1e-4), label
        if not singular:
            assert row["df"] == pytest.approx(df, rel=1e-4), label


def test_a_long_optimiser_step_backs_off_and_reaches_lme4s_optimum():
    """On this grid (benchmarks/lme4/make_long_step_fixture.py) the first L-BFGS-B step reaches
    thetas near 1e7, where X'V^-1X is not positive definite in floating point: that step must be
    taken back, not fail the fit, and the fit must still reach lme4's optimum."""
    data = pd.read_csv(FIXTURES / "long_step_grid.csv.gz")
    reference = pd.read_csv(FIXTURES / "long_step_grid_lme4.csv").set_index("name")["value"]
    random = ["target_task", "target_language", "mix", "mix_target"]
    fixed = [c for c in data.columns if c not in ("score", *random)]
    terms = random_terms(random, {"target_task": ("diversity", "volume")})
    far_out = np.array([1e7, -8e3, 1e4, 0.0, 8.5e4, 0.0, 0.0, 0.0, 0.0])
    with pytest.raises(np.linalg.LinAlgError):
        criterion_and_gradient(far_out, products(design(data, "score", fixed, terms, True)), True)
    fit = fit_lmm(data, "score", fixed, terms)
    assert fit.converged
    assert fit.criterion == pytest.approx(reference["REML criterion"], rel=1e-9, abs=1e-6)
    beta = reference.drop(["REML criterion", "lme4 version"]).rename({"(Intercept)": "Intercept"})
    np.testing.assert_allclose(fit.params[beta.index], beta.astype(float), rtol=1e-4, atol=1e-5)
