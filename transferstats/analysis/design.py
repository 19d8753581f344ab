"""How well a grid separates diversity from volume: the two are compared across mixes, so their
correlation across mixes decides whether the comparison is possible at all.

This is the one definition of the diversity-volume correlation; ``transferstats plan`` reports the
same number for a grid before it is run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Beyond this |r| of log2 diversity and log2 volume the model is not fitted at all.
SEPARABLE_CORRELATION = 0.999


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson's r; ``nan`` when there are fewer than two points or either variable is constant
    (the correlation is undefined)."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(xs) < 2 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return float("nan")
    return float(np.corrcoef(xs, ys)[0, 1])


def diversity_volume_correlation(diversity: Sequence[float] | np.ndarray,
                                 volume: Sequence[float] | np.ndarray) -> float:
    """Pearson's r of log2 diversity and log2 volume, one value per mix.

    Both predictors enter the model on a log2 scale, so this is the correlation the model sees;
    with two predictors the variance inflation factor of each is 1 / (1 - r^2).
    """
    return pearson(np.log2(np.asarray(diversity, dtype=float)), np.log2(np.asarray(volume, dtype=float)))


def design_check(mixes: pd.DataFrame, diversity: str, max_correlation: float) -> dict:
    """How well the grid separates diversity from volume, across mixes.

    Reports Pearson's r of log2 diversity and log2 volume and the variance inflation factor
    VIF = 1 / (1 - r²) (with two predictors both share it). The design is ``confounded`` when
    either variable does not vary or ``|r| >= max_correlation``.
    """
    counts = mixes[diversity].astype(float).to_numpy()
    examples = mixes["examples"].astype(float).to_numpy()
    d, v = np.log2(counts), np.log2(examples)
    check = {"n_mixes": int(len(mixes)), "diversity_levels": sorted({float(c) for c in np.round(counts, 6)}),
             "volume_levels": sorted({int(x) for x in mixes["examples"]}),
             "max_correlation": max_correlation}
    if len(mixes) < 3 or np.ptp(d) == 0 or np.ptp(v) == 0:
        varying = "diversity" if np.ptp(v) == 0 else "volume"
        check |= {"correlation": None, "vif": None, "confounded": True,
                  "reason": f"only {varying} varies across the {len(mixes)} mixes (or there are "
                            "fewer than 3 mixes), so the two effects cannot be separated"}
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
