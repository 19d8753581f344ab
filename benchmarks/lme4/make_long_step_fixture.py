"""lme4's fit of a grid on which a long L-BFGS-B step once failed the analysis (tests/test_lmm.py).

The grid is grid 242 of the coverage study's design "many 120 mixes, 5 targets, slope SD 1 SE,
r +0.0" (benchmarks/coverage_study.py --slopes). analyze's primary model there has correlated
slopes of diversity and volume by target and nine task-identity shares; its first L-BFGS-B step
went to thetas near 1e7, where X'V^-1X is not positive definite in floating point. This script
writes the model's rows as analyze fits them (tests/fixtures/lme4/long_step_grid.csv.gz) and
lme4's REML criterion and fixed effects for them (long_step_grid_lme4.csv). It needs R with
lme4; the test does not. Run from the repository root:

    python benchmarks/lme4/make_long_step_fixture.py
"""

from __future__ import annotations

import importlib.util
import subprocess
import warnings
from pathlib import Path

import pandas as pd

from transferstats import load_results
from transferstats.analysis import pipeline
from transferstats.analysis.pipeline import analyze_loaded
from transferstats.analysis.spec import AnalysisSpec
from transferstats.parallel import LOCAL
from transferstats.simulate import flat_table, simulate_scores

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "lme4"
DESIGN, GRID = "many 120 mixes, 5 targets, slope SD 1 SE, r +0.0", 242

R_SCRIPT = """
suppressMessages(library(lme4))
d <- read.csv(gzfile("{data}"), check.names = FALSE)
fixed <- setdiff(names(d), c("score", "target_task", "target_language", "mix", "mix_target"))
terms <- paste0("`", fixed, "`", collapse = " + ")
formula <- as.formula(paste("score ~", terms, "+ (1 + diversity + volume | target_task)",
                            "+ (1 | target_language) + (1 | mix) + (1 | mix_target)"))
control <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
m <- lmer(formula, d, REML = TRUE, control = control)
beta <- fixef(m)
names(beta) <- gsub("`", "", names(beta))
out <- data.frame(name = c("REML criterion", names(beta)), value = c(REMLcrit(m), beta))
out <- rbind(out, data.frame(name = "lme4 version", value = NA))
out$text <- c(rep("", nrow(out) - 1), as.character(packageVersion("lme4")))
write.csv(out, "{reference}", row.names = FALSE)
"""


def model_rows() -> pd.DataFrame:
    """The rows, outcome and columns analyze's primary model is fitted on for this grid."""
    spec = importlib.util.spec_from_file_location("coverage_study",
                                                  ROOT / "benchmarks" / "coverage_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    settings, _, _ = study.slope_settings(DESIGN, GRID)
    captured: dict = {}
    fit = pipeline.fit_slopes_model

    def capture(data, outcome, fixed, random, *args):
        captured["rows"] = data[[outcome, *fixed, *random]].rename(columns={outcome: "score"})
        return fit(data, outcome, fixed, random, *args)

    pipeline.fit_slopes_model = capture
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analyze_loaded(load_results(flat_table(*simulate_scores(settings))),
                       AnalysisSpec(resamples=50, seed=GRID, scheduler=LOCAL), n_jobs=1,
                       progress=False, companions=False)
    pipeline.fit_slopes_model = fit
    return captured["rows"]


def main() -> None:
    data, reference = OUT / "long_step_grid.csv.gz", OUT / "long_step_grid_lme4.csv"
    model_rows().to_csv(data, index=False)
    script = R_SCRIPT.format(data=data.as_posix(), reference=reference.as_posix())
    subprocess.run(["Rscript", "-e", script], check=True)
    print(pd.read_csv(reference).to_string(index=False))


if __name__ == "__main__":
    main()
