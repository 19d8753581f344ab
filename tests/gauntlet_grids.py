"""Grids of the gauntlet (issue 24, item 7), written in the real formats of the results contract.

Each builder writes one grid under a folder it is given (a results folder of ``run.json`` +
``scores.jsonl`` written by :func:`transferstats.results.write_run`, or a flat ``.csv``,
``.parquet`` or ``.jsonl`` table) and returns a :class:`GauntletGrid`: where it is, how to analyse
it (``analyze_options``) and the truth an analysis must report (the model, the kind of members,
the factor that varies, the targets and mixes kept, the modelled rows, and every row that must be
left out, with the reason, per target). The shapes and names are those of published grids, not of
the bundled simulation: decoder model ids, targets that are not built in, one lone top mix with
replicates, a single source, several models in one table, English evaluated and kept.

The accounting follows the rules of issue 24, item 2, applied in this order: other models, then
the split (a target whose runs hold one split uses it; one holding several uses ``test``), then
the metric (each target's headline metric), then English (left out of task mixes unless
``include_english``; kept for language mixes, whose ``target_in_mix`` says whether it was trained
on). Failed runs have no scores and are counted in runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from transferstats.results import write_run
from transferstats.simulate import (
    SimulationSettings,
    flat_table,
    simulate_results,
    simulate_scores,
    simulated_mixes,
)
from transferstats.tasks import get_task, read_task_file, task_scope

Runs = list[dict]
Mix = tuple[str, tuple[tuple[str, int], ...]]


@dataclass(frozen=True)
class GauntletGrid:
    """A written grid and the truth about it."""

    name: str
    path: Path
    format: str                              # "folder", "csv", "parquet" or "jsonl"
    kind: str                                # what the mixes are made of: "task" or "language"
    varies: str                              # "diversity", "volume" or "both"
    model: str                               # the model analysed, named as in the data
    models: tuple[str, ...]                  # every model in the data
    targets: tuple[str, ...]                 # targets the analysis keeps
    mixes: int                               # mixes the analysis keeps (baseline not counted)
    runs: int                                # complete runs of ``model`` (baselines included)
    modelled_rows: int                       # rows the model is fitted on
    baseline: bool                           # whether the grid has baseline runs
    english_evaluated: bool
    split: dict[str, str]                    # target -> the split analysed
    dropped: dict[tuple[str, str], int]      # (reason, target) -> score rows left out
    baseline_rows: int = 0                   # baseline rows kept, for the improvement
    failed_runs: dict[str, int] = field(default_factory=dict)   # target -> failed runs
    analyze_options: dict = field(default_factory=dict)         # keywords for ts.analyze
    tasks_file: Path | None = None
    truth: dict = field(default_factory=dict)  # simulated effects, where they matter
    notes: str = ""


# --- shared pieces -------------------------------------------------------------------------

def _budget(members: list[str], total: int) -> tuple[tuple[str, int], ...]:
    """``total`` examples split as evenly as whole numbers allow: the volume is exactly fixed."""
    each, remainder = divmod(total, len(members))
    return tuple((m, each + (1 if i < remainder else 0)) for i, m in enumerate(sorted(members)))


def _simulate(settings: SimulationSettings, tasks_file: Path | None = None
              ) -> tuple[Runs, pd.DataFrame]:
    tasks = read_task_file(tasks_file) if tasks_file else []
    with task_scope(tasks):
        return simulate_scores(settings)


def _keep_runs(runs: Runs, scores: pd.DataFrame, keep: Callable[[dict], bool]
               ) -> tuple[Runs, pd.DataFrame]:
    kept = [run for run in runs if keep(run)]
    ids = {run["run_id"] for run in kept}
    return kept, scores[scores["run_id"].isin(ids)].reset_index(drop=True)


def _write_folder(root: Path, runs: Runs, scores: pd.DataFrame) -> None:
    by_run = {run_id: group.drop(columns="run_id").to_dict("records")
              for run_id, group in scores.groupby("run_id", sort=False)}
    for run in runs:
        write_run(root / run["run_id"], run, by_run.get(run["run_id"]))


def _write_table(path: Path, table: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        table.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        table.to_parquet(path, index=False)
    else:
        table.to_json(path, orient="records", lines=True)


def _account(table: pd.DataFrame, model: str, metric_of: dict[str, str], *,
             drop_english: bool) -> tuple[int, int, dict[str, str], dict[tuple[str, str], int]]:
    """Modelled rows, baseline rows kept (for the improvement), the split of each target and
    the rows left out per (reason, target), by the rules in the module docstring, from the flat
    table of every written score."""
    dropped: dict[tuple[str, str], int] = {}

    def leave_out(rows: pd.DataFrame, mask: pd.Series, reason: str) -> pd.DataFrame:
        for target, count in rows[mask].groupby("target_task").size().items():
            dropped[(reason, str(target))] = int(count)
        return rows[~mask]

    rows = leave_out(table, table["model"] != model, "other models")
    splits = rows.groupby("target_task")["split"].unique()
    split_of = {str(t): (str(s[0]) if len(s) == 1 else "test") for t, s in splits.items()}
    rows = leave_out(rows, rows["split"] != rows["target_task"].map(split_of), "split")
    rows = leave_out(rows, rows["metric"] != rows["target_task"].map(metric_of), "metric")
    if drop_english:
        rows = leave_out(rows, rows["language"] == "en", "English")
    baseline = int((rows["mix"] == "none").sum())
    return len(rows) - baseline, baseline, split_of, dropped


def _metrics(targets: tuple[str, ...], tasks_file: Path | None = None) -> dict[str, str]:
    with task_scope(read_task_file(tasks_file) if tasks_file else []):
        return {t: get_task(t).metric for t in targets}


# --- (i) a fixed-budget language grid with a lone top mix -----------------------------------

#: Two targets that are not built in, as a user registers them (docs/tasks.md).
INSTRUCTION_TARGETS_TOML = """\
[tasks.xcopa]
role = "target"
format = "multiple_choice"
metric = "accuracy"
languages = ["et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh"]
num_labels = 2

[tasks.xstorycloze]
role = "target"
format = "multiple_choice"
metric = "accuracy"
languages = ["en", "ar", "es", "eu", "hi", "id", "my", "ru", "sw", "te", "zh"]
num_labels = 2
"""
#: 52 languages of an instruction-tuning collection: the 28 the targets evaluate and 24 more.
INSTRUCTION_LANGUAGES = (
    "en ar bg de el es fr hi ru sw th tr ur vi zh ja ko bn fi id te et ht it qu ta eu my "
    "af am az ca cs da fa ga gu ha he hr hu hy is kk lt lv mk ml mr ne nl pl").split()
INSTRUCTION_BUDGET = 62_000


def fixed_budget_language_grid(root: Path) -> GauntletGrid:
    """A multilingual instruction-tuning grid at a fixed budget of 62,000 examples: 18 mixes of
    14 languages with one run each and one mix of all 52 languages with 3 replicates, tuned from
    ``bigscience/bloom-560m`` and evaluated by 5 targets in 28 languages (English among them),
    two of them registered from ``instruction_targets.toml``; one run failed (out of memory).
    A results folder. Only diversity varies, and the lone 52-language mix carries all of it."""
    root.mkdir(parents=True, exist_ok=True)
    tasks_file = root / "instruction_targets.toml"
    tasks_file.write_text(INSTRUCTION_TARGETS_TOML)
    rng = np.random.default_rng(24)
    mixes: list[Mix] = [(f"aya-subset-{i + 1:02d}", _budget(
        list(rng.choice(INSTRUCTION_LANGUAGES, 14, replace=False)), INSTRUCTION_BUDGET))
        for i in range(18)]
    mixes.append(("aya-all52", _budget(INSTRUCTION_LANGUAGES, INSTRUCTION_BUDGET)))
    targets = ("xnli", "pawsx", "tydiqa", "xcopa", "xstorycloze")
    settings = SimulationSettings(
        kind="language", model="bigscience/bloom-560m", targets=targets, baseline=False,
        intermediate_tasks=tuple(INSTRUCTION_LANGUAGES), mixes=tuple(mixes), seeds=(1, 2, 3),
        diversity_effect=0.8, volume_effect=0.0, in_mix_effect=4.0, random_state=11)
    runs, scores = _simulate(settings, tasks_file)
    runs, scores = _keep_runs(runs, scores, lambda run: run["seed"] == 1
                              or run["intermediate"]["name"] == "aya-all52")
    folder = root / "results"
    _write_folder(folder, runs, scores)
    failed_id = "bigscience-bloom-560m.aya-subset-19.xnli.s1"
    failed = {"run_id": failed_id,
              "model": settings.model, "target_task": "xnli", "seed": 1, "status": "failed",
              "error": "CUDA out of memory", "intermediate": {
                  "name": "aya-subset-19", "kind": "language",
                  "tasks": dict(_budget(INSTRUCTION_LANGUAGES[:14], INSTRUCTION_BUDGET))}}
    write_run(folder / failed_id, failed)
    modelled, baseline_rows, split, dropped = _account(flat_table(runs, scores), settings.model,
                                        _metrics(targets, tasks_file), drop_english=False)
    return GauntletGrid(
        "fixed-budget language grid", folder, "folder", "language", "diversity", settings.model,
        (settings.model,), targets, 19, len(runs), modelled, False, True, split, dropped,
        baseline_rows=baseline_rows, failed_runs={"xnli": 1}, analyze_options={"tasks": str(tasks_file)},
        tasks_file=tasks_file, truth={"diversity_effect": 0.8, "lone_mix": "aya-all52",
                                      "lone_mix_replicates": 3},
        notes="the lone mix is left out of (18/19)^19 = 36% of crossed resamples")


# --- (ii) a single-source volume grid -------------------------------------------------------

def single_source_volume_grid(root: Path) -> GauntletGrid:
    """One English source task (ANLI) at six sizes, 2,500 to 80,000 examples, two seeds and
    baselines, from ``microsoft/mdeberta-v3-base``; XNLI scored on ``test``, XQuAD on
    ``validation`` only (its one split, so it is analysed). A flat CSV. Only volume varies."""
    mixes: list[Mix] = [(f"anli-{n // 1000}k" if n % 1000 == 0 else f"anli-{n / 1000:g}k",
                         (("anli", n),)) for n in (2500, 5000, 10_000, 20_000, 40_000, 80_000)]
    targets = ("xnli", "xquad")
    settings = SimulationSettings(
        model="microsoft/mdeberta-v3-base", targets=targets, mixes=tuple(mixes), seeds=(1, 2),
        intermediate_tasks=("anli",), diversity_effect=0.0, volume_effect=1.2, max_languages=6,
        random_state=3)
    runs, scores = _simulate(settings)
    table = flat_table(runs, scores)
    table.loc[table["target_task"] == "xquad", "split"] = "validation"
    path = root / "mdeberta_anli_sizes.csv"
    _write_table(path, table)
    modelled, baseline_rows, split, dropped = _account(table, settings.model, _metrics(targets),
                                        drop_english=True)
    return GauntletGrid(
        "single-source volume grid", path, "csv", "task", "volume", settings.model,
        (settings.model,), targets, len(mixes), len(runs), modelled, True, True, split, dropped,
        baseline_rows=baseline_rows, truth={"volume_effect": 1.2},
        notes="diversity is 1 task in every mix; xquad's only split is validation")


# --- (iii) a flat table of several models -----------------------------------------------------

DECODERS = ("bigscience/bloom-560m", "ai-forever/mGPT", "facebook/xglm-564M")


def several_models_table(root: Path) -> GauntletGrid:
    """The same 12 language mixes tuned from three decoder models, in one Parquet table; the
    analysis selects ``ai-forever/mGPT`` (``model=``) and leaves the other two out."""
    template = SimulationSettings(
        kind="language", intermediate_tasks=("ar", "de", "es", "hi", "sw", "tr", "vi", "zh"),
        targets=("xnli", "pawsx"), diversity_levels=(1, 2, 4), volume_levels=(8000, 32_000),
        draws=2, seeds=(1,), baseline=False, max_languages=5, in_mix_effect=5.0)
    mixes = tuple((name, tuple(sorted(members.items())))
                  for name, members in simulated_mixes(template))
    tables = []
    for index, model in enumerate(DECODERS):
        settings = replace(template, model=model, mixes=mixes, random_state=40 + index)
        tables.append(flat_table(*_simulate(settings)))
    table = pd.concat(tables, ignore_index=True)
    path = root / "three_decoders.parquet"
    _write_table(path, table)
    chosen = DECODERS[1]
    modelled, baseline_rows, split, dropped = _account(table, chosen, _metrics(template.targets),
                                        drop_english=False)
    return GauntletGrid(
        "several models in one table", path, "parquet", "language", "both", chosen, DECODERS,
        template.targets, len(mixes), int(table.loc[table["model"] == chosen, "run_id"].nunique()),
        modelled, False, True, split, dropped, baseline_rows=baseline_rows,
        analyze_options={"model": chosen},
        notes="420 of 525 runs belong to other models in the published case; here 2 of 3 models")


# --- (iv) a task-mix grid with English evaluated and kept -------------------------------------

def english_kept_task_grid(root: Path) -> GauntletGrid:
    """Task mixes of 1, 2 and 4 English tasks at 10,000 and 40,000 examples, with baselines, from
    ``FacebookAI/xlm-roberta-base``, analysed with ``include_english=True``. PAWS-X also holds
    ``validation`` scores, so its ``test`` split is analysed and the validation rows are left
    out. A results folder."""
    targets = ("pawsx", "udpos")
    settings = SimulationSettings(
        model="FacebookAI/xlm-roberta-base", targets=targets, diversity_levels=(1, 2, 4),
        volume_levels=(10_000, 40_000), draws=2, seeds=(1, 2), max_languages=4,
        random_state=5)
    runs, scores = _simulate(settings)
    pawsx_runs = {run["run_id"] for run in runs if run["target_task"] == "pawsx"}
    validation = scores[scores["run_id"].isin(pawsx_runs)].assign(
        split="validation", value=lambda rows: (rows["value"] - 1.5).clip(0, 100).round(3))
    scores = pd.concat([scores, validation], ignore_index=True)
    folder = root / "results"
    _write_folder(folder, runs, scores)
    modelled, baseline_rows, split, dropped = _account(flat_table(runs, scores), settings.model,
                                        _metrics(targets), drop_english=False)
    n_mixes = len({run["intermediate"]["name"] for run in runs if run["intermediate"]})
    return GauntletGrid(
        "task mixes, English kept", folder, "folder", "task", "both", settings.model,
        (settings.model,), targets, n_mixes, len(runs), modelled, True, True, split, dropped,
        baseline_rows=baseline_rows, analyze_options={"include_english": True},
        notes="English is kept on request: its rows are modelled, none is left out")


# --- (v) 2 targets x 3 mixes ------------------------------------------------------------------

def two_targets_three_mixes(root: Path) -> GauntletGrid:
    """The smallest grid: 2 targets x 3 task mixes x 2 seeds, no baseline, from
    ``Qwen/Qwen2.5-0.5B``, as JSON Lines. Too few subjects for some descriptive tests
    (a sphericity test on 2 targets x 3 mixes), which must be left out with their reason."""
    mixes: list[Mix] = [("hellaswag-3k", (("hellaswag", 3000),)),
                        ("hellaswag-cosmosqa-3k", (("cosmosqa", 1500), ("hellaswag", 1500))),
                        ("hellaswag-cosmosqa-6k", (("cosmosqa", 3000), ("hellaswag", 3000)))]
    targets = ("pawsx", "xnli")
    settings = SimulationSettings(
        model="Qwen/Qwen2.5-0.5B", targets=targets, mixes=tuple(mixes), seeds=(1, 2),
        intermediate_tasks=("hellaswag", "cosmosqa"), baseline=False, max_languages=4,
        random_state=8)
    runs, scores = _simulate(settings)
    table = flat_table(runs, scores)
    path = root / "qwen_two_by_three.jsonl"
    _write_table(path, table)
    modelled, baseline_rows, split, dropped = _account(table, settings.model, _metrics(targets),
                                        drop_english=True)
    return GauntletGrid(
        "2 targets x 3 mixes", path, "jsonl", "task", "both", settings.model, (settings.model,),
        targets, 3, len(runs), modelled, False, True, split, dropped, baseline_rows=baseline_rows,
        notes="diversity and volume both vary over 3 mixes (r = 0.5); 2 targets")


# --- (vi) target-specific slopes of realistic size --------------------------------------------

def realistic_slopes_grid(root: Path, *, random_state: int = 0) -> GauntletGrid:
    """A language grid with the variance components and correlated target-specific slopes of a
    public 1,079-mix grid (``SimulationSettings.realistic``): 36 mixes of 1-8 of twelve languages
    at 5,000-80,000 examples, 5 targets, one seed, a true average contrast of 0 (diversity and
    volume 1.0 per doubling over targets like these). A results folder with ``simulation.json``;
    ``truth`` holds the population and per-target slopes."""
    # Targets with English scores below 90 and an intercept of -15 keep the clipping at 0 and
    # 100 to about 0.5% of scores with spreads this large (it would bend the true slopes).
    settings = SimulationSettings.realistic(
        model="FacebookAI/xlm-roberta-large", targets=("xnli", "mlqa", "tydiqa", "xquad", "panx"),
        diversity_levels=(1, 2, 4, 8), volume_levels=(5000, 20_000, 80_000), draws=3,
        max_languages=6, diversity_effect=1.0, volume_effect=1.0, intercept=-15.0,
        random_state=random_state)
    folder = simulate_results(root / "results", settings)
    runs, scores = simulate_scores(settings)
    modelled, baseline_rows, split, dropped = _account(flat_table(runs, scores), settings.model,
                                        _metrics(settings.targets), drop_english=False)
    realised = settings.realised()
    return GauntletGrid(
        "realistic target-specific slopes", folder, "folder", "language", "both", settings.model,
        (settings.model,), settings.targets, 36, len(runs), modelled, False, True, split,
        dropped, baseline_rows=baseline_rows, truth={key: realised[key] for key in (
            "population_slopes", "target_average_slopes", "diversity", "volume")}
        | {"clipped_share": float(scores["value"].isin([0.0, 100.0]).mean())},
        notes="slope SDs 5.9 and 3.1 per doubling, correlation -0.98, drawn uncentred")


# --- (vii) the bundled factorial grid ---------------------------------------------------------

def bundled_factorial_grid(root: Path) -> GauntletGrid:
    """The grid of the README's first command, ``transferstats simulate examples/results``: every
    default (nine XTREME targets, 36 task mixes of a diversity-by-volume factorial, baselines,
    three seeds, ``xlm-roberta-large``). A results folder with ``simulation.json``."""
    settings = SimulationSettings()
    folder = simulate_results(root / "results", settings)
    runs, scores = simulate_scores(settings)
    modelled, baseline_rows, split, dropped = _account(
        flat_table(runs, scores), settings.model, _metrics(settings.targets), drop_english=True)
    return GauntletGrid(
        "bundled factorial grid", folder, "folder", "task", "both", settings.model,
        (settings.model,), settings.targets, 36, len(runs), modelled, True, True, split,
        dropped, baseline_rows=baseline_rows,
        truth={"diversity_effect": settings.diversity_effect,
               "volume_effect": settings.volume_effect},
        notes="the bundled example: the design every text was first written for")


#: Every builder, by a short name (for parametrised tests).
BUILDERS: dict[str, Callable[[Path], GauntletGrid]] = {
    "fixed_budget_language": fixed_budget_language_grid,
    "single_source_volume": single_source_volume_grid,
    "several_models": several_models_table,
    "english_kept": english_kept_task_grid,
    "two_by_three": two_targets_three_mixes,
    "realistic_slopes": realistic_slopes_grid,
    "bundled_factorial": bundled_factorial_grid,
}
