"""How long ``transferstats analyze`` takes on a single-source grid (issue 13).

The shape of the issue: 65 source tasks x 7 training sizes (630 to 40,000 examples, doubling) =
455 mixes of one task each, so only volume varies; one target task scored in 105 languages, one
seed, no baseline, outcome ``score``: 47,775 rows. Scores follow the crossed model of
``transferstats simulate``: 1.9 points per doubling of examples, intercepts for the source task
(SD 1; the identity effect a single-source grid can estimate), language (SD 3) and mix (SD 0.5),
residual SD 1. The target is XTREME's ``udpos`` scored, as a Universal Dependencies evaluation
is, in more languages than XTREME's 33: those (English left out, as the analysis leaves it out)
and the first ISO 639-1 codes after them in alphabetical order, 105 in all; loading accepts the 73
beyond XTREME's list with one warning.

The script builds the table, then runs ``ts.analyze`` (load, models, bootstrap, descriptive
tables) and ``write_report`` (tables, figures, HTML and Markdown) and prints the wall time of
each, the CPU seconds of the process and its bootstrap workers, the load average of the machine
(on shared cores the wall time is only comparable at the same load), the verdict and the volume
effect. ``--profile`` prints the 25 most expensive functions
(cumulative time, cProfile) of the whole run.

Usage::

    python benchmarks/single_factor_speed.py                      # 1,000 resamples, 2 jobs
    python benchmarks/single_factor_speed.py --resamples 200 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import tempfile
import time
from pathlib import Path
from string import ascii_lowercase

import numpy as np
import pandas as pd

import transferstats as ts
from transferstats.languages import is_language_code
from transferstats.tasks import get_task

SOURCES = 65
SIZES = tuple(630 * 2 ** k for k in range(7))  # 630 ... 40,320 examples
LANGUAGES = 105
VOLUME_EFFECT = 1.9


def single_source_grid(seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """The flat results table of the single-source grid and the tasks it needs (``tasks=``)."""
    rng = np.random.default_rng(seed)
    sources = [f"source{i:02d}" for i in range(SOURCES)]
    xtreme = [code for code in get_task("udpos").languages if code != "en"]
    others = [a + b for a in ascii_lowercase for b in ascii_lowercase
              if is_language_code(a + b) and a + b not in xtreme and a + b != "en"]
    languages = xtreme + others[:LANGUAGES - len(xtreme)]
    tasks: dict = {name: {"role": "intermediate", "format": "classification",
                          "metric": "accuracy"} for name in sources}
    source = np.repeat(np.arange(SOURCES), len(SIZES))
    size = np.tile(np.array(SIZES), SOURCES)
    n_mixes = len(source)
    volume = np.log2(size)
    mix_effect = (VOLUME_EFFECT * (volume - volume.mean()) + rng.normal(0, 1, SOURCES)[source]
                  + rng.normal(0, 0.5, n_mixes))
    mix = np.repeat(np.arange(n_mixes), LANGUAGES)
    language = np.tile(np.arange(LANGUAGES), n_mixes)
    score = (60 + mix_effect[mix] + rng.normal(0, 3, LANGUAGES)[language]
             + rng.normal(0, 1, len(mix)))
    mix_names = np.array([f"{sources[s]}-{n}" for s, n in zip(source, size, strict=True)],
                         dtype=object)
    mix_tasks = np.array([f"{sources[s]}={n}" for s, n in zip(source, size, strict=True)],
                         dtype=object)
    table = pd.DataFrame({
        "run_id": np.array([f"run{i}" for i in range(n_mixes)], dtype=object)[mix],
        "model": "xlm-roberta-large", "mix": mix_names[mix], "mix_tasks": mix_tasks[mix],
        "target_task": "udpos", "seed": 1,
        "language": np.array(languages, dtype=object)[language],
        "metric": "f1", "split": "test", "value": np.clip(score, 0, 100),
    })
    return table, tasks


def cpu_seconds() -> tuple[float, float]:
    """CPU time of this process and of its finished children (the bootstrap workers)."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                          resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def run(resamples: int, jobs: int) -> None:
    began = time.perf_counter()
    table, tasks = single_source_grid()
    built, cpu = time.perf_counter(), cpu_seconds()
    result = ts.analyze(table, tasks=tasks, outcome="score", resamples=resamples, jobs=jobs)
    analysed = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        result.write_report(Path(folder) / "report")
    written, (own, workers) = time.perf_counter(), np.subtract(cpu_seconds(), cpu)
    volume = next(e for e in result.effects.to_dict("records") if e["term"] == "volume")
    print(f"grid: {table['mix'].nunique()} mixes, {len(table):,} rows; {resamples} resamples, "
          f"{jobs} jobs")
    print(f"build table   {built - began:7.1f} s")
    print(f"analyze       {analysed - built:7.1f} s")
    print(f"write_report  {written - analysed:7.1f} s")
    print(f"total         {written - built:7.1f} s (analyze + report; target < 60 s)")
    print(f"CPU time      {own:7.1f} s in the process, {workers:.1f} s in {jobs} bootstrap "
          f"workers; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    # The workers share the cores evenly; the process's own work is serial.
    print(f"on {jobs} idle cores about {own + workers / jobs:.0f} s (process CPU + worker CPU / "
          f"{jobs})")
    print(f"verdict: {result.verdict} - {result.verdict_reason}")
    for warning in result.estimates["warnings"]:
        print(warning if len(warning) <= 160 else warning[:160] + "...")
    print(f"volume effect {volume['estimate']:.3f} [{volume['ci_low']:.3f}, "
          f"{volume['ci_high']:.3f}] (true {VOLUME_EFFECT})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--profile", action="store_true",
                        help="print the 25 most expensive functions (cumulative)")
    args = parser.parse_args(argv)
    if not args.profile:
        run(args.resamples, args.jobs)
        return 0
    profiler = cProfile.Profile()
    profiler.runcall(run, args.resamples, args.jobs)
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
