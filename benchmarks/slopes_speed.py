"""Time one random-slope fit and its Satterthwaite (and Kenward-Roger) inference on a large grid,
next to lme4 + lmerTest on the same rows when R is installed.

The grid has the size of the public multi-source grid of issue 25: 1,100 mixes of 1 to 33 of 40
languages, 5 target tasks evaluated in 9 to 40 of the languages, each mix on one or two targets
(about 35,000 rows), with correlated target-specific slopes of diversity and volume at the
magnitudes lme4 estimated there. The models are

    y ~ diversity * volume + (1 + diversity + volume | target_task)
        + (1 | target_task:language) + (1 | mix)

and the same with the analysis's target-by-mix intercept, + (1 | target_task:mix).

Run from the repository root (a few minutes with R):

    python benchmarks/slopes_speed.py [--no-r] [--seed N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from transferstats.analysis.inference import satterthwaite
from transferstats.analysis.kenward_roger import kenward_roger, kenward_roger_affordable
from transferstats.analysis.mixed import fit_crossed

TARGET_LANGUAGES = {"xnli": 15, "udpos": 33, "wikiann": 40, "tydiqa": 9, "xquad": 11}
CONTRAST = {"diversity - volume": {"diversity": 1.0, "volume": -1.0}}

R_SCRIPT = """
suppressMessages({library(lme4); library(lmerTest)})
grid <- read.csv(commandArgs(TRUE)[1])
for (target_mix in c(FALSE, TRUE)) {
  formula <- y ~ diversity * volume + (1 + diversity + volume | target_task) +
    (1 | target_task:language) + (1 | mix)
  if (target_mix) formula <- update(formula, . ~ . + (1 | target_task:mix))
  start <- proc.time()[["elapsed"]]
  fit <- lmer(formula, data = grid, REML = TRUE)  # lmerTest's lmer: its Hessian is computed here
  fitted <- proc.time()[["elapsed"]]
  res <- contest(fit, c(0, 1, -1, 0), joint = FALSE, ddf = "Satterthwaite", confint = TRUE)
  done <- proc.time()[["elapsed"]]
  cat(sprintf("lme4%s: lmer + lmerTest %.2f s, contest %.2f s; REML %.4f; contrast %.4f se %.4f df %.3f\\n",
              if (target_mix) " with target_task:mix" else "", fitted - start, done - fitted,
              REMLcrit(fit), res$Estimate, res[["Std. Error"]], res$df))
}
"""


def simulate_grid(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_mixes = 1100
    n_languages = rng.integers(1, 34, n_mixes)
    examples = 1000 * n_languages * rng.uniform(0.5, 4, n_mixes)
    diversity = np.log2(n_languages) - np.log2(n_languages).mean()
    volume = np.log2(examples) - np.log2(examples).mean()
    sds, corr = np.array([5.6, 5.9, 3.1]), np.eye(3)
    corr[1, 2] = corr[2, 1] = -0.98
    targets = list(TARGET_LANGUAGES)
    effects = rng.multivariate_normal(np.zeros(3), corr * np.outer(sds, sds), len(targets))
    mix_effect = rng.normal(0, 0.69, n_mixes)
    frames = []
    for m in range(n_mixes):
        for t in rng.choice(len(targets), 1 + int(rng.random() < 0.5), replace=False):
            k = TARGET_LANGUAGES[targets[t]]
            language_effect = np.random.default_rng([seed, t]).normal(0, 9.2, k)
            y = (50 + 1.0 * diversity[m] + 1.5 * volume[m] + effects[t] @ [1, diversity[m], volume[m]]
                 + language_effect + mix_effect[m] + rng.normal(0, 5.0, k))
            languages = [f"l{j:02d}" for j in range(k)]
            frames.append(pd.DataFrame({"y": y, "diversity": diversity[m], "volume": volume[m],
                                        "target_task": targets[t], "language": languages,
                                        "mix": f"m{m:04d}"}))
    grid = pd.concat(frames, ignore_index=True)
    grid["diversity:volume"] = grid["diversity"] * grid["volume"]
    grid["target_language"] = grid["target_task"] + ":" + grid["language"]
    grid["target_mix"] = grid["target_task"] + ":" + grid["mix"]
    return grid


def time_python(grid: pd.DataFrame, target_mix: bool) -> None:
    random = ["target_task", "target_language", "mix"] + (["target_mix"] if target_mix else [])
    start = time.perf_counter()
    fit = fit_crossed(grid, "y", ["diversity", "volume", "diversity:volume"], random,
                      slopes={"target_task": ["diversity", "volume"]})
    fitted = time.perf_counter()
    table = satterthwaite(fit, CONTRAST)
    done = time.perf_counter()
    row = table.iloc[0]
    print(f"transferstats{' with target_task:mix' if target_mix else ''}: fit {fitted - start:.2f} s, "
          f"Satterthwaite {done - fitted:.2f} s; REML {fit.criterion:.4f}; contrast "
          f"{row['estimate']:.4f} se {row['se']:.4f} df {row['df']:.3f} (converged: {fit.converged})")
    affordable, reason = kenward_roger_affordable(fit)
    if affordable:
        start = time.perf_counter()
        row = kenward_roger(fit, CONTRAST).iloc[0]
        print(f"transferstats Kenward-Roger {time.perf_counter() - start:.2f} s ({reason}); "
              f"se {row['se']:.4f} df {row['df']:.3f}")
    else:
        print(f"Kenward-Roger not run: {reason}")


def time_r(grid: pd.DataFrame) -> None:
    if shutil.which("Rscript") is None:
        print("R not found: lme4 not timed")
        return
    with tempfile.TemporaryDirectory() as folder:
        data, script = Path(folder) / "grid.csv", Path(folder) / "time.R"
        grid.drop(columns=["target_language", "target_mix"]).to_csv(data, index=False)
        script.write_text(R_SCRIPT)
        result = subprocess.run(["Rscript", str(script), str(data)], capture_output=True, text=True,
                                check=False)
        print(result.stdout.strip() or result.stderr.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-r", action="store_true", help="skip lme4")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    grid = simulate_grid(args.seed)
    print(f"grid: {len(grid):,} rows, {grid['mix'].nunique():,} mixes, "
          f"{grid['target_language'].nunique()} target-languages, {grid['target_task'].nunique()} targets")
    for target_mix in (False, True):
        time_python(grid, target_mix)
    if not args.no_r:
        time_r(grid)


if __name__ == "__main__":
    main()
