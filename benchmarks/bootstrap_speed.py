"""How long the crossed bootstrap of ``transferstats analyze`` takes, and how much memory.

Two kinds of case (issue 9's table):

* ``20k``, ``100k``: factorial grids written by ``transferstats simulate`` (36 and 60 mixes, the
  outcome ``improvement``). For each the script

  1. runs ``transferstats analyze`` on it end to end (load, models, bootstrap, report) and
     reports its wall time and the peak memory of its process tree (main process plus
     bootstrap workers);
  2. runs the crossed bootstrap alone on the same model data, with the same measurements;
  3. times single refits of bootstrap resamples: the fast path on a few dozen resamples, and
     statsmodels' MixedLM (REML, default optimiser settings) on a few of the same resamples --
     a statsmodels bootstrap would take hours, so its total is extrapolated from those refits.

* ``manymix`` (about 35,000 rows: 1,100 mixes, 5 targets x 20 languages, each mix run once on
  1.6 targets on average) and ``1m`` (about 1,000,000 rows: 10,000 mixes, 5 targets x 40
  languages = 200 target-languages, 2.5 targets per mix): multi-source grids of one seed and no
  baseline, shapes ``transferstats simulate`` does not make. Each is built as a DataFrame in the
  flat-table form and analysed with ``ts.analyze(df, outcome="score")`` in a fresh process,
  whose process tree's peak memory is sampled throughout; the crossed bootstraps inside the
  analysis are timed and their refits counted. statsmodels is not run on these: with one group
  ``MixedLM`` works with dense n x n matrices (35,000 rows: 9.8 GB).

Wall times are for ``--jobs`` worker processes (default 2: two cores). The header
names the solver (``transferstats/analysis/mixed.py``) commit measured.

Usage::

    python benchmarks/bootstrap_speed.py                   # every case, 1000 resamples
    python benchmarks/bootstrap_speed.py --sizes 20k --resamples 200 --statsmodels-refits 1
    python benchmarks/bootstrap_speed.py --sizes manymix,1m
    python benchmarks/bootstrap_speed.py --sizes manymix --no-target-mix   # without the target-by-mix term
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from queue import Empty

import numpy as np
import pandas as pd
import psutil
from threadpoolctl import threadpool_limits

from transferstats.analysis.bootstrap import (
    crossed_bootstrap,
    output_matrix,
    refit,
    resample_rows,
    resampling_design,
)
from transferstats.analysis.description import describe
from transferstats.analysis.mixed import ModelArrays, fit_crossed, statsmodels_model
from transferstats.analysis.model import CONTRAST, INTERACTION, build_model
from transferstats.analysis.spec import AnalysisSpec
from transferstats.loading import load_results
from transferstats.tasks import INTERMEDIATE_TASKS

# ``transferstats simulate`` options: 155 non-English (target, language) pairs of XTREME times
# the mixes (4 diversity x volume levels x 3 draws) times the seeds.
GRIDS = {
    "20k": ["--seeds", "1,2,3,4"],                            # 36 mixes, 4 seeds: 22,320 rows
    "100k": ["--volume-levels", "10000,20000,40000,80000,160000",
             "--seeds", ",".join(str(s) for s in range(1, 12))],  # 60 mixes, 11: 102,300 rows
}
FIXED = ["diversity", "volume", INTERACTION]
UNITS = ("language", "mix")

#: Multi-source grids built as DataFrames: mixes, targets, languages per target, mean targets
#: per mix, and the issue's targets (seconds end to end, GiB of peak memory).
FRAMES = {
    "manymix": {"mixes": 1_100, "targets": 5, "languages": 20, "targets_per_mix": 1.6,
                "target_s": 60, "target_gib": None},
    "1m": {"mixes": 10_000, "targets": 5, "languages": 40, "targets_per_mix": 2.5,
           "target_s": 600, "target_gib": 4.0},
}


class PeakMemory:
    """Samples the memory of a process and all its descendants; keeps the largest sums.

    ``peak`` sums resident set sizes: an upper bound, since bootstrap workers are forked and
    share the parent's pages, which each one's RSS counts again. ``peak_pss`` (when
    ``proportional``) sums proportional set sizes, which split shared pages among the
    processes sharing them: the memory the tree really holds.
    """

    def __init__(self, pid: int, interval: float = 0.05, proportional: bool = False):
        self.process, self.interval, self.peak, self.peak_pss = psutil.Process(pid), interval, 0, 0
        self.proportional = proportional
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(_rss(p) for p in tree))
                if self.proportional:
                    self.peak_pss = max(self.peak_pss, sum(_pss(p) for p in tree))
            except psutil.NoSuchProcess:
                pass
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
        return False


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.NoSuchProcess:
        return 0


def _pss(process: psutil.Process) -> int:
    try:
        return process.memory_full_info().pss
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return 0


def cpu_seconds() -> float:
    """User + system CPU of this process and of its finished children (workers included)."""
    return sum(getattr(resource.getrusage(who), field)
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))


def transferstats(*args: str) -> tuple[float, float, int]:
    """Run a ``transferstats`` command; return wall seconds, CPU seconds and peak tree memory."""
    start, cpu = time.perf_counter(), cpu_seconds()
    process = psutil.Popen([sys.executable, "-m", "transferstats.cli", *args],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with PeakMemory(process.pid) as memory:
        _, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"transferstats {' '.join(args)} failed:\n{stderr.decode()}")
    return time.perf_counter() - start, cpu_seconds() - cpu, memory.peak


def model_data(results: Path):
    """The rows ``analyze`` fits, built the way the analysis pipeline builds them."""
    described = describe(load_results(results), AnalysisSpec(outcome="improvement"))
    data, structure = build_model(described.description, described.data, described.mixes,
                                  interaction=True, target_mix=True, identity="off")
    return data, list(structure.random)


def time_refits(data, random, n_fast: int, n_statsmodels: int, timeout: float, seed: int = 0
                ) -> dict:
    """Seconds per refit of bootstrap resamples: fast path versus statsmodels MixedLM (REML)."""
    full = fit_crossed(data, "improvement", FIXED, random)
    _, outputs = output_matrix(full.terms, {})
    start = np.sqrt(np.array([full.variance_components[f] for f in random])
                    / full.residual_variance)
    design = resampling_design(data, "improvement", FIXED, random, UNITS, "seed",
                               ("mix", "target_task"), outputs, start)
    resamples = [resample_rows(design, np.random.default_rng(s))
                 for s in np.random.SeedSequence(seed).spawn(n_fast)]
    began = time.perf_counter()
    with threadpool_limits(1):  # as in the bootstrap workers
        fast = [refit(design, rows, codes) for rows, codes in resamples]
    fast_seconds = (time.perf_counter() - began) / n_fast
    statsmodels_seconds, differences, finished = [], [], True
    for (rows, codes), fast_params in zip(resamples[:n_statsmodels], fast, strict=False):
        arrays = ModelArrays(design.y[rows], design.X[rows], codes,
                             [np.arange(c.max() + 1) for c in codes], full.terms, random, None)
        seconds, fe_params = statsmodels_refit(arrays, timeout)
        statsmodels_seconds.append(seconds)
        if fe_params is None:
            finished = False
            break
        reference = outputs @ fe_params
        differences.append(np.max(np.abs(fast_params - reference) / np.abs(reference)))
    return {"fast": fast_seconds,
            "statsmodels": float(np.mean(statsmodels_seconds)) if statsmodels_seconds else np.nan,
            "statsmodels_finished": finished,
            "max_relative_difference": float(np.max(differences)) if differences else np.nan}


def _fit_statsmodels(arrays: ModelArrays, queue: multiprocessing.Queue) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        queue.put(np.asarray(statsmodels_model(arrays).fit(reml=True).fe_params))


def statsmodels_refit(arrays: ModelArrays, timeout: float) -> tuple[float, np.ndarray | None]:
    """Seconds for one statsmodels MixedLM REML fit and its fixed effects, in a child process
    stopped after ``timeout`` seconds (then the fixed effects are None: a lower bound)."""
    queue = multiprocessing.get_context("fork").Queue()
    process = multiprocessing.get_context("fork").Process(target=_fit_statsmodels,
                                                           args=(arrays, queue))
    began = time.perf_counter()
    process.start()
    try:
        fe_params = queue.get(timeout=timeout)
    except Empty:
        fe_params = None
        process.kill()
    process.join()
    return time.perf_counter() - began, fe_params


def run_size(name: str, workdir: Path, resamples: int, jobs: int, statsmodels_refits: int,
             statsmodels_timeout: float) -> dict:
    results = workdir / f"results-{name}"
    simulate_seconds, _, _ = transferstats("simulate", str(results), *GRIDS[name])
    analyze_seconds, analyze_cpu, analyze_memory = transferstats(
        "analyze", str(results), "--resamples", str(resamples), "--jobs", str(jobs),
        "--out", str(workdir / f"report-{name}"))
    data, random = model_data(results)
    began, cpu = time.perf_counter(), cpu_seconds()
    with PeakMemory(psutil.Process().pid) as memory:
        boot = crossed_bootstrap(data, "improvement", FIXED, random, units=UNITS,
                                 contrasts={CONTRAST: {"diversity": 1, "volume": -1}},
                                 n_resamples=resamples, n_jobs=jobs, progress=False)
    bootstrap_seconds, bootstrap_cpu = time.perf_counter() - began, cpu_seconds() - cpu
    refits = time_refits(data, random, n_fast=20, n_statsmodels=statsmodels_refits,
                         timeout=statsmodels_timeout)
    return {"grid": name, "rows": len(data), "resamples": resamples, "jobs": jobs,
            "simulate_s": simulate_seconds, "analyze_s": analyze_seconds, "analyze_cpu": analyze_cpu,
            "analyze_peak_gib": analyze_memory / 2 ** 30, "bootstrap_s": bootstrap_seconds,
            "bootstrap_cpu": bootstrap_cpu, "bootstrap_peak_gib": memory.peak / 2 ** 30,
            "failed": boot.n_failed, **refits}


def report(row: dict) -> None:
    ratio = row["statsmodels"] / row["fast"]
    extrapolated = row["statsmodels"] * row["resamples"]
    print(f"\n== grid {row['grid']}: {row['rows']:,} rows, {row['resamples']} resamples, "
          f"{row['jobs']} worker processes ==")
    print(f"transferstats simulate                 {row['simulate_s']:8.1f} s wall")
    print(f"transferstats analyze (end to end)     {row['analyze_s']:8.1f} s wall, "
          f"{row['analyze_cpu']:.1f} s CPU, peak memory {row['analyze_peak_gib']:.2f} GiB "
          "(process tree)")
    print(f"crossed bootstrap alone                {row['bootstrap_s']:8.1f} s wall, "
          f"{row['bootstrap_cpu']:.1f} s CPU, peak memory {row['bootstrap_peak_gib']:.2f} GiB "
          f"(process tree), {row['failed']} failed resamples")
    print(f"seconds per refit, fast path           {row['fast']:8.4f} s (mean of 20 resamples, "
          "one process)")
    if np.isnan(row["statsmodels"]):
        print("statsmodels MixedLM                    not run (--statsmodels-refits 0)")
        return
    bound = "" if row["statsmodels_finished"] else "> "
    note = "" if row["statsmodels_finished"] else " (stopped unfinished: lower bounds)"
    print(f"seconds per refit, statsmodels MixedLM {bound}{row['statsmodels']:.2f} s (mean of a few "
          f"resamples, REML, default settings){note}")
    print(f"ratio statsmodels / fast               {bound}{ratio:.0f} x")
    print(f"statsmodels bootstrap, extrapolated    {bound}{extrapolated:.0f} s "
          f"({extrapolated / 3600:.1f} h) for {row['resamples']} resamples in one process")
    if row["statsmodels_finished"]:
        print(f"largest relative difference fast vs statsmodels on those refits: "
              f"{row['max_relative_difference']:.1e}")


# --------------------------------------------------------------------------------------------
# Multi-source grids built as DataFrames


def flat_grid(mixes: int, targets: int, languages: int, targets_per_mix: float, seed: int = 0
              ) -> tuple[pd.DataFrame, dict]:
    """A results table in the flat form, and the target tasks it scores (as ``tasks=``).

    Each mix is 1, 2, 4 or 8 English intermediate tasks with a log-uniform total of 5,000 to
    200,000 examples, drawn independently (diversity and volume not confounded), run once
    (seed 1; no baseline) on 1 + Binomial(targets - 1, p) targets, ``targets_per_mix`` on
    average, and scored on every language of each. Scores follow the crossed model of
    ``transferstats simulate``: 1 point per doubling of tasks, 0.5 per doubling of examples,
    intercepts for target (SD 3), target-language (SD 2) and mix (SD 1), residual SD 1.
    """
    rng = np.random.default_rng(seed)
    language_codes = [f"l{i:03d}" for i in range(languages)]
    target_names = np.array([f"target{t}" for t in range(targets)])
    tasks = {name: {"role": "target", "format": "classification", "metric": "accuracy",
                    "languages": language_codes} for name in target_names}
    n_tasks = rng.choice([1, 2, 4, 8], mixes)
    examples = np.exp2(rng.uniform(np.log2(5_000), np.log2(200_000), mixes)).astype(int)
    mix_tasks = np.array(["+".join(f"{task}={total // k}" for task in
                                   sorted(rng.choice(INTERMEDIATE_TASKS, k, replace=False)))
                          for k, total in zip(n_tasks, examples, strict=True)], dtype=object)
    runs_per_mix = 1 + rng.binomial(targets - 1, (targets_per_mix - 1) / (targets - 1), mixes)
    run_mix = np.repeat(np.arange(mixes), runs_per_mix)
    run_target = np.concatenate([rng.choice(targets, k, replace=False) for k in runs_per_mix])
    mix, target = np.repeat(run_mix, languages), np.repeat(run_target, languages)
    language = np.tile(np.arange(languages), len(run_mix))
    diversity, volume = np.log2(n_tasks)[mix], np.log2(examples)[mix]
    score = (60 + (diversity - diversity.mean()) + 0.5 * (volume - volume.mean())
             + rng.normal(0, 3, targets)[target]
             + rng.normal(0, 2, targets * languages)[target * languages + language]
             + rng.normal(0, 1, mixes)[mix] + rng.normal(0, 1, len(mix)))
    # Object arrays indexed by code: each row points at one shared string per run, mix or
    # language, as a table read from a file with repeated values roughly costs.
    run_ids = np.array([f"run{i}" for i in range(len(run_mix))], dtype=object)
    mix_names = np.array([f"mix{i}" for i in range(mixes)], dtype=object)
    table = pd.DataFrame({
        "run_id": np.repeat(run_ids, languages),
        "model": "xlm-roberta-large",
        "mix": mix_names[mix],
        "mix_tasks": mix_tasks[mix],
        "target_task": target_names.astype(object)[target],
        "seed": 1,
        "language": np.array(language_codes, dtype=object)[language],
        "metric": "accuracy",
        "split": "test",
        "value": np.clip(score, 0, 100),
    })
    return table, tasks


def _analyze_frame(name: str, resamples: int, jobs: int, target_mix: bool, start_method: str,
                   queue) -> None:
    """In a fresh process: build the case's table, analyse it with ``ts.analyze``, and send
    back the timings, including those of each crossed bootstrap the analysis runs.

    The bootstrap's worker pools start by ``start_method``, the platform's default, as in a
    user's script: a process started by spawn would otherwise spawn its workers too, each
    importing the package afresh (on the 1,100-mix grid 17 s more than a user waits).
    """
    import traceback

    multiprocessing.set_start_method(start_method, force=True)

    import transferstats as ts
    from transferstats.analysis import pipeline

    try:
        began = time.perf_counter()
        shape = {k: v for k, v in FRAMES[name].items() if not k.startswith("target_")}
        table, tasks = flat_grid(**shape)
        built = time.perf_counter() - began
        bootstraps = []
        crossed_bootstrap_of_pipeline = pipeline.crossed_bootstrap

        def timed_bootstrap(data, *args, **kwargs):
            start, cpu = time.perf_counter(), cpu_seconds()
            boot = crossed_bootstrap_of_pipeline(data, *args, **kwargs)
            bootstraps.append({"rows": len(data), "seconds": time.perf_counter() - start,
                               "cpu": cpu_seconds() - cpu, "resamples": boot.n_resamples,
                               "jackknife": len(boot.jackknife), "failed": boot.n_failed})
            return boot

        pipeline.crossed_bootstrap = timed_bootstrap
        # The progress bars of a fresh process would only clutter the benchmark's output.
        sys.stdout = sys.stderr = open(os.devnull, "w")  # closed when the process ends
        start, cpu = time.perf_counter(), cpu_seconds()
        result = ts.analyze(table, outcome="score", tasks=tasks, resamples=resamples, jobs=jobs,
                            target_mix=target_mix)
        queue.put({
            "grid": name, "table_rows": len(table), "mixes": table["mix"].nunique(),
            "target_languages": len(table[["target_task", "language"]].drop_duplicates()),
            "resamples": resamples, "jobs": jobs, "build_s": built, "target_mix": target_mix,
            "analyze_s": time.perf_counter() - start, "analyze_cpu": cpu_seconds() - cpu,
            "verdict": result.verdict, "bootstraps": bootstraps,
            "main_maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
            "worker_maxrss_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20,
        })
    except Exception:  # the parent reports it; a dead child would leave it waiting
        queue.put({"grid": name, "error": traceback.format_exc()})


def run_frame(name: str, resamples: int, jobs: int, target_mix: bool = True) -> dict:
    """Analyse a multi-source grid in a fresh process, sampling its process tree's memory."""
    context = multiprocessing.get_context("spawn")  # nothing inherited from this process
    queue = context.Queue()
    process = context.Process(target=_analyze_frame, args=(name, resamples, jobs, target_mix,
                                                            multiprocessing.get_start_method(),
                                                            queue))
    process.start()
    # Reading every process's proportional set size costs ~3 ms: five times a second keeps
    # the sampler's share of the two cores near 1%.
    with PeakMemory(process.pid, interval=0.2, proportional=True) as memory:
        row = queue.get()
        process.join()
    if "error" in row:
        raise RuntimeError(f"case {name} failed:\n{row['error']}")
    return row | {"peak_gib": memory.peak / 2 ** 30, "peak_pss_gib": memory.peak_pss / 2 ** 30}


def report_frame(row: dict) -> None:
    case = FRAMES[row["grid"]]
    print(f"\n== grid {row['grid']}: {row['table_rows']:,} rows, {row['mixes']:,} mixes, "
          f"{row['target_languages']} target-languages, one seed, no baseline; "
          f"{row['resamples']} resamples BCa, {row['jobs']} worker processes"
          + ("" if row["target_mix"] else ", without (1 | target_task:mix)") + " ==")
    print(f"build the DataFrame                    {row['build_s']:8.1f} s wall")
    print(f"ts.analyze(df, outcome='score')        {row['analyze_s']:8.1f} s wall, "
          f"{row['analyze_cpu']:.1f} s CPU (target < {case['target_s']} s), "
          f"verdict {row['verdict']}")
    for boot in row["bootstraps"]:
        refits = boot["resamples"] + boot["jackknife"]
        print(f"  crossed bootstrap of {boot['rows']:,} rows {boot['seconds']:8.1f} s wall, "
              f"{boot['cpu']:.1f} s CPU; {refits} refits ({boot['resamples']} resamples + "
              f"{boot['jackknife']} grouped-jackknife), {boot['cpu'] / refits:.3f} CPU s per "
              f"refit, {boot['failed']} failed resamples")
    target = f" (target < {case['target_gib']} GiB)" if case["target_gib"] else ""
    print(f"peak memory, process tree              {row['peak_pss_gib']:8.2f} GiB PSS{target}, "
          f"{row['peak_gib']:.2f} GiB RSS summed (shared pages counted per process)")
    print(f"largest resident set                   {row['main_maxrss_gib']:8.2f} GiB main "
          f"process, {row['worker_maxrss_gib']:.2f} GiB largest worker")
    print("statsmodels MixedLM                    not run (one group: dense n x n matrices)")


def solver_commit() -> str:
    """The last commit of the solver (mixed.py), and whether the tree measured differs from it."""
    root = Path(__file__).resolve().parents[1]
    path = "transferstats/analysis/mixed.py"
    try:
        commit = subprocess.run(["git", "log", "-1", "--format=%h %ci", "--", path], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", path], cwd=root).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" plus uncommitted changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join([*GRIDS, *FRAMES]),
                        help=f"any of {', '.join([*GRIDS, *FRAMES])}")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--statsmodels-refits", type=int, default=2)
    parser.add_argument("--statsmodels-timeout", type=float, default=600,
                        help="seconds after which a statsmodels refit is stopped (default 600)")
    parser.add_argument("--no-target-mix", dest="target_mix", action="store_false",
                        help="analyse the multi-source grids without (1 | target_task:mix)")
    parser.add_argument("--keep", help="write the grids and reports here instead of a temp dir")
    args = parser.parse_args(argv)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load} at the start (wall times stretch when "
          "other work shares the cores; CPU seconds do not)")
    print(f"solver measured: transferstats/analysis/mixed.py at {solver_commit()}")
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.keep or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in args.sizes.split(","):
            if name in FRAMES:
                report_frame(run_frame(name, args.resamples, args.jobs, args.target_mix))
            else:
                report(run_size(name, workdir, args.resamples, args.jobs,
                                args.statsmodels_refits, args.statsmodels_timeout))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
