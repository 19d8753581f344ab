"""How fast ``transferstats power`` is, and how well its stand-in matches analyze's bootstrap.

Speed (the default): 1,000 simulated analyses of the factorial grid (``runners/diversity_volume.toml``:
36 mixes, 9 targets, 155 target-languages, 3 seeds, 16,740 model rows; analyze's primary model
with task identity effects), on ``--jobs`` processes (default 2), then the calibration (analyze's
crossed bootstrap on simulated grids) and the whole ``power_analysis`` as the command runs it.

Validation (``--validate K``): K simulated grids of a design, each analysed by ``analyze`` itself
(``analyze_loaded``, default settings but ``--resamples``, the primary model) and by the stand-in,
on the same data. Prints, at several true differences, the share of "supported" verdicts from
analyze, from the uncalibrated Wald z stand-in, and from the calibrated stand-in (each grid's
interval calibrated on 20 *other* grids, as the tool does), with the coverage of the true
difference and the width ratios. With ``--target-mix`` the stand-in's model also has
``(1 | target_task:mix)``.

Slopes (``--slopes N``): N simulated analyses of the grid in each of four settings: targets
with common slopes or with the default slope variation (``power``'s documented guesses), each
analysed without target-specific slopes (the REML stand-in, uncalibrated) and with them
(analyze's slopes fit and Wald t on Satterthwaite df). Prints the seconds per simulation and the
power at ``--difference``, the false-positive rate and the minimum detectable difference of each.

Usage::

    python benchmarks/power_speed.py                       # speed, 2 processes
    python benchmarks/power_speed.py --validate 100 --resamples 500
    python benchmarks/power_speed.py --validate 200 --grid GRID.toml --target-mix
    python benchmarks/power_speed.py --slopes 200 --grid GRID.toml --jobs 1 --difference 0.8
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import stats

from transferstats.analysis import power as pw
from transferstats.commands.power import grid_design
from transferstats.grid.spec import load_grid
from transferstats.tasks import task_scope


def design_of(path: str) -> pw.GridDesign:
    grid = load_grid(path)
    with task_scope(grid.tasks):
        return grid_design(grid)[0]


def speed(args) -> None:
    design = design_of(args.grid)
    components = pw.default_components()
    model = pw.analysis_model(design, random_slopes=args.random_slopes)
    print(f"{design.name}: {len(design.mixes)} mixes, {design.n_target_languages} "
          f"target-languages, {design.seeds} seeds, {design.n_rows:,} rows; model "
          f"{model.formula}; {args.jobs} processes")
    start = time.perf_counter()
    sims = pw.simulate_analyses(design, components, simulations=args.simulations, seed=0,
                                n_jobs=args.jobs, model=model, calibration_grids=0)
    elapsed = time.perf_counter() - start
    failed = int(sims.fit_failed.sum())
    print(f"{args.simulations} simulated analyses (stand-in, uncalibrated): {elapsed:.1f} s "
          f"({1000 * elapsed / args.simulations:.0f} ms each on {args.jobs} processes); "
          f"{failed} failed fits")
    start = time.perf_counter()
    calibrated = pw.simulate_analyses(design, components, simulations=10, seed=0, n_jobs=args.jobs,
                                      model=model)
    elapsed = time.perf_counter() - start
    summary = calibrated.calibration.summary()
    print(f"calibration: {summary['grids']} grids analysed by analyze ({summary['resamples']} "
          f"resamples): {elapsed:.1f} s; bootstrap SE / Wald SE "
          f"{summary['bootstrap_se_over_wald_se']['mean']:.3f}, lower interval distance / z "
          f"{summary['lower_over_z']['mean']:.3f}")
    start = time.perf_counter()
    result = pw.power_analysis(design, 0.3, components=components, simulations=args.simulations,
                               seed=0, n_jobs=args.jobs, random_slopes=args.random_slopes)
    elapsed = time.perf_counter() - start
    print(f"power_analysis (as `transferstats power --difference 0.3`): {elapsed:.1f} s: power "
          f"{result.power:.3f} [{result.power_ci[0]:.3f}, {result.power_ci[1]:.3f}], "
          f"false-positive rate {result.false_positive_rate:.3f}, MDD(0.8) "
          f"{result.minimum_detectable_difference:.3f}; expected SE {result.expected_se:.4f}, "
          f"mean Wald SE {np.nanmean(result.simulations.se):.4f}, SD of estimates "
          f"{np.nanstd(result.simulations.estimate, ddof=1):.4f}")


def slopes(args) -> None:
    design = design_of(args.grid)
    settings = (("common slopes", pw.default_components(diversity_slope=0.0, volume_slope=0.0)),
                ("default slope variation", pw.default_components()))
    print(f"{design.name}: {len(design.mixes)} mixes, {len(design.targets)} targets, "
          f"{design.n_target_languages} target-languages, {design.seeds} seeds, "
          f"{design.n_rows:,} rows; {args.slopes} simulations each on {args.jobs} process(es); "
          f"default slope SDs {dict(pw.DEFAULT_SLOPE_SD)}, correlation "
          f"{pw.DEFAULT_SLOPE_CORRELATION}")
    for label, components in settings:
        for mode in ("off", "auto"):
            start = time.perf_counter()
            result = pw.power_analysis(design, args.difference, components=components,
                                       simulations=args.slopes, seed=args.seed,
                                       n_jobs=args.jobs, calibration_grids=0,
                                       random_slopes=mode)
            elapsed = time.perf_counter() - start
            sims = result.simulations
            analysed = "with slopes" if result.model.slopes else "without slopes"
            df = "" if sims.df is None else f", median df {np.nanmedian(sims.df):.1f}"
            mdd = result.minimum_detectable_difference
            print(f"{label}, analysed {analysed}: {elapsed * args.jobs / args.slopes:.3f} s per "
                  f"simulation; power at {args.difference} {result.power:.3f} "
                  f"[{result.power_ci[0]:.3f}, {result.power_ci[1]:.3f}], false-positive rate "
                  f"{result.false_positive_rate:.3f}, MDD(0.8) "
                  f"{'not reached' if mdd is None else f'{mdd:.3f}'}{df}; expected SE "
                  f"{result.expected_se:.3f}, SD of estimates "
                  f"{np.nanstd(sims.estimate, ddof=1):.3f}")


def validate(args) -> None:
    design = design_of(args.grid)
    components = pw.default_components(**dict(args.sd), diversity_slope=0.0, volume_slope=0.0)
    # The bootstrap's stand-in is validated where analyze bootstraps: the model without slopes.
    model = pw.analysis_model(design, analysis_target_mix=args.target_mix, random_slopes="off")
    print(f"{design.name}: {len(design.mixes)} mixes, {design.n_target_languages} "
          f"target-languages, {design.seeds} seeds; components "
          + ", ".join(f"{k} {v}" for k, v in components.sd.items()))
    print(f"analysed model: {model.formula}")
    start = time.perf_counter()
    sims = pw.simulate_analyses(design, components, simulations=10, seed=args.seed,
                                n_jobs=args.jobs, model=model, calibration_grids=args.validate,
                                calibration_resamples=args.resamples, progress=True)
    cal = sims.calibration
    print(f"{args.validate} grids analysed by analyze ({args.resamples} resamples): "
          f"{time.perf_counter() - start:.0f} s")
    usable = cal.usable
    estimate, se = cal.estimate[usable], cal.wald_se[usable]
    low, high = cal.low[usable], cal.high[usable]
    n = int(usable.sum())
    z = stats.norm.ppf(0.975)
    lower, upper = cal.lower, cal.upper
    rng = np.random.default_rng(args.seed)
    differences = np.round(np.linspace(0, 4, 9) * np.mean(se), 3)

    def calibrated_rates(difference: float) -> tuple[float, float]:
        """Supported share at the difference, directional share at 0: each grid's interval
        calibrated on 20 other grids (a random one of them per grid, as the tool draws)."""
        supported = directional = 0.0
        repeats = 50
        for _ in range(repeats):
            for i in range(n):
                others = rng.choice(np.delete(np.arange(n), i), min(20, n - 1), replace=False)
                k = rng.choice(others)
                supported += estimate[i] - lower[k] * se[i] + difference > 0
                directional += (estimate[i] - lower[k] * se[i] > 0) or \
                    (estimate[i] + upper[k] * se[i] < 0)
        return supported / (repeats * n), directional / (repeats * n)

    print(f"\n{'true difference':>16} {'analyze':>14} {'Wald z':>8} {'calibrated':>11}")
    for difference in differences:
        boot = np.mean(low + difference > 0)
        wald = np.mean(estimate - z * se + difference > 0)
        calibrated, _ = calibrated_rates(difference)
        print(f"{difference:>16.3f} {boot:>14.3f} {wald:>8.3f} {calibrated:>11.3f}")
    error = math.sqrt(0.25 / n)
    print(f"(Monte Carlo SE of a rate near 0.5 from {n} grids: {error:.3f}; the three columns "
          "use the same grids, so their differences are estimated more precisely)")
    coverage = {"analyze": np.mean((low < 0) & (high > 0)),
                "Wald z": np.mean(np.abs(estimate) < z * se),
                "calibrated": 1 - calibrated_rates(0.0)[1]}
    for name, value in coverage.items():
        print(f"coverage of the true difference, {name}: {value:.3f} "
              f"[{pw.wilson_interval(round(value * n), n)[0]:.3f}, "
              f"{pw.wilson_interval(round(value * n), n)[1]:.3f}]")
    print(f"SD of the estimates across grids {np.std(estimate, ddof=1):.4f}; mean Wald SE "
          f"{np.mean(se):.4f}; mean bootstrap SE {np.nanmean(cal.boot_se[usable]):.4f}; mean "
          f"half-width of analyze's interval {np.mean(high - low) / 2:.4f} (z x SD of estimates: "
          f"{z * np.std(estimate, ddof=1):.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="runners/diversity_volume.toml")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--simulations", type=int, default=1000)
    parser.add_argument("--validate", type=int, default=0, metavar="K",
                        help="validation study on K bootstrapped grids instead of the timing")
    parser.add_argument("--resamples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-mix", action="store_true",
                        help="analyse with (1 | target_task:mix) in the model")
    parser.add_argument("--sd", nargs=2, action="append", default=[], metavar=("NAME", "SD"),
                        type=str, help="override a default component, e.g. --sd mix 0.7")
    parser.add_argument("--random-slopes", choices=("auto", "on", "off"), default="auto",
                        help="the analysed model's target-specific slopes (speed mode)")
    parser.add_argument("--slopes", type=int, default=0, metavar="N",
                        help="seconds per simulation and power with and without slopes, N "
                             "simulations each, instead of the timing")
    parser.add_argument("--difference", type=float, default=0.8)
    args = parser.parse_args()
    args.sd = [(name, float(value)) for name, value in args.sd]
    if args.validate:
        validate(args)
    elif args.slopes:
        slopes(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
