"""The fast crossed mixed model agrees with lme4 reference fits committed as fixtures.

As statsmodels tests its MixedLM against lme4, the data and lme4's estimates live in
tests/fixtures/lme4/ (written by benchmarks/lme4/make_fixtures.R, which needs R with lme4; these
tests do not): a subsample of lme4's InstEval data (students x instructors x departments), a
small grid of many mixes, fitted by REML and, the grid, by ML, and the shipped language-mix
example (examples/language_mix.csv) with the ``target_in_mix`` covariate, derived in R.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from transferstats.analysis.mixed import cross_products, derivatives, fit_crossed, model_arrays

FIXTURES = Path(__file__).parent / "fixtures" / "lme4"
GRID_MODEL = ("score", ["diversity", "volume"], ["target_task", "target_language", "mix"])
CASES = {  # fixture: (data file, outcome, fixed, random, reml)
    "insteval_subset": ("insteval_subset", "y", ["service"], ["s", "d", "dept"], True),
    "many_mix_grid": ("many_mix_grid", *GRID_MODEL, True),
    "many_mix_grid_ml": ("many_mix_grid", *GRID_MODEL, False),
    "language_mix": ("language_mix", "score",
                     ["diversity", "volume", "diversity:volume", "target_in_mix"],
                     ["target_task", "target_language", "mix"], True),
}


def lme4_reference(name: str) -> dict[str, dict[str, float]]:
    table = pd.read_csv(FIXTURES / f"{name}_lme4.csv", dtype=str)
    reference: dict[str, dict[str, float]] = {}
    for kind, rows in table[table["kind"] != "version"].groupby("kind"):
        reference[str(kind)] = {n: float(v) for n, v in zip(rows["name"], rows["value"], strict=True)}
    return reference


def fitted(name: str):
    data_file, outcome, fixed, random, reml = CASES[name]
    data = pd.read_csv(FIXTURES / f"{data_file}.csv", dtype={factor: str for factor in random})
    return data, fit_crossed(data, outcome, fixed, random, reml=reml)


@pytest.mark.parametrize("name", list(CASES))
def test_estimates_agree_with_lme4(name):
    reference = lme4_reference(name)
    _, fit = fitted(name)
    assert fit.method == "fast" and fit.converged
    terms = list(reference["fixef"])
    np.testing.assert_allclose(fit.params[terms], list(reference["fixef"].values()), rtol=1e-4)
    variances = {**fit.variance_components, "Residual": fit.residual_variance}
    np.testing.assert_allclose([variances[k] for k in reference["variance"]],
                               list(reference["variance"].values()), rtol=1e-3)
    # Both report the (RE)ML log-likelihood on the same scale: -1/2 x lme4's REML criterion or
    # deviance. At the same optimum they agree to the optimisers' precision.
    assert fit.llf == pytest.approx(reference["loglik"]["logLik"], abs=1e-6)
    assert -2 * fit.llf == pytest.approx(next(iter(reference["criterion"].values())), abs=2e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_standard_errors_agree_with_lme4(name):
    """lme4's standard errors are sigma^2 (X'V^-1 X)^-1 at the estimates, conditional on them.

    ``CrossedFit.bse`` follows statsmodels instead (the inverse of the whole observed information
    in beta and the variance ratios, whose beta-psi block is not zero), which is wider by up to
    a few percent on these data; the conditional ones, from the same solver, are lme4's.
    """
    data_file, outcome, fixed, random, reml = CASES[name]
    reference = lme4_reference(name)
    data, fit = fitted(name)
    arrays = model_arrays(data, outcome, fixed, random)
    cp = cross_products(arrays.X, arrays.y, arrays.codes, [len(lv) for lv in arrays.levels])
    psi = np.array([fit.variance_components[f] for f in random]) / fit.residual_variance
    p = len(fit.params)
    hessian = derivatives(psi, fit.params.to_numpy(), cp, reml).hessian[:p, :p]
    conditional = pd.Series(np.sqrt(np.diag(np.linalg.inv(-hessian))), index=fit.params.index)
    terms = list(reference["se"])
    np.testing.assert_allclose(conditional[terms], list(reference["se"].values()), rtol=1e-3)
    np.testing.assert_allclose(fit.bse[terms], list(reference["se"].values()), rtol=0.05)


@pytest.mark.slow  # a whole analysis of the example (its likelihood-ratio tests and bootstrap)
def test_the_analysis_of_the_language_mix_example_agrees_with_lme4():
    """End to end: transferstats derives the model from the shipped language-mix table (no
    baseline, so the outcome is the score; language codes; target_in_mix per evaluated language)
    and its estimates equal lme4's on the same model, derived independently in R, to 0.01
    points."""
    from transferstats.analysis.pipeline import analyze_loaded
    from transferstats.analysis.spec import AnalysisSpec
    from transferstats.loading import load_results

    example = Path(__file__).parents[1] / "examples" / "language_mix.csv"
    spec = AnalysisSpec(identity="off", covariates=("target_in_mix",), resamples=50)
    result = analyze_loaded(load_results(example), spec, n_jobs=1, progress=False,
                            companions=False)
    assert result.estimates["outcome"] == "score"
    assert result.estimates["source_kind"] == "language"
    reference = lme4_reference("language_mix")["fixef"]
    estimates = result.effects.set_index("term")["estimate"]
    for term in ("diversity", "volume", "diversity:volume", "target_in_mix"):
        assert estimates[term] == pytest.approx(reference[term], abs=0.01)
