"""How well a grid separates diversity from volume: the two are compared across mixes, so their
correlation across mixes decides whether the comparison is possible at all.

This is the one definition of the diversity-volume correlation; ``transferstats plan`` reports the
same number for a grid before it is run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from transferstats.analysis.members import TASK_WORDS, MemberWords

#: Beyond this |r| of log2 diversity and log2 volume the model is not fitted at all.
SEPARABLE_CORRELATION = 0.999


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson's r; ``nan`` when there are fewer than two points or either variable is constant
    (the correlation is undefined)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def diversity_volume_correlation(diversity: ArrayLike, volume: ArrayLike) -> float:
    """Pearson's r of log2 diversity and log2 volume, one value per mix.

    Both predictors enter the model on a log2 scale, so this is the correlation the model sees;
    with two predictors the variance inflation factor of each is 1 / (1 - r^2).
    """
    return pearson(np.log2(np.asarray(diversity, dtype=float)), np.log2(np.asarray(volume, dtype=float)))


#: A factor whose log2 values span less than this across mixes (a 2% spread) is held fixed:
#: a budget of 40,000 split evenly over 3 tasks is 39,999 examples, and a volume slope fitted on
#: such rounding would be noise that the contrast inherits.
FIXED_LOG2_SPREAD = 0.03


def varying_factor(counts: np.ndarray, examples: np.ndarray) -> str:
    """Which of diversity and volume vary across mixes: ``"both"``, ``"diversity"``,
    ``"volume"`` or ``"neither"`` (from each mix's number of tasks, or other diversity measure,
    and its number of examples). A factor varies when its log2 values span at least
    :data:`FIXED_LOG2_SPREAD`."""
    def varies(values: np.ndarray) -> bool:
        return bool(len(values) and np.ptp(np.log2(values)) >= FIXED_LOG2_SPREAD)

    diversity_varies, volume_varies = varies(counts), varies(examples)
    return {(True, True): "both", (True, False): "diversity", (False, True): "volume",
            (False, False): "neither"}[(diversity_varies, volume_varies)]


def fixed_level_text(factor: str, levels: Sequence[float], diversity: str,
                     words: MemberWords = TASK_WORDS) -> str:
    """How the factor that does not vary is fixed: ``"1 task"``, ``"40,000 examples"``."""
    value = float(np.median(levels))
    if factor == "volume":
        if len(levels) == 1:
            return f"{round(value):,} {words.examples}"
        return (f"about {round(value):,} {words.examples} ({int(min(levels)):,} to "
                f"{int(max(levels)):,})")
    noun = {"n_tasks": words.noun, "n_formats": "task format",
            "effective_tasks": f"effective {words.noun}"}.get(diversity, words.noun)
    number = f"{value:g}"
    return f"{number} {noun}" + ("" if number == "1" else "s")


def design_check(mixes: pd.DataFrame, diversity: str, max_correlation: float,
                 words: MemberWords = TASK_WORDS) -> dict:
    """How well the grid separates diversity from volume, across mixes.

    Reports which factor varies (``varies``: ``"both"``, ``"diversity"``, ``"volume"`` or
    ``"neither"``), Pearson's r of log2 diversity and log2 volume and the variance inflation
    factor VIF = 1 / (1 - r²) (with two predictors both share it). When both vary, the design is
    ``confounded`` when ``|r| >= max_correlation``. A grid that varies one factor on purpose
    (fixed budget: diversity only; single source: volume only) is not confounded: it estimates
    that factor's effect and cannot compare it with the other (``single_factor`` names it). A
    grid where neither varies, or with fewer than 3 mixes, is ``confounded``.
    """
    counts = mixes[diversity].astype(float).to_numpy()
    examples = mixes["examples"].astype(float).to_numpy()
    check = {"n_mixes": int(len(mixes)), "diversity_levels": sorted({float(c) for c in np.round(counts, 6)}),
             "volume_levels": sorted({int(x) for x in mixes["examples"]}),
             "max_correlation": max_correlation, "varies": varying_factor(counts, examples),
             "single_factor": None, "fixed_at": None}
    if len(mixes) < 3 or check["varies"] == "neither":
        check |= {"correlation": None, "vif": None, "confounded": True,
                  "reason": (f"neither diversity nor volume varies across the {len(mixes)} mixes"
                             if check["varies"] == "neither" else
                             f"the grid has only {len(mixes)} mixes; at least 3 are needed to "
                             "estimate an effect and the variance between mixes")}
        return check
    if check["varies"] != "both":
        varied = check["varies"]
        other = "volume" if varied == "diversity" else "diversity"
        levels = check[f"{other}_levels"]
        assert isinstance(levels, list), "design_check sets both level lists"
        fixed_at = fixed_level_text(other, levels, diversity, words)
        check |= {"correlation": None, "vif": None, "confounded": False,
                  "single_factor": varied, "fixed_at": fixed_at,
                  "reason": (f"only {varied} varies across the {len(mixes)} mixes; {other} is "
                             f"fixed at {fixed_at}, so the grid estimates the {varied} effect "
                             f"alone; comparing it with {other} needs mixes that vary both")}
        return check
    r = diversity_volume_correlation(counts, examples)
    vif = float(1 / (1 - r ** 2)) if abs(r) < 1 else float("inf")
    # Past |r| = 0.999 the two slopes are numerically inseparable, whatever the threshold says.
    threshold = min(max_correlation, SEPARABLE_CORRELATION)
    confounded = abs(r) >= threshold
    check |= {"correlation": r, "vif": vif, "confounded": confounded,
              "reason": (f"diversity and volume are too collinear across mixes (r = {r:.3f}, "
                         f"VIF = {vif:.1f}; threshold |r| < {threshold})") if confounded else ""}
    return check
