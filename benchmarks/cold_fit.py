"""One cold REML fit of lme4's InstEval, as a user meets it: ``fit_crossed`` against ``lmer``.

Cold: the first fit in a fresh process. Each ``fit_crossed`` figure comes from its own new Python
process that imports ``transferstats``, reads the data (untimed) and times the call
``ts.fit_crossed(data, "y", ["service"], ["s", "d", "dept"])`` from the call to its return,
once; lme4's comes from a fresh ``Rscript`` that times only the ``lmer(..., REML = TRUE)`` call,
its first, inside R. Everything runs in this one run, on the same cores, one after another.

``fit_crossed`` is run with the BLAS threads it chooses by problem size (the default a user
gets: :func:`transferstats.parallel.blas_threads_for`) and, to see what that choice is worth,
without it: with OpenBLAS's own thread count (one per core; what a fit got before the choice)
and limited to one thread. R's reference BLAS is single-threaded. The import of the solver is
inside the timed call (``ts.fit_crossed`` is imported on first use), as a user meets it.

The model: ``y ~ service + (1 | s) + (1 | d) + (1 | dept)`` (73,421 ratings; 2,972 students x
1,128 instructors x 14 departments). Needs R with lme4 (InstEval ships with it).

Usage::

    python benchmarks/cold_fit.py              # 2 cores, each fit once
    python benchmarks/cold_fit.py --runs 3     # each cold fit three times (fresh processes)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from solver_speed import export_insteval, r_available

CHILD = r"""
import json, sys, time
threads = sys.argv[2]
import transferstats as ts
import pandas as pd
data = pd.read_csv(sys.argv[1], dtype={"s": str, "d": str, "dept": str})
if threads != "auto":   # no choice by size: BLAS as the environment sets it
    import transferstats.parallel
    transferstats.parallel.SMALL_MATRIX_ORDER = 0
wall, cpu = time.perf_counter(), time.process_time()
fit = ts.fit_crossed(data, "y", ["service"], ["s", "d", "dept"])
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(json.dumps({"wall": wall, "cpu": cpu, "method": fit.method, "llf": fit.llf}))
"""

R_COLD = r"""
suppressMessages(library(lme4))
data <- read.csv(commandArgs(trailingOnly = TRUE)[1])
for (f in c("s", "d", "dept")) data[[f]] <- factor(data[[f]])
t <- system.time(fit <- lmer(y ~ service + (1 | s) + (1 | d) + (1 | dept), data = data, REML = TRUE))
cat(t[["elapsed"]], t[["user.self"]] + t[["sys.self"]], -REMLcrit(fit) / 2, "\n")
"""


def ours(csv: Path, threads: str, env: dict) -> dict:
    if threads not in ("auto", "blas"):
        # Set before any BLAS loads: scipy's own OpenBLAS loads during the timed call, after a
        # threadpoolctl limit set in the child would have been applied.
        env = {**env, **{v: threads for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                              "MKL_NUM_THREADS")}}
    done = subprocess.run([sys.executable, "-c", CHILD, str(csv), threads], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def lme4(csv: Path, env: dict) -> dict:
    done = subprocess.run(["Rscript", "-e", R_COLD, str(csv)], env=env, capture_output=True,
                          text=True, check=True)
    wall, cpu, llf = map(float, done.stdout.split())
    return {"wall": wall, "cpu": cpu, "llf": llf}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1, help="cold fits of each kind")
    args = parser.parse_args()
    if not r_available():
        sys.exit("needs Rscript with lme4 (InstEval ships with it)")
    if hasattr(os, "sched_setaffinity"):   # children (R too) inherit the same cores
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cores])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")])}
    print(f"{args.cores} cores; load average before the run {os.getloadavg()[0]:.1f}; "
          f"python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        csv = export_insteval(Path(tmp))
        assert csv is not None
        kinds = {"fit_crossed, BLAS threads by size (default)": "auto",
                 "fit_crossed, OpenBLAS's own threads": "blas",
                 "fit_crossed, 1 BLAS thread": "1"}
        times: dict[str, list[dict]] = {kind: [] for kind in [*kinds, "lme4 lmer"]}
        for _ in range(args.runs):   # interleaved, so that a slow spell hits every kind
            for kind, threads in kinds.items():
                times[kind].append(ours(csv, threads, env))
            times["lme4 lmer"].append(lme4(csv, env))
    reference = min(t["wall"] for t in times["lme4 lmer"])
    for kind, runs in times.items():
        walls = ", ".join(f"{t['wall']:.2f}" for t in runs)
        best = min(t["wall"] for t in runs)
        print(f"  {kind:<44} wall {walls} s (CPU {min(t['cpu'] for t in runs):.2f} s); "
              f"lme4 / this {reference / best:5.1f}x; log-likelihood {runs[0]['llf']:.4f}")


if __name__ == "__main__":
    main()
