"""What an analysis produces: everything the report needs, in tidy tables.

It has a few views for people (``summary()``, ``effects``, the notebook display) and
``write_report``.

:func:`transferstats.analyze` builds it; :mod:`transferstats.report` renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from transferstats.analysis.spec import AnalysisSpec
from transferstats.tasks import task_scope

#: The comparison the toolkit exists for: the diversity effect minus the volume effect.
CONTRAST = "diversity - volume"
#: Columns of :attr:`AnalysisResult.effects`, in order.
EFFECT_COLUMNS = ("term", "estimate", "se", "ci_low", "ci_high", "p_value", "unit", "bootstrap_se",
                  "percentile_ci_low", "percentile_ci_high", "p_value_wald", "chi2")
PROBLEM_COLUMNS = ("file", "location", "severity", "message")
#: Columns of :attr:`AnalysisResult.identity_table`.
IDENTITY_COLUMNS = ("task", "estimate", "ci_low", "ci_high", "bootstrap_se", "relative",
                    "relative_ci_low", "relative_ci_high", "n_mixes", "mean_share",
                    "resamples_without", "reference")
#: Columns of :attr:`AnalysisResult.per_target_table`.
PER_TARGET_COLUMNS = ("target", "term", "estimate", "ci_low", "ci_high", "bootstrap_se",
                      "percentile_ci_low", "percentile_ci_high")
#: Columns of :attr:`AnalysisResult.mix_ranking`.
RANKING_COLUMNS = ("rank", "mix", "n_tasks", "examples", "mean", "ci_low", "ci_high",
                   "n_subjects")


@dataclass
class AnalysisResult:
    """The outcome of one analysis.

    Attributes
    ----------
    estimates : dict
        The ``estimates.json`` object (docs/statistics.md describes every key): ``outcome``,
        ``n_rows``, ``n_runs``, ``effects`` (list of ``{term, estimate, ci_low, ci_high,
        p_value, unit, ...}``), ``comparison``, ``verdict``, ``verdict_reason``,
        ``minimum_detectable_difference``, ``bootstrap``, ``model`` (convergence, variance
        components, boundary flags), ``design`` (diversity-volume correlation, VIF),
        ``settings``, ``warnings``, ``source``; and ``identity`` (whether the primary model has
        task identity effects, why, and one ``tasks`` entry per task), ``plain`` (the plain
        model's ``effects``, ``comparison`` and ``verdict``, and whether it ``disagrees``),
        ``per_target`` (one ``{target, term, estimate, ci_low, ci_high}`` per target and term),
        ``heterogeneity`` (the test of per-target effects) and ``covariates``.
    model_data : pandas.DataFrame
        One row per observation that entered the model: ``run_id, model, mix, source_kind,
        target_task, language, seed, diversity, volume, n_tasks, n_formats, effective_tasks,
        examples`` (``n_formats`` is NaN for language mixes), the
        outcome column named by ``estimates["outcome"]``, ``fitted`` and ``residual``.
        ``diversity`` and ``volume`` are log2 values centred at the design centre; covariates are
        centred at their mean; with task identity, ``share[<task>]`` holds each task's share.
    bootstrap_draws : pandas.DataFrame
        One row per bootstrap resample of the primary model, one column per term (``diversity``,
        ``volume``, maybe ``diversity:volume``, covariates, task shares), one for the contrast
        ``diversity - volume`` and, with task identity, ``identity[<task>]`` and
        ``identity[<task>] - mean``. With task identity effects the resamples are parametric
        (:mod:`transferstats.analysis.parametric`), otherwise crossed cluster resamples.
    improvement_table : pandas.DataFrame
        The Phang et al. (2020) main-table layout in long form: ``mix, target_task, mean, ci_low,
        ci_high, n_runs``; ``target_task == "average"`` holds each mix's average over targets.
        Rows are in display order (mixes sorted by diversity then volume).
    language_table : pandas.DataFrame
        The outcome per language averaged over mixes and targets: ``language, mean, ci_low,
        ci_high, n``; sorted by mean.
    pairwise : pandas.DataFrame
        Holm-corrected pairwise comparisons of mixes (pingouin ``pairwise_tests`` output, tidy);
        empty past ``MAX_PAIRWISE_MIXES`` (36) mixes, where ``mix_ranking`` stands in.
    interaction_table : pandas.DataFrame
        Mean outcome per (``n_tasks``, ``volume_examples``) design cell: ``n_tasks,
        volume_examples, mean, ci_low, ci_high, n``.
    problems : pandas.DataFrame
        Every warning met while loading and analysing (``file, location, severity, message``):
        runs left out, resamples that failed, terms dropped. Errors never reach a result: they
        raise :class:`~transferstats.problems.ResultsError`.
    settings : AnalysisSpec
        The settings the analysis ran with (tasks given for the call included).
    identity_table : pandas.DataFrame
        One row per intermediate task when the primary model has identity effects (else empty):
        ``task``, ``estimate`` with ``ci_low, ci_high`` (the outcome of a mix of that task alone
        at the design's centre volume), ``relative`` with ``relative_ci_low, relative_ci_high``
        (its difference from the mean over tasks), ``n_mixes``, ``mean_share`` (its mean share
        in the mixes that hold it), ``resamples_without`` (resamples that gave no estimate)
        and ``reference``.
    per_target_table : pandas.DataFrame
        One row per target and term (``diversity``, ``volume``, ``diversity - volume``; the
        varied factor alone in a grid that varies one) of the per-target model: ``target, term,
        estimate, ci_low, ci_high`` and the bootstrap details.
    mix_ranking : pandas.DataFrame
        Every mix ranked by its mean outcome, best first, with a t interval over its
        target-language pairs: ``rank, mix, n_tasks, examples, mean, ci_low, ci_high,
        n_subjects`` (:func:`transferstats.analysis.descriptives.mix_ranking`).
    """

    estimates: dict
    model_data: pd.DataFrame
    bootstrap_draws: pd.DataFrame
    improvement_table: pd.DataFrame
    language_table: pd.DataFrame
    pairwise: pd.DataFrame
    interaction_table: pd.DataFrame
    problems: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PROBLEM_COLUMNS))
    settings: AnalysisSpec = field(default_factory=AnalysisSpec)
    identity_table: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=IDENTITY_COLUMNS))
    per_target_table: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=PER_TARGET_COLUMNS))
    mix_ranking: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=RANKING_COLUMNS))

    @property
    def verdict(self) -> str:
        """The verdict (docs/statistics.md).

        ``supported``, ``refuted``, ``inconclusive`` or ``confounded`` when the grid varies
        diversity and volume; ``diversity_only`` or ``volume_only`` when it varies one of them.
        """
        return self.estimates["verdict"]

    @property
    def verdict_reason(self) -> str:
        """One sentence saying why the verdict is what it is."""
        return self.estimates["verdict_reason"]

    @property
    def design(self) -> dict:
        """How well the grid separates diversity from volume.

        Keys: ``n_mixes``, ``varies`` (``both``, ``diversity``, ``volume`` or ``neither``),
        ``single_factor`` (the factor a grid that varies one of them varies, else None) and
        ``fixed_at`` (the other's fixed level), ``correlation`` (Pearson r of log2 diversity and
        log2 volume across mixes; None unless both vary), ``vif``, ``confounded``, ``reason``,
        ``diversity_levels``, ``volume_levels``, ``centre_log2``.
        """
        return self.estimates["design"]

    @property
    def effects(self) -> pd.DataFrame:
        """One row per fixed effect, then the contrast ``diversity - volume``.

        The contrast row is left out where it was not estimated (a grid that varies one factor,
        a confounded one).

        Columns: ``term, estimate, se, ci_low, ci_high, p_value, unit`` and the details
        ``bootstrap_se, percentile_ci_low, percentile_ci_high, p_value_wald, chi2``. ``se`` is the
        model's (Wald) standard error for a term and the bootstrap standard error for the
        contrast; ``ci_low``/``ci_high`` are the bootstrap interval (BCa or percentile, as
        ``settings.interval`` says); ``p_value`` is the ML likelihood-ratio test of the term
        (none for the contrast: its evidence is its interval). Missing values are NaN.
        """
        return _effect_frame(self.estimates["effects"], self.estimates["comparison"])

    @property
    def plain_effects(self) -> pd.DataFrame:
        """:attr:`effects` of the plain model (no task identity effects).

        The same as :attr:`effects` when the primary model is the plain one
        (``estimates["identity"]["used"]`` false).
        """
        plain = self.estimates.get("plain") or {}
        if not plain:
            return self.effects
        return _effect_frame(plain["effects"], plain["comparison"])

    def effect(self, term: str) -> dict:
        """Return the ``estimates["effects"]`` entry of one term (``KeyError`` if not in the model)."""
        for effect in self.estimates["effects"]:
            if effect["term"] == term:
                return effect
        raise KeyError(term)

    def summary(self) -> str:
        """Return the terminal summary as text: effects with intervals, the contrast, the verdict."""
        from transferstats.report.terminal import summary_text

        return summary_text(self)

    def write_report(self, out_dir: str | Path, *, title: str | None = None) -> dict[str, Path]:
        """Write the report ``transferstats analyze`` writes.

        ``out_dir`` gets ``report.md``, ``report.html``, ``figures/``, ``tables/`` and
        ``estimates.json``; it is replaced as a whole once the new report is complete.

        Parameters
        ----------
        out_dir : str or pathlib.Path
            The report folder.
        title : str, optional
            The report's title; by default the question the toolkit answers.

        Returns
        -------
        dict of str to pathlib.Path
            Each written file, keyed by its path relative to ``out_dir``.
        """
        from transferstats.report.render import write_report

        with task_scope(self.settings.tasks):
            return write_report(self, Path(out_dir), title=title)

    def _repr_html_(self) -> str:
        from transferstats.report.notebook import result_html

        with task_scope(self.settings.tasks):
            return result_html(self)

    def __repr__(self) -> str:
        estimates = self.estimates
        return (f"<AnalysisResult {estimates['outcome']}: verdict {self.verdict!r}, "
                f"{estimates['n_runs']} runs, {estimates['n_mixes']} mixes>")


def _effect_frame(effects: list[dict], comparison: dict) -> pd.DataFrame:
    contrast = {"term": comparison["contrast"], "se": comparison.get("bootstrap_se"),
                "unit": "points per doubling (diversity effect minus volume effect)"}
    contrast |= {key: comparison.get(key) for key in EFFECT_COLUMNS if key not in contrast}
    rows = [*effects, contrast] if comparison.get("estimate") is not None else list(effects)
    frame = pd.DataFrame([{key: row.get(key) for key in EFFECT_COLUMNS} for row in rows])
    numeric = [c for c in EFFECT_COLUMNS if c not in ("term", "unit")]
    return frame.astype(dict.fromkeys(numeric, float))
