"""The model analysed, built from the design: fixed terms, random factors, contrasts, identity.

This is the one place the model's rules live. ``analyze`` builds its model here from a
:class:`~transferstats.analysis.description.Description` and its rows (:func:`build_model`);
``power`` builds the model of a planned grid from the same rules (:func:`fixed_terms`,
:func:`random_factors`, :func:`identity_plan`), so the two never drift apart. As lme4 splits
``lmer`` into building the model, making the objective, optimising and wrapping the result, the
analysis builds the model here, and :mod:`transferstats.analysis.fitting` fits it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from transferstats.analysis.description import Description
from transferstats.analysis.identity import (
    add_share_columns,
    identity_contrasts,
    identity_estimability,
    share_table,
)
from transferstats.analysis.members import MemberWords
from transferstats.analysis.slope_reduction import eligible_slopes

#: The comparison the toolkit exists for: the diversity effect minus the volume effect.
CONTRAST = "diversity - volume"
INTERACTION = "diversity:volume"
#: The (mix, target) cell factor.
MIX_TARGET = "mix_target"
#: Most mixes with which ``(1 | target_task:mix)`` is fitted. The mix-by-target cells are
#: eliminated and the mixes, in which they are nested, stay in the solver's remaining levels
#: (transferstats.analysis.blocks): each evaluation of the likelihood then costs
#: mixes x (target-languages)^2, where without the term the mixes themselves are eliminated at
#: the cost of one pass over them.
TARGET_MIX_MAX_MIXES = 2_000
#: Fewest targets between which slopes may differ: with two, a slope's variance rests on one
#: difference.
MIN_SLOPE_TARGETS = 3
#: Random factors in lme4 notation, as formulas show them.
FACTOR_NOTATION = {"target_task": "target_task", "target_language": "target_task:language",
                   "mix": "mix", MIX_TARGET: "target_task:mix"}


@dataclass(frozen=True)
class IdentityPlan:
    """Whether the primary model gives each member an identity effect by its share, and why."""

    used: bool
    mode: str
    reason: str
    rule: str
    reference: str | None
    estimability: dict = field(default_factory=dict)

    @property
    def mix_df(self) -> int | None:
        """Mix degrees of freedom left beside the identity effects (their t widening)."""
        return self.estimability.get("mix_df") if self.used else None


@dataclass(frozen=True)
class ModelStructure:
    """The model ``analyze`` fits: terms, random factors and the outputs it reports.

    ``mix_terms`` are the varied design terms (diversity, volume, maybe their interaction),
    ``covariates`` the centred covariates and ``shares`` the identity share columns of the
    primary model (empty without identity effects). ``blocked`` says why no model is fitted
    (a confounded design), else ``""``.
    """

    outcome: str
    mix_terms: tuple[str, ...]
    covariates: tuple[str, ...]
    random: tuple[str, ...]
    identity: IdentityPlan
    shares: tuple[str, ...] = ()
    identity_outputs: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    direction: float = 1.0
    blocked: str = ""
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    #: Predictors with a random slope by target (correlated with the target intercept, before
    #: any reduction of a singular fit), and why these.
    slopes: tuple[str, ...] = ()
    slopes_reason: str = ""

    @property
    def fixed(self) -> list[str]:
        """Fixed terms of the plain model (after the intercept)."""
        return [*self.mix_terms, *self.covariates]

    @property
    def primary_fixed(self) -> list[str]:
        return [*self.fixed, *self.shares]

    @property
    def compared(self) -> bool:
        return {"diversity", "volume"} <= set(self.mix_terms)

    @property
    def contrast_weights(self) -> dict[str, float]:
        return {"diversity": self.direction, "volume": -self.direction}

    @property
    def plain_contrasts(self) -> dict[str, dict[str, float]]:
        return {CONTRAST: self.contrast_weights} if self.compared else {}

    @property
    def contrasts(self) -> dict[str, dict[str, float]]:
        """The primary model's outputs beyond its terms: the contrast and identity effects."""
        return self.plain_contrasts | {k: dict(v) for k, v in self.identity_outputs.items()}

    @property
    def core(self) -> list[str]:
        """Outputs a bootstrap resample must estimate to count (the effects and the contrast)."""
        return [*self.fixed, CONTRAST] if self.compared else self.fixed

    def formula(self, primary: bool = True, words: MemberWords | None = None,
                random: str | None = None) -> str:
        """The model in lme4 notation; member shares are summarised. ``random`` replaces the
        random part (the structure fitted after a reduction, say)."""
        shown = list(self.fixed) or ["1"]
        if primary and self.identity.used:
            k = len(self.identity.estimability.get("tasks", []))
            noun = words.noun if words else "member"
            plural = words.plural if words else "members"
            shown.append(f"share[<{noun}>] for {k - 1} of the {k} {plural} (reference: "
                         f"{self.identity.reference})")
        return (f"{self.outcome} ~ {' + '.join(shown)} + "
                + (random or " + ".join(self.random_term(f) for f in self.random)))

    def random_term(self, factor: str) -> str:
        """One random term in lme4's notation (the target's with its slopes)."""
        columns = " + ".join(["1", *self.slopes]) if factor == "target_task" else "1"
        return f"({columns} | {FACTOR_NOTATION.get(factor, factor)})"


def lme4_notation(structure: str) -> str:
    """A random part written with the analysis's factor columns, in lme4's notation
    (``target_language`` is ``target_task:language``, ``mix_target`` is ``target_task:mix``)."""
    for column, notation in FACTOR_NOTATION.items():
        for bar in ("|", "||"):
            structure = structure.replace(f"{bar} {column})", f"{bar} {notation})")
    return structure


def fixed_terms(per_mix: pd.DataFrame, varies: str, interaction: bool) -> tuple[list[str], list[str]]:
    """The design terms of a grid, and notes on what was left out.

    ``per_mix`` holds one row per mix with centred ``diversity`` and ``volume``. A grid that
    varies one factor on purpose has that term alone (the other is a constant, absorbed by the
    intercept); one that varies both has both, and their interaction when ``interaction`` and
    the mixes can estimate it (intercept, diversity, volume and their product linearly
    independent across mixes).
    """
    if varies in ("diversity", "volume"):
        return [varies], [f"only {varies} varies, so the model has the {varies} term alone"]
    terms, notes = ["diversity", "volume"], []
    if interaction:
        d, v = per_mix["diversity"].to_numpy(float), per_mix["volume"].to_numpy(float)
        design = np.column_stack([np.ones(len(d)), d, v, d * v])
        if np.linalg.matrix_rank(design) == 4:
            terms.append(INTERACTION)
        else:
            notes.append("the diversity x volume interaction is not estimable from this grid's "
                         f"{len(d)} mixes (too few distinct design points); it was left out of "
                         "the model")
    return terms, notes


def random_factors(levels: Mapping[str, int], *, row_outcome: bool, target_mix: bool,
                   cells_replicated: bool) -> tuple[list[str], list[str], list[str]]:
    """Random-intercept factors with at least two levels; notes and warnings on those left out.

    ``levels`` counts the levels of ``target_task``, ``target_language`` and ``mix``. With
    ``target_mix``, a random intercept per (mix, target) cell joins them when there are two
    targets or more and the cells hold several rows (languages or seeds): a mix helps some
    targets more than others (Phang et al. 2020), and without the term that variation is
    counted as seed noise. With one row per cell it could not be told from the residual.
    """
    candidates = ["target_task", "target_language", "mix"] if row_outcome else ["target_task", "mix"]
    kept: list[str] = []
    notes: list[str] = []
    warnings: list[str] = []
    for factor in candidates:
        if levels[factor] >= 2:
            kept.append(factor)
        else:
            notes.append(f"random intercept for {factor} dropped: it has a single level")
    if not target_mix or levels["target_task"] < 2 or levels["mix"] < 2:
        return kept, notes, warnings
    if levels["mix"] > TARGET_MIX_MAX_MIXES:
        warnings.append(
            f"random intercept for target_task:mix left out: the grid has {levels['mix']:,} "
            f"mixes, more than the {TARGET_MIX_MAX_MIXES:,} up to which it is fitted (with it "
            "every evaluation of the likelihood costs mixes x target-languages^2, too slow for a "
            "thousand bootstrap refits); the target-by-mix variation is counted as seed noise. "
            "Analyse fewer mixes at a time to include it")
    elif cells_replicated:
        kept.append(MIX_TARGET)
    else:
        notes.append("random intercept for target_task:mix dropped: each (mix, target) cell "
                     "holds a single row, so it cannot be told from the residual")
    return kept, notes, warnings


def identity_plan(per_mix: pd.DataFrame, shares: pd.DataFrame, mix_terms: Sequence[str],
                  mode: str, identifiable: bool, words: MemberWords,
                  dependent_on_covariates: bool = False) -> IdentityPlan:
    """Whether the primary model has member identity effects: ``mode = "off"`` never, ``"on"``
    always (a ``ValueError`` when the grid cannot estimate them), ``"auto"`` when it can."""
    check = identity_estimability(per_mix, shares, mix_terms, words)
    if check["estimable"] and dependent_on_covariates:
        check |= {"estimable": False,
                  "reason": f"the {words.noun} shares are linearly dependent on the covariates"}
    estimability = {k: v for k, v in check.items() if k not in ("rule", "reason")}
    plan = dict(used=False, mode=mode, rule=check["rule"], reference=check["reference"],
                estimability=estimability)
    if mode == "off":
        return IdentityPlan(reason=f"{words.noun} identity effects were turned off (identity = "
                                   "\"off\"); the primary model is the plain one", **plan)
    if not check["estimable"]:
        if mode == "on":
            raise ValueError(f"identity = \"on\", but this grid cannot estimate {words.noun} "
                             f"identity effects: {check['reason']} ({check['rule']}); use "
                             "identity = \"auto\" or \"off\"")
        return IdentityPlan(reason=f"{words.noun} identity effects are not estimable from this "
                                   f"grid: {check['reason']}; the primary model is the plain one",
                            **plan)
    if not identifiable:
        return IdentityPlan(reason="the model was not fitted (diversity and volume cannot be "
                                   "separated)", **plan)
    plan["used"] = True
    return IdentityPlan(reason=f"the grid can estimate them: every {words.noun} is in at least "
                               f"{min(check['task_mixes'].values())} mixes, the per-mix design "
                               f"has full rank ({check['rank']}) and {check['mix_df']} mixes "
                               "remain for the mix variance", **plan)


def full_rank(data: pd.DataFrame, fixed: Sequence[str]) -> bool:
    """Whether the intercept and ``fixed`` are linearly independent across the rows."""
    X = np.column_stack([np.ones(len(data)), data[list(fixed)].to_numpy(dtype=float)])
    return bool(np.linalg.matrix_rank(X.T @ X) == X.shape[1])


def slope_plan(data: pd.DataFrame, mix_terms: Sequence[str], mode: str
               ) -> tuple[tuple[str, ...], str]:
    """The target-specific slopes of the primary model, and why.

    By default (``mode = "auto"``) diversity and volume get correlated random slopes by target
    wherever the design allows them: at least 3 targets, and the factor varies within at least
    3 of them (Barr et al. 2013: the maximal structure the design supports). ``"off"`` never;
    ``"on"`` insists (a ``ValueError`` with the reason where the design does not allow them).
    """
    varied = [t for t in ("diversity", "volume") if t in mix_terms]
    if mode == "off":
        return (), "random slopes turned off (random_slopes = \"off\")"
    n_targets = data["target_task"].nunique()
    eligible = eligible_slopes(data, {"target_task": varied}, MIN_SLOPE_TARGETS) if varied else None
    allowed = eligible.slopes.get("target_task", ()) if eligible else ()
    if not varied:
        reasons = "neither diversity nor volume varies"
    elif n_targets < MIN_SLOPE_TARGETS:
        reasons = (f"the grid has {n_targets} target{'s' * (n_targets != 1)}, and slopes that "
                   f"differ between targets need at least {MIN_SLOPE_TARGETS}")
    else:
        reasons = "; ".join(f"{term} varies within fewer than {MIN_SLOPE_TARGETS} targets"
                            for term in varied if term not in allowed)
    if mode == "on" and not allowed:
        raise ValueError(f"random_slopes = \"on\", but the design allows no target-specific "
                         f"slope: {reasons}")
    if not allowed:
        return (), f"no target-specific slopes: {reasons}"
    why = (f"the effects of {' and '.join(allowed)} may differ between targets, and the "
           f"{data['target_task'].nunique()} targets allow a slope for each")
    return tuple(allowed), why + (f" ({reasons})" if reasons else "")


def build_model(description: Description, data: pd.DataFrame, mixes: pd.DataFrame, *,
                interaction: bool, target_mix: bool, identity: str, random_slopes: str = "off"
                ) -> tuple[pd.DataFrame, ModelStructure]:
    """The model of an analysis, and its rows with the columns it needs (the interaction, the
    (mix, target) cell, the identity shares). Raises ``ValueError`` when the covariates are
    linearly dependent on the design, or identity effects are insisted on and not estimable."""
    check, words = description.check, description.words
    per_mix = data.drop_duplicates("mix")
    mix_terms, notes = fixed_terms(per_mix, check.varies, interaction)
    warnings = [n for n in notes if "interaction" in n]
    if INTERACTION in mix_terms:
        data = data.assign(**{INTERACTION: data["diversity"] * data["volume"]})
    cells = data["mix"].astype(str) + "|" + data["target_task"].astype(str)
    levels = {"target_task": data["target_task"].nunique(),
              "target_language": data["target_language"].nunique()
              if "target_language" in data else 0, "mix": data["mix"].nunique()}
    random, random_notes, random_warnings = random_factors(
        levels, row_outcome=description.row_outcome, target_mix=target_mix,
        cells_replicated=cells.nunique() < len(data))
    if MIX_TARGET in random:
        data = data.assign(**{MIX_TARGET: cells})
    covariates = tuple(c.name for c in description.covariates)
    identifiable = not check.confounded
    fixed = [*mix_terms, *covariates]
    if identifiable and covariates and not full_rank(data, fixed):
        raise ValueError(f"the covariates {', '.join(covariates)} are linearly dependent on "
                         f"{' and '.join(mix_terms)} or on each other across the rows: their "
                         "effects cannot be estimated")
    shares = share_table(mixes)
    plan = identity_plan(data.drop_duplicates("mix"), shares, mix_terms, identity, identifiable, words,
                         dependent_on_covariates=bool(covariates)
                         and _shares_dependent(data, shares, fixed))
    share_columns: list[str] = []
    outputs: dict[str, dict[str, float]] = {}
    if plan.used and plan.reference is not None:
        data, share_columns = add_share_columns(data, shares, plan.reference)
        outputs = identity_contrasts(list(shares.columns), plan.reference,
                                     check.centre_log2["diversity"] if "diversity" in mix_terms
                                     else None)
    slopes, slopes_reason = slope_plan(data, mix_terms, random_slopes) if identifiable \
        else ((), "the model was not fitted")
    structure = ModelStructure(
        outcome=description.outcome, mix_terms=tuple(mix_terms), covariates=covariates,
        random=tuple(random), identity=plan, shares=tuple(share_columns),
        identity_outputs=outputs, direction=description.direction,
        blocked=check.reason if check.confounded else "",
        notes=tuple(notes + random_notes + random_warnings),
        warnings=tuple(warnings + random_warnings), slopes=slopes, slopes_reason=slopes_reason)
    return data, structure


def _shares_dependent(data: pd.DataFrame, shares: pd.DataFrame, fixed: list[str]) -> bool:
    """Whether the identity shares are linearly dependent on the fixed terms (covariates)."""
    if shares.shape[1] < 2:
        return False
    reference = shares.columns[0]
    with_shares, columns = add_share_columns(data, shares, reference)
    return not full_rank(with_shares, fixed + columns)
