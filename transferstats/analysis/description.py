"""What is analysed, described once from the data and the settings, before any fit.

:func:`describe` turns loaded results and an :class:`~transferstats.analysis.spec.AnalysisSpec`
into a :class:`Description` -- the model analysed and the others in the data, whether the mixes
hold tasks or languages, which of diversity and volume vary, the outcome and why, which
languages are kept and why, the split of each target, whether there are baselines, the targets,
mixes, replicates and covariates -- and into the rows the model is fitted on. Every row a filter
removes is counted, per target and reason (:class:`Dropped`), so nothing leaves silently.

The model terms (:mod:`transferstats.analysis.model`), the bootstraps, ``power``, the report, the
terminal and ``estimates.json`` all read the description; none of them re-derives it. What a fit
decides later lives in the typed results (:mod:`transferstats.analysis.result`), not here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from transferstats.analysis import filters
from transferstats.analysis.covariates import (
    Covariate,
    add_covariate_columns,
    centre_covariates,
    check_run_covariates,
)
from transferstats.analysis.derive import (
    AUTO_OUTCOME,
    LOWER_IS_BETTER,
    NO_BASELINE_CHOICE,
    OUTCOMES,
    ROW_OUTCOMES,
    TASK_ONLY_MEASURES,
    diversity_description,
    mix_table,
    model_frame,
)
from transferstats.analysis.design import design_check
from transferstats.analysis.filters import Dropped, TargetSplit
from transferstats.analysis.members import MemberWords, member_words, source_kind
from transferstats.analysis.spec import AnalysisSpec
from transferstats.loading import LoadedResults
from transferstats.problems import Problem, ResultsError
from transferstats.results import BASELINE_MIX, SIMULATION_FILE

#: The split a target whose runs hold several is analysed on, unless told otherwise.
DEFAULT_SPLIT = "test"


@dataclass(frozen=True)
class LanguageRule:
    """Whether English rows are modelled, and why."""

    english_kept: bool
    english_evaluated: bool
    reason: str


@dataclass(frozen=True)
class DesignCheck:
    """How the mixes vary diversity and volume (:func:`transferstats.analysis.design.design_check`).

    ``varies`` is ``both``, ``diversity``, ``volume`` or ``neither``; ``single_factor`` the one
    factor a grid varies on purpose (else None) and ``fixed_at`` the other's level, in words.
    """

    n_mixes: int
    varies: str
    single_factor: str | None
    fixed_at: str | None
    correlation: float | None
    vif: float | None
    confounded: bool
    reason: str
    max_correlation: float
    diversity_levels: tuple[float, ...]
    volume_levels: tuple[int, ...]
    centre_log2: dict[str, float]


@dataclass(frozen=True)
class Source:
    """Where the results came from; a simulated grid carries its truth."""

    path: str
    simulated: bool
    truth: dict | None = None


@dataclass(frozen=True)
class Description:
    """One analysis's design, in the data's own words. Built by :func:`describe`."""

    source: Source
    model: str
    models: tuple[str, ...]
    kind: str
    outcome: str
    outcome_reason: str
    diversity: str
    languages: tuple[str, ...]
    language_rule: LanguageRule
    splits: tuple[TargetSplit, ...]
    has_baselines: bool
    targets: tuple[str, ...]
    mixes: tuple[str, ...]
    seeds_per_cell: tuple[int, int]
    replicated_mixes: tuple[str, ...]
    covariates: tuple[Covariate, ...]
    check: DesignCheck
    dropped: tuple[Dropped, ...]
    runs_complete: int
    runs_failed: int
    n_rows: int
    n_runs: int

    @property
    def words(self) -> MemberWords:
        """The nouns of the mixes' members (tasks or languages)."""
        return member_words(self.kind)

    @property
    def other_models(self) -> tuple[str, ...]:
        return tuple(m for m in self.models if m != self.model)

    @property
    def varies(self) -> str:
        return self.check.varies

    @property
    def single_factor(self) -> str | None:
        return self.check.single_factor

    @property
    def compared(self) -> bool:
        """Whether diversity - volume is a question this grid asks (both vary)."""
        return self.check.varies == "both"

    @property
    def question(self) -> str:
        """``"diversity - volume"`` when both vary, else the varied factor (or ``"none"``)."""
        if self.compared:
            return "diversity - volume"
        return self.check.single_factor or "none"

    @property
    def direction(self) -> float:
        """+1 when higher outcomes are better, -1 when lower are (``transfer_gap``)."""
        return -1.0 if self.outcome in LOWER_IS_BETTER else 1.0

    @property
    def outcome_description(self) -> str:
        return OUTCOMES[self.outcome]

    @property
    def diversity_description(self) -> str:
        return diversity_description(self.diversity, self.kind)

    @property
    def row_outcome(self) -> bool:
        return self.outcome in ROW_OUTCOMES

    def dropped_by_reason(self) -> dict[str, dict[str, int]]:
        """Rows removed, ``{reason: {target: rows}}``."""
        table: dict[str, dict[str, int]] = {}
        for entry in self.dropped:
            table.setdefault(entry.reason, {})[entry.target] = entry.rows
        return table

    def to_dict(self) -> dict:
        """The description as plain JSON values (``estimates.json``'s ``description``)."""
        values = asdict(self)
        values |= {"words": asdict(self.words), "question": self.question,
                   "other_models": list(self.other_models),
                   "outcome_description": self.outcome_description,
                   "diversity_description": self.diversity_description}
        return values


class Described(NamedTuple):
    """:func:`describe`'s output: the description, the model rows (diversity and volume log2
    and centred, covariates centred), the score rows kept and the table of mixes."""

    description: Description
    data: pd.DataFrame
    scores: pd.DataFrame
    mixes: pd.DataFrame
    problems: list[Problem]


def describe(loaded: LoadedResults, spec: AnalysisSpec) -> Described:
    """Describe what ``spec`` analyses of ``loaded``; raise :class:`ResultsError` (every reason
    listed) when it cannot be analysed. Warnings are in the output's ``problems``."""
    if loaded.errors:
        raise ResultsError(loaded.problems)
    problems: list[Problem] = list(loaded.problems)
    log = filters.FilterLog()
    scores = loaded.scores.assign(score_row=np.arange(len(loaded.scores)))
    models = tuple(sorted(str(m) for m in scores["model"].unique()))
    model = _choose_model(models, spec, loaded.source)
    scores = log.keep(scores, scores["model"] == model, "other models",
                      lambda rows: f"model {', '.join(sorted(rows['model'].unique()))}")
    kind = source_kind(scores)
    _check_measure(kind, spec, loaded.source, problems)
    outcome, outcome_reason = _resolve_outcome(scores, spec, loaded.source, problems)
    scores = add_covariate_columns(scores, loaded, spec.covariates, kind)
    splits = resolve_splits(scores, spec, loaded.source, problems)
    scores = filters.select_splits(scores, splits, log)
    scores = filters.select_metric(scores, spec.headline_metric, log, problems)
    rule = language_rule(scores, kind, spec.include_english)
    if outcome in ROW_OUTCOMES and not rule.english_kept:
        scores = log.keep(scores, scores["language"] != "en", "English",
                          lambda rows: rule.reason)
    resolved = replace(spec, outcome=outcome, include_english=rule.english_kept)
    data = _model_rows(scores, resolved, log, loaded, problems)
    data, covariates = centre_covariates(data, loaded, spec.covariates, kind)
    mixes = mix_table(scores)
    mixes = mixes[mixes["mix"].isin(data["mix"].unique())]
    check, data = _check_and_centre(mixes, data, resolved, kind)
    description = Description(
        source=_source(loaded.source), model=model, models=models, kind=kind, outcome=outcome,
        outcome_reason=outcome_reason, diversity=spec.diversity,
        languages=tuple(sorted(data["language"].unique())) if "language" in data else (),
        language_rule=rule, splits=splits,
        has_baselines=bool((scores["mix"] == BASELINE_MIX).any()),
        targets=tuple(sorted(data["target_task"].unique())),
        mixes=tuple(sorted(data["mix"].unique())), seeds_per_cell=_seeds_per_cell(data),
        replicated_mixes=_replicated_mixes(data), covariates=covariates, check=check,
        dropped=log.dropped + filters.failed_runs(loaded, model),
        runs_complete=int(((loaded.runs["status"] == "complete")
                           & (loaded.runs["model"] == model)).sum()),
        runs_failed=int(((loaded.runs["status"] == "failed")
                         & (loaded.runs["model"] == model)).sum()),
        n_rows=int(len(data)), n_runs=int(data["run_id"].nunique()))
    return Described(description, data, scores, mixes, problems)


def _choose_model(models: tuple[str, ...], spec: AnalysisSpec, source: str) -> str:
    """The model analysed: the one named, or the only one."""
    if spec.model:
        if spec.model not in models:
            raise ResultsError([Problem(source, "model", "error",
                                        f"model {spec.model!r} not in the results (they hold "
                                        f"{', '.join(models)})")])
        return spec.model
    if len(models) > 1:
        raise ResultsError([Problem(source, "model", "error",
                                    f"the results hold several models ({', '.join(models)}); "
                                    "pick one with --model (model = \"...\" in a spec)")])
    return models[0]


def _check_measure(kind: str, spec: AnalysisSpec, source: str, problems: list[Problem]) -> None:
    if kind == "language" and spec.diversity in TASK_ONLY_MEASURES:
        raise ResultsError(problems + [Problem(
            source, "diversity", "error",
            f"diversity measure {spec.diversity!r} cannot describe language mixes: "
            f"{TASK_ONLY_MEASURES[spec.diversity]}; use n_tasks (the number of source languages) "
            "or effective_tasks")])


def _resolve_outcome(scores: pd.DataFrame, spec: AnalysisSpec, source: str,
                     problems: list[Problem]) -> tuple[str, str]:
    """The outcome analysed and why it is that one.

    ``outcome = "auto"`` (the default) is ``improvement`` when the results hold baseline runs
    (mix ``none``) and ``score`` when they hold none, which is said once, as a warning; a named
    outcome is kept as it is, but ``improvement`` without any baseline run is refused.
    """
    has_baseline = bool((scores["mix"] == BASELINE_MIX).any())
    if spec.outcome == "improvement" and not has_baseline:
        raise ResultsError(problems + [Problem(
            source, "outcome", "error",
            f"outcome 'improvement' needs baseline runs (mix {BASELINE_MIX!r}) and the results "
            "hold none; analyse the score (outcome 'score', or 'auto', the default)")])
    if spec.outcome != AUTO_OUTCOME:
        return spec.outcome, "given"
    if has_baseline:
        return "improvement", "auto: the results hold baseline runs"
    problems.append(Problem(source, "outcome", "warning",
                            f"no baseline runs (mix {BASELINE_MIX!r}): the outcome is the score "
                            "(outcome 'score'), not the improvement over a baseline"))
    return "score", NO_BASELINE_CHOICE


def resolve_splits(scores: pd.DataFrame, spec: AnalysisSpec, source: str,
                   problems: list[Problem]) -> tuple[TargetSplit, ...]:
    """The split of each target: the one given for it (``split = {target = ...}``), the one given
    for all, or -- by default (``split = "auto"``) -- the only split its runs hold, else
    ``test`` (said as a warning)."""
    given = dict(spec.target_splits)
    errors, splits = [], []
    for key, group in scores.groupby("target_task", sort=True):
        target = str(key)
        available = tuple(sorted(str(s) for s in group["split"].unique()))
        if target in given:
            split, reason = given[target], "given for this target"
        elif spec.split != "auto":
            split, reason = spec.split, "given for every target"
        elif len(available) == 1:
            split, reason = available[0], "the only split its runs hold"
        elif DEFAULT_SPLIT in available:
            split, reason = DEFAULT_SPLIT, (f"its runs hold {', '.join(available)}; "
                                            f"{DEFAULT_SPLIT} is analysed by default")
            problems.append(Problem(source, f"split.{target}", "warning",
                                    f"target {target} has scores on {', '.join(available)}: "
                                    f"{DEFAULT_SPLIT} is analysed (--split {target}=SPLIT "
                                    "chooses another)"))
        else:
            errors.append(Problem(source, f"split.{target}", "error",
                                  f"target {target} has scores on {', '.join(available)} and none "
                                  f"on {DEFAULT_SPLIT}: choose one with --split {target}=SPLIT"))
            continue
        if split not in available and reason == "given for this target":
            errors.append(Problem(source, f"split.{target}", "error",
                                  f"split {split!r} given for target {target}, whose runs hold "
                                  f"{', '.join(available)}"))
        splits.append(TargetSplit(target, split, available, reason))
    unknown = sorted(set(given) - set(scores["target_task"].unique()))
    if unknown:
        errors.append(Problem(source, "split", "error",
                              f"split given for {', '.join(unknown)}, not a target of the results "
                              f"(targets: {', '.join(sorted(scores['target_task'].unique()))})"))
    if errors:
        raise ResultsError(problems + errors)
    return tuple(splits)


def language_rule(scores: pd.DataFrame, kind: str, include_english: bool | str) -> LanguageRule:
    """Whether English rows are modelled.

    For mixes of tasks the intermediate tasks are English, so English is the source language
    and its rows measure no transfer: left out unless ``include_english``. For mixes of
    languages every evaluated language is kept (``target_in_mix`` carries whether the mix
    trained on it), unless ``include_english = false`` is set.
    """
    evaluated = bool((scores["language"] == "en").any())
    if not evaluated:
        return LanguageRule(False, False, "no English scores were evaluated")
    if include_english is True:
        return LanguageRule(True, True, "English rows kept (include_english = true)")
    if include_english is False and kind == "language":
        return LanguageRule(False, True, "English rows left out (include_english = false)")
    if kind == "language":
        return LanguageRule(True, True, "every evaluated language is kept for mixes of languages "
                                        "(the covariate target_in_mix or "
                                        "target_language_in_mix carries whether the mix trained "
                                        "on it)")
    return LanguageRule(False, True, "English is the language of the intermediate tasks, so its "
                                     "rows measure no cross-lingual transfer; left out "
                                     "(include_english = true keeps them)")


def _model_rows(scores: pd.DataFrame, spec: AnalysisSpec, log: filters.FilterLog,
                loaded: LoadedResults, problems: list[Problem]) -> pd.DataFrame:
    """The rows the model is fitted on, every row left out counted in ``log``."""
    check_run_covariates(scores, loaded, spec.covariates, spec.outcome)
    data, derive_problems = model_frame(scores, outcome=spec.outcome, diversity=spec.diversity,
                                        include_english=True, covariates=spec.covariates)
    problems += derive_problems
    log.after_outcome(scores, data, spec.outcome)
    if data.empty or data["mix"].nunique() < 2:
        raise ResultsError(problems + [Problem(
            loaded.source, "", "error",
            f"fewer than two mixes with usable {spec.outcome} values: nothing to compare"
            + log.summary_suffix())])
    return data


def _check_and_centre(mixes: pd.DataFrame, data: pd.DataFrame, spec: AnalysisSpec,
                      kind: str) -> tuple[DesignCheck, pd.DataFrame]:
    """The design check, and diversity and volume centred at their mean over mixes (so main
    effects are at the design centre even with the interaction in the model)."""
    check = design_check(mixes, spec.diversity, spec.max_correlation, member_words(kind))
    per_mix = data.drop_duplicates("mix")
    centre = {"diversity": float(per_mix["diversity"].mean()),
              "volume": float(per_mix["volume"].mean())}
    data = data.assign(diversity=data["diversity"] - centre["diversity"],
                       volume=data["volume"] - centre["volume"])
    return DesignCheck(
        n_mixes=check["n_mixes"], varies=check["varies"], single_factor=check["single_factor"],
        fixed_at=check["fixed_at"], correlation=check["correlation"], vif=check["vif"],
        confounded=bool(check["confounded"]), reason=check["reason"],
        max_correlation=float(check["max_correlation"]),
        diversity_levels=tuple(check["diversity_levels"]),
        volume_levels=tuple(check["volume_levels"]), centre_log2=centre), data


def _seeds_per_cell(data: pd.DataFrame) -> tuple[int, int]:
    counts = data.groupby(["mix", "target_task"])["seed"].nunique()
    return int(counts.min()), int(counts.max())


def _replicated_mixes(data: pd.DataFrame) -> tuple[str, ...]:
    """Mixes trained with more than one seed (on some target)."""
    counts = data.groupby(["mix", "target_task"])["seed"].nunique()
    replicated = counts[counts > 1].index.get_level_values("mix")
    return tuple(sorted({str(mix) for mix in replicated}))


def _source(path: str | Path) -> Source:
    path = Path(path)
    # A simulated flat table X.csv has its truth beside it as X.simulation.json.
    truth_file = path / SIMULATION_FILE if path.is_dir() else path.with_suffix(f".{SIMULATION_FILE}")
    if truth_file.is_file():
        return Source(str(path), True, json.loads(truth_file.read_text()))
    return Source(str(path), False)
