"""Coverage of analyze's 95% intervals under the variance structure real grids have (issue 14).

Simulates grids of several designs from the generative model of ``transferstats power``
(:mod:`transferstats.analysis.power`: random intercepts for target, language within target, mix,
target-by-mix cell and seed; every fixed effect 0, so the truth of every effect and of
diversity - volume is 0), analyses each grid with ``analyze`` itself (``analyze_loaded``, its
default settings but ``--resamples``; the primary model, which on the 36-mix factorial grid is
the task-identity model with its parametric bootstrap and on the 12-mix grid the plain model with
the crossed cluster bootstrap), once without and once with ``(1 | target_task:mix)`` in the
model (the ``target_mix`` setting), and prints for each design, model, interval kind (BCa and
percentile come from the same resamples) and effect:

- coverage of the truth, with its 95% Wilson interval (Monte Carlo error of the study);
- the mean interval width over 2 z_0.975 times the SD of the estimates across grids (1.0: the
  intervals are as wide as the estimator's spread calls for; below 1: too narrow).

Each finished grid is appended to ``--out`` (CSV), so a run can be stopped and summarised with
``--table`` alone. Grids are spread over ``--jobs`` processes, or the workers of a Dask scheduler
(``--scheduler ADDRESS``, docs/parallel.md), interleaved across designs so that a partial run is
balanced.

Usage::

    python benchmarks/coverage_study.py --grids 400 --resamples 500 --jobs 16
    python benchmarks/coverage_study.py --grids 400 --resamples 500 --scheduler tcp://head:8786
    python benchmarks/coverage_study.py --grids 100 --resamples 200 --jobs 2 --out cov.csv
    python benchmarks/coverage_study.py --designs "small 12 mixes, 4 languages, target x mix" \
        --target-mix on --grids 400 --jobs 2 --out small.csv     # one design, analyze's model
    python benchmarks/coverage_study.py --table --out cov.csv
    python benchmarks/coverage_study.py --wald 2000 --wald-out wald.csv   # Wald t stand-in
    python benchmarks/coverage_study.py --exact-t 20000 --designs factorial  # why it holds
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import math
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from transferstats.analysis import power as pw
from transferstats.parallel import LOCAL, completed
from transferstats.simulate import (
    SimulationSettings,
    flat_table,
    simulate_scores,
    simulated_mixes,
)
from transferstats.tasks import get_task

TERMS = ("diversity", "volume", "diversity:volume", "diversity - volume")
MIX_SD, TARGET_MIX_SD = 0.7, 0.5

#: name -> (task draws per diversity-by-volume cell, non-English languages per target, seeds,
#: target-by-mix SD). 3 draws: the 36-mix factorial grid; 1 draw: 12 mixes.
DESIGNS = {
    "factorial 36 mixes, 4 languages, target x mix": (3, 4, 2, TARGET_MIX_SD),
    "factorial 36 mixes, 4 languages, no target x mix": (3, 4, 2, 0.0),
    "factorial 36 mixes, 12 languages, target x mix": (3, 12, 2, TARGET_MIX_SD),
    "small 12 mixes, 4 languages, target x mix": (1, 4, 2, TARGET_MIX_SD),
    "small 12 mixes, 4 languages, no target x mix": (1, 4, 2, 0.0),
}


def grid_design(name: str) -> tuple[pw.GridDesign, pw.Components]:
    """The design's mixes (the planner's factorial draws), targets and languages, and the
    variance components: power's defaults with mix SD 0.7 and the design's target-by-mix SD,
    as in the issue."""
    draws, n_languages, seeds, target_mix = DESIGNS[name]
    settings = SimulationSettings(draws=draws)
    mixes = tuple((mix, tuple(tasks.items())) for mix, tasks in simulated_mixes(settings))
    languages = {t: tuple(code for code in get_task(t).languages if code != "en")[:n_languages]
                 for t in settings.targets}
    design = pw.GridDesign(name, mixes, languages, seeds)
    # The bootstrap designs have common slopes (their analysis is the intercept model).
    return design, pw.default_components(mix=MIX_SD, target_mix=target_mix, diversity_slope=0.0,
                                         volume_slope=0.0)


def analyse_grid(name: str, index: int, resamples: int,
                 target_mix_settings: tuple[bool, ...] = (False, True)) -> list[dict]:
    """One simulated grid of a design, analysed without and with ``(1 | target_task:mix)``."""
    from transferstats import loading
    from transferstats.analysis.pipeline import analyze_loaded
    from transferstats.analysis.spec import AnalysisSpec

    design, components = grid_design(name)
    model = pw.analysis_model(design, random_slopes="off")
    sim = pw._simulator(design, components, model, resamples)
    y = pw.simulate_outcome(sim, np.random.default_rng([14, index, list(DESIGNS).index(name)]))
    loaded = loading.load_results(pw.results_table(sim, y))
    rows = []
    for target_mix in target_mix_settings:
        # The grid is already on a worker: its bootstrap runs right there.
        # The bootstrap designs' grids have no slope variation: the intercept model is the
        # one whose bootstrap is studied here (the slopes designs are further down).
        spec = AnalysisSpec(resamples=resamples, seed=index, target_mix=target_mix,
                            scheduler=LOCAL, random_slopes="off")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimates = analyze_loaded(loaded, spec, n_jobs=1, progress=False,
                                       companions=False).estimates
        found = {e["term"]: e for e in estimates["effects"]} | {
            TERMS[-1]: estimates["comparison"]}
        for term in TERMS:
            effect = found.get(term) or {}
            bootstrap = estimates["bootstrap"]
            rows.append({"design": name, "grid": index, "target_mix_in_model": target_mix,
                         "method": bootstrap["method"], "term": term,
                         # the t widening analyze once applied to crossed cluster intervals
                         # (files of that time are read too), undone in the table so that
                         # every candidate widening starts from the same interval
                         "crossed_t_df": bootstrap.get("t_df")
                         if bootstrap["resampling"] == "crossed cluster" else None,
                         **{key: effect.get(key) for key in (
                             "estimate", "ci_low", "ci_high", "percentile_ci_low",
                             "percentile_ci_high")}})
    return rows


#: --target-mix: the model settings each grid is analysed with.
TARGET_MIX = {"both": (False, True), "on": (True,), "off": (False,)}


def _analyse_job(target_mix_settings: tuple[bool, ...], job: tuple[str, int, int]) -> list[dict]:
    return analyse_grid(*job, target_mix_settings)


def run(args) -> None:
    done = set()
    if Path(args.out).exists():
        previous = pd.read_csv(args.out)
        done = set(zip(previous["design"], previous["grid"], strict=True))
    words = [w.strip() for w in args.designs.split("|") if w.strip()]
    chosen = [name for name in DESIGNS if not words or any(w in name for w in words)]
    jobs = [(name, i, args.resamples) for i in range(args.grids) for name in chosen
            if (name, i) not in done]
    fields = ["design", "grid", "target_mix_in_model", "method", "term", "crossed_t_df",
              "estimate", "ci_low", "ci_high", "percentile_ci_low", "percentile_ci_high"]
    new_file = not Path(args.out).exists()
    with open(args.out, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        if new_file:
            writer.writeheader()
        # Each grid is a whole analysis: one per chunk, saved as it comes in.
        for _, rows in completed(_analyse_job, jobs, TARGET_MIX[args.target_mix], jobs=args.jobs,
                                 scheduler=args.scheduler, largest_chunk=1, progress=True,
                                 label="coverage grids"):
            writer.writerows(rows)
            handle.flush()


#: Candidate small-sample widenings of the crossed cluster bootstrap's interval about the
#: estimate, as functions of the mixes G and the rank p of the per-mix design: none; the t
#: quantile on the mix degrees of freedom (the parametric bootstrap's widening); and that with
#: the bootstrap variance scaled by G / (G - p) as well (cluster-robust "CR1"-style; Cameron &
#: Miller 2015).
WIDENINGS = {
    "none": lambda g, p: 1.0,
    "t(G-p)": lambda g, p: stats.t.ppf(0.975, g - p) / stats.norm.ppf(0.975),
    "t(G-p) x sqrt(G/(G-p))": lambda g, p: (stats.t.ppf(0.975, g - p) / stats.norm.ppf(0.975)
                                            * math.sqrt(g / (g - p))),
}
MIX_LEVEL_RANK = 4  # intercept, diversity, volume, diversity x volume


def table(path: str, level: float = 0.95) -> pd.DataFrame:
    """Coverage, its Wilson interval and the width ratio per design, model, interval, widening
    (crossed cluster intervals only: the parametric one is widened already) and term."""
    data = pd.concat([pd.read_csv(p) for p in path.split(",")], ignore_index=True)
    data["bootstrap"] = data["method"].str.split(",").str[0]
    z = stats.norm.ppf((1 + level) / 2)
    if "crossed_t_df" not in data:  # files written before analyze ever widened them
        data["crossed_t_df"] = np.nan
    widened = data["crossed_t_df"].notna()
    undo = np.ones(len(data))
    undo[widened] = stats.t.ppf((1 + level) / 2, data.loc[widened, "crossed_t_df"]) / z
    for end in ("ci_low", "ci_high", "percentile_ci_low", "percentile_ci_high"):
        data[end] = data["estimate"] + (data[end] - data["estimate"]) / undo
    rows = []
    for (design, target_mix, bootstrap, term), group in data.groupby(
            ["design", "target_mix_in_model", "bootstrap", "term"], sort=False):
        spread = group["estimate"].std(ddof=1)
        crossed = bootstrap == "crossed cluster"
        mixes = 12 * DESIGNS[design][0] if design in DESIGNS else math.nan
        for kind, low, high in (("BCa", "ci_low", "ci_high"),
                                ("percentile", "percentile_ci_low", "percentile_ci_high")):
            ok = group[[low, high]].notna().all(axis=1)
            estimate = group.loc[ok, "estimate"]
            for widening, factor in WIDENINGS.items():
                if widening != "none" and not crossed:
                    continue
                f = factor(mixes, MIX_LEVEL_RANK)
                lower = estimate + f * (group.loc[ok, low] - estimate)
                upper = estimate + f * (group.loc[ok, high] - estimate)
                covered = int(((lower <= 0) & (0 <= upper)).sum())
                n = int(ok.sum())
                ci = pw.wilson_interval(covered, n)
                rows.append({"design": design, "target:mix in model": bool(target_mix),
                             "bootstrap": bootstrap,
                             "interval": kind, "widening": widening, "term": term, "grids": n,
                             "coverage": covered / n if n else math.nan,
                             "MC 95% interval": f"[{ci[0]:.3f}, {ci[1]:.3f}]",
                             "width / (2z SD)": (upper - lower).mean() / (2 * z * spread)})
    return pd.DataFrame(rows)


#: Designs with fewer grids than this are left out of the committed summary.
MIN_GRIDS = 30


def analyze_bootstrap(name: str) -> str:
    """The bootstrap analyze uses on a design ("parametric" or "crossed cluster")."""
    design, _ = grid_design(name)
    return pw.analysis_model(design, random_slopes="off").bootstrap


def package_table(path: str, out: str, wald: str | None = None) -> None:
    """Write the contrast's rows for the bootstrap analyze uses on each design (and, from
    ``wald``, a CSV of :func:`wald_table`, the Wald t rows of the designs analyze bootstraps
    parametrically, whose normal-theory equivalent they are) as the committed summary
    ``transferstats/data/coverage.csv`` that the report quotes
    (:mod:`transferstats.analysis.coverage`). Rows of fewer than ``MIN_GRIDS`` grids are left
    out."""
    summary = table(path)
    used = summary["design"].map(analyze_bootstrap)
    rows = summary[(summary["term"] == "diversity - volume") & (summary["bootstrap"] == used)
                   & (summary["widening"] == "none")]  # analyze widens no crossed interval
    if wald:
        extra = pd.read_csv(wald)
        extra = extra[extra["design"].map(analyze_bootstrap) == "parametric"]
        rows = pd.concat([rows, extra.assign(bootstrap="parametric", interval="Wald t")],
                         ignore_index=True)
    rows = rows[rows["grids"] >= MIN_GRIDS]
    wilson = rows["MC 95% interval"].str.strip("[]").str.split(", ", expand=True).astype(float)
    draws, languages, _, target_mix_sd = zip(*(DESIGNS[d] for d in rows["design"]), strict=True)
    pd.DataFrame({
        "design": rows["design"], "mixes": [12 * d for d in draws], "languages": languages,
        "target_mix_sd": target_mix_sd, "target_mix_in_model": rows["target:mix in model"],
        "bootstrap": rows["bootstrap"], "interval": rows["interval"], "grids": rows["grids"],
        "covered": (rows["coverage"] * rows["grids"]).round().astype(int),
        "coverage": rows["coverage"].round(4), "mc_low": wilson[0].round(4),
        "mc_high": wilson[1].round(4), "width_ratio": rows["width / (2z SD)"].round(3),
    }).to_csv(out, index=False)


def wald_table(grids: int, words: list[str], level: float = 0.95, jobs: int | None = None,
               scheduler: str | None = None) -> pd.DataFrame:
    """Many more grids, cheaply: the Wald t interval of ``transferstats power``'s stand-in
    (the REML fit of analyze's primary model, estimate +- t_nu x Wald SE, nu the mix degrees of
    freedom), without and with ``(1 | target_task:mix)``, over the same designs. The parametric
    bootstrap's interval is this one up to its Monte Carlo error (its draws are normal about the
    estimate with the Wald spread); the crossed cluster bootstrap's is not."""
    rows = []
    for name in [n for n in DESIGNS if not words or any(w in n for w in words)]:
        design, components = grid_design(name)
        for target_mix in (False, True):
            model = pw.analysis_model(design, analysis_target_mix=target_mix, random_slopes="off")
            sims = pw.simulate_analyses(design, components, simulations=grids, seed=14,
                                        n_jobs=jobs, scheduler=scheduler, model=model,
                                        calibration_grids=0)
            df = model.identity.get("mix_df") if model.identity.get("used") \
                else len(design.mixes) - 1 - model.mix_columns.shape[1]
            t = stats.t.ppf((1 + level) / 2, df)
            ok = np.isfinite(sims.estimate) & np.isfinite(sims.se)
            covered = int((np.abs(sims.estimate[ok]) <= t * sims.se[ok]).sum())
            ci = pw.wilson_interval(covered, int(ok.sum()))
            print(f"{name}, target:mix in model {target_mix}: {covered} of {int(ok.sum())}",
                  flush=True)
            rows.append({"design": name, "target:mix in model": target_mix, "t df": df,
                         "grids": int(ok.sum()), "coverage": covered / ok.sum(),
                         "MC 95% interval": f"[{ci[0]:.3f}, {ci[1]:.3f}]",
                         "width / (2z SD)": (2 * t * sims.se[ok]).mean()
                         / (2 * stats.norm.ppf((1 + level) / 2) * sims.estimate[ok].std(ddof=1))})
    return pd.DataFrame(rows)


def exact_t_table(grids: int, words: list[str], compared: int = 30, level: float = 0.95
                  ) -> pd.DataFrame:
    """Why the Wald t rows hold for the factorial grid: there every mix has the same rows, so
    the contrast's REML estimate and standard error are those of ordinary least squares on the
    mix means, whose t interval on the mix degrees of freedom is exact. For each design (the
    model with ``(1 | target_task:mix)``), the coverage of that exact t interval over ``grids``
    grids (cheap: no mixed model is fitted), and the largest difference between it and the REML
    Wald t interval over the first ``compared`` grids, relative to the standard error (0 up to
    rounding on balanced designs; with 12 languages, targets have different numbers of
    languages and REML weights them by their information)."""
    rows = []
    for name in [n for n in DESIGNS if not words or any(w in n for w in words)]:
        design, components = grid_design(name)
        model = pw.analysis_model(design, analysis_target_mix=True, random_slopes="off")
        sim = pw._simulator(design, components, model)
        mix = sim.generative_codes[2]
        per_mix = np.bincount(mix)
        X_mix = np.column_stack([np.bincount(mix, col) / per_mix for col in sim.X.T])
        df = len(per_mix) - np.linalg.matrix_rank(X_mix)
        solve = np.linalg.pinv(X_mix)
        se_factor = math.sqrt(sim.weights @ solve @ solve.T @ sim.weights)
        t = stats.t.ppf((1 + level) / 2, df)
        covered, largest = 0, 0.0
        for i, seed in enumerate(np.random.SeedSequence(2026).spawn(grids)):
            y = pw.simulate_outcome(sim, np.random.default_rng(seed))
            mean_y = np.bincount(mix, y) / per_mix
            beta = solve @ mean_y
            residual = mean_y - X_mix @ beta
            estimate, se = sim.weights @ beta, math.sqrt(residual @ residual / df) * se_factor
            covered += abs(estimate) <= t * se
            if i < compared:
                reml_estimate, reml_se = pw._analyse(sim, y)
                largest = max(largest, abs(reml_estimate - estimate) / se,
                              abs(reml_se - se) / se)
        ci = pw.wilson_interval(covered, grids)
        rows.append({"design": name, "mix df": df, "grids": grids,
                     "exact t coverage": covered / grids,
                     "MC 95% interval": f"[{ci[0]:.4f}, {ci[1]:.4f}]",
                     f"REML vs mix means, largest |difference| / SE ({compared} grids)": largest})
    return pd.DataFrame(rows)


# --- designs with target-specific slopes (issue 25): analyze's Wald t interval -------------

#: Mixes of the slopes designs (:class:`SimulationSettings` fields): the planner's factorial grid,
#: and a many-mix grid kept affordable at 120 mixes (6 diversity x 4 volume levels x 5 draws;
#: the bundled tasks' sizes allow no more single-task draws at 80,000 examples).
SLOPE_LAYOUTS: dict[str, dict] = {
    "factorial 36 mixes": {"draws": 3},
    "many 120 mixes": {"diversity_levels": (1, 2, 3, 4, 6, 8),
                       "volume_levels": (10_000, 20_000, 40_000, 80_000), "draws": 5},
}
#: The fixed-budget language grid of issue 25: 18 mixes of 14 languages with one run each and
#: one lone mix of all 52 languages with 3 replicates, 62,000 examples each. Only diversity varies.
BUDGET_LANGUAGES = (
    "en ar bg de el es fr hi ru sw th tr ur vi zh ja ko bn fi id te et ht it qu ta eu my "
    "af am az ca cs da fa ga gu ha he hr hu hy is kk lt lv mk ml mr ne nl pl").split()
BUDGET, LONE_MIX, LONE_REPLICATES = 62_000, "all52", 3
TARGETS_9 = ("xnli", "pawsx", "udpos", "panx", "xquad", "mlqa", "tydiqa", "bucc2018", "tatoeba")
BUDGET_TARGETS = ("xnli", "pawsx", "xquad", "mlqa", "tydiqa")
#: Population slopes (points per doubling): the truth is their difference, or diversity alone
#: where volume is fixed.
DIVERSITY, VOLUME = 1.0, 0.5


def _slope_designs() -> dict[str, tuple[str, int, float, float]]:
    """name -> (layout, targets, slope SD in single-target SEs, slope correlation). The
    correlation is varied only at 5 SE, where the slopes are large enough for it to matter."""
    shapes = [(0.0, 0.0), (1.0, 0.0), (5.0, 0.0), (5.0, 0.6), (5.0, -0.6)]
    designs = {}
    for layout, targets in (("factorial 36 mixes", 5), ("factorial 36 mixes", 9),
                            ("many 120 mixes", 5), ("fixed budget, lone top mix", 5)):
        for multiple, rho in shapes:
            if layout.startswith("fixed") and rho != 0:
                continue  # one slope: no correlation
            name = f"{layout}, {targets} targets, slope SD {multiple:g} SE, r {rho:+.1f}"
            designs[name] = (layout, targets, multiple, rho)
    return designs


#: Issue 25's check of false directional verdicts: a language grid with the public grid's
#: variance components (REALISTIC_COMPONENTS) but slopes at half size, 5 targets, diversity and
#: volume both 1 point per doubling (a true contrast of 0).
REALISTIC_CHECK = "realistic language grid, 5 targets, half-size slopes, contrast 0"
SLOPE_DESIGNS = _slope_designs() | {REALISTIC_CHECK: ("realistic language grid", 5, math.nan,
                                                      -0.98)}


def _budget_mixes() -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
    rng = np.random.default_rng(24)
    sets = [list(rng.choice(BUDGET_LANGUAGES, 14, replace=False)) for _ in range(18)]
    named = [(f"subset-{i + 1:02d}", s) for i, s in enumerate(sets)] + [(LONE_MIX, BUDGET_LANGUAGES)]
    return tuple((name, tuple((str(code), BUDGET // len(codes)) for code in codes))
                 for name, codes in named)


def base_settings(layout: str, n_targets: int) -> SimulationSettings:
    """The layout's settings without slope variation: 4 non-English languages per target, one
    run per mix and target (the lone mix: 3), no baseline, the other components simulate's."""
    common = {"targets": (TARGETS_9 if not layout.startswith("fixed") else BUDGET_TARGETS)[
        :n_targets], "max_languages": 4, "baseline": False, "centre_target_slopes": False}
    if layout.startswith("fixed"):
        return SimulationSettings(kind="language", intermediate_tasks=tuple(BUDGET_LANGUAGES),
                                  mixes=_budget_mixes(), seeds=(1, 2, 3), diversity_effect=0.8,
                                  volume_effect=0.0, **common)
    return SimulationSettings(seeds=(1,), diversity_effect=DIVERSITY, volume_effect=VOLUME,
                              mixes=_layout_mixes(layout), **common, **SLOPE_LAYOUTS[layout])


@functools.cache
def _layout_mixes(layout: str) -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
    """The layout's mixes, drawn once: every grid of a design has the same mixes, as a planned
    grid does (and the planner's balance search is not repeated per grid)."""
    mixes = simulated_mixes(SimulationSettings(**SLOPE_LAYOUTS[layout]))
    return tuple((name, tuple(tasks.items())) for name, tasks in mixes)


def single_target_slope_se(settings: SimulationSettings, seeds_per_mix: dict[str, int]
                           ) -> dict[str, float]:
    """The standard error of one target's diversity and volume slopes fitted from its own scores
    (weighted least squares on its mix means; the language effects are constant across mixes
    and drop out): a mix mean varies by mix SD² + target-by-mix SD² + seed SD² / (languages x
    runs). Only the factors that vary are fitted."""
    mixes = simulated_mixes(settings)
    columns = {"diversity": [math.log2(len(tasks)) for _, tasks in mixes],
               "volume": [math.log2(sum(tasks.values())) for _, tasks in mixes]}
    varying = [term for term, values in columns.items() if np.ptp(values) > 0.03]
    X = np.column_stack([np.ones(len(mixes))] + [columns[term] for term in varying])
    languages = settings.max_languages + (settings.kind == "language")  # English kept there
    runs = np.array([seeds_per_mix.get(name, 1) for name, _ in mixes])
    variance = settings.mix_sd ** 2 + settings.target_mix_sd ** 2 + settings.seed_sd ** 2 / (
        languages * runs)
    covariance = np.linalg.inv(X.T @ (X / variance[:, None]))
    return {term: float(math.sqrt(covariance[i + 1, i + 1])) for i, term in enumerate(varying)}


def slope_settings(name: str, index: int) -> tuple[SimulationSettings, str, float]:
    """Grid ``index`` of a slopes design: its settings (slopes drawn uncentred around the
    population average), the term whose interval is checked and that term's true value."""
    seed = zlib.crc32(name.encode()) % 100_000 * 100_000 + index
    if name == REALISTIC_CHECK:
        return SimulationSettings.realistic(target_diversity_sd=2.95, target_volume_sd=1.55,
                                            diversity_effect=1.0, volume_effect=1.0,
                                            random_state=seed), "diversity - volume", 0.0
    layout, n_targets, multiple, rho = SLOPE_DESIGNS[name]
    settings = base_settings(layout, n_targets)
    se = single_target_slope_se(settings, {LONE_MIX: LONE_REPLICATES})
    settings = dataclasses.replace(
        settings, random_state=seed,
        target_diversity_sd=multiple * se["diversity"],
        target_volume_sd=multiple * se.get("volume", 0.0), target_slope_correlation=rho)
    if "volume" not in se:
        return settings, "diversity", settings.diversity_effect
    return settings, "diversity - volume", settings.diversity_effect - settings.volume_effect


def analyse_slopes_grid(name: str, index: int, resamples: int = 50) -> dict:
    """One grid of a slopes design analysed by analyze with every default (the primary model
    only): the checked term's interval, its Satterthwaite df, the structure and the verdict."""
    from transferstats import load_results
    from transferstats.analysis.pipeline import analyze_loaded
    from transferstats.analysis.spec import AnalysisSpec
    from transferstats.problems import ResultsError

    settings, term, truth = slope_settings(name, index)
    flat = flat_table(*simulate_scores(settings))
    if settings.kind == "language":  # one run per mix but the lone one
        flat = flat[(flat["seed"] == 1) | (flat["mix"] == LONE_MIX)]
    spec = AnalysisSpec(resamples=resamples, seed=index, scheduler=LOCAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            estimates = analyze_loaded(load_results(flat), spec, n_jobs=1, progress=False,
                                       companions=False).estimates
        except ResultsError as error:  # counted as a failed grid, with the reason
            return {"design": name, "grid": index, "term": term, "truth": truth,
                    "method": "", "structure": "",
                    "verdict": "error: " + "; ".join(str(p) for p in error.problems
                                                     if p.severity == "error")}
    found = {e["term"]: e for e in estimates["effects"]} | {
        "diversity - volume": estimates["comparison"]}
    effect = found.get(term) or {}
    return {"design": name, "grid": index, "term": term, "truth": truth,
            **{key: effect.get(key) for key in ("estimate", "se", "df", "ci_low", "ci_high")},
            "method": estimates["bootstrap"]["method"],
            "structure": estimates["random_slopes"]["fitted"]
            if estimates.get("random_slopes") else "", "verdict": estimates["verdict"]}


SLOPE_FIELDS = ["design", "grid", "term", "truth", "estimate", "se", "df", "ci_low", "ci_high",
                "method", "structure", "verdict"]


def _slopes_job(resamples: int, job: tuple[str, int]) -> dict:
    return analyse_slopes_grid(*job, resamples)


def run_slopes(args, jobs: list[tuple[str, int]]) -> None:
    """Analyse the grids ``jobs`` ((design, index) pairs not yet in ``--out``), appending each."""
    if Path(args.out).exists():
        done = set(zip(*pd.read_csv(args.out)[["design", "grid"]].T.to_numpy(), strict=True))
        jobs = [job for job in jobs if job not in done]
    new_file = not Path(args.out).exists()
    with open(args.out, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SLOPE_FIELDS)
        if new_file:
            writer.writeheader()
        for _, row in completed(_slopes_job, jobs, args.resamples, jobs=args.jobs,
                                scheduler=args.scheduler, largest_chunk=1, progress=True,
                                label="slopes grids"):
            writer.writerow(row)
            handle.flush()


def slopes_table(path: str, level: float = 0.95) -> pd.DataFrame:
    """Per slopes design: coverage of the truth with its Wilson interval, grids, mean width and
    median Satterthwaite df of the checked term's interval, and the share of grids whose fit kept
    a slope."""
    data = pd.concat([pd.read_csv(p) for p in path.split(",")], ignore_index=True)
    order = {name: i for i, name in enumerate(SLOPE_DESIGNS)}
    rows = []
    for name, group in sorted(data.groupby("design"), key=lambda item: order[item[0]]):
        layout, n_targets, multiple, rho = SLOPE_DESIGNS[name]
        ok = group[["ci_low", "ci_high"]].notna().all(axis=1)
        group = group[ok]
        covered = int(((group["ci_low"] <= group["truth"])
                       & (group["truth"] <= group["ci_high"])).sum())
        n = len(group)
        low, high = pw.wilson_interval(covered, n, level)
        rows.append({
            "design": name, "layout": layout, "targets": n_targets,
            "mixes": len(simulated_mixes(slope_settings(name, 0)[0])),
            "slope_sd_in_se": multiple, "slope_correlation": rho, "term": group["term"].iloc[0],
            "truth": group["truth"].iloc[0], "interval": group["method"].mode().iloc[0],
            "grids": n, "failed": int((~ok).sum()), "covered": covered,
            "coverage": round(covered / n, 4), "mc_low": round(low, 4), "mc_high": round(high, 4),
            "mean_width": round(float((group["ci_high"] - group["ci_low"]).mean()), 4),
            "median_df": round(float(group["df"].median()), 2),
            "slopes_kept": round(float(group["structure"].str.contains(
                r"(?:diversity|volume) \|", regex=True).mean()), 3)})
    return pd.DataFrame(rows)


def false_verdicts(path: str, level: float = 0.95) -> str:
    """The share of directional verdicts ("supported" or "refuted") on the grids of
    ``REALISTIC_CHECK``, whose true contrast is 0, with its Wilson interval."""
    data = pd.concat([pd.read_csv(p) for p in path.split(",")], ignore_index=True)
    verdicts = data.loc[data["design"] == REALISTIC_CHECK, "verdict"]
    directional = int(verdicts.isin(["supported", "refuted"]).sum())
    low, high = pw.wilson_interval(directional, len(verdicts), level)
    return (f"{REALISTIC_CHECK}: directional verdicts in {directional} of {len(verdicts)} grids "
            f"({directional / max(len(verdicts), 1):.3f}; Wilson 95% interval {low:.3f} to "
            f"{high:.3f}); verdicts {verdicts.value_counts().to_dict()}")


def package_slopes_table(path: str, out: str) -> None:
    """The slopes designs' summary as ``transferstats/data/coverage_slopes.csv``, which
    :func:`transferstats.analysis.coverage.slopes_coverage` reads, with its provenance."""
    summary = slopes_table(path)
    summary = summary[summary["grids"] >= MIN_GRIDS]
    header = ("# written by benchmarks/coverage_study.py --slopes --package-table from "
              f"{sum(summary['grids']):,} grids; analyze_loaded with every default "
              "(primary model only), truth: the population average slope(s)\n")
    with open(out, "w", newline="") as handle:
        handle.write(header)
        summary.to_csv(handle, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grids", type=int, default=400, help="simulated grids per design")
    parser.add_argument("--resamples", type=int, default=500, help="bootstrap resamples per grid")
    parser.add_argument("--jobs", type=int, default=None,
                        help="local worker processes (default: every core available)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run the grids on this Dask scheduler (tcp://host:8786; default: "
                             "DASK_SCHEDULER_ADDRESS if set, else local processes)")
    parser.add_argument("--out", default="coverage_study.csv",
                        help="per-grid results (CSV); --table reads several, comma-separated")
    parser.add_argument("--designs", default="",
                        help="|-separated parts of names (the names hold commas); only designs "
                             "whose name holds one of them (default: all)")
    parser.add_argument("--target-mix", choices=list(TARGET_MIX), default="both",
                        help="analyse each grid with and without (1 | target_task:mix) (both), "
                             "or only with it (on: analyze's default) or without (off)")
    parser.add_argument("--slopes", action="store_true",
                        help="the designs with target-specific slopes instead (analyze's Wald t "
                             "interval of the population average; --resamples: the least "
                             "analyze accepts, 50, is enough: no bootstrap runs)")
    parser.add_argument("--table", action="store_true", help="only summarise --out")
    parser.add_argument("--package-table", metavar="CSV",
                        help="also write the contrast's summary for analyze's method here "
                             "(transferstats/data/coverage.csv)")
    parser.add_argument("--wald", type=int, default=0, metavar="N",
                        help="instead: N grids per design analysed by power's Wald t stand-in")
    parser.add_argument("--wald-out", metavar="CSV", help="where --wald writes its table; "
                        "--package-table reads it from here")
    parser.add_argument("--exact-t", type=int, default=0, metavar="N",
                        help="instead: N grids per design, the exact t interval from the mix "
                             "means against the REML Wald t interval")
    args = parser.parse_args()
    words = [w.strip() for w in args.designs.split("|") if w.strip()]
    if args.slopes:
        chosen = [n for n in SLOPE_DESIGNS if not words or any(w in n for w in words)]
        if not args.table:
            run_slopes(args, [(name, i) for i in range(args.grids) for name in chosen])
        with pd.option_context("display.width", 250, "display.max_colwidth", 70):
            print(slopes_table(args.out).drop(columns=["layout"]).to_string(index=False))
        if REALISTIC_CHECK in chosen:
            print(false_verdicts(args.out))
        if args.package_table:
            package_slopes_table(args.out, args.package_table)
        return
    if args.exact_t:
        print(exact_t_table(args.exact_t, words).to_string(index=False,
                                                            float_format="{:.4g}".format))
        return
    if args.wald:
        result = wald_table(args.wald, words, jobs=args.jobs, scheduler=args.scheduler)
        print(result.to_string(index=False, float_format="{:.3f}".format))
        if args.wald_out:
            result.to_csv(args.wald_out, index=False)
        return
    if not args.table:
        run(args)
    with pd.option_context("display.width", 200, "display.max_rows", 500,
                           "display.max_colwidth", 50, "display.float_format", "{:.3f}".format):
        print(table(args.out).to_string(index=False))
    if args.package_table:
        package_table(args.out, args.package_table, args.wald_out)


if __name__ == "__main__":
    main()
