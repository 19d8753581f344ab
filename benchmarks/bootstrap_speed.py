"""How long the crossed bootstrap of ``transferstats analyze`` takes, against statsmodels.

For each grid size the script writes a results folder with ``transferstats simulate``, then

1. runs ``transferstats analyze`` on it end to end (load, models, bootstrap, report) and reports
   its wall time and the peak memory of its process tree (main process plus bootstrap workers);
2. runs the crossed bootstrap alone on the same model data, with the same measurements;
3. times single refits of bootstrap resamples: the fast path on a few dozen resamples, and
   statsmodels' MixedLM (REML, default optimiser settings) on a few of the same resamples --
   a statsmodels bootstrap would take hours, so its total is extrapolated from those refits.

Usage::

    python benchmarks/bootstrap_speed.py                   # 20k and 100k rows, 1000 resamples
    python benchmarks/bootstrap_speed.py --sizes 20k --resamples 200 --statsmodels-refits 1
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
import psutil
from threadpoolctl import threadpool_limits

from transferstats.analysis.bootstrap import (
    crossed_bootstrap,
    output_matrix,
    refit,
    resample_rows,
    resampling_design,
)
from transferstats.analysis.derive import model_frame, select_metric
from transferstats.analysis.mixed import ModelArrays, fit_crossed, statsmodels_model
from transferstats.analysis.pipeline import CONTRAST, INTERACTION, _centre, _random_factors
from transferstats.loading import load_results

# ``transferstats simulate`` options: 155 non-English (target, language) pairs of XTREME times
# the mixes (4 diversity x volume levels x 3 draws) times the seeds.
GRIDS = {
    "20k": ["--seeds", "1,2,3,4"],                            # 36 mixes, 4 seeds: 22,320 rows
    "100k": ["--volume-levels", "10000,20000,40000,80000,160000",
             "--seeds", ",".join(str(s) for s in range(1, 12))],  # 60 mixes, 11: 102,300 rows
}
FIXED = ["diversity", "volume", INTERACTION]
UNITS = ("language", "mix")


class PeakMemory:
    """Samples the resident memory of a process and all its descendants; keeps the largest sum."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.process, self.interval, self.peak = psutil.Process(pid), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(_rss(p) for p in tree))
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
    scores, _ = select_metric(load_results(results).scores, None, "test")
    data, _ = model_frame(scores, outcome="improvement")
    data, _ = _centre(data, interaction=True)
    random, _ = _random_factors(data, "improvement")
    return data, random


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
    return {"fast": fast_seconds, "statsmodels": float(np.mean(statsmodels_seconds)),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20k,100k", help=f"any of {', '.join(GRIDS)}")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--statsmodels-refits", type=int, default=2)
    parser.add_argument("--statsmodels-timeout", type=float, default=600,
                        help="seconds after which a statsmodels refit is stopped (default 600)")
    parser.add_argument("--keep", help="write the grids and reports here instead of a temp dir")
    args = parser.parse_args(argv)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load} at the start (wall times stretch when "
          "other work shares the cores; CPU seconds do not)")
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.keep or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in args.sizes.split(","):
            report(run_size(name, workdir, args.resamples, args.jobs, args.statsmodels_refits,
                            args.statsmodels_timeout))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
