"""One REML fit of a crossed random-intercept model: ``fit_crossed`` against lme4 and statsmodels.

For each case the script writes the data to a CSV file in a temporary folder and times, in the
same run and on the same cores,

1. ``fit_crossed`` (the whole call: model arrays, cross-products, optimisation, covariance,
   BLUPs), in this process, best of ``--repeats`` after one warm-up fit of a small model, with
   one BLAS thread and with one per core;
2. lme4's ``lmer(..., REML = TRUE)`` (default settings) through ``Rscript``, timing only the
   ``lmer`` call inside R (best of ``--repeats``), then, untimed, the same fit with a tighter
   optimiser; the estimates are compared with the default fit and with lme4's best fit (the
   lower REML criterion of the two); skipped, with a note, when R or lme4 is missing;
3. statsmodels' ``MixedLM`` (one group, one variance component per factor: the reference of
   tests/test_mixed.py) in a child process killed after ``--statsmodels-limit`` seconds.

and prints wall and CPU seconds (CPU: all threads of the process), the ratio of lme4's time to
``fit_crossed``'s, the largest relative differences of the estimates (fixed effects, variance
components, residual variance) and of the fixed effects' standard errors -- against lme4 the
conditional ones, sigma^2 (X'V^-1 X)^-1, which is what lme4 reports; against statsmodels
``CrossedFit.bse``, which follows statsmodels -- and the difference of the REML criteria.

R's reference BLAS is single-threaded, so lme4 uses one of the cores; OpenBLAS under
``fit_crossed`` uses all of them. On a machine busier than its cores, OpenBLAS's threads wait
for each other and both figures of ``fit_crossed`` inflate: the load average is printed first.

Cases:

* ``insteval``: lme4's InstEval data (73,421 ratings; 2,972 students x 1,128 instructors x 14
  departments), ``y ~ service + (1|s) + (1|d) + (1|dept)``, exported from R once per run.
* ``insteval-shape``: a simulation of the same shape (students rate ~25 instructors, mostly of
  two departments; variances as lme4 estimates them on InstEval).
* ``many-mix``: a multi-source transfer grid of 35,000 rows: 1,100 mixes, each evaluated with
  one seed on all 20 languages of one or two of 5 target tasks (100 target-language pairs),
  ``score ~ diversity + volume + (1|target_task) + (1|target_language) + (1|mix)``.
* ``many-mix-cells``: the same grid with a (mix, target) effect (SD 0.5) and ``(1|mix_target)``
  in the model, as ``analyze`` fits it (``target_mix``): the cells are nested in the mixes.

Usage::

    python benchmarks/solver_speed.py                          # all cases, 2 cores
    python benchmarks/solver_speed.py --cases many-mix --statsmodels-limit 60
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

CASES = {
    "insteval": ("y", ["service"], ["s", "d", "dept"]),
    "insteval-shape": ("y", ["service"], ["s", "d", "dept"]),
    "many-mix": ("score", ["diversity", "volume"], ["target_task", "target_language", "mix"]),
    "many-mix-cells": ("score", ["diversity", "volume"],
                       ["target_task", "target_language", "mix", "mix_target"]),
}

#: Address space allowed to the statsmodels child: its dense n x q design of InstEval alone is
#: 2.4 GB, and the machine is shared.
STATSMODELS_MEMORY = 8 * 2 ** 30

R_FIT = r"""
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
data <- read.csv(args[1])
for (f in strsplit(args[4], ",")[[1]]) data[[f]] <- factor(data[[f]])
form <- as.formula(args[3])
best <- Inf; best_cpu <- Inf
for (i in seq_len(as.integer(args[5]))) {
  t <- system.time(fit <- lmer(form, data = data, REML = TRUE))
  if (t[["elapsed"]] < best) { best <- t[["elapsed"]]; best_cpu <- t[["user.self"]] + t[["sys.self"]] }
}
# Untimed: the same fit with a much smaller final trust radius (as benchmarks/lme4/make_fixtures.R);
# lme4's default stops about 1e-4 short in small variances.
tight <- lmer(form, data = data, REML = TRUE,
              control = lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5)))
rows <- function(fit, label) {
  vc <- as.data.frame(VarCorr(fit))
  p <- length(fixef(fit))
  data.frame(fit = label, kind = c(rep("fixef", p), rep("se", p), rep("vc", nrow(vc)), "crit"),
             name = c(names(fixef(fit)), names(fixef(fit)), vc$grp, "REML"),
             value = c(fixef(fit), sqrt(diag(as.matrix(vcov(fit)))), vc$vcov, REMLcrit(fit)))
}
times <- data.frame(fit = "default", kind = "time", name = c("wall", "cpu"), value = c(best, best_cpu))
write.csv(rbind(times, rows(fit, "default"), rows(tight, "tight")), args[2], row.names = FALSE)
"""


def simulate_insteval_shape(rng: np.random.Generator, n_students: int = 2972,
                            n_instructors: int = 1128, n_departments: int = 14) -> pd.DataFrame:
    """Ratings of instructors by students, shaped like InstEval (about 73,000 rows)."""
    department_of = rng.choice(n_departments, n_instructors, p=rng.dirichlet(np.full(n_departments, 2.0)))
    by_department = [np.flatnonzero(department_of == k) for k in range(n_departments)]
    sizes = np.array([len(members) for members in by_department])
    n_ratings = 1 + rng.poisson(23.7, n_students)
    student = np.repeat(np.arange(n_students), n_ratings)
    # Each student rates mostly in two departments (weighted by size), sometimes anywhere.
    home = np.array([rng.choice(n_departments, 2, replace=False, p=sizes / sizes.sum())
                     for _ in range(n_students)])
    department = np.where(rng.random(len(student)) < 0.85,
                          home[student, rng.integers(0, 2, len(student))],
                          rng.choice(n_departments, len(student), p=sizes / sizes.sum()))
    instructor = np.array([by_department[k][i] for k, i in
                           zip(department, (rng.random(len(student)) * sizes[department]).astype(int),
                               strict=True)])
    service = (rng.random(len(student)) < 0.43).astype(float)
    y = (3.28 - 0.093 * service + rng.normal(0, np.sqrt(0.106), n_students)[student]
         + rng.normal(0, np.sqrt(0.265), n_instructors)[instructor]
         + rng.normal(0, np.sqrt(0.0069), n_departments)[department]
         + rng.normal(0, np.sqrt(1.387), len(student)))
    return pd.DataFrame({"s": student, "d": instructor, "dept": department, "service": service,
                         "y": y})


def simulate_many_mix(rng: np.random.Generator, n_mixes: int = 1100, n_targets: int = 5,
                      n_languages: int = 20, cell_sd: float = 0.0) -> pd.DataFrame:
    """A multi-source transfer grid: each mix evaluated, one seed, on 1 or 2 whole targets;
    with ``cell_sd``, a random effect per (mix, target) cell too (column ``mix_target``)."""
    tasks = 2 ** rng.integers(0, 4, n_mixes)                 # 1-8 source tasks
    examples = 1000 * 2 ** rng.integers(0, 5, n_mixes)       # 1k-16k examples
    diversity = np.log2(tasks) - np.log2(tasks).mean()
    volume = np.log2(examples) - np.log2(examples).mean()
    u_mix = rng.normal(0, 1.0, n_mixes)
    u_target = rng.normal(0, 5.0, n_targets)
    u_language = rng.normal(0, 3.0, (n_targets, n_languages))
    frames = []
    for m in range(n_mixes):
        for t in rng.choice(n_targets, 1 + int(rng.random() < 0.6), replace=False):
            lang = np.arange(n_languages)
            cell = rng.normal(0, cell_sd) if cell_sd > 0 else 0.0
            frames.append(pd.DataFrame({
                "mix": f"m{m:04d}", "target_task": f"t{t}", "mix_target": f"m{m:04d}:t{t}",
                "target_language": [f"t{t}:l{g:02d}" for g in lang],
                "diversity": diversity[m], "volume": volume[m],
                "score": (50 + 1.0 * diversity[m] + 0.5 * volume[m] + u_target[t] + u_language[t, lang]
                          + u_mix[m] + cell + rng.normal(0, 2.0, n_languages))}))
    return pd.concat(frames, ignore_index=True)


def export_insteval(folder: Path) -> Path | None:
    """InstEval as CSV (service as 0/1), from R; None without R and lme4."""
    path = folder / "insteval.csv"
    script = ("suppressMessages(library(lme4)); d <- InstEval; "
              "d$service <- as.numeric(as.character(d$service)); "
              f"write.csv(d[, c('s', 'd', 'dept', 'service', 'y')], '{path}', row.names = FALSE)")
    if not r_available():
        return None
    subprocess.run(["Rscript", "-e", script], check=True, capture_output=True)
    return path


def r_available() -> bool:
    if shutil.which("Rscript") is None:
        return False
    probe = subprocess.run(["Rscript", "-e", "library(lme4)"], capture_output=True)
    return probe.returncode == 0


def formula(outcome: str, fixed: list[str], random: list[str]) -> str:
    return f"{outcome} ~ {' + '.join(fixed)} + " + " + ".join(f"(1 | {f})" for f in random)


def estimates(params: dict, ses: dict, variances: dict, residual: float, criterion: float) -> dict:
    return {"params": params, "se": ses, "variances": {**variances, "Residual": residual},
            "criterion": criterion}


def time_fit_crossed(data: pd.DataFrame, outcome: str, fixed: list[str], random: list[str],
                     repeats: int) -> tuple[float, float, dict]:
    """Time ``fit_crossed``; its estimates carry both kinds of standard errors.

    ``se`` is ``CrossedFit.bse`` (statsmodels' definition: the inverse of the whole observed
    information); ``se_conditional`` is sigma^2 (X'V^-1 X)^-1 at the estimates, lme4's
    definition, computed after the timing from the same solver.
    """
    from transferstats.analysis.mixed import cross_products, derivatives, fit_crossed, model_arrays

    best = (np.inf, np.inf)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fit = fit_crossed(data, outcome, fixed, random)
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    assert fit.method == "fast" and fit.converged
    arrays = model_arrays(data, outcome, fixed, random)
    cp = cross_products(arrays.X, arrays.y, arrays.codes, [len(lv) for lv in arrays.levels])
    psi = np.array([fit.variance_components[f] for f in random]) / fit.residual_variance
    p = len(fit.params)
    information = -derivatives(psi, fit.params.to_numpy(), cp).hessian[:p, :p]
    conditional = np.sqrt(np.diag(np.linalg.inv(information)))
    result = estimates(fit.params.to_dict(), fit.bse.to_dict(), fit.variance_components,
                       fit.residual_variance, -2 * fit.llf)
    result["se_conditional"] = dict(zip(fit.params.index, conditional, strict=True))
    return (*best, result)


def time_lme4(csv: Path, outcome: str, fixed: list[str], random: list[str], repeats: int,
              env: dict) -> tuple[tuple[float, float, dict], dict] | str:
    """lme4's time and estimates (default settings), and its best estimates: those of the
    default or of the tightly converged fit, whichever has the lower REML criterion."""
    if not r_available():
        return "not run (no Rscript with lme4)"
    folder = csv.parent
    script, out = folder / "fit.R", folder / f"{csv.stem}_lme4.csv"
    script.write_text(R_FIT)
    subprocess.run(["Rscript", str(script), str(csv), str(out), formula(outcome, fixed, random),
                    ",".join(random), str(repeats)], check=True, capture_output=True, env=env)
    table = pd.read_csv(out)

    def part(fit, kind):
        rows = table[(table["fit"] == fit) & (table["kind"] == kind)]
        names = ["Intercept" if n == "(Intercept)" else n for n in rows["name"]]
        return dict(zip(names, rows["value"], strict=True))

    def fit_estimates(fit):
        variances = part(fit, "vc")
        residual = variances.pop("Residual")
        return estimates(part(fit, "fixef"), part(fit, "se"), variances, residual,
                         part(fit, "crit")["REML"])

    times = part("default", "time")
    default, tight = fit_estimates("default"), fit_estimates("tight")
    best = min((default, tight), key=lambda fit: fit["criterion"])
    best["which"] = "default" if best is default else "tight"
    return (times["wall"], times["cpu"], default), best


def time_statsmodels(csv: Path, outcome: str, fixed: list[str], random: list[str], limit: float,
                     env: dict) -> tuple[float, float, dict] | str:
    out = csv.parent / f"{csv.stem}_statsmodels.json"
    command = [sys.executable, __file__, "--statsmodels-child", str(csv), str(out), outcome,
               ",".join(fixed), ",".join(random)]

    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (STATSMODELS_MEMORY, STATSMODELS_MEMORY))

    try:
        done = subprocess.run(command, timeout=limit, capture_output=True, text=True, env=env,
                              preexec_fn=cap_memory)
    except subprocess.TimeoutExpired:
        return f"> {limit:.0f} s"
    if done.returncode != 0:
        if "MemoryError" in done.stderr:
            return f"failed: out of memory (capped at {STATSMODELS_MEMORY / 2 ** 30:.0f} GiB)"
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"failed ({last[:80]})"
    result = json.loads(out.read_text())
    return result["wall"], result["cpu"], result["estimates"]


def statsmodels_child(csv: str, out: str, outcome: str, fixed: str, random: str) -> None:
    from transferstats.analysis.mixed import fit_crossed_statsmodels

    data = read_case_csv(Path(csv), random.split(","))
    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_crossed_statsmodels(data, outcome, fixed.split(","), random.split(","))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    Path(out).write_text(json.dumps({"wall": wall, "cpu": cpu, "estimates": estimates(
        fit.params.to_dict(), fit.bse.to_dict(), fit.variance_components, fit.residual_variance,
        -2 * fit.llf)}))


def read_case_csv(path: Path, random: list[str]) -> pd.DataFrame:
    return pd.read_csv(path, dtype={factor: str for factor in random})


def differences(ours: dict, reference: dict, se: str) -> str:
    """Largest relative differences of the fixed effects, the variances and the standard errors
    (``se``: which of ours), and the difference of the REML criteria (negative: ours is lower)."""
    def rel(kind: str, mine: str | None = None) -> str:
        a, b = ours[mine or kind], reference[kind]
        return f"{max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in b):.1e}"

    return (f"largest relative difference: fixed effects {rel('params')}, variances "
            f"{rel('variances')}, SEs {rel('se', se)}; REML criterion ours - theirs "
            f"{ours['criterion'] - reference['criterion']:+.1e}")


def describe(result: tuple | str) -> str:
    if isinstance(result, str):
        return result
    return f"{result[0]:8.2f} s wall {result[1]:8.2f} s CPU"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--statsmodels-limit", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--statsmodels-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.statsmodels_child:
        statsmodels_child(*args.statsmodels_child)
        return

    cores = sorted(os.sched_getaffinity(0))[:args.cores]
    os.sched_setaffinity(0, cores)  # children (R, statsmodels) inherit the same cores
    env = {**os.environ, **{v: str(len(cores)) for v in
                            ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    from threadpoolctl import threadpool_limits

    from transferstats.analysis.mixed import fit_crossed

    print(f"cores {cores}; load average before the run {os.getloadavg()[0]:.1f}; "
          f"numpy {np.__version__}, python {sys.version.split()[0]}")
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        warm = simulate_many_mix(np.random.default_rng(0), n_mixes=40)
        fit_crossed(warm, *CASES["many-mix"][:1], CASES["many-mix"][1], CASES["many-mix"][2])
        for case in args.cases:
            outcome, fixed, random = CASES[case]
            if case == "insteval":
                csv = export_insteval(folder)
                if csv is None:
                    print(f"\n{case}: skipped (needs R with lme4)")
                    continue
            else:
                csv = folder / f"{case}.csv"
                (simulate_insteval_shape(rng) if case == "insteval-shape"
                 else simulate_many_mix(rng, cell_sd=0.5 if case == "many-mix-cells" else 0.0)
                 ).to_csv(csv, index=False)
            data = read_case_csv(csv, random)
            levels = " x ".join(f"{data[f].nunique():,} {f}" for f in random)
            print(f"\n{case}: {len(data):,} rows; {levels}\n  {formula(outcome, fixed, random)}")
            ours = {}
            for threads in sorted({1, len(cores)}):
                with threadpool_limits(threads):
                    ours[threads] = time_fit_crossed(data, outcome, fixed, random, args.repeats)
            lme4 = time_lme4(csv, outcome, fixed, random, args.repeats, env)
            sm = time_statsmodels(csv, outcome, fixed, random, args.statsmodels_limit, env)
            for threads, result in ours.items():
                print(f"  fit_crossed  {describe(result)}  ({threads} BLAS thread{'s' * (threads > 1)})")
            if isinstance(lme4, str):
                print(f"  lme4         {lme4}")
            else:
                timed, best = lme4
                speedups = ", ".join(f"{timed[0] / result[0]:.1f}x wall / {timed[1] / result[1]:.1f}x CPU "
                                     f"({threads} thread{'s' * (threads > 1)})"
                                     for threads, result in ours.items())
                estimates_ours = ours[len(cores)][2]
                # lme4's SEs are conditional on the variance estimates, statsmodels' (and bse) not.
                print(f"  lme4         {describe(timed)}  = {speedups}\n"
                      f"    vs lme4 (defaults): {differences(estimates_ours, timed[2], 'se_conditional')}\n"
                      f"    vs lme4 (best fit, {best['which']}): "
                      f"{differences(estimates_ours, best, 'se_conditional')}")
            line = f"  statsmodels  {describe(sm)}"
            if not isinstance(sm, str):
                line += (f"  = {sm[0] / ours[len(cores)][0]:.1f}x wall\n"
                         f"    vs statsmodels:     {differences(ours[len(cores)][2], sm[2], 'se')}")
            print(line)


if __name__ == "__main__":
    main()
