"""Effects per target task, and a test of whether they differ between targets.

One model replaces the common diversity and volume slopes by one slope per target
(:func:`~transferstats.analysis.identity.per_target_columns`), everything else as in the primary
model; one bootstrap of the primary model's kind (crossed cluster, same seed and so the same
resamples; parametric when the model has identity effects) gives every target's intervals.
Heterogeneity: ML likelihood-ratio test of that model against the common-slope model, chi2 with
k (T - 1) degrees of freedom. In that test both models add a random intercept per (mix, target)
cell when the cells hold several rows: without it, a mix that happens to suit one target would
look, through that target's many languages and seeds, like strong evidence of a target-specific
slope, and the test would reject too often.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from transferstats.analysis.fitting import BootstrapSettings, bootstrap, intervals_of, nested_test
from transferstats.analysis.identity import per_target_columns, target_column
from transferstats.analysis.model import CONTRAST, FACTOR_NOTATION, MIX_TARGET, ModelStructure, full_rank
from transferstats.analysis.result import PER_TARGET_COLUMNS, Heterogeneity


def per_target(data: pd.DataFrame, structure: ModelStructure, settings: BootstrapSettings,
               parametric_df: float | None) -> tuple[pd.DataFrame, Heterogeneity]:
    """Per-target effects (one row per target and term) and the heterogeneity test; the
    bootstrap is the primary model's (parametric on ``parametric_df`` degrees of freedom, or
    crossed cluster when None)."""
    empty = pd.DataFrame(columns=PER_TARGET_COLUMNS)
    targets = sorted(data["target_task"].unique())
    if len(targets) < 2:
        return empty, Heterogeneity(False, "a single target task: nothing to compare")
    terms: list[str] = [t for t in ("diversity", "volume") if t in structure.mix_terms]
    fixed = structure.primary_fixed
    frame, slopes = per_target_columns(data, terms)
    fixed_per_target = slopes + [f for f in fixed if f not in terms]
    if not full_rank(frame, fixed_per_target):
        return empty, Heterogeneity(False, f"some target has no variation in "
                                           f"{' or '.join(terms)} across its mixes, so "
                                           "per-target effects are not estimable")
    compared = len(terms) == 2
    direction = structure.direction
    contrasts = {target_column(CONTRAST, t): {target_column("diversity", t): direction,
                                             target_column("volume", t): -direction}
                 for t in targets} if compared else {}
    boot = bootstrap(frame, settings, fixed_per_target, list(structure.random), contrasts,
                     parametric_df)
    outputs = [*slopes, *contrasts]
    failed = boot.draws[outputs].isna().any(axis=1)
    boot.draws.loc[failed, outputs] = np.nan
    intervals = intervals_of(boot, settings.level, settings.interval)
    percentile = intervals_of(boot, settings.level, "percentile")
    rows = []
    for target in targets:
        for term in (*terms, CONTRAST) if compared else terms:
            name = target_column(term, target)
            rows.append({"target": target, "term": term, "estimate": float(boot.estimate[name]),
                         "ci_low": intervals[name]["ci_low"], "ci_high": intervals[name]["ci_high"],
                         "bootstrap_se": intervals[name]["se"],
                         "percentile_ci_low": percentile[name]["ci_low"],
                         "percentile_ci_high": percentile[name]["ci_high"]})
    return (pd.DataFrame(rows, columns=PER_TARGET_COLUMNS),
            _heterogeneity(data, frame, structure, fixed_per_target, terms, targets,
                           int(failed.sum()), settings.level))


def _heterogeneity(data: pd.DataFrame, frame: pd.DataFrame, structure: ModelStructure,
                   fixed_per_target: list[str], terms: list[str], targets: list[str],
                   n_failed: int, level: float) -> Heterogeneity:
    cell = data["mix"].astype(str) + "|" + data["target_task"].astype(str)
    random = list(structure.random)
    if cell.nunique() < len(data) and MIX_TARGET not in random:
        random.append(MIX_TARGET)
    test = nested_test(frame.assign(**{MIX_TARGET: cell}), structure.outcome, fixed_per_target,
                       structure.primary_fixed, random)
    formula = (f"{structure.outcome} ~ {' + '.join(fixed_per_target)} + "
               + " + ".join(f"(1 | {FACTOR_NOTATION.get(f, f)})" for f in structure.random))
    return Heterogeneity(
        tested=True, chi2=test["chi2"], df=test["df"], p_value=test["p_value"],
        differ=bool(test["p_value"] < 1 - level), terms=tuple(terms), targets=tuple(targets),
        random=tuple(random), formula=formula, n_failed=n_failed,
        reason=(f"likelihood-ratio test of per-target {' and '.join(terms)} slopes against "
                "common ones" + (", both models with a random intercept per (mix, target) cell"
                                 if MIX_TARGET in random else "")))
