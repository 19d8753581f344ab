"""The coverage study's designs with target-specific slopes (benchmarks/coverage_study.py
--slopes): its truth and slope sizes, the committed summary, the row the report quotes, and
(slow) the worst design's coverage on fewer grids."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from transferstats.analysis.coverage import (
    SLOPES_COLUMNS,
    coverage_sentence,
    slopes_coverage,
    slopes_coverage_table,
)
from transferstats.simulate import flat_table, simulate_scores, simulated_mixes

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "coverage_study.py"


def _study():
    spec = importlib.util.spec_from_file_location("coverage_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


study = _study()


def test_the_truth_is_the_population_average_not_the_sampled_targets():
    name = "factorial 36 mixes, 5 targets, slope SD 5 SE, r -0.6"
    settings, term, truth = study.slope_settings(name, 3)
    realised = settings.realised()
    assert term == "diversity - volume" and truth == study.DIVERSITY - study.VOLUME
    assert not settings.centre_target_slopes
    sampled = (realised["target_average_slopes"]["diversity"]
               - realised["target_average_slopes"]["volume"])
    assert abs(sampled - truth) > 1e-6  # the five drawn targets average to something else
    budget, term, truth = study.slope_settings(
        "fixed budget, lone top mix, 5 targets, slope SD 1 SE, r +0.0", 0)
    assert term == "diversity" and truth == budget.diversity_effect
    assert budget.target_volume_sd == 0 and budget.target_diversity_sd > 0


def test_the_single_target_slope_se_matches_the_spread_of_one_targets_fitted_slopes():
    """Fit one target's slopes by least squares (language effects as factors) on 100 simulated
    grids; their variance across grids, over the variance the study assumes, times 99 is
    chi-square on 99 df if the SE is right: the test accepts its central 99.9% (a ratio of
    about 0.60 to 1.53, so a per-mix variance half or twice the assumed one fails)."""
    settings = study.base_settings("factorial 36 mixes", 1)
    se = study.single_target_slope_se(settings, {})
    mixes = dict(simulated_mixes(settings))
    estimates = []
    for seed in range(100):
        grid = flat_table(*simulate_scores(replace(settings, random_state=seed)))
        grid = grid[grid["language"] != "en"].copy()
        grid["d"] = np.log2(grid["mix"].map(lambda mix: len(mixes[mix])))
        grid["v"] = np.log2(grid["mix"].map(lambda mix: sum(mixes[mix].values())))
        fit = smf.ols("value ~ d + v + C(language)", grid).fit()
        estimates.append(fit.params[["d", "v"]].to_numpy())
    ratio = np.var(estimates, axis=0, ddof=1) / np.square([se["diversity"], se["volume"]])
    low, high = stats.chi2.ppf([0.0005, 0.9995], len(estimates) - 1) / (len(estimates) - 1)
    assert ((low < ratio) & (ratio < high)).all(), ratio


def _table() -> pd.DataFrame:
    rows = [("f5 sd0", 5, 36, 0.0, 0.0, "diversity - volume", 200, 192),
            ("f5 sd5", 5, 36, 5.0, 0.0, "diversity - volume", 200, 186),
            ("f9 sd5", 9, 36, 5.0, 0.0, "diversity - volume", 200, 188),
            ("m5 sd5", 5, 120, 5.0, 0.0, "diversity - volume", 200, 191),
            ("b5 sd5", 5, 19, 5.0, 0.0, "diversity", 200, 189)]
    frame = pd.DataFrame([row[:6] + ("Wald t, Satterthwaite df",) + row[6:] for row in rows],
                         columns=SLOPES_COLUMNS[:9])
    return frame.assign(coverage=frame["covered"] / frame["grids"], mc_low=0.9, mc_high=0.97,
                        mean_width=1.0, median_df=5.0)


@pytest.mark.parametrize("targets, mixes, term, expected", [
    (5, 36, "diversity - volume", "f5 sd5"), (4, 30, "diversity - volume", "f5 sd5"),
    (12, 40, "diversity - volume", "f9 sd5"), (5, 1100, "diversity - volume", "m5 sd5"),
    (5, 19, "diversity", "b5 sd5"), (9, 200, "diversity", "b5 sd5")])
def test_the_nearest_design_and_its_lowest_coverage(targets, mixes, term, expected):
    row = slopes_coverage(targets, mixes, term, table=_table())
    assert row is not None and row["design"] == expected and row["bootstrap"] is None


def test_no_row_for_a_term_the_study_did_not_check():
    table = _table()
    assert slopes_coverage(5, 36, "diversity", table=table[table["term"] != "diversity"]) is None
    assert slopes_coverage(5, 36, "volume", table=table) is None


def test_the_slopes_sentence_quotes_the_row():
    text = coverage_sentence(slopes_coverage(5, 36, table=_table()))
    assert "Wald t interval (Satterthwaite df) of diversity \N{MINUS SIGN} volume" in text
    assert "186 of 200 simulated grids of 36 mixes and 5 targets" in text and "0.930" in text
    assert "of diversity held" in coverage_sentence(slopes_coverage(5, 19, "diversity", _table()))


def test_the_committed_slopes_summary():
    table = slopes_coverage_table()
    assert set(table["term"]) == {"diversity - volume", "diversity"}
    assert set(table["targets"]) >= {5, 9}
    assert (table["covered"] <= table["grids"]).all() and (table["grids"] >= 30).all()
    assert ((table["mc_low"] <= table["coverage"]) & (table["coverage"] <= table["mc_high"])).all()
    assert slopes_coverage(5, 36) is not None and slopes_coverage(5, 19, "diversity") is not None


# --- the worst slopes design, on fewer grids (slow) -----------------------------------------

WORST_GRIDS = 200


def _worst_grid(name: str, index: int) -> dict:
    # A function of this module: the script loaded from its path cannot be pickled by name.
    return study.analyse_slopes_grid(name, index)


@pytest.mark.slow
def test_coverage_of_the_worst_slopes_design(capsys):
    """The design whose coverage in the committed study is lowest (the furthest below 0.95: too
    wide an interval is conservative, too narrow a one misleads), on its first WORST_GRIDS grids
    (the study's own seeds), analysed by analyze with every default. The bound
    is the issue's band, 0.93, less three binomial standard errors there (0.876 at 200 grids): a
    design covering 0.93 or more passes on all but 0.4% of seeds, one covering 0.80 or less fails
    on all but 0.2% (binomial); and coverage of every grid fails too (an interval too wide to say
    anything)."""
    from concurrent.futures import ProcessPoolExecutor

    table = slopes_coverage_table()
    worst = table.loc[table["coverage"].idxmin(), "design"]
    with ProcessPoolExecutor(2) as pool:
        rows = list(pool.map(_worst_grid, [worst] * WORST_GRIDS,
                             range(WORST_GRIDS)))
    covered = sum(r["ci_low"] <= r["truth"] <= r["ci_high"] for r in rows)
    rate = covered / WORST_GRIDS
    bound = 0.93 - stats.norm.ppf(0.9987) * math.sqrt(0.93 * 0.07 / WORST_GRIDS)
    with capsys.disabled():
        print(f"\n{worst}: coverage {rate:.3f} ({covered} of {WORST_GRIDS} grids; bound "
              f"{bound:.3f}); median df {np.median([r['df'] for r in rows]):.1f}")
    assert all(r["method"] == "Wald t, Satterthwaite df" for r in rows)
    assert bound <= rate < 1.0
