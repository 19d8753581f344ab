"""Grid specifications: parse and validate a ``runners/*.toml`` file into a :class:`GridSpec`.

A grid is (model) x (intermediate mixes + the no-intermediate baseline) x (targets) x (seeds).
Every bad key is refused with a :class:`SpecError` naming the key and the reason, before anything
runs. Parsing changes no global state: the spec's own ``[tasks.<id>]`` are known only while it is
validated, and travel in :attr:`GridSpec.tasks` (enter ``task_scope(grid.tasks)`` to look them up
later). Nothing here imports torch.

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

import math
import re
import tomllib
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from transferstats.grid.factorial import DesignError, FactorialSpec, factorial_mixes, train_size
from transferstats.results import BASELINE_MIX
from transferstats.tasks import Task, UnknownTaskError, get_task, task_scope, tasks_from_table
from transferstats.train.jobs import SAMPLING, Mix

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
class GridSpec:
    """One parsed, validated grid specification.

    ``tasks`` are the spec's own ``[tasks.<id>]``: not registered anywhere, so code looking up
    this grid's task ids runs inside ``transferstats.tasks.task_scope(grid.tasks)``.
    """

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
    tasks: tuple[Task, ...] = ()
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


_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time(value: str | int) -> int:
    """Whole minutes (seconds round up) from a time limit in any of Slurm's forms.

    Parameters
    ----------
    value
        ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``, or an integer of minutes.

    Raises
    ------
    ValueError
        When the value cannot be read or is under one minute.
    """
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

    def fail(self, key: str, reason: str) -> NoReturn:
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
    if not _SAFE_NAME.match(name) or name == BASELINE_MIX:
        check.fail(f"{key}.name", f"{name!r} must be letters, digits, '_' or '-' (it names folders"
                                  f" and run ids) and not {BASELINE_MIX!r}")
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
    """Validate a parsed grid document.

    Parameters
    ----------
    document
        The parsed TOML (see the module docstring for its keys).
    source
        Names the document in error messages (a file name).
    default_name
        The grid's name when the document gives none.

    Returns
    -------
    GridSpec
        The grid, factorial mixes generated, its own ``[tasks.<id>]`` in ``tasks``. The task
        registry is left as it was.

    Raises
    ------
    SpecError
        The first bad key, with the reason.
    """
    check = _Checker(source)
    check.keys(document, _TOP_LEVEL_KEYS, "")
    tasks = _parse_tasks(check, document.get("tasks", {}))
    with ExitStack() as scope:
        try:
            scope.enter_context(task_scope(tasks))
        except ValueError as error:  # a task defined differently from a built-in or registered one
            check.fail("tasks", str(error))
        return _parse_grid(check, document, tasks, default_name)


def _parse_tasks(check: _Checker, table) -> tuple[Task, ...]:
    table = check.table(table, "tasks")
    try:
        return tuple(tasks_from_table(table, check.source))
    except ValueError as error:
        check.fail("tasks", str(error).removeprefix(f"{check.source}: "))


def _parse_grid(check: _Checker, document: dict, tasks: tuple[Task, ...],
                default_name: str) -> GridSpec:
    """Everything but the ``[tasks]`` tables, validated while those tasks are in scope."""
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
    languages = _parse_languages(check, document.get("languages"), targets)
    mixes, factorial = _parse_mixes(check, document)
    if not mixes and not baseline:
        check.fail("mixes", "no mixes and baseline = false: the grid has no runs")

    prepare = document.get("prepare")
    if prepare is not None and prepare not in PREPARE_STEPS:
        check.fail("prepare", f"must be one of {', '.join(PREPARE_STEPS)}, got {prepare!r}")
    assets_dir = check.string(document.get("assets_dir", ".assets"), "assets_dir")
    slurm = _parse_slurm(check, document.get("slurm", {}))
    speed, target_examples = _parse_estimate(check, document.get("estimate", {}))
    name = check.string(document.get("name", default_name), "name")
    return GridSpec(
        name=name, model=model, model_short=model_short, targets=targets, seeds=seeds,
        mixes=tuple(mixes), baseline=baseline, languages=languages,
        hyperparameters=_parse_hyperparameters(check, document.get("hyperparameters", {})),
        data=check.table(document.get("data", {}), "data"), factorial=factorial, tasks=tasks,
        prepare=prepare, assets_dir=assets_dir, slurm=dict(slurm),
        examples_per_second=None if speed is None else float(speed),
        target_examples=target_examples,
        description=str(document.get("description", "")),
    )


def _parse_languages(check: _Checker, languages, targets: tuple[str, ...]
                     ) -> tuple[str, ...] | None:
    """The ``languages`` to evaluate (None: every language of each target); each target must
    be evaluated in at least one of them."""
    if languages is None:
        return None
    if not isinstance(languages, list) or not languages or \
            not all(isinstance(code, str) for code in languages):
        check.fail("languages", "must be a non-empty list of language codes")
    for target in targets:
        if not set(languages) & set(get_task(target).languages):
            check.fail("languages", f"none of {languages} is evaluated for target {target!r}")
    return tuple(languages)


def _parse_mixes(check: _Checker, document: dict) -> tuple[list[Mix], FactorialSpec | None]:
    """The ``[[mixes]]`` listed and those of the ``[factorial]`` table, uniquely named, and the
    factorial table (None without one)."""
    mixes = [_parse_mix(check, entry, f"mixes[{index}]")
             for index, entry in enumerate(_list_of_tables(check, document.get("mixes", []),
                                                           "mixes"))]
    factorial = None
    if "factorial" in document:
        factorial = _parse_factorial(check, document["factorial"])
        try:
            mixes += factorial_mixes(factorial, check.source)
        except DesignError as error:
            check.fail(error.key, error.reason)
    names = [mix.name for mix in mixes]
    for name in names:
        if names.count(name) > 1:
            check.fail("mixes", f"mix name {name!r} is used more than once")
    return mixes, factorial


def _parse_estimate(check: _Checker, value) -> tuple[int | float | None, int | None]:
    """The ``[estimate]`` table's measured training speed and target examples (None if not
    given)."""
    estimate = check.table(value, "estimate")
    check.keys(estimate, _ESTIMATE_KEYS, "estimate")
    speed = estimate.get("examples_per_second")
    if speed is not None and (isinstance(speed, bool) or not isinstance(speed, (int, float))
                              or speed <= 0):
        check.fail("estimate.examples_per_second", f"must be a positive number, got {speed!r}")
    target_examples = estimate.get("target_examples")
    if target_examples is not None:
        check.positive_int(target_examples, "estimate.target_examples")
    return speed, target_examples


def _list_of_tables(check: _Checker, value, key: str) -> list:
    if not isinstance(value, list):
        check.fail(key, "must be an array of tables ([[mixes]])")
    return value


def load_grid(path: str | Path) -> GridSpec:
    """Read and validate a grid specification file (see :func:`grid_from_dict`).

    Raises
    ------
    SpecError
        When the file cannot be read, is not TOML, or has a bad key.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise SpecError(str(path), "(file)", f"cannot read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(str(path), "(file)", f"not valid TOML: {error}") from None
    return grid_from_dict(document, str(path), default_name=path.stem)
