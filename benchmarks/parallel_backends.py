"""The same work on the local process pool and on 1 and 2 workers of a Dask cluster: the same
numbers, and the times side by side (docs/parallel.md).

Two workloads, each run on every backend in this one run:

* ``power``: ``simulate_analyses`` of the coverage study's 12-mix design (``--simulations``
  grids analysed by the stand-in, ``--calibration`` grids by ``analyze`` itself);
* ``search``: ``search_designs`` (``power --search``) over three candidates of that design (1,
  2 and 3 seeds), the promising ones simulated;
* ``coverage``: ``--grids`` grids of the coverage study (``benchmarks/coverage_study.py``), each
  analysed by ``analyze`` with ``--resamples`` resamples, one grid per task. The full study is
  400 grids per design; this runs fewer and says so.

Backends: the local pool of ``--jobs`` processes; a ``distributed.LocalCluster`` of 1 and of 2
single-threaded worker processes listening on the loopback address only (the cluster's start-up
is timed apart), then the local pool again, since a shared machine's speed drifts during a run.
Every backend's results are compared with the local pool's: the largest absolute difference
must be 0 up to rounding (the tasks carry their seeds).

Usage::

    python benchmarks/parallel_backends.py                       # both workloads
    python benchmarks/parallel_backends.py --simulations 400 --grids 8 --resamples 200
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
# Dask's worker processes import the coverage study's task function from this folder.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(BENCHMARKS.parent), str(BENCHMARKS), *filter(None, [os.environ.get("PYTHONPATH")])])
sys.path[:0] = [str(BENCHMARKS.parent)]

import coverage_study  # noqa: E402

from transferstats.analysis import power as pw  # noqa: E402
from transferstats.parallel import completed  # noqa: E402

DESIGN = "small 12 mixes, 4 languages, target x mix"


def power_workload(args, where: dict) -> np.ndarray:
    design, components = coverage_study.grid_design(DESIGN)
    sims = pw.simulate_analyses(design, components, simulations=args.simulations, seed=1,
                                calibration_grids=args.calibration,
                                calibration_resamples=args.resamples, n_jobs=where.get("jobs"),
                                scheduler=where["scheduler"])
    return np.column_stack([sims.estimate, sims.se, sims.lower, sims.upper])


def coverage_workload(args, where: dict) -> np.ndarray:
    tasks = [(DESIGN, i, args.resamples) for i in range(args.grids)]
    rows: list = [None] * len(tasks)
    for index, result in completed(coverage_study._analyse_job, tasks, (True,),
                                   largest_chunk=1, **where):
        rows[index] = [[r["estimate"], r["ci_low"], r["ci_high"]] for r in result]
    return np.array(rows, dtype=float)


def search_workload(args, where: dict) -> np.ndarray:
    """``power --search``'s engine on three candidates (1, 2 and 3 seeds of the design): each
    screened, the promising ones simulated (``--simulations`` each)."""
    design, components = coverage_study.grid_design(DESIGN)
    candidates = [dataclasses.replace(design, name=f"{seeds} seeds", seeds=seeds)
                  for seeds in (1, 2, 3)]
    result = pw.search_designs(candidates, 1.0, components, simulations=args.simulations,
                               max_simulated=2, calibration_grids=args.calibration,
                               calibration_resamples=args.resamples, n_jobs=where.get("jobs"),
                               scheduler=where["scheduler"], seed=2)
    assert result.simulated, "the search simulated no candidate: raise the difference"
    return np.array([[row["screen_power"], np.nan if row["power"] is None else row["power"]]
                     for row in result.rows], dtype=float)


WORKLOADS = {"power": power_workload, "search": search_workload, "coverage": coverage_workload}


def timed(workload, args, where: dict) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    values = workload(args, where)
    return time.perf_counter() - start, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="power,search,coverage")
    parser.add_argument("--jobs", type=int, default=2, help="local pool processes (default 2)")
    parser.add_argument("--simulations", type=int, default=200)
    parser.add_argument("--calibration", type=int, default=2)
    parser.add_argument("--grids", type=int, default=4)
    parser.add_argument("--resamples", type=int, default=100)
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; power: "
          f"{args.simulations} simulations + {args.calibration} calibration grids "
          f"({args.resamples} resamples); coverage: {args.grids} grids of {DESIGN!r} "
          f"({args.resamples} resamples; the study runs 400)", flush=True)
    workloads = [w.strip() for w in args.workloads.split(",")]
    runs: dict[str, list[tuple[str, float, np.ndarray]]] = {name: [] for name in workloads}
    for name in workloads:
        seconds, values = timed(WORKLOADS[name], args, {"jobs": args.jobs, "scheduler": "local"})
        runs[name].append((f"local pool, {args.jobs} processes", seconds, values))
    for n_workers in (1, 2):
        start = time.perf_counter()
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
                Client(cluster):
            started = time.perf_counter() - start
            for name in workloads:
                seconds, values = timed(WORKLOADS[name], args,
                                        {"scheduler": cluster.scheduler_address})
                runs[name].append((f"Dask, {n_workers} worker process{'es' * (n_workers > 1)} "
                                   f"(cluster start {started:.1f} s)", seconds, values))
    for name in workloads:   # again: the machine's speed drifts during a run
        seconds, values = timed(WORKLOADS[name], args, {"jobs": args.jobs, "scheduler": "local"})
        runs[name].append((f"local pool, {args.jobs} processes, again", seconds, values))
    for name, results in runs.items():
        print(f"\n== {name} ==")
        reference = results[0][2]
        for label, seconds, values in results:
            print(f"  {label:<50} {seconds:7.1f} s   largest difference from the local pool "
                  f"{difference(values, reference):.1e}")


def difference(values: np.ndarray, reference: np.ndarray) -> float:
    """The largest absolute difference; infinite where the missing values differ."""
    if values.shape != reference.shape or not np.array_equal(np.isnan(values),
                                                              np.isnan(reference)):
        return float("inf")
    finite = ~np.isnan(values)
    return float(np.max(np.abs(values[finite] - reference[finite]), initial=0.0))


if __name__ == "__main__":
    main()
