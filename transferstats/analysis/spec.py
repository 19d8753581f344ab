"""Analysis specifications: the packaged defaults, a user's ``analysis/*.toml``, then keyword or
command-line overrides, merged in that order and checked key by key (docs/analysis-spec.md)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path

from transferstats.analysis.derive import AUTO_OUTCOME, DIVERSITY_MEASURES, OUTCOMES
from transferstats.tasks import Task, read_task_file, tasks_from_table

INTERVALS = ("bca", "percentile")
#: ``identity``: use the task-identity model when the grid can estimate it, always, or never.
IDENTITY_MODES = ("auto", "on", "off")
#: ``random_slopes``: target-specific slopes where the design allows them, always, or never.
SLOPE_MODES = ("auto", "on", "off")
#: ``df_method``: the degrees of freedom of the Wald t tests of a model with slopes.
DF_METHODS = ("satterthwaite", "kenward-roger")


@dataclass(frozen=True)
class AnalysisSpec:
    """Every setting of one analysis (see ``transferstats/data/default_analysis.toml``)."""

    name: str = "report"
    outcome: str = AUTO_OUTCOME
    diversity: str = "n_tasks"
    metric: str = "headline"
    split: str = "auto"
    target_splits: tuple[tuple[str, str], ...] = ()
    include_english: bool | str = "auto"
    interaction: bool = True
    target_mix: bool = True
    model: str = ""
    identity: str = "auto"
    random_slopes: str = "auto"
    df_method: str = "satterthwaite"
    covariates: tuple[str, ...] = ()
    resamples: int = 1000
    seed: int = 0
    level: float = 0.95
    interval: str = "bca"
    units: tuple[str, ...] = ("language", "mix")
    scheduler: str = ""
    max_correlation: float = 0.9
    power: float = 0.8
    tasks: tuple[Task, ...] = ()

    def __post_init__(self):
        def number(value) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool)

        checks = [
            *((isinstance(getattr(self, key), str), key, "a string")
              for key in ("name", "metric", "split", "model", "scheduler")),
            *((isinstance(getattr(self, key), bool), key, "true or false")
              for key in ("interaction", "target_mix")),
            (self.include_english in (True, False, "auto"), "include_english",
             'true, false or "auto"'),
            (isinstance(self.target_splits, tuple)
             and all(isinstance(pair, tuple) and len(pair) == 2
                     and all(isinstance(x, str) and x for x in pair) for pair in self.target_splits),
             "split", 'a split name, "auto", or a table of target = split'),
            (self.outcome in (AUTO_OUTCOME, *OUTCOMES), "outcome",
             f"one of {[AUTO_OUTCOME, *OUTCOMES]}"),
            (self.diversity in DIVERSITY_MEASURES, "diversity", f"one of {list(DIVERSITY_MEASURES)}"),
            (self.interval in INTERVALS, "interval", f"one of {list(INTERVALS)}"),
            (self.identity in IDENTITY_MODES, "identity", f"one of {list(IDENTITY_MODES)}"),
            (self.random_slopes in SLOPE_MODES, "random_slopes", f"one of {list(SLOPE_MODES)}"),
            (self.df_method in DF_METHODS, "df_method", f"one of {list(DF_METHODS)}"),
            (isinstance(self.covariates, tuple)
             and all(isinstance(name, str) and name.strip() for name in self.covariates)
             and len(set(self.covariates)) == len(self.covariates), "covariates",
             "a list of distinct column names (or 'target_in_mix')"),
            (isinstance(self.resamples, int) and not isinstance(self.resamples, bool)
             and self.resamples >= 50, "resamples", "an integer >= 50"),
            (isinstance(self.seed, int) and not isinstance(self.seed, bool), "seed", "an integer"),
            (number(self.level) and 0.5 < self.level < 1, "level", "a number between 0.5 and 1"),
            (number(self.max_correlation) and 0 < self.max_correlation <= 1, "max_correlation",
             "a number in (0, 1]"),
            (number(self.power) and 0 < self.power < 1, "power", "a number between 0 and 1"),
            (isinstance(self.units, tuple) and len(self.units) > 0
             and set(self.units) <= {"language", "mix", "target_task"},
             "units", "a non-empty list drawn from language, mix, target_task"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise ValueError(f"analysis setting {key!r} must be {expected}, "
                                 f"got {getattr(self, key)!r}")

    @property
    def headline_metric(self) -> str | None:
        return None if self.metric == "headline" else self.metric


_SECTIONS = {
    "analysis": ("name", "outcome", "diversity", "metric", "split", "include_english",
                 "interaction", "target_mix", "model", "identity", "covariates", "random_slopes",
                 "df_method"),
    "bootstrap": ("resamples", "seed", "level", "interval", "units", "scheduler"),
    "verdict": ("max_correlation", "power"),
}


def _flatten(document: dict, source: str) -> dict:
    """The sections of a spec file as one flat dict of settings; unknown keys are refused."""
    settings = {}
    for section, table in document.items():
        if section == "tasks":
            settings["tasks"] = tuple(tasks_from_table(table, source))
            continue
        if section not in _SECTIONS:
            raise ValueError(f"{source}: unknown section [{section}]; expected "
                             f"{', '.join(f'[{s}]' for s in _SECTIONS)} or [tasks.<id>]")
        for key, value in table.items():
            if key not in _SECTIONS[section]:
                raise ValueError(f"{source}: unknown key {key!r} in [{section}]; expected one of "
                                 f"{', '.join(_SECTIONS[section])}")
            settings |= _setting(key, value)
    return settings


def _setting(key: str, value) -> dict:
    """One setting as spec fields: ``split`` given as a table of target = split sets
    ``target_splits`` (targets not in it are ``auto``)."""
    if key == "split" and isinstance(value, dict):
        return {"target_splits": tuple(sorted((str(k), v) for k, v in value.items()))}
    return {key: tuple(value) if isinstance(value, list) else value}


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read the analysis spec: {error.strerror}") from None


def default_spec_text() -> str:
    return resources.files("transferstats").joinpath("data/default_analysis.toml").read_text()


TaskSource = str | Path | Mapping | Task


def read_tasks(source: TaskSource | list[TaskSource] | tuple[TaskSource, ...] | None
               ) -> tuple[Task, ...]:
    """Tasks given as a TOML file path, a ``{id: {role, format, metric, ...}}`` table, a
    :class:`~transferstats.tasks.Task`, or a list of these; ``None`` is none."""
    if source is None:
        return ()
    if isinstance(source, list | tuple):
        return tuple(task for item in source for task in read_tasks(item))
    if isinstance(source, Task):
        return (source,)
    if isinstance(source, Mapping):
        return tuple(tasks_from_table(dict(source), "tasks"))
    if isinstance(source, str | Path):
        return tuple(read_task_file(source))
    raise ValueError(f"analysis setting 'tasks' must be a TOML file, a table of tasks or a list of "
                     f"them, got {source!r}")


def split_settings(values) -> dict:
    """``--split`` values (``validation``, ``xnli=validation``) as spec fields: a bare split
    applies to every target, ``target=split`` to one."""
    settings: dict = {}
    pairs = []
    for value in values:
        target, equals, split = str(value).partition("=")
        if equals:
            pairs.append((target.strip(), split.strip()))
        else:
            settings["split"] = target.strip()
    if pairs:
        settings["target_splits"] = tuple(sorted(pairs))
    return settings


def load_spec(path: str | Path | None = None, **overrides) -> AnalysisSpec:
    """Defaults, then the spec file at ``path`` (if any), then ``overrides`` that are not None.

    ``tasks`` given as an override add to the spec file's ``[tasks.<id>]`` tables. An unknown
    setting or a bad value raises ``ValueError`` naming it.
    """
    settings = _flatten(tomllib.loads(default_spec_text()), "default_analysis.toml")
    if path is not None:
        settings |= _flatten(_read_toml(Path(path)), str(path))
    known = [f.name for f in fields(AnalysisSpec)]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"unknown analysis setting(s) {', '.join(map(repr, unknown))}; "
                         f"expected some of {', '.join(known)}")
    extra_tasks = read_tasks(overrides.pop("tasks", None))
    settings["tasks"] = tuple(settings.get("tasks", ())) + extra_tasks
    for key, value in overrides.items():
        if key == "covariates" and isinstance(value, str):
            value = (value,)  # one covariate given by name
        if key == "split" and isinstance(value, list | tuple):
            settings |= split_settings(value)
        elif value is not None:
            settings |= _setting(key, value)
    try:
        return AnalysisSpec(**settings)
    except ValueError as error:
        raise ValueError(f"{path or 'analysis settings'}: {error}") from None
