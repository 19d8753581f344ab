"""The crossed bootstrap: resampling scheme, reproducibility, intervals, coverage."""

from __future__ import annotations

import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from simulated_grids import RANDOM, simulate_grid
from transferstats.analysis import bootstrap
from transferstats.analysis.bootstrap import (
    JACKKNIFE_GROUPS,
    acceleration,
    bca_interval,
    crossed_bootstrap,
    influence_moments,
    jackknife_groups_of,
    output_matrix,
    percentile_interval,
    pilot_start,
    refit,
    resample_rows,
    resampling_design,
)
from transferstats.analysis.mixed import fit_crossed, fit_crossed_statsmodels

FIXED = ["diversity", "volume"]
CONTRAST = {"diversity - volume": {"diversity": 1.0, "volume": -1.0}}


def small_bootstrap(data, **kwargs):
    settings = dict(contrasts=CONTRAST, n_resamples=40, seed=3, n_jobs=1, progress=False)
    return crossed_bootstrap(data, "improvement", FIXED, RANDOM, **{**settings, **kwargs})


def design_of(data):
    _, outputs = output_matrix(["Intercept", *FIXED], {})
    return resampling_design(data, "improvement", FIXED, RANDOM, ["language", "mix"], "seed",
                             ["mix", "target_task"], outputs, np.ones(3))


def test_same_seed_same_draws_whatever_the_number_of_processes():
    data = simulate_grid(np.random.default_rng(0))
    one = small_bootstrap(data)
    again = small_bootstrap(data)
    two = small_bootstrap(data, n_jobs=2)
    pd.testing.assert_frame_equal(one.draws, again.draws)
    pd.testing.assert_frame_equal(one.draws, two.draws)
    other = small_bootstrap(data, seed=4)
    assert not np.allclose(one.draws.to_numpy(), other.draws.to_numpy())


def test_result_holds_estimates_draws_and_jackknife():
    data = simulate_grid(np.random.default_rng(1))
    result = small_bootstrap(data)
    assert list(result.draws.columns) == ["diversity", "volume", "diversity - volume"]
    assert result.estimate["diversity - volume"] == pytest.approx(
        result.estimate["diversity"] - result.estimate["volume"])
    np.testing.assert_allclose(result.draws["diversity - volume"],
                               result.draws["diversity"] - result.draws["volume"])
    assert result.n_failed == 0 and result.resampling == "crossed cluster"
    # Fewer levels than JACKKNIFE_GROUPS: every level is left out on its own (exact jackknife).
    assert len(result.jackknife) == data["language"].nunique() + data["mix"].nunique()
    assert set(result.jackknife["unit"]) == {"language", "mix"}
    assert (result.jackknife["left_out"].map(len) == 1).all()
    assert set(result.jackknife.loc[result.jackknife["unit"] == "mix", "left_out"].str[0]) \
        == set(data["mix"])
    table = result.intervals()
    assert list(table.columns) == ["term", "estimate", "ci_low", "ci_high", "se"]
    assert (table["ci_low"] < table["estimate"]).all() and (table["estimate"] < table["ci_high"]).all()
    low, high = result.interval("diversity", kind="percentile")
    assert low < result.estimate["diversity"] < high


def test_duplicated_levels_become_distinct_levels():
    data = simulate_grid(np.random.default_rng(2), n_mixes=8, n_targets=3, n_languages=5)
    design = design_of(data)
    for seed in range(10):
        rows, codes = resample_rows(design, np.random.default_rng(seed))
        target, target_language, mix = (int(c.max()) + 1 for c in codes)
        # Every drawn copy of a language is its own language in every target, every drawn
        # copy of a mix its own mix; targets are not resampled.
        assert target == 3
        assert target_language == 3 * 5
        assert mix == 8
        # A balanced grid keeps its size: copies times seeds drawn per cell.
        assert len(rows) == len(data)
        # Rows of one target-language level all come from one original target-language.
        original = data["target_language"].to_numpy()[rows]
        assert (pd.Series(original).groupby(codes[1]).nunique() == 1).all()


def test_duplicated_language_is_counted_twice():
    data = simulate_grid(np.random.default_rng(2), n_mixes=4, n_targets=2, n_languages=3)
    design = design_of(data)
    rng = np.random.default_rng(0)
    rows, codes = resample_rows(design, rng)
    drawn_languages = data["language"].to_numpy()[rows]
    per_language = pd.Series(drawn_languages).value_counts()
    # Each language appears in multiples of one copy's worth of rows (2 targets x mixes x seeds).
    assert (per_language % (2 * 4 * 3) == 0).all()
    copies = per_language // (2 * 4 * 3)
    levels_per_language = pd.Series(codes[1]).groupby(drawn_languages).nunique()
    pd.testing.assert_series_equal(levels_per_language.sort_index(),
                                   (2 * copies).sort_index(), check_names=False)


def test_seeds_are_resampled_as_whole_runs_within_each_cell():
    data = simulate_grid(np.random.default_rng(4), n_mixes=4, n_targets=2, n_languages=3)
    design = design_of(data)
    rows, codes = resample_rows(design, np.random.default_rng(1))
    picked = data.iloc[rows].assign(mix_copy=codes[2], language_copy=codes[1])
    # Every language copy of a (mix copy, target) cell carries the same drawn seeds.
    seeds = picked.groupby(["mix_copy", "target_task", "language_copy"])["seed"].apply(
        lambda s: tuple(sorted(s)))
    assert (seeds.groupby(level=[0, 1]).nunique() == 1).all()


def test_without_replicate_resampling_only_units_are_drawn():
    data = simulate_grid(np.random.default_rng(6), n_mixes=8, n_targets=3, n_languages=5)
    _, outputs = output_matrix(["Intercept", *FIXED], {})
    design = resampling_design(data, "improvement", FIXED, RANDOM, ["language", "mix"], None,
                               ["mix", "target_task"], outputs, np.ones(3))
    rows, _ = resample_rows(design, np.random.default_rng(0))
    per_run = data.iloc[rows].groupby(["mix", "target_task", "language", "seed"]).size()
    # Every kept run keeps all of its seeds, each as often as its mix and language were drawn.
    assert (per_run.groupby(level=[0, 1, 2]).nunique() == 1).all()
    result = small_bootstrap(data, replicate=None)
    assert result.n_failed == 0


def test_failed_refits_are_counted_not_dropped():
    data = simulate_grid(np.random.default_rng(5), n_mixes=3, n_targets=2, n_languages=4)
    result = crossed_bootstrap(data, "improvement", ["diversity"], RANDOM, n_resamples=60,
                               seed=0, n_jobs=1, progress=False)
    assert result.n_failed > 0
    assert len(result.draws) == 60
    assert result.draws["diversity"].isna().sum() == result.n_failed
    assert np.isfinite(result.interval("diversity", kind="percentile")).all()


def test_a_fit_passed_in_is_used_only_when_it_is_of_this_model():
    data = simulate_grid(np.random.default_rng(0))
    own = small_bootstrap(data, n_resamples=10)
    fit = fit_crossed(data, "improvement", FIXED, RANDOM)
    passed = small_bootstrap(data, n_resamples=10, fit=fit)
    pd.testing.assert_frame_equal(passed.draws, own.draws)
    other = fit_crossed(data, "improvement", ["diversity"], RANDOM)   # another model: refitted
    assert not other.fits(FIXED, RANDOM, len(data))
    pd.testing.assert_frame_equal(small_bootstrap(data, n_resamples=10, fit=other).draws,
                                  own.draws)


def test_resample_refits_agree_with_statsmodels():
    """Refits of resampled grids (duplicated levels, resampled seeds) match MixedLM REML."""
    data = simulate_grid(np.random.default_rng(8), n_mixes=8, n_targets=3, n_languages=5,
                         unequal_seeds=True)
    fit = fit_crossed(data, "improvement", FIXED, RANDOM)
    _, outputs = output_matrix(fit.terms, {})
    start = np.sqrt(np.array(list(fit.variance_components.values())) / fit.residual_variance)
    design = resampling_design(data, "improvement", FIXED, RANDOM, ["language", "mix"], "seed",
                               ["mix", "target_task"], outputs, start)
    for seed in range(3):
        rows, codes = resample_rows(design, np.random.default_rng(seed))
        resample = pd.DataFrame({"improvement": design.y[rows], "diversity": design.X[rows, 1],
                                 "volume": design.X[rows, 2]})
        for factor, code in zip(RANDOM, codes, strict=True):
            resample[factor] = code
        reference = fit_crossed_statsmodels(resample, "improvement", FIXED, RANDOM)
        np.testing.assert_allclose(refit(design, rows, codes), reference.params[1:],
                                   rtol=1e-4, atol=1e-6)


def test_resample_refits_start_from_pilot_resamples_and_land_where_a_cold_start_does():
    """The pilot start is the componentwise median of the pilot resamples' optima; resamples
    refitted from it or from the data's theta agree to a small fraction of the fixed effects'
    standard errors."""
    data = simulate_grid(np.random.default_rng(9), n_mixes=12, n_targets=3, n_languages=5)
    fit = fit_crossed(data, "improvement", FIXED, RANDOM)
    _, outputs = output_matrix(fit.terms, {})
    start = np.sqrt(np.array(list(fit.variance_components.values())) / fit.residual_variance)
    design = resampling_design(data, "improvement", FIXED, RANDOM, ["language", "mix"], "seed",
                               ["mix", "target_task"], outputs, start)
    seeds = np.random.SeedSequence(5).spawn(6)
    optima = []
    for seed in seeds[:3]:
        rows, codes = resample_rows(design, np.random.default_rng(seed))
        resample = pd.DataFrame({"y": design.y[rows], "diversity": design.X[rows, 1],
                                 "volume": design.X[rows, 2]}
                                | {factor: code for factor, code in zip(RANDOM, codes, strict=True)})
        own = fit_crossed(resample, "y", FIXED, RANDOM)
        optima.append([own.variance_components[f] / own.residual_variance for f in RANDOM])
    pilot = pilot_start(design, seeds[:3])
    np.testing.assert_allclose(pilot ** 2, np.median(optima, axis=0), rtol=1e-2, atol=1e-3)
    assert not np.allclose(pilot, start, rtol=1e-2)
    for seed in seeds[3:]:
        rows, codes = resample_rows(design, np.random.default_rng(seed))
        from_pilot, from_data = refit(design, rows, codes, pilot), refit(design, rows, codes)
        assert np.max(np.abs(from_pilot - from_data) / fit.bse.to_numpy()[1:]) < 1e-3


@pytest.mark.parametrize("method", ["percentile", "BCa"])
def test_intervals_match_scipy_on_an_iid_mean(method):
    x = np.random.default_rng(0).exponential(size=40)
    res = scipy.stats.bootstrap((x,), np.mean, n_resamples=2000, method=method,
                                confidence_level=0.9, rng=np.random.default_rng(1))
    draws = res.bootstrap_distribution
    if method == "percentile":
        ours = percentile_interval(draws, 0.9)
    else:
        jackknife = np.array([np.delete(x, i).mean() for i in range(len(x))])
        ours = bca_interval(x.mean(), draws, jackknife, 0.9)
    np.testing.assert_allclose(ours, tuple(res.confidence_interval), rtol=1e-12)


def test_grouped_acceleration_matches_scipy_two_sample_bca():
    rng = np.random.default_rng(2)
    x, y = rng.exponential(size=25), rng.gamma(2.0, size=30)

    def difference(a, b, axis=-1):
        return np.mean(a, axis=axis) - np.mean(b, axis=axis)

    res = scipy.stats.bootstrap((x, y), difference, n_resamples=2000, method="BCa",
                                rng=np.random.default_rng(3))
    jackknife = np.concatenate([[difference(np.delete(x, i), y) for i in range(len(x))],
                                [difference(x, np.delete(y, i)) for i in range(len(y))]])
    groups = np.repeat(["x", "y"], [len(x), len(y)])
    ours = bca_interval(difference(x, y), res.bootstrap_distribution, jackknife, 0.95, groups)
    np.testing.assert_allclose(ours, tuple(res.confidence_interval), rtol=1e-12)
    assert acceleration(jackknife, groups) != acceleration(jackknife)


def test_jackknife_groups_partition_the_levels():
    rng = np.random.default_rng(0)
    groups = jackknife_groups_of(103, 10, rng)
    assert len(groups) == 10
    assert sorted(len(g) for g in groups) == [10] * 7 + [11] * 3
    np.testing.assert_array_equal(np.sort(np.concatenate(groups)), np.arange(103))
    assert [g.tolist() for g in jackknife_groups_of(4, 10, rng)] == [[0], [1], [2], [3]]
    assert len(jackknife_groups_of(103, None, rng)) == 103


def test_grouped_jackknife_moments_are_unbiased_for_the_leave_one_out_ones():
    """For a mean, leave-group-out values give exactly each group's summed influence; over
    random partitions the corrected sums of squares and cubes average to the leave-one-out
    ones. Without the finite-population factors they would be 11% and 31% low here."""
    x = np.random.default_rng(1).exponential(size=60)
    n = len(x)
    exact = influence_moments((x.sum() - x) / (n - 1), np.ones(n))
    rng = np.random.default_rng(2)
    sums = []
    for _ in range(4000):
        groups = jackknife_groups_of(n, 8, rng)  # sizes 7 and 8: unequal
        sizes = np.array([len(g) for g in groups])
        left_out = np.array([(x.sum() - x[g].sum()) / (n - len(g)) for g in groups])
        sums.append(influence_moments(left_out, sizes))
    second, third = np.mean(sums, axis=0)
    assert second == pytest.approx(exact[0], rel=0.02)
    assert third == pytest.approx(exact[1], rel=0.08)


def skewed_grid(seed: int, n_mixes: int) -> pd.DataFrame:
    """A grid with skewed (exponential) mix effects, larger for diverse mixes, and skewed
    language-specific diversity slopes, so that the BCa acceleration is clearly non-zero and
    both units carry a good share of the diversity effect's variance (languages ~57%, mixes
    ~43%): the units' influence values must then be scaled alike for the acceleration to come
    out right."""
    rng = np.random.default_rng(seed)
    data = simulate_grid(rng, n_mixes=n_mixes, n_targets=3, n_languages=8, n_seeds=1,
                         sd_mix=0.3)
    mix = pd.factorize(data["mix"], sort=True)[0]
    language = pd.factorize(data["language"], sort=True)[0]
    data["improvement"] += (1.5 * rng.exponential(size=n_mixes)[mix] * (1 + data["diversity"])
                            + 0.5 * rng.exponential(size=8)[language] * data["diversity"])
    return data


def test_grouped_jackknife_bca_agrees_with_the_exact_jackknife():
    """200 mixes in 50 groups (8 languages, each its own group) against leave-one-out.

    Over 30 random partitions of this grid the grouped acceleration differed from the exact one
    by -0.0003 +/- 0.004 (diversity; largest 0.009) and -0.001 +/- 0.011 (volume, whose
    variance is all mixes'; largest 0.033, cf. JACKKNIFE_GROUPS), and the endpoints moved by
    0.5-1% of the interval's width on average (largest 3%). Group means in place of group sums
    (influence values scaled d^2 = 16 times too small for mixes) give 0.108 against 0.062 for
    diversity.
    """
    data = skewed_grid(7, n_mixes=200)
    settings = dict(contrasts=CONTRAST, n_resamples=300, seed=1, n_jobs=2, progress=False)
    exact = crossed_bootstrap(data, "improvement", FIXED, RANDOM, jackknife_groups=None,
                              **settings)
    grouped = crossed_bootstrap(data, "improvement", FIXED, RANDOM, **settings)
    pd.testing.assert_frame_equal(exact.draws, grouped.draws)
    assert len(exact.jackknife) == 8 + 200
    assert len(grouped.jackknife) == 8 + JACKKNIFE_GROUPS
    assert sorted(grouped.jackknife["left_out"].map(len)) == [1] * 8 + [4] * 50
    for term in exact.draws.columns:
        a_exact = acceleration(exact.jackknife[term], exact.jackknife["unit"])
        a_grouped = acceleration(grouped.jackknife[term], grouped.jackknife["unit"],
                                 grouped.jackknife["left_out"].map(len))
        assert abs(a_grouped - a_exact) < 0.03, term
        low, high = exact.interval(term)
        grouped_low, grouped_high = grouped.interval(term)
        assert max(abs(grouped_low - low), abs(grouped_high - high)) < 0.05 * (high - low), term
    assert acceleration(exact.jackknife["diversity"], exact.jackknife["unit"]) > 0.05


def test_refits_do_not_grow_with_the_number_of_levels(monkeypatch):
    """Resamples plus at most JACKKNIFE_GROUPS jackknife refits per unit, whatever the number of
    mixes; each refit gets index arrays into the design, never a copy of the data."""
    calls = []

    def counting_refit(design, rows, codes, start=None):
        assert rows.dtype.kind == "i" and all(c.dtype.kind == "i" for c in codes)
        calls.append(len(rows))
        return np.zeros(len(design.outputs))

    monkeypatch.setattr(bootstrap, "refit", counting_refit)
    for n_mixes in (60, 200):
        data = simulate_grid(np.random.default_rng(3), n_mixes=n_mixes, n_targets=2,
                             n_languages=4, n_seeds=1)
        for groups, jackknife in ((JACKKNIFE_GROUPS, JACKKNIFE_GROUPS + 4), (None, n_mixes + 4)):
            calls.clear()
            small_bootstrap(data, n_resamples=50, jackknife_groups=groups)
            assert len(calls) == 50 + jackknife


def large_design(n_mixes: int, n_targets: int = 5, n_languages: int = 40,
                 targets_per_mix: int = 2, seed: int = 0):
    """The resampling design of a grid of ``n_mixes`` mixes, each run once on
    ``targets_per_mix`` targets of ``n_languages`` languages, built without a model fit."""
    rng = np.random.default_rng(seed)
    target = np.concatenate([rng.choice(n_targets, targets_per_mix, replace=False)
                             for _ in range(n_mixes)])
    run_mix = np.repeat(np.arange(n_mixes), targets_per_mix)
    mix, target = np.repeat(run_mix, n_languages), np.repeat(target, n_languages)
    language = np.tile(np.arange(n_languages), len(run_mix))
    data = pd.DataFrame({"mix": mix, "target_task": target, "language": language,
                         "target_language": target * n_languages + language, "seed": 1,
                         "diversity": rng.normal(size=n_mixes)[mix],
                         "volume": rng.normal(size=n_mixes)[mix]})
    data["improvement"] = rng.normal(size=len(data))
    _, outputs = output_matrix(["Intercept", *FIXED], {})
    return resampling_design(data, "improvement", FIXED, RANDOM, ["language", "mix"], "seed",
                             ["mix", "target_task"], outputs, np.ones(3))


def resampling_cost(design, n_resamples: int) -> tuple[float, int, int]:
    """Seconds per resample, the largest resample's rows, and the peak memory (bytes) Python
    allocated while drawing them."""
    tracemalloc.start()
    began = time.perf_counter()
    try:
        largest = max(len(resample_rows(design, np.random.default_rng(s))[0])
                      for s in range(n_resamples))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return (time.perf_counter() - began) / n_resamples, largest, peak


def test_a_resample_costs_memory_in_proportion_to_its_rows():
    """Drawing a resample of 4,000 mixes (160k rows) allocates a few dozen row-length integer
    arrays, not a table over mixes x mix copies (128 MB) or cells x mix copies (640 MB), as
    relabelling copies through a dense code range would."""
    _, largest, peak = resampling_cost(large_design(4000), 3)
    assert peak < 40 * 8 * largest


@pytest.mark.slow
def test_resamples_of_a_million_rows_are_cheap(capsys):
    """10,000 mixes x 2 targets x 50 languages = 1,000,000 rows (200 target-languages): a
    resample is drawn in well under a second and its transient memory stays a small multiple of
    its index arrays (the dense relabelling took 6 s and 4 GiB per resample here)."""
    design = large_design(10_000, n_targets=4, n_languages=50, targets_per_mix=2)
    seconds, largest, peak = resampling_cost(design, 10)
    with capsys.disabled():
        print(f"\nresample of {largest:,} rows: {seconds:.3f} s, peak {peak / 2 ** 20:.0f} MiB")
    assert seconds < 1.0
    assert peak < 40 * 8 * largest


TRUE_DIVERSITY, TRUE_VOLUME = 1.0, 0.4


def interval_covers_truth(replication: int) -> bool:
    """One simulated grid with known effects: does the 95% BCa interval of the difference
    diversity - volume contain the true difference?"""
    data = simulate_grid(np.random.default_rng(1000 + replication), n_mixes=16, n_targets=4,
                         n_languages=6, n_seeds=2, diversity_effect=TRUE_DIVERSITY,
                         volume_effect=TRUE_VOLUME, sd_target=1.0, sd_language=0.8, sd_mix=0.5,
                         sd_residual=1.0)
    result = crossed_bootstrap(data, "improvement", FIXED, RANDOM, contrasts=CONTRAST,
                               n_resamples=200, seed=replication, n_jobs=1, progress=False)
    low, high = result.interval("diversity - volume")
    return bool(low <= TRUE_DIVERSITY - TRUE_VOLUME <= high)


@pytest.mark.slow
def test_interval_of_the_difference_covers_the_truth(capsys):
    """Over 120 grids with known effects the 95% BCa interval covers close to 95% of the time."""
    n_replications = 120
    with ProcessPoolExecutor(2) as pool:
        covered = sum(pool.map(interval_covers_truth, range(n_replications)))
    rate = covered / n_replications
    with capsys.disabled():
        print(f"\ncoverage of the 95% BCa interval of diversity - volume: {rate:.3f} "
              f"({covered} of {n_replications} simulated grids)")
    # A binomial(120, 0.95) rate falls below 0.90 with probability under 1%; 0.88 leaves room
    # for the small-sample undercoverage of bootstrap intervals with 16 mixes. Intervals that
    # are far too wide would cover always: 120 of 120 is refused.
    assert 0.88 <= rate < 0.995
