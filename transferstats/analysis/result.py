"""What an analysis produces: everything the report needs, in tidy tables. Plain data, no logic.

:func:`transferstats.analysis.pipeline.analyze` builds it; :mod:`transferstats.report` renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class AnalysisResult:
    """The outcome of one analysis.

    Attributes
    ----------
    estimates:
        The ``estimates.json`` object (see DESIGN.md): ``outcome``, ``n_rows``, ``n_runs``,
        ``effects`` (list of ``{term, estimate, ci_low, ci_high, p_value, unit, ...}``),
        ``comparison``, ``verdict``, ``verdict_reason``, ``minimum_detectable_difference``,
        ``bootstrap``, ``model`` (convergence, variance components, boundary flags),
        ``design`` (diversity-volume correlation, VIF), ``settings``, ``warnings``, ``source``.
    model_data:
        One row per observation that entered the model: ``run_id, model, mix, target_task,
        language, seed, diversity, volume, n_tasks, n_formats, effective_tasks, examples``, the
        outcome column named by ``estimates["outcome"]``, ``fitted`` and ``residual``.
    bootstrap_draws:
        One row per bootstrap resample, one column per term (``diversity``, ``volume``, maybe
        ``diversity:volume``) and one for the contrast ``diversity - volume``.
    improvement_table:
        The Phang et al. (2020) main-table layout in long form: ``mix, target_task, mean, ci_low,
        ci_high, n_runs``; ``target_task == "average"`` holds each mix's average over targets.
        Rows are in display order (baseline-free mixes, sorted by diversity then volume).
    language_table:
        Improvement per language averaged over mixes and targets: ``language, mean, ci_low,
        ci_high, n``; sorted by mean.
    pairwise:
        Holm-corrected pairwise comparisons of mixes (pingouin ``pairwise_tests`` output, tidy).
    interaction_table:
        Mean outcome per (``n_tasks``, ``volume_examples``) design cell: ``n_tasks,
        volume_examples, mean, ci_low, ci_high, n``.
    run_problems:
        Tidy table of problems met while loading (``file, location, severity, message``).
    """

    estimates: dict
    model_data: pd.DataFrame
    bootstrap_draws: pd.DataFrame
    improvement_table: pd.DataFrame
    language_table: pd.DataFrame
    pairwise: pd.DataFrame
    interaction_table: pd.DataFrame
    run_problems: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["file", "location", "severity", "message"]))

    @property
    def verdict(self) -> str:
        return self.estimates["verdict"]

    def effect(self, term: str) -> dict:
        for effect in self.estimates["effects"]:
            if effect["term"] == term:
                return effect
        raise KeyError(term)
