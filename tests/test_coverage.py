"""The coverage the report quotes: the committed study summary and the row picked for a grid."""

from __future__ import annotations

import pandas as pd
import pytest

from transferstats.analysis.coverage import (
    COLUMNS,
    WALD,
    coverage_sentence,
    coverage_table,
    study_coverage,
)

ROWS = [
    # design, mixes, languages, target_mix_sd, in model, bootstrap, interval, grids, covered
    ("small tm", 12, 4, 0.5, True, "crossed cluster", "BCa", 100, 94),
    ("small none", 12, 4, 0.0, True, "crossed cluster", "BCa", 100, 96),
    ("large tm", 36, 4, 0.5, True, "crossed cluster", "BCa", 100, 95),
    ("factorial", 36, 4, 0.5, True, "parametric", "BCa", 100, 93),
]


def _table() -> pd.DataFrame:
    frame = pd.DataFrame(ROWS, columns=COLUMNS[:9])
    frame["coverage"] = frame["covered"] / frame["grids"]
    return frame.assign(mc_low=0.9, mc_high=0.98, width_ratio=1.0)


@pytest.mark.parametrize("mixes, variation, expected", [
    (10, True, "small tm"), (16, True, "small tm"), (30, True, "large tm"),
    (12, False, "small none"), (40, False, "small none")])
def test_the_nearest_design_with_the_same_variation(mixes, variation, expected):
    row = study_coverage(mixes, "crossed cluster", "bca", True, variation, table=_table())
    assert row is not None and row["design"] == expected


def test_no_row_for_a_method_the_study_did_not_run():
    assert study_coverage(12, "crossed cluster", "percentile", True, True, table=_table()) is None
    assert study_coverage(36, "parametric", "bca", False, True, table=_table()) is None


def test_the_wald_t_rows_stand_in_for_the_parametric_bootstrap():
    table = pd.concat([_table(), _table().iloc[[3]].assign(design="wald", interval=WALD)])
    assert study_coverage(36, "parametric", "percentile", True, True, table)["design"] == "wald"
    assert study_coverage(36, "parametric", "bca", True, True, table)["design"] == "factorial"
    assert "Wald t interval" in coverage_sentence(
        study_coverage(36, "parametric", "percentile", True, True, table))


def test_the_sentence_quotes_the_row():
    row = study_coverage(36, "parametric", "bca", True, True, table=_table())
    text = coverage_sentence(row)
    assert "93 of 100 simulated grids of 36 mixes with target-by-mix variation" in text
    assert "(parametric bootstrap, BCa)" in text and "0.930" in text
    assert coverage_sentence(None) is None


def test_the_committed_summary_covers_both_bootstraps_and_models():
    table = coverage_table()
    assert "parametric" in set(table["bootstrap"])
    assert set(table["interval"]) <= {"BCa", "percentile", WALD}
    assert set(table["target_mix_in_model"]) == {True, False}
    assert (table["covered"] <= table["grids"]).all()
    assert ((table["mc_low"] <= table["coverage"]) & (table["coverage"] <= table["mc_high"])).all()


# --- the worst design of the coverage study, smaller (slow) ----------------------------------

#: The 36-mix factorial grid (1, 2, 4, 8 tasks x 10k, 40k, 160k examples x 3 draws), where the
#: primary model has task identity effects and its parametric bootstrap the lowest coverage of
#: the study; here with four targets, three languages each and two seeds, mix SD 0.7 and
#: target-by-mix SD 0.5.
WORST_GRIDS, WORST_RESAMPLES = 80, 100


def _contrast_interval(index: int) -> tuple[float, float, str]:
    """analyze's interval of diversity - volume on one simulated grid (true difference 0)."""
    import warnings

    import numpy as np

    from transferstats import loading
    from transferstats.analysis import power as pw
    from transferstats.analysis.pipeline import analyze_loaded
    from transferstats.analysis.spec import AnalysisSpec
    from transferstats.simulate import SimulationSettings, simulated_mixes
    from transferstats.tasks import get_task

    settings = SimulationSettings(targets=("xnli", "pawsx", "panx", "xquad"))
    mixes = tuple((name, tuple(tasks.items())) for name, tasks in simulated_mixes(settings))
    languages = {t: tuple(c for c in get_task(t).languages if c != "en")[:3]
                 for t in settings.targets}
    design = pw.GridDesign("factorial", mixes, languages, seeds=2)
    # The bootstrap study's designs have common slopes, analysed by the intercept model.
    sim = pw._simulator(design, pw.default_components(mix=0.7, target_mix=0.5,
                                                      diversity_slope=0.0, volume_slope=0.0),
                        pw.analysis_model(design, random_slopes="off"), WORST_RESAMPLES)
    y = pw.simulate_outcome(sim, np.random.default_rng([14, 1, index]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimates = analyze_loaded(loading.load_results(pw.results_table(sim, y)),
                                   AnalysisSpec(resamples=WORST_RESAMPLES, seed=index,
                                                random_slopes="off"),
                                   n_jobs=1, progress=False, companions=False).estimates
    comparison = estimates["comparison"]
    return comparison["ci_low"], comparison["ci_high"], estimates["bootstrap"]["method"]


@pytest.mark.slow
def test_coverage_of_the_contrast_on_the_worst_design(capsys):
    """The 95% interval of diversity - volume (parametric bootstrap, t(23)) holds the truth
    in 93-97% of factorial grids with target-by-mix variation. With 80 grids the Monte Carlo
    standard error is sqrt(0.95 x 0.05 / 80) = 2.4 points, so the test accepts 93-97% widened
    by two of them, 88.1% to 100%, less the grid that would make it 100%: it fails intervals
    that cover (almost) always or clearly less than 93% (benchmarks/coverage_study.py measures
    the coverage on many more grids)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        intervals = list(pool.map(_contrast_interval, range(WORST_GRIDS)))
    covered = sum(low <= 0 <= high for low, high, _ in intervals)
    rate = covered / WORST_GRIDS
    with capsys.disabled():
        print(f"\ncoverage of the 95% interval of diversity - volume ({intervals[0][2]}, 36 mixes, "
              f"target-by-mix SD 0.5): {rate:.3f} ({covered} of {WORST_GRIDS} grids)")
    assert intervals[0][2].startswith("parametric") and "t(23)" in intervals[0][2]
    assert 0.881 <= rate < 1.0
