"""Derived variables: diversity and volume of each mix, improvement over the matching baseline,
and per-run robustness outcomes.

Diversity and volume both enter the models on a log2 scale, so both effects read as "points per
doubling" and can be compared (docs/statistics.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from transferstats.analysis.members import member_words, source_kind
from transferstats.languages import same_language
from transferstats.problems import Problem
from transferstats.results import BASELINE_MIX, SOURCE_KIND_COLUMN, parse_mix_tasks
from transferstats.tasks import get_task

#: Diversity measure -> what it counts; ``{members}`` is the members' qualified plural
#: ("intermediate tasks", "source languages": :mod:`transferstats.analysis.members`).
DIVERSITY_MEASURES = {
    "n_tasks": "number of {members}",
    "n_formats": "number of distinct task formats",
    "effective_tasks": "effective number of {members} (exp of the entropy of example shares)",
}
#: Measures that need task metadata, refused for language mixes.
TASK_ONLY_MEASURES = {"n_formats": "languages have no task format"}
ROW_OUTCOMES = {
    "improvement": "score minus the mean score of the no-intermediate baseline (same model, "
                   "target, language), per language",
    "score": "score, per evaluated language",
}
RUN_OUTCOMES = {
    "nonenglish_mean": "mean zero-shot score over the non-English languages of a run",
    "transfer_gap": "English score minus the non-English mean of a run (lower is better)",
    "worst_language": "lowest non-English score of a run",
}
OUTCOMES = ROW_OUTCOMES | RUN_OUTCOMES
#: The default outcome setting: ``improvement`` when the results hold baseline runs, else
#: ``score`` (:func:`transferstats.analysis.pipeline.analyze_loaded` decides).
AUTO_OUTCOME = "auto"
#: ``estimates["outcome_choice"]`` when ``auto`` chose ``score`` for want of baseline runs.
NO_BASELINE_CHOICE = "auto: the results hold no baseline runs"
LOWER_IS_BETTER = {"transfer_gap"}
#: Covariates the analysis derives itself (``covariates = ["target_in_mix"]``), by mix kind; a
#: kind missing from a covariate's entry cannot have it (:func:`builtin_covariate_values`).
BUILTIN_COVARIATES = {
    "target_in_mix": {
        "task": "share of the mix's examples that come from the target's own training task "
                "(MNLI for XNLI, SQuAD v1.1 for XQuAD and MLQA)",
        "language": "share of the mix's examples in the evaluated language (0 when the mix "
                    "does not hold it)",
    },
    "target_language_in_mix": {
        "language": "1 when the mix holds the evaluated language, else 0",
    },
}


def diversity_description(measure: str, kind: str | None) -> str:
    """What a diversity measure counts, in the words of the mixes' kind."""
    return DIVERSITY_MEASURES[measure].format(members=member_words(kind).qualified_plural)


def target_in_mix(mix_tasks: str, target: str, language: str, kind: str | None = "task") -> float:
    """Share of a mix's examples that come from what is evaluated.

    For a task mix: from the target's own English training task, ``get_task(target).train_task``
    (XNLI trains on MNLI, XQuAD and MLQA on SQuAD v1.1) or the target itself, whatever the
    evaluated ``language``. For a language mix: in the evaluated ``language`` (codes compared
    once normalised, so ``deu`` is ``de``). 0 when the mix does not hold it, and for the baseline.
    """
    members = parse_mix_tasks(mix_tasks)
    total = sum(members.values())
    if not total:
        return 0.0
    if kind == "language":
        return sum(count for member, count in members.items()
                   if same_language(member, language)) / total
    own = get_task(target).train_task or target
    return members.get(own, 0) / total


def target_language_in_mix(mix_tasks: str, target: str, language: str,
                           kind: str | None = "language") -> float:
    """1.0 when a language mix holds the evaluated ``language`` (codes compared once normalised),
    else 0.0: the 0/1 form of :func:`target_in_mix`.

    At a fixed budget the share of a language held by a mix of ``n`` equal parts is ``1/n``: the
    share is this indicator times ``2^-diversity``, mixing whether the language was trained on
    with how many languages split the budget. The indicator keeps the first alone (it can still
    correlate with diversity, as bigger mixes hold more of the evaluated languages:
    :func:`transferstats.analysis.diagnostics.variance_inflation` measures both). Task mixes are
    refused: their members are English tasks, so the indicator would only mark English.
    """
    if kind != "language":
        raise ValueError("target_language_in_mix is defined for language mixes only; for task "
                         "mixes use target_in_mix (the share of the target's own training task)")
    return float(target_in_mix(mix_tasks, target, language, kind) > 0)


_COVARIATE_FUNCTIONS = {"target_in_mix": target_in_mix,
                        "target_language_in_mix": target_language_in_mix}


def builtin_covariate_values(scores: pd.DataFrame, name: str, kind: str | None) -> np.ndarray:
    """The built-in covariate ``name`` of every row of ``scores`` (columns ``mix_tasks``,
    ``target_task``, ``language``), for mixes of ``kind``.

    Raises ``ValueError`` naming the kinds it exists for when ``kind`` has no such covariate.
    """
    kinds = BUILTIN_COVARIATES[name]
    if kind not in kinds:
        raise ValueError(f"covariate {name!r} is defined for {' and '.join(kinds)} mixes only; "
                         f"these are {kind} mixes")
    function = _COVARIATE_FUNCTIONS[name]
    return np.array([function(mix_tasks, target, language, kind)
                     for mix_tasks, target, language in zip(
                         scores["mix_tasks"], scores["target_task"], scores["language"],
                         strict=True)], dtype=float)


def effective_number_of_tasks(examples: np.ndarray) -> float:
    """exp(Shannon entropy) of the example shares: equals the number of tasks when their shares are
    equal, and shrinks towards 1 as one task dominates (Hill 1973, diversity of order 1)."""
    shares = np.asarray(examples, dtype=float)
    shares = shares[shares > 0] / shares.sum()
    return float(np.exp(-(shares * np.log(shares)).sum()))


def describe_mix(mix_tasks: str, kind: str | None = "task") -> dict:
    """Diversity measures and volume of one mix, from its ``member=examples+...`` form.

    ``n_tasks`` and ``effective_tasks`` count the members, tasks or languages; ``n_formats`` is
    missing (NaN) for a language mix, whose members have no task format.
    """
    members = parse_mix_tasks(mix_tasks)
    if not members:
        return {"n_tasks": 0, "n_formats": 0, "effective_tasks": 0.0, "examples": 0}
    return {
        "n_tasks": len(members),
        "n_formats": (np.nan if kind == "language"
                      else len({get_task(task).format for task in members})),
        "effective_tasks": effective_number_of_tasks(np.array(list(members.values()))),
        "examples": int(sum(members.values())),
    }


def mix_table(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per mix (baseline excluded): its members, diversity measures and volume."""
    kind = source_kind(scores)
    mixes = scores.loc[scores["mix"] != BASELINE_MIX, ["mix", "mix_tasks"]].drop_duplicates("mix")
    described = pd.DataFrame([describe_mix(text, kind) for text in mixes["mix_tasks"]],
                             index=mixes.index)
    return pd.concat([mixes, described], axis=1).reset_index(drop=True)


def add_improvement(scores: pd.DataFrame) -> tuple[pd.DataFrame, list[Problem]]:
    """Add ``baseline`` (mean over the baseline's seeds) and ``improvement`` columns to the
    intermediate-trained rows; rows without a matching baseline are left out with a warning."""
    keys = ["model", "target_task", "language", "metric", "split"]
    is_baseline = scores["mix"] == BASELINE_MIX
    baseline = (scores[is_baseline].groupby(keys)["value"].mean().rename("baseline")
                .reset_index())
    trained = scores[~is_baseline].merge(baseline, on=keys, how="left")
    problems = []
    missing = trained["baseline"].isna()
    if missing.any():
        for (model, target), group in trained[missing].groupby(["model", "target_task"]):
            languages = sorted(group["language"].unique())
            problems.append(Problem(f"{model} / {target}", "baseline", "warning",
                                    f"no baseline (mix 'none') scores for languages "
                                    f"{', '.join(languages)}: {len(group)} score(s) of "
                                    f"{group['run_id'].nunique()} run(s) left out of the "
                                    "improvement analysis"))
    trained = trained[~missing].copy()
    trained["improvement"] = trained["value"] - trained["baseline"]
    return trained, problems


def run_outcomes(scores: pd.DataFrame, run_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Per-run robustness outcomes from the zero-shot scores of the run's languages.

    ``transfer_gap`` needs an English score: retrieval targets (BUCC, Tatoeba) have none, so their
    gap is missing and those runs are left out of gap models. ``run_columns`` (covariates) are
    kept; they must hold one value per run.
    """
    is_english = scores["language"] == "en"
    kind_column = [SOURCE_KIND_COLUMN] if SOURCE_KIND_COLUMN in scores.columns else []
    run_keys = ["run_id", "model", "mix", "mix_tasks", *kind_column, "target_task", "seed",
                *run_columns]
    foreign = scores[~is_english].groupby(run_keys, dropna=False)["value"].agg(nonenglish_mean="mean",
                                                                  worst_language="min")
    english = scores[is_english].set_index(run_keys)["value"].rename("english")
    table = foreign.join(english, how="left")
    table["transfer_gap"] = table["english"] - table["nonenglish_mean"]
    return table.reset_index()


def add_design_columns(data: pd.DataFrame, diversity: str) -> pd.DataFrame:
    """Join each row's mix description and add ``diversity`` (log2 of the chosen measure) and
    ``volume`` (log2 of the total examples)."""
    if diversity not in DIVERSITY_MEASURES:
        raise ValueError(f"diversity measure must be one of {list(DIVERSITY_MEASURES)}, got {diversity!r}")
    mixes = mix_table(data)
    data = data.merge(mixes.drop(columns="mix_tasks"), on="mix", how="left")
    data["diversity"] = np.log2(data[diversity].astype(float))
    data["volume"] = np.log2(data["examples"].astype(float))
    return data


def model_frame(scores: pd.DataFrame, *, outcome: str, diversity: str = "n_tasks",
                include_english: bool = False, covariates: Sequence[str] = ()
                ) -> tuple[pd.DataFrame, list[Problem]]:
    """The rows the model is fitted on, with an ``outcome`` column and the design columns.

    Row-level outcomes keep one row per (run, language) — non-English only unless
    ``include_english`` — with a ``target_language`` factor for the language-within-target random
    effect; run-level outcomes keep one row per run, and the ``covariates`` columns (one value
    per run) with it. Row-level outcomes keep every column of ``scores``.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {list(OUTCOMES)}, got {outcome!r}")
    problems: list[Problem] = []
    if outcome in ROW_OUTCOMES:
        if outcome == "improvement":
            data, problems = add_improvement(scores)
        else:
            data = scores[scores["mix"] != BASELINE_MIX].copy()
            data["score"] = data["value"]
        if not include_english:
            data = data[data["language"] != "en"]
        data = data.assign(target_language=data["target_task"] + ":" + data["language"])
    else:
        data = run_outcomes(scores[scores["mix"] != BASELINE_MIX], covariates)
        data = data[data[outcome].notna()]
    if data.empty:  # no usable row (no baseline to improve on): the caller refuses, naming why
        return data, problems
    data = add_design_columns(data.reset_index(drop=True), diversity)
    return data, problems
