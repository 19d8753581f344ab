"""Descriptive tables: improvement per mix and target (Phang et al. 2020, Table 2 layout), per
language, per design cell, and repeated-measures comparisons of mixes (pingouin).

Intervals here are percentile bootstrap intervals over languages (or mixes), one unit level at a
time; they describe the grid, the model-based inference is in :mod:`.pipeline`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pingouin as pg
from scipy import stats

from transferstats.analysis.derive import add_improvement
from transferstats.results import BASELINE_MIX

N_RESAMPLES = 2000


def _mean_interval(samples: list[np.ndarray], level: float, seed: int) -> tuple[float, float, float]:
    """Mean of the per-sample means and its percentile bootstrap interval, each sample resampled
    on its own (stratified), via :func:`scipy.stats.bootstrap`. Needs two units in every sample."""
    samples = [np.asarray(s, dtype=float) for s in samples if len(s)]
    estimate = float(np.mean([s.mean() for s in samples]))
    if any(len(s) < 2 for s in samples):
        return estimate, np.nan, np.nan

    def mean_of_means(*arrays, axis=-1):
        return np.mean([a.mean(axis=axis) for a in arrays], axis=0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # degenerate: all values equal
        result = stats.bootstrap(samples, mean_of_means, n_resamples=N_RESAMPLES, confidence_level=level,
                                 method="percentile", rng=np.random.default_rng(seed))
    return estimate, float(result.confidence_interval.low), float(result.confidence_interval.high)


def improvement_table(scores: pd.DataFrame, spec, mixes: pd.DataFrame) -> pd.DataFrame:
    """Mean improvement over the baseline per (mix, target) with a 95% interval over languages, and
    each mix's average over targets (languages resampled within each target).

    Long form: ``mix, target_task, mean, ci_low, ci_high, n_runs, n_languages``; rows ordered by
    number of tasks, then volume, then name; ``target_task == "average"`` closes each mix.
    """
    trained, _ = add_improvement(scores)
    if not spec.include_english:
        trained = trained[trained["language"] != "en"]
    per_language = (trained.groupby(["mix", "target_task", "language"], as_index=False)
                    .agg(improvement=("improvement", "mean")))
    runs = trained.groupby(["mix", "target_task"])["run_id"].nunique()
    order = mixes.sort_values(["n_tasks", "examples", "mix"])["mix"]
    rows = []
    for mix in order:
        of_mix = per_language[per_language["mix"] == mix]
        samples = []
        for target, group in of_mix.groupby("target_task", sort=True):
            values = group["improvement"].to_numpy()
            samples.append(values)
            mean, low, high = _mean_interval([values], spec.level, spec.seed)
            rows.append({"mix": mix, "target_task": target, "mean": mean, "ci_low": low, "ci_high": high,
                         "n_runs": int(runs.get((mix, target), 0)), "n_languages": len(values)})
        if samples:
            mean, low, high = _mean_interval(samples, spec.level, spec.seed)
            rows.append({"mix": mix, "target_task": "average", "mean": mean, "ci_low": low,
                         "ci_high": high, "n_runs": int(runs.loc[mix].sum()),
                         "n_languages": int(sum(len(s) for s in samples))})
    return pd.DataFrame(rows, columns=["mix", "target_task", "mean", "ci_low", "ci_high", "n_runs",
                                       "n_languages"])


def language_table(data: pd.DataFrame, spec) -> pd.DataFrame:
    """Mean outcome per language over mixes, targets and seeds, with an interval over mixes."""
    columns = ["language", "mean", "ci_low", "ci_high", "n"]
    if "language" not in data:
        return pd.DataFrame(columns=columns)
    per_mix = data.groupby(["language", "mix"], as_index=False)[spec.outcome].mean()
    rows = []
    for language, group in per_mix.groupby("language"):
        mean, low, high = _mean_interval([group[spec.outcome].to_numpy()], spec.level, spec.seed)
        rows.append({"language": language, "mean": mean, "ci_low": low, "ci_high": high,
                     "n": int((data["language"] == language).sum())})
    return pd.DataFrame(rows, columns=columns).sort_values("mean", ignore_index=True)


def interaction_table(data: pd.DataFrame, spec) -> pd.DataFrame:
    """Mean outcome per design cell (number of tasks x total examples), with a t interval over the
    mixes in the cell (NaN for a single mix)."""
    per_mix = data.groupby(["mix", "n_tasks", "examples"], as_index=False)[spec.outcome].mean()
    rows = []
    for (n_tasks, examples), group in per_mix.groupby(["n_tasks", "examples"]):
        values = group[spec.outcome].to_numpy()
        mean = float(values.mean())
        if len(values) > 1:
            low, high = stats.t.interval(spec.level, len(values) - 1, loc=mean, scale=stats.sem(values))
        else:
            low = high = np.nan
        rows.append({"n_tasks": int(n_tasks), "volume_examples": int(examples), "mean": mean,
                     "ci_low": float(low), "ci_high": float(high), "n": len(values)})
    return pd.DataFrame(rows, columns=["n_tasks", "volume_examples", "mean", "ci_low", "ci_high", "n"])


def _subject_means(data: pd.DataFrame, outcome: str) -> tuple[pd.DataFrame, str]:
    """Outcome averaged over seeds per (subject, mix); subjects are target-language pairs for
    row-level outcomes and targets for run-level ones. Subjects missing a mix are dropped, as a
    repeated-measures design needs every subject under every mix."""
    subject = "target_language" if "target_language" in data else "target_task"
    means = data[data["mix"] != BASELINE_MIX].groupby([subject, "mix"], as_index=False)[outcome].mean()
    complete = means.groupby(subject)["mix"].transform("nunique") == means["mix"].nunique()
    return means[complete], subject


def omnibus(data: pd.DataFrame, outcome: str) -> dict:
    """Repeated-measures ANOVA of the outcome across mixes, Greenhouse-Geisser corrected
    (pingouin ``rm_anova``; Greenhouse & Geisser 1959)."""
    means, subject = _subject_means(data, outcome)
    if means[subject].nunique() < 2 or means["mix"].nunique() < 2:
        return {"rm_anova": None}
    table = pg.rm_anova(data=means, dv=outcome, within="mix", subject=subject, correction=True)
    row = table.iloc[0]
    get = lambda key: float(row[key]) if key in row and pd.notna(row[key]) else None  # noqa: E731
    return {"rm_anova": {"subjects": subject, "n_subjects": int(means[subject].nunique()),
                         "F": get("F"), "ddof1": get("ddof1"), "ddof2": get("ddof2"),
                         "p_unc": get("p_unc"), "p_gg": get("p_GG_corr"), "ng2": get("ng2"),
                         "eps": get("eps")}}


def pairwise_mixes(data: pd.DataFrame, outcome: str) -> pd.DataFrame:
    """Paired t-tests between every two mixes over subjects, Holm-corrected (Holm 1979), with
    Hedges' g: the numbers and columns of pingouin's ``pairwise_tests(within="mix",
    padjust="holm", effsize="hedges")`` without its Bayes factors, computed for all pairs at once
    (a 36-mix grid has 630 pairs, and pingouin's per-pair Bayes factor integrals took seconds).

    Hedges' g is pingouin's paired definition: the mean difference over the average of the two
    mixes' variances (not the SD of the differences), times 1 - 3 / (4 (2 n) - 9).
    """
    means, subject = _subject_means(data, outcome)
    columns = ["Contrast", "A", "B", "Paired", "Parametric", "T", "dof", "alternative", "p_unc",
               "p_corr", "p_adjust", "hedges"]
    if means[subject].nunique() < 2 or means["mix"].nunique() < 2:
        return pd.DataFrame(columns=columns)
    wide = means.pivot(index=subject, columns="mix", values=outcome).sort_index(axis=1)
    values = wide.to_numpy(dtype=float)
    n = values.shape[0]
    first, second = np.triu_indices(values.shape[1], 1)
    difference = values[:, first] - values[:, second]
    t_value = difference.mean(axis=0) / (difference.std(axis=0, ddof=1) / np.sqrt(n))
    p_value = 2 * stats.t.sf(np.abs(t_value), n - 1)
    pooled = np.sqrt((values.var(axis=0, ddof=1)[first] + values.var(axis=0, ddof=1)[second]) / 2)
    hedges = difference.mean(axis=0) / pooled * (1 - 3 / (4 * 2 * n - 9))
    return pd.DataFrame({
        "Contrast": "mix", "A": wide.columns[first], "B": wide.columns[second], "Paired": True,
        "Parametric": True, "T": t_value, "dof": float(n - 1), "alternative": "two-sided",
        "p_unc": p_value, "p_corr": holm(p_value), "p_adjust": "holm", "hedges": hedges,
    }, columns=columns)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values: the i-th smallest of m times (m - i + 1),
    made monotone, at most 1."""
    p_values = np.asarray(p_values, dtype=float)
    order = np.argsort(p_values, kind="stable")
    m = len(p_values)
    adjusted = np.minimum(np.maximum.accumulate((m - np.arange(m)) * p_values[order]), 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out
