"""Which tasks, not only how many: task identity effects and per-target slopes.

A random intercept per mix cannot see *which* tasks a mix holds. When strong tasks (MNLI, SQuAD;
Phang et al. 2020) sit mostly in the bigger mixes, the plain model credits diversity with their
strength. Diversity-Interactions models of species mixtures (Kirwan et al. 2009, Ecology
90:2032-2038; Connolly et al. 2013, J. Ecol. 101:344-355) give each species an *identity effect*
weighted by its proportion in the community and measure diversity effects beyond those; Loreau &
Hector (2001, Nature 412:72-76) call what the identity effects carry the *selection effect*.
Here every intermediate task ``i`` enters by its share ``p_i`` of the mix's examples::

    outcome ~ sum_i beta_i p_i + diversity + volume (+ diversity:volume) + covariates
              + (1 | target_task) + (1 | target_task:language) + (1 | mix)

Shares sum to one, so the model keeps its intercept and drops the share of a *reference* task
(the one in most mixes): ``share[i]`` estimates ``gamma_i = beta_i - beta_ref``. The identity
effect reported for task ``i`` is the expected outcome of a mix made of task ``i`` alone at the
design's centre volume (and mean covariates), the Diversity-Interactions "monoculture"
performance::

    identity[i] = Intercept + gamma_i + b_diversity * (0 - centre of diversity)

(log2 of one task is 0 for every diversity measure; the interaction vanishes at the centre
volume). It is a linear combination of the coefficients, so the bootstrap gives its interval
like any contrast; ``identity[i] - mean`` (its difference from the average task) does not
involve the intercept. The random structure is the plain model's and the same fast solver fits
it; its intervals come from a parametric bootstrap (:mod:`transferstats.analysis.parametric`),
because resampling mixes is badly conservative once a model has a coefficient per task.

Estimability rule (:func:`identity_estimability`):

1. every task is in at least ``MIN_MIXES_PER_TASK`` = 2 mixes: with one, its identity effect
   absorbs that mix's own deviation (its random intercept) and says nothing about the task;
2. the per-mix design ``[1, shares without the reference, diversity, volume (, interaction)]`` has
   full column rank: no task's shares are a combination of the others' and of diversity and
   volume (two tasks that always appear together in the same proportions are not separable,
   nor a task whose share follows the number of tasks exactly);
3. at least ``MIN_MIX_DF`` = 10 mixes beyond that rank: the mix variance -- the yardstick of every
   mix-level effect -- is estimated from the n_mixes - rank mix-level residuals. The intervals
   are widened to t quantiles on those degrees of freedom, but with fewer than 10 the variance
   estimate itself is too rough to lean on (relative standard error sqrt(2/10) = 45%) and the
   widening grows fast (t_0.975,10 / z_0.975 = 1.14, t_0.975,5 / z_0.975 = 1.31): such a grid
   should add mixes rather than identity effects.

Per-target slopes (:func:`per_target_columns`) replace diversity and volume by one column per
target, ``diversity[t] = diversity * 1[target = t]``, so one bootstrap of one model gives every
target's effects with intervals at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from transferstats.analysis.members import TASK_WORDS, MemberWords
from transferstats.results import parse_mix_tasks

MIN_MIXES_PER_TASK = 2
MIN_MIX_DF = 10


def estimability_rule(words: MemberWords) -> str:
    """The estimability rule in words, for members described by ``words``."""
    return (f"identity effects are estimable when every {words.qualified} is in at least "
            f"{MIN_MIXES_PER_TASK} mixes, the per-mix design ({words.noun} shares, diversity, "
            f"volume and the interaction if modelled) has full column rank, and at least "
            f"{MIN_MIX_DF} mixes remain beyond that rank to estimate the mix variance")


def share_column(task: str) -> str:
    """Model column and term name of a task's share: ``share[mnli]``."""
    return f"share[{task}]"


def identity_output(task: str) -> str:
    """Bootstrap output name of a task's identity effect: ``identity[mnli]``."""
    return f"identity[{task}]"


def relative_output(task: str) -> str:
    """Bootstrap output name of a task's identity effect minus the mean over tasks."""
    return f"identity[{task}] - mean"


def target_column(term: str, target: str) -> str:
    """Per-target slope column: ``diversity[xnli]``."""
    return f"{term}[{target}]"


def share_table(mixes: pd.DataFrame) -> pd.DataFrame:
    """Each task's share of each mix's examples (rows: mixes, indexed by name; columns: tasks,
    sorted), from ``mix_tasks``, so unequal shares are used as they are."""
    rows = {}
    for mix, text in zip(mixes["mix"], mixes["mix_tasks"], strict=True):
        tasks = parse_mix_tasks(text)
        total = sum(tasks.values())
        rows[mix] = {task: count / total for task, count in tasks.items()}
    table = pd.DataFrame.from_dict(rows, orient="index").fillna(0.0)
    return table.reindex(columns=sorted(table.columns))


def reference_task(shares: pd.DataFrame) -> str:
    """The task in most mixes (first by name on ties): its share column is left out."""
    counts = (shares > 0).sum()
    return str(sorted(counts.index, key=lambda task: (-counts[task], task))[0])


def identity_estimability(per_mix: pd.DataFrame, shares: pd.DataFrame,
                          mix_terms: Sequence[str], words: MemberWords = TASK_WORDS
                          ) -> dict:
    """Whether the grid can estimate identity effects (the rule in the module docstring).

    Parameters
    ----------
    per_mix:
        One row per mix (``mix`` column) with the mix-level model columns ``mix_terms``
        (diversity, volume, maybe the interaction).
    shares:
        :func:`share_table` of the same mixes.
    mix_terms:
        The mix-level fixed terms of the plain model.
    words:
        What the members are (tasks or languages), for the rule and the reasons.

    Returns
    -------
    dict
        ``estimable``, ``reason`` (why not, or empty), ``rule``, ``tasks``, ``reference``,
        ``n_mixes``, ``rank``, ``columns``, ``mix_df``, ``task_mixes`` (task -> mixes holding it).
    """
    tasks = list(shares.columns)
    task_mixes = {task: int((shares[task] > 0).sum()) for task in tasks}
    n_mixes = len(per_mix)
    info = {"rule": estimability_rule(words), "tasks": tasks, "n_mixes": n_mixes,
            "task_mixes": task_mixes, "reference": None, "rank": None, "columns": None,
            "mix_df": None, "min_mixes_per_task": MIN_MIXES_PER_TASK, "min_mix_df": MIN_MIX_DF}
    if len(tasks) < 2:
        return info | {"estimable": False,
                       "reason": f"the grid has a single {words.qualified}, so there is no "
                                 f"{words.noun} identity to separate from diversity"}
    rare = [f"{task} ({count})" for task, count in task_mixes.items() if count < MIN_MIXES_PER_TASK]
    reference = reference_task(shares)
    aligned = shares.reindex(per_mix["mix"]).to_numpy()
    others = [i for i, task in enumerate(tasks) if task != reference]
    design = np.column_stack([np.ones(n_mixes), aligned[:, others],
                              per_mix[list(mix_terms)].to_numpy(dtype=float)])
    rank = int(np.linalg.matrix_rank(design))
    info |= {"reference": reference, "rank": rank, "columns": design.shape[1],
             "mix_df": n_mixes - rank}
    if rare:
        return info | {"estimable": False,
                       "reason": f"some {words.plural} are in fewer than {MIN_MIXES_PER_TASK} "
                                 f"mixes: {', '.join(rare)}"}
    if design.shape[1] + MIN_MIX_DF > n_mixes:
        return info | {"estimable": False,
                       "reason": f"{n_mixes} mixes are too few for {design.shape[1]} identity, "
                                 f"diversity and volume coefficients and at least {MIN_MIX_DF} "
                                 "degrees of freedom for the mix variance (at least "
                                 f"{design.shape[1] + MIN_MIX_DF} mixes are needed)"}
    if rank < design.shape[1]:
        return info | {"estimable": False,
                       "reason": f"the {words.noun} shares, diversity and volume are linearly "
                                 f"dependent across the {n_mixes} mixes (rank {rank} of "
                                 f"{design.shape[1]} columns): some {words.plural} always appear "
                                 "together in the same proportions, or a "
                                 f"{words.noun}'s share follows diversity or volume"}
    if n_mixes - rank < MIN_MIX_DF:
        return info | {"estimable": False,
                       "reason": f"{n_mixes} mixes leave {n_mixes - rank} degrees of freedom for "
                                 f"the mix variance after the {rank} identity, diversity and volume "
                                 f"coefficients; at least {MIN_MIX_DF} are needed"}
    return info | {"estimable": True, "reason": ""}


def add_share_columns(data: pd.DataFrame, shares: pd.DataFrame, reference: str) -> tuple[
        pd.DataFrame, list[str]]:
    """Add ``share[task]`` for every task but the reference; return the data and the columns."""
    # Looked up by mix code (-1, missing, picks the NaN appended): Series.map over a million
    # Arrow-backed strings took a second a task.
    codes, mixes = pd.factorize(data["mix"])
    columns = {share_column(task): np.append(shares[task].reindex(mixes).to_numpy(dtype=float),
                                             np.nan)[codes]
               for task in shares.columns if task != reference}
    return data.assign(**columns), list(columns)


def identity_contrasts(tasks: Sequence[str], reference: str, centre_diversity: float | None
                       ) -> dict[str, dict[str, float]]:
    """Bootstrap contrasts giving each task's identity effect (a single-task mix at the centre
    volume: intercept + its share coefficient + the diversity effect at log2 1 = 0) and its
    difference from the mean over tasks.

    ``centre_diversity`` is None when the model has no diversity term (a grid whose diversity is
    fixed): the identity effect is then at the grid's own diversity, which the intercept holds.
    """
    contrasts: dict[str, dict[str, float]] = {}
    for task in tasks:
        weights = {"Intercept": 1.0}
        if centre_diversity is not None:
            weights["diversity"] = -centre_diversity
        if task != reference:
            weights[share_column(task)] = 1.0
        contrasts[identity_output(task)] = weights
    k = len(tasks)
    for task in tasks:
        weights = {share_column(other): (1.0 if other == task else 0.0) - 1.0 / k
                   for other in tasks if other != reference}
        contrasts[relative_output(task)] = weights
    return contrasts


def per_target_columns(data: pd.DataFrame, terms: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """Replace each of ``terms`` by one column per target: ``term * 1[target_task = t]``."""
    targets = sorted(data["target_task"].unique())
    columns = {}
    for term in terms:
        for target in targets:
            columns[target_column(term, target)] = np.where(data["target_task"] == target,
                                                            data[term].to_numpy(dtype=float), 0.0)
    return data.assign(**columns), list(columns)
