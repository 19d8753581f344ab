"""Does ``transferstats simulate --preset realistic`` make grids that lme4 reads as the public grid?

The preset (``transferstats.simulate.REALISTIC_COMPONENTS``) holds the variance components of
lme4's correlated fit of a public 1,079-mix language grid. This script simulates a language grid
with it (``--mixes`` mixes of 1 to 12 languages at 5,000 to 80,000 examples, five targets, one
seed), fits the same model with lme4 (REML),

    score ~ diversity * volume + (1 + diversity + volume | target_task)
            + (1 | target_task:language) + (1 | mix)

on the non-English rows, and prints the fitted components beside the preset's. The target and
target-language SDs of the scores also hold base(t, l)'s spread (the targets' English scores and
the language gap), so they come out larger than the preset's; with five targets the slope SDs and
their correlation are estimated from five draws and vary from one ``--random-state`` to the next.
Needs ``Rscript`` with lme4.

Usage::

    python benchmarks/realistic_preset_lme4.py                   # 300 mixes, random state 0
    python benchmarks/realistic_preset_lme4.py --mixes 600 --random-state 3
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from transferstats.analysis.derive import model_frame
from transferstats.loading import load_results
from transferstats.simulate import REALISTIC_COMPONENTS, SimulationSettings, flat_table, simulate_scores

R_FIT = r"""
suppressMessages(library(lme4))
d <- read.csv(commandArgs(TRUE)[1])
m <- lmer(score ~ diversity * volume + (1 + diversity + volume | target_task) +
          (1 | target_language) + (1 | mix), data = d, REML = TRUE)
v <- as.data.frame(VarCorr(m))
cat(sprintf("%s|%s|%s|%.4f\n", v$grp, v$var1, ifelse(is.na(v$var2), "", v$var2), v$sdcor),
    sep = "")
cat(sprintf("fixed|%s||%.4f\n", names(fixef(m)), fixef(m)), sep = "")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mixes", type=int, default=300, help="about this many mixes")
    parser.add_argument("--random-state", type=int, default=0)
    args = parser.parse_args()
    levels = (1, 2, 3, 4, 6, 8, 12)
    volumes = (5000, 10_000, 20_000, 40_000, 80_000)
    settings = SimulationSettings.realistic(
        targets=("xnli", "mlqa", "tydiqa", "xquad", "panx"), diversity_levels=levels,
        volume_levels=volumes, draws=max(1, args.mixes // (len(levels) * len(volumes))),
        intercept=-15.0, random_state=args.random_state)
    data, _ = model_frame(load_results(flat_table(*simulate_scores(settings))).scores,
                          outcome="score")
    data = data[data["metric"] != "exact_match"]
    per_mix = data.drop_duplicates("mix")
    data = data.assign(diversity=data["diversity"] - per_mix["diversity"].mean(),
                       volume=data["volume"] - per_mix["volume"].mean())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "grid.csv"
        data[["score", "diversity", "volume", "target_task", "target_language", "mix"]].to_csv(
            path, index=False)
        script = Path(folder) / "fit.R"
        script.write_text(R_FIT)
        fitted = subprocess.run(["Rscript", str(script), str(path)], check=True,
                                capture_output=True, text=True).stdout
    realised = settings.realised()
    slopes = np.array([[realised["diversity"][t], realised["volume"][t]]
                       for t in settings.targets])
    print(f"{per_mix.shape[0]} mixes, {len(data)} non-English rows, random state "
          f"{args.random_state}; drawn slopes: SD {slopes.std(axis=0, ddof=1).round(2)}, "
          f"correlation {np.corrcoef(slopes.T)[0, 1]:.2f}; their average "
          f"{slopes.mean(axis=0).round(2)}, the population's "
          f"{[settings.diversity_effect, settings.volume_effect]}")
    print("lme4 (REML) component | value | preset")
    preset = {("target_task", "(Intercept)", ""): REALISTIC_COMPONENTS["target_sd"],
              ("target_task", "diversity", ""): REALISTIC_COMPONENTS["target_diversity_sd"],
              ("target_task", "volume", ""): REALISTIC_COMPONENTS["target_volume_sd"],
              ("target_task", "diversity", "volume"): REALISTIC_COMPONENTS[
                  "target_slope_correlation"],
              ("target_language", "(Intercept)", ""): REALISTIC_COMPONENTS["target_language_sd"],
              ("mix", "(Intercept)", ""): REALISTIC_COMPONENTS["mix_sd"],
              ("Residual", "", ""): REALISTIC_COMPONENTS["seed_sd"]}
    for line in fitted.splitlines():
        group, first, second, value = line.split("|")
        first = "" if first == "NA" else first
        print(f"{group} {first} {second} | {float(value):.3f} | {preset.get((group, first, second), '')}")


if __name__ == "__main__":
    main()
