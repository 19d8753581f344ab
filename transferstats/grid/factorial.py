"""Diversity-by-volume factorial designs: how many examples a task can give, splitting a volume
budget over a mix's tasks, drawing balanced task sets for every (diversity, volume) cell, and the
diagnostics ``transferstats plan`` shows for any set of mixes.

A grid's ``[factorial]`` table becomes a :class:`FactorialSpec` (see :mod:`.spec`);
:func:`factorial_mixes` turns it into mixes. Nothing here imports torch.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

from transferstats.analysis import design as analysis_design
from transferstats.tasks import get_task
from transferstats.train.jobs import Mix

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


class DesignError(ValueError):
    """A factorial design the tasks' training sets cannot fill.

    ``key`` is the grid-spec key at fault (``factorial.volume`` or ``factorial.draws``) and
    ``reason`` why, so the spec parser can report it like any other bad key.
    """

    def __init__(self, source: str, key: str, reason: str):
        super().__init__(f"{source}: {key}: {reason}")
        self.key, self.reason = key, reason


def train_size(task_id: str) -> int | None:
    """English training examples available for an intermediate task.

    Parameters
    ----------
    task_id
        A built-in or known (registered or scoped) intermediate task.

    Returns
    -------
    int or None
        The built-in size, else the task's ``data.train_size``; ``None`` when unknown.
    """
    if task_id in INTERMEDIATE_TRAIN_SIZES:
        return INTERMEDIATE_TRAIN_SIZES[task_id]
    return get_task(task_id).data.get("train_size")


def mix_volume(mix: Mix) -> int:
    """Total training examples of a mix."""
    return sum(mix.tasks.values())


# --- volume allocation -----------------------------------------------------------------------


def allocate_volume(tasks: list[str] | tuple[str, ...], volume: int,
                    sizes: dict[str, int | None]) -> dict[str, int]:
    """Split ``volume`` examples equally over ``tasks``, hitting the total exactly.

    A task holding fewer than its share gives all it has and the shortfall is shared by the
    others.

    Parameters
    ----------
    tasks
        Task ids, in the order that breaks ties: the first tasks get the integer remainder.
    volume
        Total examples to allocate.
    sizes
        Training examples each task holds; ``None`` means unbounded.

    Returns
    -------
    dict
        Task id -> examples, in the order of ``tasks``, summing to ``volume``.

    Raises
    ------
    ValueError
        When the tasks together hold fewer than ``volume`` examples.
    """
    bounded = {t: size for t in tasks if (size := sizes[t]) is not None}
    capacity = math.inf if len(bounded) < len(tasks) else sum(bounded.values())
    if capacity < volume:
        raise ValueError(f"{volume:,} examples requested but {', '.join(tasks)} hold only "
                         f"{capacity:,}")
    allocation: dict[str, int] = {}
    open_tasks = list(tasks)
    budget = volume
    while True:
        share = budget / len(open_tasks)
        capped = [t for t in open_tasks if t in bounded and bounded[t] <= share]
        if not capped:
            break
        for task in capped:
            allocation[task] = bounded[task]
            budget -= bounded[task]
            open_tasks.remove(task)
    # Integer shares: the first ``remainder`` open tasks (in the given order) get one more.
    base, remainder = divmod(budget, len(open_tasks))
    for index, task in enumerate(open_tasks):
        allocation[task] = base + (1 if index < remainder else 0)
    return {task: allocation[task] for task in tasks}


# --- balanced task sets ----------------------------------------------------------------------


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
        raise DesignError(source, "factorial.volume",
                          f"{volume:,} examples cannot be drawn from {diversity} task(s): the "
                          f"{diversity} largest ({', '.join(largest)}) hold only "
                          f"{_capacity(largest, sizes):,.0f}")
    if math.comb(len(tasks), diversity) > 20_000:
        return None
    feasible = [frozenset(c) for c in itertools.combinations(tasks, diversity)
                if _capacity(c, sizes) >= volume]
    if len(feasible) < draws:
        raise DesignError(source, "factorial.draws",
                          f"{draws} distinct draws of {diversity} task(s) with {volume:,} "
                          f"examples requested, but only {len(feasible)} task set(s) can hold "
                          "that volume")
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
        raise DesignError(source, "factorial.draws",
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
        return [(d, v, draw, task_set) for (d, v), sets in zip(self.cells, self.sets, strict=True)
                for draw, task_set in enumerate(sets)]


def factorial_mixes(spec: FactorialSpec, source: str = "factorial") -> tuple[Mix, ...]:
    """The mixes of a diversity-by-volume factorial design, deterministic for ``spec.seed``.

    Each mix is named ``d<tasks>-v<volume>-r<draw>`` and holds exactly its cell's volume, split
    equally over its tasks with shortfalls redistributed (:func:`allocate_volume`).

    Parameters
    ----------
    spec
        The design; its tasks must be known (built in, registered or scoped).
    source
        Names the design in error messages.

    Returns
    -------
    tuple of Mix
        ``spec.draws`` mixes per (diversity, volume) cell, cells in the order of the levels.

    Raises
    ------
    DesignError
        When a cell cannot be filled: no task set holds its volume, or fewer distinct sets than
        ``spec.draws`` do.
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


def diversity_volume_correlation(mixes) -> float:
    """Pearson's r between log2(number of tasks) and log2(total examples) across mixes.

    The same number the analysis's design check reports
    (:func:`transferstats.analysis.design.diversity_volume_correlation`); ``nan`` when either
    does not vary.
    """
    return analysis_design.diversity_volume_correlation([len(m.tasks) for m in mixes],
                                                        [mix_volume(m) for m in mixes])


def task_frequencies(mixes) -> dict[str, dict[int, int]]:
    """task -> {number of tasks in the mix: how many mixes of that size contain the task}."""
    frequencies: dict[str, dict[int, int]] = {}
    for mix in mixes:
        for task in mix.tasks:
            by_size = frequencies.setdefault(task, {})
            by_size[len(mix.tasks)] = by_size.get(len(mix.tasks), 0) + 1
    return frequencies


def task_volume_correlations(mixes) -> dict[str, float]:
    """task -> Pearson's r between "mix contains the task" and log2(total examples); ``nan`` when
    either does not vary."""
    volumes = [math.log2(mix_volume(m)) for m in mixes]
    tasks = sorted({t for m in mixes for t in m.tasks})
    return {t: analysis_design.pearson([float(t in m.tasks) for m in mixes], volumes)
            for t in tasks}
