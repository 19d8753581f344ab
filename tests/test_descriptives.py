"""Descriptive tables: their intervals are scipy's, computed in batches and aggregations."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from transferstats.analysis import descriptives


def _scipy_interval(samples: list[np.ndarray], level: float, seed: int) -> tuple[float, float]:
    """One call of scipy's stratified percentile bootstrap of the mean of the sample means."""
    def mean_of_means(*arrays, axis=-1):
        return np.mean([a.mean(axis=axis) for a in arrays], axis=0)

    interval = stats.bootstrap(samples, mean_of_means, n_resamples=descriptives.N_RESAMPLES,
                               confidence_level=level, method="percentile",
                               rng=np.random.default_rng(seed)).confidence_interval
    return float(interval.low), float(interval.high)


def test_batched_intervals_are_those_of_one_scipy_call_per_group(monkeypatch):
    """Groups of one or several samples, of equal and unequal sizes, some split over batches
    (a small MAX_RESAMPLED), and groups with a one-unit sample, which get no interval."""
    monkeypatch.setattr(descriptives, "MAX_RESAMPLED", 3 * descriptives.N_RESAMPLES * 8)
    rng = np.random.default_rng(0)
    sizes = [[8], [8], [8], [8], [8], [5], [8, 5], [8, 5], [3, 3, 4], [1], [6, 1], [8]]
    groups = [[rng.normal(size=n) * (i + 1) for n in group] for i, group in enumerate(sizes)]
    results = descriptives._mean_intervals(groups, 0.9, seed=11)
    for group, (mean, low, high) in zip(groups, results, strict=True):
        assert mean == pytest.approx(np.mean([s.mean() for s in group]))
        if min(len(s) for s in group) < 2:
            assert np.isnan(low) and np.isnan(high)
        else:
            assert (low, high) == pytest.approx(_scipy_interval(group, 0.9, 11), rel=1e-12)
            assert low < mean < high


def test_design_cell_intervals_are_t_intervals_over_the_cells_mixes():
    """interaction_table: per (tasks, examples) cell, the t interval of the mix means; NaN for a
    cell of one mix."""
    rng = np.random.default_rng(1)
    n_tasks = np.array([1, 1, 1, 2, 2, 4, 4, 4, 4, 8])
    examples = np.array([10, 10, 10, 10, 10, 40, 40, 40, 40, 160]) * 1000
    data = pd.DataFrame({"mix": np.repeat([f"m{i}" for i in range(10)], 3),
                         "n_tasks": np.repeat(n_tasks, 3), "examples": np.repeat(examples, 3),
                         "score": rng.normal(size=30)})
    table = descriptives.interaction_table(data, SimpleNamespace(outcome="score", level=0.9))
    assert table["n"].tolist() == [3, 2, 4, 1]
    mix_means = data.groupby("mix")["score"].mean().to_numpy()
    for row, members in zip(table.itertuples(), [[0, 1, 2], [3, 4], [5, 6, 7, 8], [9]],
                            strict=True):
        values = mix_means[members]
        assert row.mean == pytest.approx(values.mean())
        if len(values) == 1:
            assert np.isnan(row.ci_low) and np.isnan(row.ci_high)
        else:
            expected = stats.t.interval(0.9, len(values) - 1, loc=values.mean(),
                                        scale=stats.sem(values))
            assert (row.ci_low, row.ci_high) == pytest.approx(expected, rel=1e-12)
    assert table["volume_examples"].tolist() == [10_000, 10_000, 40_000, 160_000]


def _subjects_by_mixes(n_subjects: int, n_mixes: int, seed: int = 0,
                       subject: str = "target_task") -> pd.DataFrame:
    """A run-level outcome (``subject`` x mix, two seeds) with a mix effect of 0.5 per mix."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame([{subject: f"t{i}", "mix": f"m{j}", "seed": s,
                          "gap": rng.normal() + 0.5 * j}
                         for i in range(n_subjects) for j in range(n_mixes) for s in (1, 2)])


def test_the_rm_anova_is_pingouins_greenhouse_geisser_test():
    """On a design that supports it, every number is pingouin's on the seed-averaged means."""
    import pingouin as pg

    data = _subjects_by_mixes(6, 4, subject="target_language")
    comparisons = descriptives.compare_mixes(data, "gap")
    means = data.groupby(["target_language", "mix"], as_index=False)["gap"].mean()
    expected = pg.rm_anova(data=means, dv="gap", within="mix", subject="target_language",
                           correction=True).iloc[0]
    anova = comparisons.rm_anova
    assert anova is not None and comparisons.skipped == ()
    assert (anova.F, anova.p_unc, anova.p_gg, anova.eps, anova.ng2) == pytest.approx(
        (expected["F"], expected["p_unc"], expected["p_GG_corr"], expected["eps"],
         expected["ng2"]), rel=1e-12)
    assert (anova.ddof1, anova.ddof2, anova.n_subjects) == (3, 15, 6)
    assert len(comparisons.pairwise) == 6
    assert comparisons.to_dict()["skipped"] == []


def test_two_mixes_need_no_sphericity_correction():
    anova = descriptives.compare_mixes(_subjects_by_mixes(5, 2), "gap").rm_anova
    assert anova is not None and anova.eps == 1 and anova.p_gg == anova.p_unc


def test_two_targets_by_three_mixes_leave_the_rm_anova_out_with_its_reason():
    """pingouin's Mauchly test divides by zero on 2 subjects x 3 mixes: the ANOVA is skipped,
    the pairwise tests (defined with 2 subjects) are kept."""
    data = _subjects_by_mixes(2, 3)
    with pytest.raises(ZeroDivisionError):  # the failure this guards against
        import pingouin as pg
        pg.rm_anova(data=data.groupby(["target_task", "mix"], as_index=False)["gap"].mean(),
                    dv="gap", within="mix", subject="target_task", correction=True)
    comparisons = descriptives.compare_mixes(data, "gap")
    assert comparisons.rm_anova is None
    assert [test.to_dict() for test in comparisons.skipped] == [{
        "test": "rm_anova",
        "reason": "the sphericity test and its correction need at least as many subjects "
                  "(target_task) as mixes: 2 subject(s), 3 mixes"}]
    assert len(comparisons.pairwise) == 3 and comparisons.pairwise["dof"].eq(1).all()


@pytest.mark.parametrize(("n_subjects", "n_mixes", "counts"),
                         [(1, 3, "3 mix(es) and 1 such subject(s)"),
                          (4, 1, "1 mix(es) and 4 such subject(s)")])
def test_one_target_or_one_mix_leaves_both_tests_out(n_subjects, n_mixes, counts):
    comparisons = descriptives.compare_mixes(_subjects_by_mixes(n_subjects, n_mixes), "gap")
    assert comparisons.rm_anova is None and comparisons.pairwise.empty
    assert [(test.test, test.reason) for test in comparisons.skipped] == [
        (test, "needs at least 2 mixes and 2 subjects (target_task) observed under every mix; "
               f"the design has {counts}") for test in ("rm_anova", "pairwise_mixes")]


def test_subjects_missing_a_mix_do_not_count():
    """One mix per subject (each target under its own mix): no complete subject."""
    data = pd.DataFrame({"target_task": ["a", "b", "c"], "mix": ["m1", "m2", "m3"],
                         "gap": [1.0, 2.0, 3.0]})
    comparisons = descriptives.compare_mixes(data, "gap")
    assert [test.test for test in comparisons.skipped] == ["rm_anova", "pairwise_mixes"]
    assert "0 such subject(s)" in comparisons.skipped[0].reason


def test_a_constant_outcome_leaves_both_tests_out():
    data = _subjects_by_mixes(5, 3).assign(gap=1.0)
    comparisons = descriptives.compare_mixes(data, "gap")
    assert comparisons.rm_anova is None and comparisons.pairwise.empty
    reasons = {test.test: test.reason for test in comparisons.skipped}
    assert reasons["rm_anova"].startswith("F, p_unc, p_GG_corr") and \
        reasons["rm_anova"].endswith("not a number: the outcome does not vary within subjects "
                                     "across mixes")
    assert reasons["pairwise_mixes"] == ("no t statistic for m0 - m1, m0 - m2, m1 - m2: the "
                                         "difference is the same for every subject")


def test_past_the_pairwise_limit_the_pairwise_tests_are_left_out_with_the_reason(monkeypatch):
    monkeypatch.setattr(descriptives, "MAX_PAIRWISE_MIXES", 3)
    comparisons = descriptives.compare_mixes(_subjects_by_mixes(6, 4), "gap")
    assert comparisons.rm_anova is not None and comparisons.pairwise.empty
    assert [test.to_dict() for test in comparisons.skipped] == [{
        "test": "pairwise_mixes",
        "reason": "more than 3 mixes: the mixes are ranked with intervals instead"}]


def test_the_improvement_table_carries_the_scores_mean_standard_error():
    """Per (mix, target) the mean of the trained scores' ``stderr`` (NaN where none is given),
    and per mix the mean over all its scores; the baseline's are not the mix's."""
    rows = []
    for mix, tasks in (("none", ""), ("a", "mnli=1000"), ("b", "qqp=1000")):
        for target in ("xnli", "pawsx"):
            for language, stderr in (("de", 1.0), ("fr", 3.0)):
                given = None if mix == "b" and target == "pawsx" else (
                    stderr * (10 if mix == "none" else 1) * (2 if target == "pawsx" else 1))
                rows.append({"run_id": f"{mix}.{target}", "model": "m", "mix": mix,
                             "mix_tasks": tasks, "target_task": target, "seed": 1,
                             "language": language, "metric": "accuracy", "split": "test",
                             "value": 50.0 + len(rows), "stderr": given})
    scores = pd.DataFrame(rows)
    mixes = pd.DataFrame({"mix": ["a", "b"], "n_tasks": [1, 1], "examples": [1000, 1000]})
    table = descriptives.improvement_table(
        scores, SimpleNamespace(include_english=False, level=0.9, seed=1), mixes)
    stderr = table.set_index(["mix", "target_task"])["score_stderr"]
    assert stderr[("a", "xnli")] == 2.0 and stderr[("a", "pawsx")] == 4.0
    assert stderr[("a", "average")] == 3.0
    assert stderr[("b", "xnli")] == 2.0 and np.isnan(stderr[("b", "pawsx")])
    assert stderr[("b", "average")] == 2.0
    without = descriptives.improvement_table(scores.drop(columns="stderr"), SimpleNamespace(
        include_english=False, level=0.9, seed=1), mixes)
    assert without["score_stderr"].isna().all()

    from transferstats.report import tables
    shown = tables.improvement_table(table)
    assert shown.frame["Score SE"].tolist() == ["3.0", "2.0"]
    assert "Score SE is the mean standard error of the scores" in shown.caption
    assert "Score SE" not in tables.improvement_table(without).frame
