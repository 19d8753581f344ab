"""The filters between loaded scores and the model's rows, each counting what it removes.

Every filter (other models, splits, metrics, English, rows without a baseline, runs without an
outcome, failed runs) goes through a :class:`FilterLog`, which records per target and reason
how many rows and runs it removed: the terminal, the report and ``estimates.json`` list them,
so nothing leaves the analysis silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from transferstats.loading import LoadedResults
from transferstats.problems import Problem
from transferstats.results import BASELINE_MIX
from transferstats.tasks import get_task


@dataclass(frozen=True)
class Dropped:
    """Rows (and runs) that one filter removed from one target."""

    reason: str
    target: str
    rows: int
    runs: int
    detail: str


@dataclass(frozen=True)
class TargetSplit:
    """The split one target is analysed on, the splits its runs hold, and why that one."""

    target: str
    split: str
    available: tuple[str, ...]
    reason: str


class FilterLog:
    """Rows and runs removed by each filter, per target."""

    def __init__(self) -> None:
        self._dropped: list[Dropped] = []

    @property
    def dropped(self) -> tuple[Dropped, ...]:
        return tuple(self._dropped)

    def record(self, removed: pd.DataFrame, reason: str,
               detail: Callable[[pd.DataFrame], str]) -> None:
        """Count ``removed`` rows per target under ``reason``."""
        for target, rows in removed.groupby("target_task", sort=True):
            self._dropped.append(Dropped(reason, str(target), int(len(rows)),
                                         int(rows["run_id"].nunique()), detail(rows)))

    def keep(self, frame: pd.DataFrame, mask: pd.Series, reason: str,
             detail: Callable[[pd.DataFrame], str]) -> pd.DataFrame:
        """``frame[mask]``, the other rows recorded under ``reason``."""
        self.record(frame[~mask], reason, detail)
        return frame[mask]

    def after_outcome(self, scores: pd.DataFrame, data: pd.DataFrame, outcome: str) -> None:
        """Record the trained rows (or runs) that did not become model rows: rows without a
        baseline to improve on, runs whose run-level outcome is missing."""
        trained = scores[scores["mix"] != BASELINE_MIX]
        if "score_row" in data.columns:
            lost = trained[~trained["score_row"].isin(data["score_row"])]
            self.record(lost, "no baseline",
                        lambda rows: "no baseline score for language(s) "
                                     + ", ".join(sorted(rows["language"].unique())))
        else:
            lost = trained[~trained["run_id"].isin(data["run_id"])]
            self.record(lost, "no outcome", lambda rows: f"{outcome} cannot be computed for "
                                                         f"{rows['run_id'].nunique()} run(s)")

    def summary_suffix(self) -> str:
        """``" (left out: 120 rows of split, 40 of English)"``, or ``""``."""
        totals: dict[str, int] = {}
        for entry in self._dropped:
            totals[entry.reason] = totals.get(entry.reason, 0) + entry.rows
        if not totals:
            return ""
        return " (left out: " + ", ".join(f"{n} rows by {reason}" for reason, n in totals.items()) + ")"


def select_splits(scores: pd.DataFrame, splits: Sequence[TargetSplit], log: FilterLog
                  ) -> pd.DataFrame:
    """Keep each target's rows on its split."""
    chosen = {s.target: s.split for s in splits}
    mask = scores["split"] == scores["target_task"].map(chosen)
    return log.keep(scores, mask, "split",
                    lambda rows: "split " + ", ".join(sorted(rows["split"].unique()))
                                 + f" (analysed: {chosen.get(str(rows['target_task'].iloc[0]))})")


def select_metric(scores: pd.DataFrame, metric: str | None, log: FilterLog,
                  problems: list[Problem]) -> pd.DataFrame:
    """Keep one metric per target: its headline metric (``metric=None``) or the one named.

    A target that lacks the named metric is left out whole, with a warning naming it.
    """
    wanted = {str(t): metric or get_task(str(t)).metric for t in scores["target_task"].unique()}
    mask = scores["metric"] == scores["target_task"].map(wanted)
    for target, group in scores.groupby("target_task", sort=True):
        if not mask[group.index].any():
            problems.append(Problem(str(target), "metric", "warning",
                                    f"no {wanted[str(target)]!r} scores for target {target} (it "
                                    f"has {', '.join(sorted(group['metric'].unique()))}); target "
                                    "left out"))
    return log.keep(scores, mask, "metric",
                    lambda rows: "metric " + ", ".join(sorted(rows["metric"].unique()))
                                 + f" (analysed: {wanted[str(rows['target_task'].iloc[0])]})")


def failed_runs(loaded: LoadedResults, model: str) -> tuple[Dropped, ...]:
    """The analysed model's failed runs, per target (they hold no scores)."""
    runs = loaded.runs
    failed = runs[(runs["status"] == "failed") & (runs["model"] == model)]
    return tuple(Dropped("failed run", str(target), 0, int(len(group)),
                         f"{len(group)} run(s) failed (listed in the problems)")
                 for target, group in failed.groupby("target_task", sort=True))
