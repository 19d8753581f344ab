"""``ts.analyze`` with every default on a 1,100-mix language grid shaped like the public one, as a
user meets it (a fresh process, the first call), beside lme4 + lmerTest fitting the same model.

The grid (issue 25's and issue 26's benchmark): 1,100 mixes of 1 to 33 of 40 source languages
at 0.5 to 4 thousand examples per language, 5 targets evaluated in 9 to 33 of the languages,
each mix run once on one or two targets (about 35,000 scores), no baseline; scores from the
magnitudes lme4 estimated on the public grid: target intercept SD 5.6, target-language SD 9.2,
mix SD 0.69, residual 5.0, correlated target slopes (SD 5.9 per doubling of languages, 3.1 per
doubling of examples, correlation -0.98). With every default the analysis fits correlated
slopes by target and reads its verdict from Satterthwaite's t intervals (docs/statistics.md).

Run from the repository root (a few minutes with R):

    python benchmarks/analyze_speed.py [--no-r] [--seed N] [--jobs N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

#: 40 source languages (ISO 639-1), and each target's evaluation languages among them.
LANGUAGES = ("ar bg de el en es fr hi ru sw th tr ur vi zh ja ko bn fi id te et it ta eu my "
             "af az ca cs da fa he hu kk lt mr nl pl pt").split()
TARGETS = {"nli": 15, "pos": 33, "ner": 30, "qa": 9, "squadlike": 11}

R_SCRIPT = """
suppressMessages({library(lme4); library(lmerTest)})
rows <- read.csv(commandArgs(TRUE)[1])
start <- proc.time()[["elapsed"]]
fit <- lmer(score ~ diversity * volume + (1 + diversity + volume | target_task) +
            (1 | target_task:language) + (1 | mix) + (1 | target_task:mix), data = rows)
res <- contest(fit, c(0, 1, -1, 0), joint = FALSE, ddf = "Satterthwaite", confint = TRUE)
cat(sprintf(paste("lme4 + lmerTest (the same model, REML, Satterthwaite): %.1f s;",
                  "diversity - volume %.3f [%.3f, %.3f], df %.2f\\n"),
            proc.time()[["elapsed"]] - start, res$Estimate, res$lower, res$upper, res$df))
"""


def language_grid(seed: int) -> tuple[pd.DataFrame, dict]:
    """The flat results table and the target tasks it scores (as ``tasks=``)."""
    rng = np.random.default_rng(seed)
    n_mixes = 1_100
    size = rng.integers(1, 34, n_mixes)
    per_language = rng.uniform(500, 4_000, n_mixes).astype(int)
    members = [sorted(rng.choice(LANGUAGES, k, replace=False)) for k in size]
    mix_tasks = ["+".join(f"{code}={per_language[m]}" for code in codes)
                 for m, codes in enumerate(members)]
    diversity = np.log2(size) - np.log2(size).mean()
    volume = np.log2(size * per_language)
    volume -= volume.mean()
    targets = {name: list(rng.choice(LANGUAGES, k, replace=False)) for name, k in TARGETS.items()}
    sds, corr = np.array([5.6, 5.9, 3.1]), np.eye(3)
    corr[1, 2] = corr[2, 1] = -0.98
    effects = rng.multivariate_normal(np.zeros(3), corr * np.outer(sds, sds), len(targets))
    language_effect = {(t, code): rng.normal(0, 9.2) for t, codes in targets.items()
                       for code in codes}
    mix_effect = rng.normal(0, 0.69, n_mixes)
    rows = []
    for m in range(n_mixes):
        for t in rng.choice(len(targets), 1 + int(rng.random() < 0.5), replace=False):
            name = list(targets)[t]
            for code in targets[name]:
                score = (50 + diversity[m] + 1.5 * volume[m] + mix_effect[m]
                         + effects[t] @ [1, diversity[m], volume[m]]
                         + language_effect[(name, code)] + rng.normal(0, 5.0))
                rows.append((f"run{m}.{name}", f"mix{m:04d}", mix_tasks[m], name, code,
                             float(np.clip(score, 0, 100))))
    table = pd.DataFrame(rows, columns=["run_id", "mix", "mix_tasks", "target_task", "language",
                                        "value"])
    table = table.assign(model="xlm-roberta-large", source_kind="language", seed=1,
                         metric="accuracy", split="test")
    tasks = {name: {"role": "target", "format": "classification", "metric": "accuracy",
                    "languages": codes} for name, codes in targets.items()}
    return table, tasks


def _analyze(seed: int, jobs: int | None, rows_file: str, queue) -> None:
    """In a fresh process: import, build the grid, analyse it with every default."""
    start = time.perf_counter()
    import transferstats as ts

    imported = time.perf_counter()
    table, tasks = language_grid(seed)
    built = time.perf_counter()
    result = ts.analyze(table, tasks=tasks, jobs=jobs)
    done = time.perf_counter()
    columns = ["score", "diversity", "volume", "target_task", "language", "mix"]
    result.model_data[columns].to_csv(rows_file, index=False)
    comparison = result.comparison
    queue.put({"import_s": imported - start, "build_s": built - imported,
               "analyze_s": done - built, "rows": len(result.model_data),
               "verdict": result.verdict, "method": result.intervals.method,
               "structure": result.slopes.fitted or result.structure.formula(),
               "contrast": (comparison.estimate, comparison.ci_low, comparison.ci_high,
                            comparison.df)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-r", action="store_true", help="skip lme4")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=None, help="default: analyze's own")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows_file = str(Path(folder) / "rows.csv")
        context = multiprocessing.get_context("spawn")  # nothing inherited from this process
        queue = context.Queue()
        process = context.Process(target=_analyze, args=(args.seed, args.jobs, rows_file, queue))
        process.start()
        out = queue.get()
        process.join()
        estimate, low, high, df = out["contrast"]
        print(f"grid: {out['rows']:,} modelled rows, 1,100 mixes, 5 targets")
        print(f"ts.analyze, every default (fresh process): {out['analyze_s']:.1f} s "
              f"(+ import {out['import_s']:.1f} s, grid {out['build_s']:.1f} s); target < 60 s")
        print(f"  model {out['structure']}; intervals {out['method']}; verdict {out['verdict']}")
        print(f"  diversity - volume {estimate:.3f} [{low:.3f}, {high:.3f}], df {df:.2f}")
        if args.no_r or shutil.which("Rscript") is None:
            print("lme4 not timed" + ("" if args.no_r else ": R not found"))
            return
        script = Path(folder) / "time.R"
        script.write_text(R_SCRIPT)
        result = subprocess.run(["Rscript", str(script), rows_file], capture_output=True,
                                text=True, check=False)
        print(result.stdout.strip() or result.stderr.strip())


if __name__ == "__main__":
    main()
