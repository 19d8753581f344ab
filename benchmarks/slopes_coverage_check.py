"""A first check of the coverage of the Satterthwaite and Kenward-Roger intervals with random
slopes by target (not the coverage study): grids of 5 targets x 8 languages x 30 mixes, every mix
on every target, with correlated target-specific slopes and a true diversity - volume of 0, each
fitted by ``reduce_slopes``; prints the share of 95% intervals of diversity - volume covering 0,
with a z interval on the same standard errors beside them.

    python benchmarks/slopes_coverage_check.py [--grids 1000] [--seed 2027]

About four minutes for 1,000 grids on one core.
"""

from __future__ import annotations

import argparse
import warnings
from collections import Counter

import numpy as np
import pandas as pd
from rich.progress import track

from transferstats.analysis.inference import satterthwaite
from transferstats.analysis.kenward_roger import kenward_roger
from transferstats.analysis.slope_reduction import reduce_slopes

CONTRAST = {"diversity - volume": {"div": 1.0, "vol": -1.0}}


def simulate_grid(rng: np.random.Generator, n_targets: int = 5, n_languages: int = 8,
                  n_mixes: int = 30) -> pd.DataFrame:
    """Target intercept SD 2, slope SDs 1.0 and 0.6 correlated -0.6, target-language SD 2,
    mix SD 1, residual 2; diversity and volume effects both 0.5."""
    div = rng.integers(0, 5, n_mixes).astype(float)
    vol = rng.integers(0, 5, n_mixes).astype(float)
    div, vol = div - div.mean(), vol - vol.mean()
    sds, corr = np.array([2.0, 1.0, 0.6]), np.eye(3)
    corr[1, 2] = corr[2, 1] = -0.6
    effects = rng.multivariate_normal(np.zeros(3), corr * np.outer(sds, sds), n_targets)
    target, language, mix = (a.ravel() for a in np.meshgrid(
        np.arange(n_targets), np.arange(n_languages), np.arange(n_mixes), indexing="ij"))
    y = (50 + 0.5 * div[mix] + 0.5 * vol[mix] + effects[target, 0] + effects[target, 1] * div[mix]
         + effects[target, 2] * vol[mix] + rng.normal(0, 2, (n_targets, n_languages))[target, language]
         + rng.normal(0, 1, n_mixes)[mix] + rng.normal(0, 2, len(target)))
    return pd.DataFrame({"y": y, "div": div[mix], "vol": vol[mix], "target_task": target,
                         "target_language": [f"{a}:{b}" for a, b in zip(target, language, strict=True)],
                         "mix": mix})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2027)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    covered: Counter[str] = Counter()
    structures: Counter[str] = Counter()
    dfs = []
    warnings.simplefilter("ignore")  # singular intermediate fits are expected and reduced
    for _ in track(range(args.grids), description="grids"):
        reduction = reduce_slopes(simulate_grid(rng), "y", ["div", "vol"],
                                  ["target_task", "target_language", "mix"],
                                  {"target_task": ["div", "vol"]})
        structures[reduction.structure] += 1
        s = satterthwaite(reduction.fit, CONTRAST).iloc[0]
        k = kenward_roger(reduction.fit, CONTRAST).iloc[0]
        covered["Satterthwaite"] += s["ci_low"] <= 0 <= s["ci_high"]
        covered["Kenward-Roger"] += k["ci_low"] <= 0 <= k["ci_high"]
        covered["z"] += abs(s["estimate"]) <= 1.959964 * s["se"]
        dfs.append(s["df"])
    n = args.grids
    for method, count in covered.items():
        share = count / n
        half = 1.96 * np.sqrt(share * (1 - share) / n)
        print(f"{method}: {share:.3f} (Monte Carlo 95% interval {share - half:.3f}-{share + half:.3f})")
    print(f"median Satterthwaite df {np.median(dfs):.2f}; structures: {dict(structures)}")


if __name__ == "__main__":
    main()
