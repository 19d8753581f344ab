"""Simulate a results folder from a known generative model, to check the analysis recovers it.

The model, for mix ``m`` (``d_m = log2`` number of tasks, ``v_m = log2`` total examples, ``p_im``
the share of task ``i`` in its examples), target ``t``, language ``l`` and seed ``s``::

    score(m, t, l, s) = base(t, l) + improvement(m, t, l) + e(m, t, l, s)
    improvement(m, t, l) = intercept + sum_i identity_i * p_im
                         + diversity_t * (d_m - mean d) + volume_t * (v_m - mean v)
                         + interaction * (d_m - mean d) * (v_m - mean v)
                         + a_t + b_l + c_tl + u_m + w_tm
    a_t ~ N(0, target_sd²), b_l ~ N(0, language_sd²), c_tl ~ N(0, target_language_sd²),
    u_m ~ N(0, mix_sd²), w_tm ~ N(0, target_mix_sd²), e ~ N(0, seed_sd²);  the baseline (no
    intermediate task) has improvement 0.

``w_tm`` is the target-by-mix component: a mix helps some targets more than others (Phang et al.
2020, Table 2, where the same intermediate task moves the nine targets by very different
amounts). It is drawn from a generator of its own, so a grid with ``target_mix_sd = 0`` has the
other draws of one with it. ``transferstats power`` simulates the same model
(:mod:`transferstats.analysis.power`, with its defaults taken from :class:`SimulationSettings`):
there the language main effect and the language-within-target effect are one component per
(target, language) pair, and scores are neither clipped nor rounded.

Means are over the mixes of the grid, so the slopes are the effects at the centre of the design,
in points per doubling. ``identity_i`` (points at full share: the identity effect of
Diversity-Interactions models, Kirwan et al. 2009) is given per task (``identity_effects``) or
drawn from N(0, identity_sd²); 0 by default. The per-target slopes are ``diversity_effect`` and
``volume_effect`` plus a pair of deviations per target drawn from a bivariate normal with SDs
``target_diversity_sd`` and ``target_volume_sd`` and correlation ``target_slope_correlation``
(lme4's ``(1 + diversity + volume | target)``), or given per target
(``target_diversity_effects``, ``target_volume_effects``); without them every target has the
common slopes. With ``centre_target_slopes`` (the default) the deviations are centred over the
targets, so the sampled targets' slopes average to the common effects; without it the common
effects are the population average, and the few sampled targets average to something else, as
in a real grid. These draws use generators of their own, so the other draws are the same with
and without them. :data:`REALISTIC_COMPONENTS` holds the magnitudes of a public 1,079-mix grid.
``composition`` says which tasks the mixes hold: ``random``
(the planner's balanced factorial draws, equal shares) or ``concentrated`` (each multi-task mix
gives half its examples to one of the strong tasks, in turn, and the other half in equal parts to
weak ones; single-task mixes hold only weak tasks): composition then tracks diversity, the case
a model without identity effects gets wrong. ``base(t, l)`` is the English score of an
XLM-R Large-like model on ``t`` minus a fixed language gap. Targets and their languages are the real
XTREME ones; mixes are a diversity-by-volume factorial grid of the English intermediate tasks.
Every score is clipped to 0-100, as real scores are.

``kind = "language"`` simulates a grid of language mixes instead (multi-source fine-tuning: the
members are source languages, by ISO 639 code, drawn from ``intermediate_tasks``): each
(diversity, volume) cell gets ``draws`` random sets of languages with equal shares
(:func:`language_mixes`). For both kinds ``in_mix_effect`` adds ``in_mix_effect *
target_in_mix`` to the improvement, the share of the mix's examples from what is evaluated (the
target's own training task; for language mixes, the evaluated language:
:func:`transferstats.analysis.derive.target_in_mix`), and ``baseline = False`` leaves the
baseline runs out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from transferstats.analysis.derive import target_in_mix
from transferstats.grid.factorial import FactorialSpec, factorial_mixes
from transferstats.languages import is_language_code
from transferstats.results import (
    BASELINE_MIX,
    FLAT_COLUMNS,
    SIMULATION_FILE,
    SOURCE_KIND_COLUMN,
    SOURCE_KINDS,
    format_mix_tasks,
    write_run,
)
from transferstats.tasks import INTERMEDIATE_TASKS, TARGET_TASKS, get_task

# English test scores of XLM-R Large (Hu et al. 2020, Table 2; Phang et al. 2020), the level the
# simulated languages fall below.
ENGLISH_SCORE = {"xnli": 88.7, "pawsx": 94.7, "udpos": 96.1, "panx": 84.7, "xquad": 86.5,
                 "mlqa": 83.5, "tydiqa": 71.5, "bucc2018": 78.0, "tatoeba": 75.0}
MEAN_LANGUAGE_GAP = 12.0
#: Source languages of the simulated language mixes: twelve XTREME languages of several families
#: and scripts, each evaluated by some XTREME target, English left out (it is the zero-shot
#: source of the task grids).
SOURCE_LANGUAGES = ("ar", "de", "es", "fi", "fr", "hi", "ko", "ru", "sw", "tr", "vi", "zh")
#: Settings of ``transferstats simulate --kind language``: a multi-source fine-tuning grid as such
#: grids are usually run (no baseline, one seed, five XTREME targets), the evaluated language's
#: share of the mix worth 6 points at full share. Options given on the command line override them.
LANGUAGE_GRID = {
    "kind": "language",
    "intermediate_tasks": SOURCE_LANGUAGES,
    "targets": ("xnli", "pawsx", "xquad", "mlqa", "tydiqa"),
    "seeds": (1,),
    "baseline": False,
    "in_mix_effect": 6.0,
}
QA_EXACT_MATCH_GAP = 13.0
#: Variance components of lme4's correlated fit, ``score ~ diversity * volume + (1 + diversity +
#: volume | target_task) + (1 | target_task:language) + (1 | mix)`` (REML), of a public grid: XLM-R
#: fine-tuned on 1,079 mixes of 1 to 33 languages, evaluated on XNLI, UDPOS, WikiANN, TyDiQA and
#: XQuAD (34,693 non-English rows, one run per mix and target). Points; slopes per doubling. The
#: fit has no language main effect and no target-by-mix term apart from the residual, and its
#: targets are a sample of targets, so the slopes are drawn uncentred (docs/statistics.md).
REALISTIC_COMPONENTS: dict[str, float | bool] = {
    "target_sd": 5.6,
    "language_sd": 0.0,
    "target_language_sd": 9.2,
    "mix_sd": 0.69,
    "target_mix_sd": 0.0,
    "seed_sd": 5.0,
    "target_diversity_sd": 5.9,
    "target_volume_sd": 3.1,
    "target_slope_correlation": -0.98,
    "centre_target_slopes": False,
}


@dataclass(frozen=True)
class SimulationSettings:
    """The effects (points of the headline metric) and the grid to simulate."""

    diversity_effect: float = 1.0
    volume_effect: float = 0.5
    interaction: float = 0.0
    intercept: float = 1.5
    target_sd: float = 1.0
    language_sd: float = 0.8
    target_language_sd: float = 0.6
    mix_sd: float = 0.5
    target_mix_sd: float = 0.5
    seed_sd: float = 1.0
    diversity_levels: tuple[int, ...] = (1, 2, 4, 8)
    volume_levels: tuple[int, ...] = (10_000, 40_000, 160_000)
    draws: int = 3
    seeds: tuple[int, ...] = (1, 2, 3)
    targets: tuple[str, ...] = TARGET_TASKS
    intermediate_tasks: tuple[str, ...] = INTERMEDIATE_TASKS
    max_languages: int | None = None
    model: str = "xlm-roberta-large"
    random_state: int = 0
    mixes: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] | None = field(default=None)
    identity_effects: tuple[tuple[str, float], ...] = ()
    identity_sd: float = 0.0
    composition: str = "random"
    strong_tasks: tuple[str, ...] = ()
    n_strong: int = 3
    target_diversity_effects: tuple[tuple[str, float], ...] = ()
    target_volume_effects: tuple[tuple[str, float], ...] = ()
    target_diversity_sd: float = 0.0
    target_volume_sd: float = 0.0
    target_slope_correlation: float = 0.0
    centre_target_slopes: bool = True
    kind: str = "task"
    in_mix_effect: float = 0.0
    baseline: bool = True

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"kind must be one of {SOURCE_KINDS}, got {self.kind!r}")
        if self.kind == "language":
            unknown = [code for code in self.intermediate_tasks if not is_language_code(code)]
            if unknown:
                raise ValueError(f"kind 'language' needs ISO 639 language codes as members; "
                                 f"unknown: {', '.join(unknown)}")
            if self.composition != "random":
                raise ValueError("kind 'language' draws random language sets; the "
                                 "'concentrated' composition is for task mixes")
        if self.composition not in COMPOSITIONS:
            raise ValueError(f"composition must be one of {COMPOSITIONS}, got {self.composition!r}")
        for task, _ in self.identity_effects:
            if task not in self.intermediate_tasks:
                raise ValueError(f"identity effect for {task!r}, which is not one of the "
                                 f"intermediate tasks {list(self.intermediate_tasks)}")
        for task in self.strong_tasks:
            if task not in self.intermediate_tasks:
                raise ValueError(f"strong task {task!r} is not one of the intermediate tasks")
        for pairs in (self.target_diversity_effects, self.target_volume_effects):
            for target, _ in pairs:
                if target not in self.targets:
                    raise ValueError(f"per-target effect for {target!r}, which is not one of the "
                                     f"targets {list(self.targets)}")
        if not -1.0 <= self.target_slope_correlation <= 1.0:
            raise ValueError(f"target_slope_correlation must lie in [-1, 1], got "
                             f"{self.target_slope_correlation}")
        if min(self.identity_sd, self.target_diversity_sd, self.target_volume_sd,
               self.target_sd, self.language_sd, self.target_language_sd, self.mix_sd,
               self.target_mix_sd, self.seed_sd) < 0:
            raise ValueError("standard deviations must not be negative")

    def realised(self) -> dict:
        """The effects this grid is simulated with, after the draws: ``identity`` (task -> points
        at full share), ``diversity`` and ``volume`` (target -> slope per doubling),
        ``strong_tasks`` (of the concentrated composition), ``population_slopes`` (the average
        over targets like these: the common effects) and ``target_average_slopes`` (the average
        over the simulated targets, equal to it when the slopes are centred or common)."""
        identity = dict.fromkeys(self.intermediate_tasks, 0.0)
        if self.identity_sd > 0:
            draws = np.random.default_rng([self.random_state, 1]).normal(
                0, self.identity_sd, len(self.intermediate_tasks))
            identity = {task: float(x) for task, x in zip(self.intermediate_tasks, draws,
                                                           strict=True)}
        identity |= {task: float(value) for task, value in self.identity_effects}
        slopes = self.target_slopes()
        order = sorted(self.intermediate_tasks, key=lambda t: (-identity[t],
                                                               self.intermediate_tasks.index(t)))
        strong = list(self.strong_tasks) or order[:self.n_strong]
        average = {term: float(np.mean(list(slopes[term].values()))) for term in slopes}
        return {"identity": identity, "diversity": slopes["diversity"],
                "volume": slopes["volume"], "strong_tasks": strong,
                "population_slopes": {"diversity": self.diversity_effect,
                                      "volume": self.volume_effect},
                "target_average_slopes": average}

    def target_slopes(self) -> dict[str, dict[str, float]]:
        """Each target's diversity and volume slope (``term -> target -> points per doubling``).

        Deviations from the common effects are ``sd_d z1`` and ``sd_v (rho z1 + sqrt(1 - rho²)
        z2)`` for independent standard normal ``z1, z2`` per target: a bivariate normal with
        correlation ``rho``, ``z1`` drawn only when ``sd_d > 0`` and ``z2`` only when ``sd_v > 0``
        so that grids without slope variation keep their draws. Given per-target effects
        replace the drawn slopes.
        """
        n = len(self.targets)
        generator = np.random.default_rng([self.random_state, 2])
        sd_d, sd_v, rho = self.target_diversity_sd, self.target_volume_sd, self.target_slope_correlation
        z1 = generator.standard_normal(n) if sd_d > 0 else np.zeros(n)
        z2 = generator.standard_normal(n) if sd_v > 0 else np.zeros(n)
        deviations = {"diversity": sd_d * z1,
                      "volume": sd_v * (rho * z1 + np.sqrt(1 - rho ** 2) * z2)
                      if sd_d > 0 else sd_v * z2}
        slopes = {}
        for term, common, given in (
                ("diversity", self.diversity_effect, self.target_diversity_effects),
                ("volume", self.volume_effect, self.target_volume_effects)):
            deviation = deviations[term]
            if self.centre_target_slopes and n > 1:
                deviation = deviation - deviation.mean()
            slopes[term] = {t: float(common + x) for t, x in zip(self.targets, deviation,
                                                                 strict=True)}
            slopes[term] |= {t: float(value) for t, value in given}
        return slopes

    @classmethod
    def realistic(cls, **changes) -> SimulationSettings:
        """Settings with the variance components of :data:`REALISTIC_COMPONENTS` (a public
        1,079-mix language grid), for a language grid (:data:`LANGUAGE_GRID`) unless
        ``changes`` ask for ``kind="task"``; the other fields keep their defaults or take
        ``changes``."""
        grid = LANGUAGE_GRID if changes.get("kind", "language") == "language" else {}
        values: dict[str, Any] = {**grid, **REALISTIC_COMPONENTS, **changes}
        return cls(**values)

    def truth(self) -> dict:
        """The settings as a JSON-ready dict, the ground truth the analysis should recover, with
        the ``realised`` effects after the draws."""
        settings = {key: (list(value) if isinstance(value, tuple) else value)
                    for key, value in asdict(self).items()}
        return settings | {"realised": self.realised()}


COMPOSITIONS = ("random", "concentrated")


def concentrated_mixes(settings: SimulationSettings, strong: list[str]
                       ) -> list[tuple[str, dict[str, int]]]:
    """Mixes of the diversity-by-volume grid in which composition tracks diversity.

    Single-task mixes hold one weak task (in turn); a mix of ``d`` > 1 tasks gives half its
    examples to one strong task (in turn) and the other half equally to ``d - 1`` of the other
    tasks, weak or strong (in turn), so bigger mixes hold more strong tasks. Dataset sizes are
    not checked: it is a simulation.
    """
    tasks_all = list(settings.intermediate_tasks)
    weak = [t for t in tasks_all if t not in strong]
    largest = max(settings.diversity_levels)
    if not strong or not weak or len(tasks_all) < largest:
        raise ValueError(f"the concentrated composition needs at least one strong task, one weak "
                         f"task and {largest} tasks in all; got strong {strong}, weak {weak}")
    mixes, next_weak, next_strong, next_partner = [], 0, 0, 0
    for d in settings.diversity_levels:
        for volume in settings.volume_levels:
            for draw in range(settings.draws):
                label = f"{volume // 1000}k" if volume % 1000 == 0 else str(volume)
                name = f"d{d}-v{label}-r{draw + 1}"
                if d == 1:
                    mixes.append((name, {weak[next_weak % len(weak)]: volume}))
                    next_weak += 1
                    continue
                lead = strong[next_strong % len(strong)]
                next_strong += 1
                others = [t for t in tasks_all if t != lead]
                partners = [others[(next_partner + j) % len(others)] for j in range(d - 1)]
                next_partner += d - 1
                tasks = {lead: volume - volume // 2}
                each, remainder = divmod(volume // 2, d - 1)
                for j, task in enumerate(partners):
                    tasks[task] = each + (1 if j < remainder else 0)
                mixes.append((name, tasks))
    return mixes


def language_mixes(settings: SimulationSettings) -> list[tuple[str, dict[str, int]]]:
    """Mixes of source languages for every (diversity, volume) cell: ``draws`` sets of ``d``
    languages each, drawn without replacement from ``intermediate_tasks`` (a generator of their
    own, seeded by ``random_state``), with the volume split equally between them."""
    languages = list(settings.intermediate_tasks)
    largest = max(settings.diversity_levels)
    if len(languages) < largest:
        raise ValueError(f"{largest} languages per mix, but only {len(languages)} source languages")
    generator = np.random.default_rng([settings.random_state, 3])
    mixes = []
    for d in settings.diversity_levels:
        for volume in settings.volume_levels:
            for draw in range(settings.draws):
                label = f"{volume // 1000}k" if volume % 1000 == 0 else str(volume)
                chosen = sorted(generator.choice(languages, size=d, replace=False))
                each, remainder = divmod(volume, d)
                mixes.append((f"d{d}-v{label}-r{draw + 1}",
                              {str(code): each + (1 if j < remainder else 0)
                               for j, code in enumerate(chosen)}))
    return mixes


def simulated_mixes(settings: SimulationSettings) -> list[tuple[str, dict[str, int]]]:
    """The mixes of the simulated grid: ``settings.mixes`` if given, else the diversity-by-volume
    factorial design that ``transferstats plan`` would build
    (:func:`transferstats.design.factorial_mixes`)."""
    if settings.mixes is not None:
        return [(name, dict(tasks)) for name, tasks in settings.mixes]
    if settings.kind == "language":
        return language_mixes(settings)
    if settings.composition == "concentrated":
        return concentrated_mixes(settings, settings.realised()["strong_tasks"])
    spec = FactorialSpec(diversity=settings.diversity_levels, volume=settings.volume_levels,
                         draws=settings.draws, tasks=settings.intermediate_tasks,
                         seed=settings.random_state)
    return [(mix.name, dict(mix.tasks)) for mix in factorial_mixes(spec, source="simulate")]


def _languages(target: str, settings: SimulationSettings) -> tuple[str, ...]:
    languages = get_task(target).languages
    if settings.max_languages is None:
        return languages
    english = tuple(lang for lang in languages if lang == "en")
    return english + tuple(lang for lang in languages if lang != "en")[:settings.max_languages]


def simulate_scores(settings: SimulationSettings = SimulationSettings()) -> tuple[list[dict], pd.DataFrame]:
    """Simulated runs (``run.json`` objects) and their scores as a tidy table (``run_id`` keyed)."""
    rng = np.random.default_rng(settings.random_state)
    mixes = simulated_mixes(settings)
    realised = settings.realised()
    diversity = np.array([np.log2(len(tasks)) for _, tasks in mixes])
    volume = np.array([np.log2(sum(tasks.values())) for _, tasks in mixes])
    centred_d, centred_v = diversity - diversity.mean(), volume - volume.mean()
    identity = np.array([sum(realised["identity"].get(task, 0.0) * count / sum(tasks.values())
                             for task, count in tasks.items()) for _, tasks in mixes])
    mix_effect = (settings.intercept + identity + settings.interaction * centred_d * centred_v
                  + rng.normal(0, settings.mix_sd, len(mixes)))

    all_languages = sorted({lang for t in settings.targets for lang in _languages(t, settings)})
    language_effect = dict(zip(all_languages, rng.normal(0, settings.language_sd, len(all_languages)),
                               strict=True))
    # A generator of its own: grids without target-by-mix variation keep their other draws.
    target_mix_effect = np.random.default_rng([settings.random_state, 3]).normal(
        0, settings.target_mix_sd, (len(settings.targets), len(mixes)))
    model_short = settings.model.replace("xlm-roberta", "xlmr").replace("/", "-")
    runs, scores = [], []
    for target_index, target in enumerate(settings.targets):
        task = get_task(target)
        languages = _languages(target, settings)
        target_effect = rng.normal(0, settings.target_sd)
        gap = {lang: 0.0 if lang == "en" else max(0.0, rng.normal(MEAN_LANGUAGE_GAP, 4.0))
               for lang in languages}
        target_language_effect = dict(zip(languages,
                                          rng.normal(0, settings.target_language_sd, len(languages)),
                                          strict=True))
        base = np.array([ENGLISH_SCORE.get(target, 80.0) - gap[lang] for lang in languages])
        shift = np.array([language_effect[lang] + target_language_effect[lang] for lang in languages])
        for mix_index in [None, *range(len(mixes))] if settings.baseline else range(len(mixes)):
            if mix_index is None:
                mix_name, tasks, improvement = "none", None, np.zeros(len(languages))
            else:
                mix_name, tasks = mixes[mix_index]
                slopes = (realised["diversity"][target] * centred_d[mix_index]
                          + realised["volume"][target] * centred_v[mix_index])
                in_mix = settings.in_mix_effect * np.array(
                    [target_in_mix(format_mix_tasks(tasks), target, lang, settings.kind)
                     for lang in languages])
                improvement = (mix_effect[mix_index] + target_mix_effect[target_index, mix_index]
                               + slopes + target_effect + shift + in_mix)
            for seed in settings.seeds:
                run_id = f"{model_short}.{mix_name}.{target}.s{seed}"
                value = np.clip(base + improvement + rng.normal(0, settings.seed_sd, len(languages)), 0, 100)
                runs.append({
                    "run_id": run_id, "model": settings.model,
                    "intermediate": None if tasks is None else {
                        "name": mix_name, "kind": settings.kind, "tasks": tasks,
                        "sampling": "proportional"},
                    "target_task": target, "seed": seed, "status": "complete",
                    "hyperparameters": {"simulated": True}, "code_version": "simulated",
                })
                for lang, score in zip(languages, value, strict=True):
                    scores.append({"run_id": run_id, "language": lang, "metric": task.metric,
                                   "split": "test", "value": round(float(score), 3)})
                    if task.format == "extractive_qa":
                        scores.append({"run_id": run_id, "language": lang, "metric": "exact_match",
                                       "split": "test",
                                       "value": round(float(max(score - QA_EXACT_MATCH_GAP, 0.0)), 3)})
    return runs, pd.DataFrame(scores)


def flat_table(runs: list[dict], scores: pd.DataFrame) -> pd.DataFrame:
    """The flat-table form of simulated runs (docs/results-contract.md): one row per score, with
    the mix's kind in ``source_kind`` (empty for the baseline)."""
    columns = []
    for run in runs:
        mix = run["intermediate"]
        columns.append({"run_id": run["run_id"], "model": run["model"],
                        "mix": mix["name"] if mix else BASELINE_MIX,
                        "mix_tasks": format_mix_tasks(mix["tasks"]) if mix else "",
                        SOURCE_KIND_COLUMN: mix["kind"] if mix else "",
                        "target_task": run["target_task"], "seed": run["seed"]})
    table = pd.DataFrame(columns).merge(scores, on="run_id", how="inner", validate="one_to_many")
    return table[[*FLAT_COLUMNS, SOURCE_KIND_COLUMN]]


def simulate_results(out_dir: str | Path, settings: SimulationSettings = SimulationSettings(),
                     *, progress: bool = False) -> Path:
    """Write a simulated results folder (one folder per run, by the contract) and
    ``simulation.json`` holding the true settings beside the runs.

    When ``out_dir`` ends in ``.csv`` the runs are written as one flat table instead, and the
    true settings beside it as ``<name>.simulation.json``.
    """
    out_dir = Path(out_dir)
    runs, scores = simulate_scores(settings)
    if out_dir.suffix.lower() == ".csv":
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        flat_table(runs, scores).to_csv(out_dir, index=False, float_format="%.3f")
        out_dir.with_suffix(".simulation.json").write_text(
            json.dumps(settings.truth(), indent=2) + "\n")
        return out_dir
    by_run = {run_id: group.drop(columns="run_id").to_dict("records")
              for run_id, group in scores.groupby("run_id", sort=False)}
    iterator = iter(runs)
    if progress:
        from rich.progress import track
        iterator = iter(track(runs, description="writing simulated runs"))
    for run in iterator:
        write_run(out_dir / run["run_id"], run, by_run[run["run_id"]])
    (out_dir / SIMULATION_FILE).write_text(json.dumps(settings.truth(), indent=2) + "\n")
    return out_dir
