"""Grid specifications: parse and validate a ``runners/*.toml`` file, generate diversity-by-volume
factorial mixes, and expand a grid into the phase-2 and phase-3 jobs the executors run.

A grid is (model) x (intermediate mixes + the no-intermediate baseline) x (targets) x (seeds).
Every bad key is refused with a :class:`SpecError` naming the key and the reason, before anything
runs. Nothing here imports torch.

The specification (TOML; only ``model``, ``targets`` and ``seeds`` are required)::

    name = "my-grid"                 # default: the file name
    description = "..."
    model = "xlm-roberta-large"      # hub id or local path
    model_short = "xlmr-large"       # names runs: <model_short>.<mix>.<target>.s<seed>
    targets = ["xnli", "pawsx"]      # target task ids
    seeds = [1, 2, 3]
    baseline = true                  # add the no-intermediate run of every (target, seed)
    languages = ["en", "de"]         # evaluate only these (default: all of each target's)
    prepare = "smoke-assets"         # make the tiny model and data first (the smoke grid)
    assets_dir = ".assets"           # where, relative to the results folder

    [hyperparameters]                # shared by both phases ...
    learning_rate = 1e-5
    [hyperparameters.intermediate]   # ... with per-phase overrides
    epochs = 2
    [hyperparameters.target]
    epochs = 3

    [data]                           # passed to the training phases as is

    [[mixes]]                        # explicit mixes: task -> examples, or a list of tasks
    name = "mnli-squad_v1"           # (a list means each task's whole training set)
    tasks = {mnli = 20000, squad_v1 = 20000}
    sampling = "proportional"        # proportional | temperature | uniform
    temperature = 1.0

    [factorial]                      # generated mixes, named d<tasks>-v<volume>-r<draw>
    diversity = [1, 2, 4, 8]         # tasks per mix
    volume = [10000, 40000, 160000]  # total examples per mix, hit exactly
    draws = 3                        # task sets per (diversity, volume) cell
    tasks = ["mnli", "anli", ...]    # the pool to draw from
    seed = 0
    iterations = 20000               # balancing search steps
    sampling = "proportional"

    [tasks.my_task]                  # your own tasks (see transferstats.tasks); for an
    data = {train_size = 5000}       # intermediate task, train_size bounds what mixes ask of it

    [slurm]                          # defaults for `run --executor slurm`
    partition = "gpu"  time = "24:00:00"  gpus = 1  memory = "64G"  account = "..."
    parallelism = 32  cpus_per_task = 8

    [estimate]                       # GPU-hour estimate of `plan`
    examples_per_second = 60         # measured throughput, instead of the assumed one
    target_examples = 48             # cap on a target's training examples (small data)
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import random
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from transferstats.tasks import (
    UnknownTaskError,
    get_task,
    register_task,
    tasks_from_table,
)
from transferstats.train.jobs import SAMPLING, IntermediateJob, Mix, TargetJob

# English training-set sizes of the built-in intermediate tasks (examples). They bound what a mix
# can ask for; a user task declares its own with ``[tasks.<id>] data = {train_size = N}``.
INTERMEDIATE_TRAIN_SIZES = {
    "mnli": 392_702,
    "anli": 162_865,  # rounds 1-3
    "qqp": 363_846,
    "sst2": 67_349,
    "squad_v1": 87_599,
    "squad_v2": 130_319,
    "hellaswag": 39_905,
    "commonsenseqa": 9_741,
    "cosmosqa": 25_262,
    "ccg": 38_015,
}

BASELINE_MIX_NAME = "none"
PHASES = ("intermediate", "target")
PREPARE_STEPS = ("smoke-assets",)
SLURM_KEYS = ("partition", "time", "gpus", "memory", "account", "parallelism", "cpus_per_task")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_TOP_LEVEL_KEYS = ("name", "description", "model", "model_short", "targets", "seeds", "baseline",
                   "languages", "prepare", "assets_dir", "hyperparameters", "data", "mixes",
                   "factorial", "tasks", "slurm", "estimate")
_MIX_KEYS = ("name", "tasks", "sampling", "temperature")
_FACTORIAL_KEYS = ("diversity", "volume", "draws", "tasks", "seed", "sampling", "temperature",
                   "iterations")
_ESTIMATE_KEYS = ("examples_per_second", "target_examples")


class SpecError(ValueError):
    """A grid specification that cannot run: ``key`` is the dotted key, ``reason`` why."""

    def __init__(self, source: str, key: str, reason: str):
        super().__init__(f"{source}: {key}: {reason}")
        self.source, self.key, self.reason = source, key, reason


@dataclass(frozen=True)
class FactorialSpec:
    """Diversity levels (tasks per mix) crossed with volume budgets (total examples), ``draws``
    random task sets per cell, drawn from ``tasks``."""

    diversity: tuple[int, ...]
    volume: tuple[int, ...]
    draws: int
    tasks: tuple[str, ...]
    seed: int = 0
    sampling: str = "proportional"
    temperature: float = 1.0
    iterations: int = 20_000


@dataclass(frozen=True)
class GridSpec:
    """One parsed, validated grid specification."""

    name: str
    model: str
    model_short: str
    targets: tuple[str, ...]
    seeds: tuple[int, ...]
    mixes: tuple[Mix, ...]
    baseline: bool = True
    languages: tuple[str, ...] | None = None
    hyperparameters: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    factorial: FactorialSpec | None = None
    prepare: str | None = None
    assets_dir: str = ".assets"
    slurm: dict = field(default_factory=dict)
    examples_per_second: float | None = None
    target_examples: int | None = None
    description: str = ""

    def phase_hyperparameters(self, phase: str) -> dict:
        """The shared hyperparameters with the ``[hyperparameters.<phase>]`` overrides applied."""
        shared = {k: v for k, v in self.hyperparameters.items() if k not in PHASES}
        return {**shared, **self.hyperparameters.get(phase, {})}


def train_size(task_id: str) -> int | None:
    """English training examples available for an intermediate task; ``None`` when unknown."""
    if task_id in INTERMEDIATE_TRAIN_SIZES:
        return INTERMEDIATE_TRAIN_SIZES[task_id]
    return get_task(task_id).data.get("train_size")


def mix_volume(mix: Mix) -> int:
    return sum(mix.tasks.values())


def mix_label(mix: Mix | None) -> str:
    return BASELINE_MIX_NAME if mix is None else mix.name


# --- volume allocation -----------------------------------------------------------------------


def allocate_volume(tasks: list[str] | tuple[str, ...], volume: int,
                    sizes: dict[str, int | None]) -> dict[str, int]:
    """Split ``volume`` examples equally over ``tasks``; a task holding fewer than its share gives
    all it has and the shortfall is shared by the others, so the total is exactly ``volume``.

    ``sizes[task]`` of ``None`` means unbounded. Raises ``ValueError`` when the tasks together hold
    fewer than ``volume`` examples.
    """
    capacity = sum(math.inf if sizes[t] is None else sizes[t] for t in tasks)
    if capacity < volume:
        raise ValueError(f"{volume:,} examples requested but {', '.join(tasks)} hold only "
                         f"{capacity:,}")
    allocation: dict[str, int] = {}
    open_tasks = list(tasks)
    budget = volume
    while True:
        share = budget / len(open_tasks)
        capped = [t for t in open_tasks if sizes[t] is not None and sizes[t] <= share]
        if not capped:
            break
        for task in capped:
            allocation[task] = sizes[task]
            budget -= sizes[task]
            open_tasks.remove(task)
    # Integer shares: the first ``remainder`` open tasks (in the given order) get one more.
    base, remainder = divmod(budget, len(open_tasks))
    for index, task in enumerate(open_tasks):
        allocation[task] = base + (1 if index < remainder else 0)
    return {task: allocation[task] for task in tasks}


# --- factorial generator ---------------------------------------------------------------------


def _volume_label(volume: int) -> str:
    if volume % 1_000_000 == 0:
        return f"{volume // 1_000_000}m"
    if volume % 1000 == 0:
        return f"{volume // 1000}k"
    return str(volume)


def _capacity(task_set, sizes) -> float:
    return sum(math.inf if sizes[t] is None else sizes[t] for t in task_set)


def _feasible_sets(tasks, diversity, volume, sizes, draws, source):
    """The candidate task sets of one cell, or ``None`` when there are too many to list (then the
    search samples); refuses a cell no draw of tasks can fill."""
    largest = sorted(tasks, key=lambda t: -_capacity([t], sizes))[:diversity]
    if _capacity(largest, sizes) < volume:
        raise SpecError(source, "factorial.volume",
                        f"{volume:,} examples cannot be drawn from {diversity} task(s): the "
                        f"{diversity} largest ({', '.join(largest)}) hold only "
                        f"{_capacity(largest, sizes):,.0f}")
    if math.comb(len(tasks), diversity) > 20_000:
        return None
    feasible = [frozenset(c) for c in itertools.combinations(tasks, diversity)
                if _capacity(c, sizes) >= volume]
    if len(feasible) < draws:
        raise SpecError(source, "factorial.draws",
                        f"{draws} distinct draws of {diversity} task(s) with {volume:,} examples "
                        f"requested, but only {len(feasible)} task set(s) can hold that volume")
    return feasible


class _BalanceSearch:
    """Seeded local search over task sets that keeps every cell's draws distinct and feasible and
    minimises the spread of task counts within each cell, within each diversity level and within
    each volume budget (the sum of squared counts, smallest when counts are equal), so task identity
    is as unrelated to diversity and volume as the budgets allow."""

    def __init__(self, spec: FactorialSpec, sizes, rng: random.Random, source: str):
        self.spec, self.sizes, self.rng = spec, sizes, rng
        self.cells = [(d, v) for d in spec.diversity for v in spec.volume]
        self.sets: list[list[frozenset]] = []
        for d, v in self.cells:
            candidates = _feasible_sets(spec.tasks, d, v, sizes, spec.draws, source)
            self.sets.append(self._initial_draws(d, v, candidates, source))
        self.cell_counts = [{t: 0 for t in spec.tasks} for _ in self.cells]
        self.diversity_counts = {d: {t: 0 for t in spec.tasks} for d in spec.diversity}
        self.volume_counts = {v: {t: 0 for t in spec.tasks} for v in spec.volume}
        for index, (d, v) in enumerate(self.cells):
            for task_set in self.sets[index]:
                for task in task_set:
                    self._count(index, d, v, task, +1)

    def _initial_draws(self, d, v, candidates, source):
        if candidates is not None:
            return self.rng.sample(candidates, self.spec.draws)
        chosen: list[frozenset] = []
        for _ in range(100_000):
            draw = frozenset(self.rng.sample(self.spec.tasks, d))
            if draw not in chosen and _capacity(draw, self.sizes) >= v:
                chosen.append(draw)
                if len(chosen) == self.spec.draws:
                    return chosen
        raise SpecError(source, "factorial.draws",
                        f"could not find {self.spec.draws} distinct task sets of size {d} "
                        f"holding {v:,} examples")

    def _count(self, index, d, v, task, step):
        self.cell_counts[index][task] += step
        self.diversity_counts[d][task] += step
        self.volume_counts[v][task] += step

    def _swap_cost(self, index, d, v, out_task, in_task) -> int:
        """Change of the objective when ``out_task`` is replaced by ``in_task`` in cell ``index``."""
        delta = 0
        for counts in (self.cell_counts[index], self.diversity_counts[d], self.volume_counts[v]):
            delta += 2 * (counts[in_task] - counts[out_task] + 1)
        return delta

    def run(self) -> list[tuple[int, int, int, frozenset]]:
        tasks = self.spec.tasks
        for _ in range(self.spec.iterations):
            index = self.rng.randrange(len(self.cells))
            d, v = self.cells[index]
            if d == len(tasks):
                continue
            draw = self.rng.randrange(self.spec.draws)
            current = self.sets[index][draw]
            out_task = self.rng.choice(sorted(current, key=tasks.index))
            in_task = self.rng.choice([t for t in tasks if t not in current])
            proposal = (current - {out_task}) | {in_task}
            if proposal in self.sets[index] or _capacity(proposal, self.sizes) < v:
                continue
            # Accepting equal-cost moves lets the search walk across plateaus.
            if self._swap_cost(index, d, v, out_task, in_task) <= 0:
                self.sets[index][draw] = proposal
                self._count(index, d, v, out_task, -1)
                self._count(index, d, v, in_task, +1)
        return [(d, v, draw, task_set) for (d, v), sets in zip(self.cells, self.sets)
                for draw, task_set in enumerate(sets)]


def factorial_mixes(spec: FactorialSpec, source: str = "factorial") -> tuple[Mix, ...]:
    """The mixes of a diversity-by-volume factorial design, deterministic for ``spec.seed``.

    Each mix is named ``d<tasks>-v<volume>-r<draw>`` and holds exactly its cell's volume, split
    equally over its tasks with shortfalls redistributed (:func:`allocate_volume`).
    """
    sizes = {task: train_size(task) for task in spec.tasks}
    cells = _BalanceSearch(spec, sizes, random.Random(spec.seed), source).run()
    mixes = []
    for d, v, draw, task_set in cells:
        ordered = [t for t in spec.tasks if t in task_set]
        mixes.append(Mix(name=f"d{d}-v{_volume_label(v)}-r{draw + 1}",
                         tasks=allocate_volume(ordered, v, sizes),
                         sampling=spec.sampling, temperature=spec.temperature))
    return tuple(mixes)


# --- design diagnostics ----------------------------------------------------------------------


def _pearson(x: list[float], y: list[float]) -> float:
    """Pearson r; ``nan`` when either variable is constant (the correlation is undefined)."""
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def diversity_volume_correlation(mixes) -> float:
    """Pearson r between log2(number of tasks) and log2(total examples) across mixes."""
    return _pearson([math.log2(len(m.tasks)) for m in mixes],
                    [math.log2(mix_volume(m)) for m in mixes])


def task_frequencies(mixes) -> dict[str, dict[int, int]]:
    """task -> {number of tasks in the mix: how many mixes of that size contain the task}."""
    frequencies: dict[str, dict[int, int]] = {}
    for mix in mixes:
        for task in mix.tasks:
            by_size = frequencies.setdefault(task, {})
            by_size[len(mix.tasks)] = by_size.get(len(mix.tasks), 0) + 1
    return frequencies


def task_volume_correlations(mixes) -> dict[str, float]:
    """task -> Pearson r between "mix contains the task" and log2(total examples)."""
    volumes = [math.log2(mix_volume(m)) for m in mixes]
    tasks = sorted({t for m in mixes for t in m.tasks})
    return {t: _pearson([float(t in m.tasks) for m in mixes], volumes) for t in tasks}


# --- parsing ---------------------------------------------------------------------------------


_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time(value: str | int) -> int:
    """Whole minutes (seconds round up) from a time limit in any of Slurm's forms: ``M``,
    ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``, or an integer of minutes."""
    if isinstance(value, int) and not isinstance(value, bool):
        minutes = value
    else:
        match = _SLURM_TIME.match(str(value).strip())
        if match is None:
            raise ValueError(f"cannot read time {value!r}; use minutes, H:M:S or D-H:M:S")
        days, *parts = match.groups()
        numbers = [int(part) for part in parts if part is not None]
        if days is not None:
            hours, minutes, seconds = (numbers + [0, 0])[:3]
            hours += int(days) * 24
        elif len(numbers) == 3:
            hours, minutes, seconds = numbers
        else:
            hours, (minutes, seconds) = 0, (numbers + [0])[:2]
        minutes = hours * 60 + minutes + (1 if seconds else 0)
    if minutes < 1:
        raise ValueError(f"time must be at least one minute, got {value!r}")
    return minutes



class _Checker:
    """Type checks that name the offending key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, reason: str):
        raise SpecError(self.source, key, reason)

    def keys(self, table: dict, allowed, key: str):
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            where = f"{key}.{unknown[0]}" if key else unknown[0]
            self.fail(where, f"unknown key; allowed here: {', '.join(allowed)}")

    def table(self, value, key: str) -> dict:
        if not isinstance(value, dict):
            self.fail(key, f"must be a table, got {type(value).__name__}")
        return value

    def string(self, value, key: str) -> str:
        if not isinstance(value, str) or not value:
            self.fail(key, "must be a non-empty string")
        return value

    def positive_int(self, value, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.fail(key, f"must be a positive integer, got {value!r}")
        return value

    def int_list(self, value, key: str, *, positive: bool) -> tuple[int, ...]:
        if not isinstance(value, list) or not value:
            self.fail(key, "must be a non-empty list of integers")
        for index, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int) or (positive and item < 1):
                kind = "a positive integer" if positive else "an integer"
                self.fail(f"{key}[{index}]", f"must be {kind}, got {item!r}")
        if len(set(value)) != len(value):
            self.fail(key, f"has duplicates: {value}")
        return tuple(value)

    def task_list(self, value, key: str, role: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            self.fail(key, f"must be a non-empty list of {role} task ids")
        for index, task_id in enumerate(value):
            self.task(task_id, f"{key}[{index}]", role)
        if len(set(value)) != len(value):
            self.fail(key, f"has duplicates: {value}")
        return tuple(value)

    def task(self, task_id, key: str, role: str) -> str:
        if not isinstance(task_id, str):
            self.fail(key, f"must be a task id string, got {task_id!r}")
        try:
            task = get_task(task_id)
        except UnknownTaskError as error:
            self.fail(key, str(error))
        if task.role != role:
            self.fail(key, f"{task_id!r} is registered as a {task.role} task; {role} task needed")
        return task_id

    def sampling(self, table: dict, key: str) -> tuple[str, float]:
        sampling = table.get("sampling", "proportional")
        if sampling not in SAMPLING:
            self.fail(f"{key}.sampling", f"must be one of {', '.join(SAMPLING)}, got {sampling!r}")
        temperature = table.get("temperature", 1.0)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or temperature <= 0:
            self.fail(f"{key}.temperature", f"must be a positive number, got {temperature!r}")
        return sampling, float(temperature)


def _parse_mix(check: _Checker, entry, key: str) -> Mix:
    entry = check.table(entry, key)
    check.keys(entry, _MIX_KEYS, key)
    if "name" not in entry:
        check.fail(f"{key}.name", "missing")
    name = check.string(entry["name"], f"{key}.name")
    if not _SAFE_NAME.match(name) or name == BASELINE_MIX_NAME:
        check.fail(f"{key}.name", f"{name!r} must be letters, digits, '_' or '-' (it names folders"
                                  f" and run ids) and not {BASELINE_MIX_NAME!r}")
    if "tasks" not in entry:
        check.fail(f"{key}.tasks", "missing")
    tasks = entry["tasks"]
    if isinstance(tasks, list):
        # A list of task ids means all of each task's training data.
        check.task_list(tasks, f"{key}.tasks", "intermediate")
        counts = {}
        for task_id in tasks:
            size = train_size(task_id)
            if size is None:
                check.fail(f"{key}.tasks", f"{task_id!r} has no known training size; give its "
                                           "examples as {task = N}")
            counts[task_id] = size
    else:
        tasks = check.table(tasks, f"{key}.tasks")
        if not tasks:
            check.fail(f"{key}.tasks", "must name at least one task")
        counts = {}
        for task_id, count in tasks.items():
            check.task(task_id, f"{key}.tasks.{task_id}", "intermediate")
            check.positive_int(count, f"{key}.tasks.{task_id}")
            size = train_size(task_id)
            if size is not None and count > size:
                check.fail(f"{key}.tasks.{task_id}",
                           f"{count:,} examples requested but {task_id} has only {size:,}")
            counts[task_id] = count
    sampling, temperature = check.sampling(entry, key)
    return Mix(name=name, tasks=counts, sampling=sampling, temperature=temperature)


def _parse_factorial(check: _Checker, table) -> FactorialSpec:
    table = check.table(table, "factorial")
    check.keys(table, _FACTORIAL_KEYS, "factorial")
    for required in ("diversity", "volume", "draws", "tasks"):
        if required not in table:
            check.fail(f"factorial.{required}", "missing")
    tasks = check.task_list(table["tasks"], "factorial.tasks", "intermediate")
    diversity = check.int_list(table["diversity"], "factorial.diversity", positive=True)
    for index, level in enumerate(diversity):
        if level > len(tasks):
            check.fail(f"factorial.diversity[{index}]",
                       f"{level} tasks per mix but factorial.tasks lists only {len(tasks)}")
    volume = check.int_list(table["volume"], "factorial.volume", positive=True)
    draws = check.positive_int(table["draws"], "factorial.draws")
    for level in diversity:
        if math.comb(len(tasks), level) < draws:
            check.fail("factorial.draws", f"{draws} distinct draws requested but only "
                                          f"{math.comb(len(tasks), level)} set(s) of {level} "
                                          f"task(s) exist among {len(tasks)}")
    seed = table.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        check.fail("factorial.seed", f"must be an integer, got {seed!r}")
    iterations = check.positive_int(table.get("iterations", 20_000), "factorial.iterations")
    sampling, temperature = check.sampling(table, "factorial")
    return FactorialSpec(diversity=diversity, volume=volume, draws=draws, tasks=tasks, seed=seed,
                         sampling=sampling, temperature=temperature, iterations=iterations)


def _parse_slurm(check: _Checker, table) -> dict:
    table = check.table(table, "slurm")
    check.keys(table, SLURM_KEYS, "slurm")
    for key in ("partition", "account", "memory"):
        if key in table:
            check.string(table[key], f"slurm.{key}")
    for key in ("parallelism", "cpus_per_task"):
        if key in table:
            check.positive_int(table[key], f"slurm.{key}")
    gpus = table.get("gpus", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        check.fail("slurm.gpus", f"must be a whole number of GPUs, got {gpus!r}")
    if "time" in table:
        try:
            parse_time(table["time"])
        except ValueError as error:
            check.fail("slurm.time", str(error))
    return dict(table)


def _parse_hyperparameters(check: _Checker, table) -> dict:
    table = check.table(table, "hyperparameters")
    for key, value in table.items():
        if isinstance(value, dict):
            if key not in PHASES:
                check.fail(f"hyperparameters.{key}",
                           f"sub-tables are per-phase overrides: {', '.join(PHASES)} only")
            for inner, inner_value in value.items():
                if isinstance(inner_value, dict):
                    check.fail(f"hyperparameters.{key}.{inner}", "must be a value, not a table")
    return table


def _default_model_short(model: str) -> str:
    short = model.rstrip("/").split("/")[-1].lower().replace("xlm-roberta", "xlmr")
    return re.sub(r"[^a-z0-9_-]+", "-", short).strip("-") or "model"


def grid_from_dict(document: dict, source: str, default_name: str = "grid") -> GridSpec:
    """Validate a parsed grid document; ``source`` names it in error messages."""
    check = _Checker(source)
    check.keys(document, _TOP_LEVEL_KEYS, "")
    if "tasks" in document:
        try:
            for task in tasks_from_table(check.table(document["tasks"], "tasks"), source):
                register_task(task)
        except ValueError as error:
            check.fail("tasks", str(error).removeprefix(f"{source}: "))
    for required in ("model", "targets", "seeds"):
        if required not in document:
            check.fail(required, "missing (required)")
    model = check.string(document["model"], "model")
    model_short = check.string(document.get("model_short", _default_model_short(model)),
                               "model_short")
    if not _SAFE_NAME.match(model_short) or "." in model_short:
        check.fail("model_short", f"{model_short!r} must be letters, digits, '_' or '-'")
    targets = check.task_list(document["targets"], "targets", "target")
    seeds = check.int_list(document["seeds"], "seeds", positive=False)
    baseline = document.get("baseline", True)
    if not isinstance(baseline, bool):
        check.fail("baseline", f"must be true or false, got {baseline!r}")
    languages = document.get("languages")
    if languages is not None:
        if not isinstance(languages, list) or not languages or \
                not all(isinstance(code, str) for code in languages):
            check.fail("languages", "must be a non-empty list of language codes")
        for target in targets:
            if not set(languages) & set(get_task(target).languages):
                check.fail("languages", f"none of {languages} is evaluated for target {target!r}")
        languages = tuple(languages)

    mixes = [_parse_mix(check, entry, f"mixes[{index}]")
             for index, entry in enumerate(_list_of_tables(check, document.get("mixes", []),
                                                           "mixes"))]
    factorial = None
    if "factorial" in document:
        factorial = _parse_factorial(check, document["factorial"])
        mixes += factorial_mixes(factorial, source)
    names = [mix.name for mix in mixes]
    for name in names:
        if names.count(name) > 1:
            check.fail("mixes", f"mix name {name!r} is used more than once")
    if not mixes and not baseline:
        check.fail("mixes", "no mixes and baseline = false: the grid has no runs")

    prepare = document.get("prepare")
    if prepare is not None and prepare not in PREPARE_STEPS:
        check.fail("prepare", f"must be one of {', '.join(PREPARE_STEPS)}, got {prepare!r}")
    assets_dir = check.string(document.get("assets_dir", ".assets"), "assets_dir")
    slurm = _parse_slurm(check, document.get("slurm", {}))
    estimate = check.table(document.get("estimate", {}), "estimate")
    check.keys(estimate, _ESTIMATE_KEYS, "estimate")
    speed = estimate.get("examples_per_second")
    if speed is not None and (isinstance(speed, bool) or not isinstance(speed, (int, float))
                              or speed <= 0):
        check.fail("estimate.examples_per_second", f"must be a positive number, got {speed!r}")
    target_examples = estimate.get("target_examples")
    if target_examples is not None:
        check.positive_int(target_examples, "estimate.target_examples")
    name = check.string(document.get("name", default_name), "name")
    return GridSpec(
        name=name, model=model, model_short=model_short, targets=targets, seeds=seeds,
        mixes=tuple(mixes), baseline=baseline, languages=languages,
        hyperparameters=_parse_hyperparameters(check, document.get("hyperparameters", {})),
        data=check.table(document.get("data", {}), "data"), factorial=factorial,
        prepare=prepare, assets_dir=assets_dir, slurm=dict(slurm),
        examples_per_second=None if speed is None else float(speed),
        target_examples=target_examples,
        description=str(document.get("description", "")),
    )


def _list_of_tables(check: _Checker, value, key: str) -> list:
    if not isinstance(value, list):
        check.fail(key, "must be an array of tables ([[mixes]])")
    return value


def load_grid(path: str | Path) -> GridSpec:
    """Read and validate a grid specification file."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise SpecError(str(path), "(file)", f"cannot read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(str(path), "(file)", f"not valid TOML: {error}") from None
    return grid_from_dict(document, str(path), default_name=path.stem)


# --- expansion into jobs ---------------------------------------------------------------------


def run_id(grid: GridSpec, mix: Mix | None, target: str, seed: int) -> str:
    """``<model-short>.<mix>.<target>.s<seed>``: unique per run and safe as a folder name."""
    return f"{grid.model_short}.{mix_label(mix)}.{target}.s{seed}"


def encoder_name(grid: GridSpec, mix: Mix, seed: int) -> str:
    return f"{grid.model_short}.{mix.name}.s{seed}"


@dataclass(frozen=True)
class GridPlan:
    """The jobs of a grid: each phase-2 encoder once, then every target run (baselines included)."""

    grid: GridSpec
    intermediate_jobs: tuple[IntermediateJob, ...]
    target_jobs: tuple[TargetJob, ...]


ENCODERS_DIR = ".encoders"


def expand_grid(grid: GridSpec, results_dir: str | Path, *, model: str | None = None,
                data: dict | None = None) -> GridPlan:
    """Expand a grid into jobs writing under ``results_dir``.

    ``model`` and ``data`` replace the spec's (a prepare step supplies local assets); run ids keep
    the spec's short model name either way.
    """
    results_dir = Path(results_dir)
    model = model or grid.model
    data = grid.data if data is None else data
    intermediate_hp = grid.phase_hyperparameters("intermediate")
    target_hp = grid.phase_hyperparameters("target")
    intermediate_jobs, target_jobs = [], []
    mixes: list[Mix | None] = ([None] if grid.baseline else []) + list(grid.mixes)
    for mix in mixes:
        for seed in grid.seeds:
            encoder = None
            if mix is not None:
                encoder = results_dir / ENCODERS_DIR / encoder_name(grid, mix, seed)
                intermediate_jobs.append(IntermediateJob(
                    model=model, mix=mix, seed=seed, output_dir=encoder,
                    hyperparameters=intermediate_hp, data=data))
            for target in grid.targets:
                languages = None
                if grid.languages is not None:
                    languages = tuple(code for code in get_task(target).languages
                                      if code in grid.languages)
                target_jobs.append(TargetJob(
                    run_id=run_id(grid, mix, target, seed), model=model, mix=mix,
                    target_task=target, seed=seed, results_dir=results_dir, encoder=encoder,
                    hyperparameters=target_hp, data=data, languages=languages))
    return GridPlan(grid=grid, intermediate_jobs=tuple(intermediate_jobs),
                    target_jobs=tuple(target_jobs))


__all__ = [
    "INTERMEDIATE_TRAIN_SIZES",
    "FactorialSpec",
    "GridPlan",
    "GridSpec",
    "SpecError",
    "allocate_volume",
    "diversity_volume_correlation",
    "encoder_name",
    "expand_grid",
    "factorial_mixes",
    "grid_from_dict",
    "load_grid",
    "mix_volume",
    "run_id",
    "task_frequencies",
    "task_volume_correlations",
    "train_size",
]
