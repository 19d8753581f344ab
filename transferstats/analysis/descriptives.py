"""Descriptive tables: improvement per mix and target (Phang et al. 2020, Table 2 layout), per
language, per design cell, and repeated-measures comparisons of mixes (pingouin).

Intervals here are percentile bootstrap intervals over languages (or mixes), one unit level at a
time; they describe the grid, the model-based inference is in :mod:`.pipeline`.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pingouin as pg
from scipy import stats

from transferstats.analysis.derive import add_improvement
from transferstats.results import BASELINE_MIX

N_RESAMPLES = 2000


#: Most floats one call of :func:`scipy.stats.bootstrap` resamples in :func:`_mean_intervals`
#: (groups x N_RESAMPLES x units): 256 MiB.
MAX_RESAMPLED = 2 ** 25


def _mean_intervals(groups: list[list[np.ndarray]], level: float, seed: int
                    ) -> list[tuple[float, float, float]]:
    """Per group of samples, the mean of the sample means and its percentile bootstrap interval.

    Each sample is resampled on its own (stratified), by :func:`scipy.stats.bootstrap`; a group
    with a sample of fewer than two units gets no interval (NaN). scipy draws the same indices
    for every row of a batch (its leading axes), the indices one call per group draws from the
    same seed: the groups whose samples have the same sizes go in one call along a batch axis,
    with the same intervals as a call each. For the 25,000 mix-target cells of a 10,000-mix grid
    one call each took most of a minute.
    """
    samples_of = [[np.asarray(s, dtype=float) for s in samples if len(s)] for samples in groups]
    results: list[tuple[float, float, float]] = [
        (float(np.mean([s.mean() for s in samples])), np.nan, np.nan) for samples in samples_of]
    by_sizes: dict[tuple[int, ...], list[int]] = {}
    for index, samples in enumerate(samples_of):
        sizes = tuple(len(s) for s in samples)
        if sizes and min(sizes) >= 2:
            by_sizes.setdefault(sizes, []).append(index)

    def mean_of_means(*arrays, axis=-1):
        return np.mean([a.mean(axis=axis) for a in arrays], axis=0)

    for sizes, members in by_sizes.items():
        batch = max(1, MAX_RESAMPLED // (N_RESAMPLES * sum(sizes)))
        for start in range(0, len(members), batch):
            chunk = members[start:start + batch]
            stacked = [np.stack([samples_of[i][k] for i in chunk]) for k in range(len(sizes))]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=RuntimeWarning)  # all values equal
                interval = stats.bootstrap(stacked, mean_of_means, n_resamples=N_RESAMPLES,
                                           confidence_level=level, method="percentile", axis=-1,
                                           rng=np.random.default_rng(seed)).confidence_interval
            for i, low, high in zip(chunk, interval.low, interval.high, strict=True):
                results[i] = (results[i][0], float(low), float(high))
    return results


def improvement_table(scores: pd.DataFrame, spec, mixes: pd.DataFrame) -> pd.DataFrame:
    """Mean improvement over the baseline per (mix, target) with a 95% interval over languages, and
    each mix's average over targets (languages resampled within each target).

    Long form: ``mix, target_task, mean, ci_low, ci_high, n_runs, n_languages, score_stderr``;
    rows ordered by number of tasks, then volume, then name; ``target_task == "average"`` closes
    each mix. ``score_stderr`` is the mean standard error of the cell's scores as the evaluation
    tool reported them (the contract's optional ``stderr``; NaN where none is given): the noise of
    the evaluation sets, not of the improvement.
    """
    trained, _ = add_improvement(scores)
    return mix_target_table(trained, "improvement", spec, mixes)


def score_table(scores: pd.DataFrame, spec, mixes: pd.DataFrame) -> pd.DataFrame:
    """:func:`improvement_table` of the score itself, for grids without baseline runs."""
    trained = scores[scores["mix"] != BASELINE_MIX].assign(score=scores["value"])
    return mix_target_table(trained, "score", spec, mixes)


def mix_target_table(trained: pd.DataFrame, value: str, spec, mixes: pd.DataFrame) -> pd.DataFrame:
    """Mean ``value`` per (mix, target) and per mix, as :func:`improvement_table` describes."""
    if not spec.include_english:
        trained = trained[trained["language"] != "en"]
    per_language = (trained.groupby(["mix", "target_task", "language"], as_index=False)
                    .agg(improvement=(value, "mean")))
    runs = trained.groupby(["mix", "target_task"])["run_id"].nunique()
    stderr = trained["stderr"] if "stderr" in trained else pd.Series(np.nan, trained.index)
    stderr_of_cell = stderr.groupby([trained["mix"], trained["target_task"]]).mean()
    stderr_of_mix = stderr.groupby(trained["mix"]).mean()
    order = mixes.sort_values(["n_tasks", "examples", "mix"])["mix"]
    # Split once: filtering the table for each of 10,000 mixes took 20 s.
    by_mix = dict(tuple(per_language.groupby("mix", sort=False)))
    rows, groups = [], []
    for mix in order:
        of_mix = by_mix.get(mix, per_language.iloc[:0])
        samples = []
        for target, group in of_mix.groupby("target_task", sort=True):
            values = group["improvement"].to_numpy()
            samples.append(values)
            groups.append([values])
            rows.append({"mix": mix, "target_task": target,
                         "n_runs": int(runs.get((mix, target), 0)), "n_languages": len(values),
                         "score_stderr": float(stderr_of_cell.get((mix, target), np.nan))})
        if samples:
            groups.append(samples)
            rows.append({"mix": mix, "target_task": "average", "n_runs": int(runs.loc[mix].sum()),
                         "n_languages": int(sum(len(s) for s in samples)),
                         "score_stderr": float(stderr_of_mix.get(mix, np.nan))})
    for row, (mean, low, high) in zip(rows, _mean_intervals(groups, spec.level, spec.seed),
                                      strict=True):
        row.update(mean=mean, ci_low=low, ci_high=high)
    return pd.DataFrame(rows, columns=["mix", "target_task", "mean", "ci_low", "ci_high", "n_runs",
                                       "n_languages", "score_stderr"])


def language_table(data: pd.DataFrame, spec) -> pd.DataFrame:
    """Mean outcome per language over mixes, targets and seeds, with an interval over mixes."""
    columns = ["language", "mean", "ci_low", "ci_high", "n"]
    if "language" not in data:
        return pd.DataFrame(columns=columns)
    per_mix = data.groupby(["language", "mix"], as_index=False)[spec.outcome].mean()
    by_language = list(per_mix.groupby("language"))
    intervals = _mean_intervals([[group[spec.outcome].to_numpy()] for _, group in by_language],
                                spec.level, spec.seed)
    counts = data["language"].value_counts()
    rows = [{"language": language, "mean": mean, "ci_low": low, "ci_high": high,
             "n": int(counts[language])}
            for (language, _), (mean, low, high) in zip(by_language, intervals, strict=True)]
    return pd.DataFrame(rows, columns=columns).sort_values("mean", ignore_index=True)


def interaction_table(data: pd.DataFrame, spec, varied: str | None = None) -> pd.DataFrame:
    """Mean outcome per design cell (number of tasks x total examples), with a t interval over the
    mixes in the cell (NaN for a single mix).

    In a grid that varies one factor (``varied`` = ``"diversity"`` or ``"volume"``) the cells
    are the levels of that factor alone, and the other column holds the median over the cell's
    mixes: a fixed budget split over 3 tasks is 39,999 examples, not a level of its own.
    """
    per_mix = data.groupby(["mix", "n_tasks", "examples"], as_index=False)[spec.outcome].mean()
    keys = {"diversity": ["n_tasks"], "volume": ["examples"]}.get(varied or "",
                                                                 ["n_tasks", "examples"])
    # One aggregation over the cells: a loop over the 10,000 cells of a grid whose volumes are
    # all different took 12 s.
    cells = per_mix.groupby(keys).agg(n_tasks=("n_tasks", "median"), examples=("examples", "median"),
                                      mean=(spec.outcome, "mean"), sd=(spec.outcome, "std"),
                                      n=(spec.outcome, "size"))
    n = cells["n"].to_numpy()
    with np.errstate(invalid="ignore"):  # one mix, or mixes all alike: no interval (NaN)
        low, high = stats.t.interval(spec.level, n - 1, loc=cells["mean"].to_numpy(),
                                     scale=cells["sd"].to_numpy() / np.sqrt(n))
    single = n < 2
    return pd.DataFrame({"n_tasks": cells["n_tasks"].to_numpy(dtype=float),
                         "volume_examples": cells["examples"].to_numpy().astype(int),
                         "mean": cells["mean"].to_numpy(dtype=float),
                         "ci_low": np.where(single, np.nan, low),
                         "ci_high": np.where(single, np.nan, high), "n": n.astype(int)},
                        columns=["n_tasks", "volume_examples", "mean", "ci_low", "ci_high", "n"])


def _subject_means(data: pd.DataFrame, outcome: str) -> tuple[pd.DataFrame, str]:
    """Outcome averaged over seeds per (subject, mix); subjects are target-language pairs for
    row-level outcomes and targets for run-level ones. Subjects missing a mix are dropped, as a
    repeated-measures design needs every subject under every mix."""
    subject = "target_language" if "target_language" in data else "target_task"
    means = data[data["mix"] != BASELINE_MIX].groupby([subject, "mix"], as_index=False)[outcome].mean()
    complete = means.groupby(subject)["mix"].transform("nunique") == means["mix"].nunique()
    return means[complete], subject


#: Past this many mixes the pairwise tests (n (n - 1) / 2 of them, 630 at 36 mixes) stop being
#: readable or useful; the report ranks the mixes with intervals instead (:func:`mix_ranking`).
MAX_PAIRWISE_MIXES = 36


@dataclass(frozen=True)
class SkippedTest:
    """A descriptive test left out of an analysis, and why: the design cannot support it."""

    test: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """``{"test": ..., "reason": ...}``, as ``estimates.json`` lists it."""
        return {"test": self.test, "reason": self.reason}


@dataclass(frozen=True)
class RmAnova:
    """A repeated-measures ANOVA of the outcome across mixes (pingouin ``rm_anova``)."""

    subjects: str
    n_subjects: int
    F: float
    ddof1: float
    ddof2: float
    p_unc: float
    p_gg: float
    ng2: float
    eps: float

    def to_dict(self) -> dict:
        """The ``descriptives.rm_anova`` object of ``estimates.json``."""
        return asdict(self)


@dataclass(frozen=True)
class MixComparisons:
    """The tests comparing mixes over subjects, and those the design left out.

    ``rm_anova`` is ``None`` and ``pairwise`` empty when their test is in ``skipped``.
    """

    rm_anova: RmAnova | None
    pairwise: pd.DataFrame
    skipped: tuple[SkippedTest, ...]

    def to_dict(self) -> dict:
        """The ``descriptives`` object of ``estimates.json``: ``rm_anova`` and ``skipped``."""
        return {"rm_anova": self.rm_anova.to_dict() if self.rm_anova else None,
                "skipped": [test.to_dict() for test in self.skipped]}


def compare_mixes(data: pd.DataFrame, outcome: str) -> MixComparisons:
    """The repeated-measures ANOVA and the pairwise tests of the mixes, each left out with its
    reason when the design cannot support it (too few subjects or mixes, a singular sphericity
    test, statistics that are not numbers), so that no design stops the analysis."""
    anova = rm_anova(data, outcome)
    pairwise: pd.DataFrame | SkippedTest
    if data.loc[data["mix"] != BASELINE_MIX, "mix"].nunique() > MAX_PAIRWISE_MIXES:
        pairwise = SkippedTest("pairwise_mixes", f"more than {MAX_PAIRWISE_MIXES} mixes: the "
                                                 "mixes are ranked with intervals instead")
    else:
        pairwise = pairwise_tests(data, outcome)
    skipped = tuple(test for test in (anova, pairwise) if isinstance(test, SkippedTest))
    return MixComparisons(
        rm_anova=anova if isinstance(anova, RmAnova) else None,
        pairwise=pairwise if isinstance(pairwise, pd.DataFrame) else
        pd.DataFrame(columns=PAIRWISE_COLUMNS),
        skipped=skipped)


def _too_few(means: pd.DataFrame, subject: str, test: str) -> SkippedTest | None:
    """Why ``test`` cannot run on these subject means: fewer than two complete subjects or
    mixes; ``None`` when it can."""
    n_subjects, n_mixes = means[subject].nunique(), means["mix"].nunique()
    if n_subjects < 2 or n_mixes < 2:
        return SkippedTest(test, f"needs at least 2 mixes and 2 subjects ({subject}) observed "
                                 f"under every mix; the design has {n_mixes} mix(es) and "
                                 f"{n_subjects} such subject(s)")
    return None


def rm_anova(data: pd.DataFrame, outcome: str) -> RmAnova | SkippedTest:
    """Repeated-measures ANOVA of the outcome across mixes, Greenhouse-Geisser corrected
    (pingouin ``rm_anova``; Greenhouse & Geisser 1959), or why it was left out.

    Mauchly's sphericity test (Mauchly 1940), which pingouin computes with it, needs the
    covariance of the k - 1 mix contrasts to be of full rank: at least k subjects for k mixes.
    With fewer it is singular (pingouin divides by zero on 2 subjects and 3 mixes), and the
    Greenhouse-Geisser epsilon estimated from it says nothing: the test is left out.
    """
    means, subject = _subject_means(data, outcome)
    skipped = _too_few(means, subject, "rm_anova")
    if skipped:
        return skipped
    n_subjects, n_mixes = int(means[subject].nunique()), int(means["mix"].nunique())
    if n_mixes > 2 and n_subjects < n_mixes:
        return SkippedTest("rm_anova", f"the sphericity test and its correction need at least as "
                                       f"many subjects ({subject}) as mixes: {n_subjects} "
                                       f"subject(s), {n_mixes} mixes")
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", category=RuntimeWarning)
        row = pg.rm_anova(data=means, dv=outcome, within="mix", subject=subject,
                          correction=True).iloc[0]
    values = {key: float(row[key]) if key in row else np.nan
              for key in ("F", "ddof1", "ddof2", "p_unc", "p_GG_corr", "ng2", "eps")}
    if n_mixes == 2:  # one contrast: sphericity holds, and pingouin corrects nothing
        values["p_GG_corr"] = values["p_unc"]
    undefined = [key for key, value in values.items() if not np.isfinite(value)]
    if undefined:
        return SkippedTest("rm_anova", f"{', '.join(undefined)} not a number: the outcome does "
                                       "not vary within subjects across mixes")
    return RmAnova(subjects=subject, n_subjects=n_subjects, F=values["F"],
                   ddof1=values["ddof1"], ddof2=values["ddof2"], p_unc=values["p_unc"],
                   p_gg=values["p_GG_corr"], ng2=values["ng2"], eps=values["eps"])


PAIRWISE_COLUMNS = ["Contrast", "A", "B", "Paired", "Parametric", "T", "dof", "alternative",
                    "p_unc", "p_corr", "p_adjust", "hedges"]


def pairwise_tests(data: pd.DataFrame, outcome: str) -> pd.DataFrame | SkippedTest:
    """Paired t-tests between every two mixes over subjects, Holm-corrected (Holm 1979), with
    Hedges' g: the numbers and columns of pingouin's ``pairwise_tests(within="mix",
    padjust="holm", effsize="hedges")`` without its Bayes factors, computed for all pairs at once
    (a 36-mix grid has 630 pairs, and pingouin's per-pair Bayes factor integrals took seconds).

    Hedges' g is pingouin's paired definition: the mean difference over the average of the two
    mixes' variances (not the SD of the differences), times 1 - 3 / (4 (2 n) - 9).

    Left out (a :class:`SkippedTest`) with fewer than two complete subjects or mixes, or when a
    pair's differences are the same for every subject (no t statistic): the Holm correction
    needs every p-value of the family.
    """
    means, subject = _subject_means(data, outcome)
    skipped = _too_few(means, subject, "pairwise_mixes")
    if skipped:
        return skipped
    wide = means.pivot(index=subject, columns="mix", values=outcome).sort_index(axis=1)
    values = wide.to_numpy(dtype=float)
    n = values.shape[0]
    first, second = np.triu_indices(values.shape[1], 1)
    difference = values[:, first] - values[:, second]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_value = difference.mean(axis=0) / (difference.std(axis=0, ddof=1) / np.sqrt(n))
        pooled = np.sqrt((values.var(axis=0, ddof=1)[first]
                          + values.var(axis=0, ddof=1)[second]) / 2)
        hedges = difference.mean(axis=0) / pooled * (1 - 3 / (4 * 2 * n - 9))
    undefined = ~np.isfinite(t_value)
    if undefined.any():
        pairs = [f"{wide.columns[a]} - {wide.columns[b]}"
                 for a, b in zip(first[undefined], second[undefined], strict=True)]
        shown = ", ".join(pairs[:3]) + (f" and {len(pairs) - 3} more" if len(pairs) > 3 else "")
        return SkippedTest("pairwise_mixes", f"no t statistic for {shown}: the difference is "
                                             "the same for every subject")
    p_value = 2 * stats.t.sf(np.abs(t_value), n - 1)
    return pd.DataFrame({
        "Contrast": "mix", "A": wide.columns[first], "B": wide.columns[second], "Paired": True,
        "Parametric": True, "T": t_value, "dof": float(n - 1), "alternative": "two-sided",
        "p_unc": p_value, "p_corr": holm(p_value), "p_adjust": "holm", "hedges": hedges,
    }, columns=PAIRWISE_COLUMNS)


def mix_ranking(data: pd.DataFrame, outcome: str, level: float) -> pd.DataFrame:
    """Every mix ranked by its mean outcome, with a t interval over its subjects.

    Subjects are target-language pairs for row-level outcomes and targets for run-level ones,
    averaged over seeds first (as for the pairwise tests; :func:`_subject_means` without
    dropping incomplete subjects). The interval of a mix is mean +/- t_{n-1} x SE over its
    subjects: a description of each mix, not a comparison between mixes (the model's effects
    are that).

    Returns
    -------
    pandas.DataFrame
        ``rank, mix, n_tasks, examples, mean, ci_low, ci_high, n_subjects``, best mix first
        (rank 1), ties broken by name.
    """
    subject = "target_language" if "target_language" in data else "target_task"
    means = data[data["mix"] != BASELINE_MIX].groupby([subject, "mix"], as_index=False)[outcome].mean()
    per_mix = means.groupby("mix")[outcome].agg(["mean", "sem", "count"])
    design = data.drop_duplicates("mix").set_index("mix")[["n_tasks", "examples"]]
    with np.errstate(invalid="ignore"):
        half = stats.t.ppf(0.5 + level / 2, per_mix["count"] - 1) * per_mix["sem"]
    table = pd.DataFrame({"mix": per_mix.index, "mean": per_mix["mean"].to_numpy(),
                          "ci_low": (per_mix["mean"] - half).to_numpy(),
                          "ci_high": (per_mix["mean"] + half).to_numpy(),
                          "n_subjects": per_mix["count"].to_numpy(dtype=int)})
    table = table.join(design, on="mix")
    table = table.sort_values(["mean", "mix"], ascending=[False, True], ignore_index=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table[["rank", "mix", "n_tasks", "examples", "mean", "ci_low", "ci_high", "n_subjects"]]


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
