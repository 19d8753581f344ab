"""Design diagnostics: resamples that lose a factor's variation, and variance inflation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from transferstats.analysis.bootstrap import resample_rows, resampling_design
from transferstats.analysis.diagnostics import predict_resample_failures, variance_inflation

LABELS = {"diversity": lambda value: f"{2 ** value:.0f} languages"}


def fixed_budget_rows(n_small: int = 18, languages: int = 6, lone_replicates: int = 3,
                      minority: int = 1) -> pd.DataFrame:
    """A fixed-budget language grid: ``n_small`` mixes of 14 languages (one run each) and
    ``minority`` mixes of 52 (``lone_replicates`` seeds each), every mix evaluated on the same
    languages of two targets."""
    rows = []
    for m in range(n_small + minority):
        size, seeds = (52, lone_replicates) if m >= n_small else (14, 1)
        for seed in range(seeds):
            for target in ("xcopa", "belebele"):
                for lang in range(languages):
                    rows.append({"mix": f"mix{m:02d}", "language": f"l{lang}", "seed": seed,
                                 "target_task": target, "target_language": f"{target}:l{lang}",
                                 "diversity": np.log2(size), "score": 50.0 + m + lang})
    return pd.DataFrame(rows)


def test_the_lone_top_mix_is_named_with_its_exact_leave_out_share():
    data = fixed_budget_rows()
    prediction = predict_resample_failures(data, ("language", "mix"), ("diversity",),
                                           value_labels=LABELS, n_monte_carlo=0)
    n = 19
    assert prediction.failure_share("diversity") == pytest.approx((18 / n) ** n + (1 / n) ** n)
    assert prediction.cause("diversity") == (
        "the only mix with 52 languages ('mix18') is left out of 36% of resamples, which then "
        "have no variation in diversity")
    assert prediction.warnings() == [prediction.cause("diversity")]
    assert prediction.table.loc[0, "method"] == "exact"


def test_prediction_matches_the_crossed_bootstrap_resamples():
    """The share predicted equals the share of the bootstrap's own resamples (seeds drawn within
    cells too) whose diversity is constant, within Monte Carlo error."""
    data = fixed_budget_rows(n_small=9, languages=4)
    design = resampling_design(data, "score", ["diversity"], ["mix", "target_language"],
                               ["language", "mix"], "seed", ["mix", "target_task"],
                               np.eye(2), np.ones(2))
    rng = np.random.default_rng(5)
    draws = 3000
    constant = sum(np.ptp(design.X[resample_rows(design, rng)[0], 1]) == 0 for _ in range(draws))
    prediction = predict_resample_failures(data, ("language", "mix"), ("diversity",),
                                           n_monte_carlo=draws, seed=1)
    exact = prediction.failure_share("diversity")
    assert exact == pytest.approx(0.9 ** 10 + 0.1 ** 10)
    error = 4 * np.sqrt(exact * (1 - exact) / draws)
    assert abs(constant / draws - exact) < error
    assert abs(prediction.any_failure_share - exact) < error


def test_several_levels_carrying_the_variation_are_listed():
    data = fixed_budget_rows(n_small=12, minority=3, lone_replicates=1)
    prediction = predict_resample_failures(data, ("language", "mix"), ("diversity",),
                                           value_labels=LABELS, n_monte_carlo=0)
    assert prediction.failure_share("diversity") == pytest.approx(0.8 ** 15 + 0.2 ** 15)
    assert prediction.cause("diversity") == (
        "the 3 mixes with diversity other than 14 languages ('mix12', 'mix13', 'mix14') are all "
        f"left out of {100 * 0.8 ** 15:.2g}% of resamples, which then have no variation in "
        "diversity")
    assert prediction.warnings() == [], "3.5% is under the 5% limit"


def test_a_factor_that_does_not_vary_and_one_that_varies_within_units():
    data = fixed_budget_rows(n_small=6, languages=5).assign(volume=np.log2(62_000))
    # Varies between the languages of a mix: a property of no single unit.
    data["target_in_mix"] = np.where(data["language"].isin(["l0", "l1"]), 1 / 2 ** data["diversity"],
                                     0.0)
    prediction = predict_resample_failures(data, ("language", "mix"),
                                           ("volume", "target_in_mix"), n_monte_carlo=4000)
    assert prediction.failure_share("volume") == 1.0
    assert "does not vary in the data" in prediction.cause("volume")
    row = prediction.table.set_index("factor").loc["target_in_mix"]
    assert row["method"] == "monte carlo"
    # Constant when no mix of 52 is drawn and neither l0 nor l1 is, or none of l2..l4 is...
    # the exact value: both events are independent across units.
    p_lone_out = (6 / 7) ** 7
    p_no_in_language = (3 / 5) ** 5
    p_all_in_language = (2 / 5) ** 5
    # Constant iff every kept row has one value: no in-mix language drawn (all 0), or only
    # in-mix languages drawn and only mixes of one diversity drawn.
    p_one_diversity = p_lone_out + (1 / 7) ** 7
    expected = p_no_in_language + p_all_in_language * p_one_diversity
    assert abs(row["failure_share"] - expected) < 4 * np.sqrt(expected * (1 - expected) / 4000)
    assert prediction.any_failure_share == 1.0, "volume never varies: never full rank"


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="no column 'volume'"):
        predict_resample_failures(fixed_budget_rows(), ("language", "mix"), ("volume",))


def test_variance_inflation_agrees_with_an_ols_of_each_term_on_the_others():
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    data = pd.DataFrame({"diversity": x, "share": -0.95 * x + 0.3 * rng.normal(size=400),
                         "volume": rng.normal(size=400)})
    result = variance_inflation(data, ["diversity", "volume", "share", "diversity:volume"])
    table = result.table.set_index("term")
    data["diversity:volume"] = data["diversity"] * data["volume"]
    for term in table.index:
        others = sm.add_constant(data[[t for t in table.index if t != term]])
        r_squared = sm.OLS(data[term], others).fit().rsquared
        assert table.loc[term, "vif"] == pytest.approx(1 / (1 - r_squared), rel=1e-9)
    assert table.loc["share", "closest"] == "diversity" and table.loc["share", "correlation"] < -0.9
    assert result.warning is not None
    assert "diversity (" in result.warning and "share (" in result.warning
    assert "volume (" not in result.warning


def test_which_form_of_the_in_mix_covariate_is_collinear_depends_on_the_design():
    """Mixes of 1, 2, 4, 8 languages at one budget, the evaluated languages spread evenly over
    them: the share (1/n of the budget per language held) averages 1/8 at every size, so it is
    uncorrelated with diversity (VIF 1), while bigger mixes hold more evaluated languages, so the
    0/1 form rises with diversity."""
    rows = []
    for size in (1, 2, 4, 8):
        for draw in range(4):
            members = {f"l{(draw + j) % 8}" for j in range(size)}
            for lang in (f"l{i}" for i in range(8)):
                inside = lang in members
                rows.append({"diversity": np.log2(size),
                             "target_in_mix": 1 / size if inside else 0.0,
                             "target_language_in_mix": float(inside)})
    data = pd.DataFrame(rows)
    share = variance_inflation(data, ["diversity", "target_in_mix"], limit=1.5)
    indicator = variance_inflation(data, ["diversity", "target_language_in_mix"], limit=1.5)
    assert share.table["vif"].to_numpy() == pytest.approx([1.0, 1.0])
    assert share.warning is None
    assert indicator.table["vif"].min() > 1.5
    assert indicator.warning is not None and "target_language_in_mix (" in indicator.warning
    with pytest.raises(ValueError, match="no column 'size'"):
        variance_inflation(data, ["diversity", "diversity:size"])


def test_an_even_split_is_described_by_its_spread_not_by_levels():
    data = pd.DataFrame({"mix": list("abcd") * 3, "language": np.repeat(["x", "y", "z"], 4),
                         "diversity": [0.0, 0.0, 1.0, 1.0] * 3})
    prediction = predict_resample_failures(data, ("language", "mix"), ("diversity",),
                                           n_monte_carlo=0)
    assert prediction.failure_share("diversity") == pytest.approx(2 * 0.5 ** 4)
    assert prediction.cause("diversity") == (
        "diversity takes 2 values over the mixes; a resample holds only one of them in 12% of "
        "resamples")
