"""Registry of intermediate and target tasks: role, format, headline metric, languages.

The analysis uses it to validate task ids and to count task formats; the runners use it to pick
heads, metrics and the languages to evaluate. Users add their own tasks for one analysis or one grid
with :func:`task_scope` (what ``analyze(tasks=...)``, analysis specs and grid specs do), or for the
whole session with :func:`register_task` / :func:`load_task_file`; unknown ids are refused
everywhere else.

References
----------
Hu et al. 2020, "XTREME: A Massively Multilingual Multi-task Benchmark for Evaluating Cross-lingual
Generalization", arXiv:2003.11080 (targets, languages and metrics).
Phang et al. 2020, "English Intermediate-Task Training Improves Zero-Shot Cross-Lingual Transfer
Too", arXiv:2005.13013 (intermediate tasks).
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("classification", "multiple_choice", "extractive_qa", "tagging", "retrieval")
ROLES = ("intermediate", "target")


@dataclass(frozen=True)
class Task:
    """One task: what it is and how it is scored.

    ``languages`` lists the evaluation languages (targets) in XTREME's ISO codes; intermediate tasks
    are English only. ``train_task`` names the task whose English training data a target is
    fine-tuned on (XNLI trains on MNLI); ``None`` means its own. ``data`` is free-form information
    for the runners (hub ids, configs, field mappings).
    """

    id: str
    role: str
    format: str
    metric: str
    languages: tuple[str, ...] = ("en",)
    num_labels: int | None = None
    train_task: str | None = None
    data: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"task {self.id!r}: role must be one of {ROLES}, got {self.role!r}")
        if self.format not in FORMATS:
            raise ValueError(f"task {self.id!r}: format must be one of {FORMATS}, got {self.format!r}")

    @property
    def non_english(self) -> tuple[str, ...]:
        """The evaluation languages other than English (the zero-shot ones)."""
        return tuple(lang for lang in self.languages if lang != "en")


_XNLI = "en ar bg de el es fr hi ru sw th tr ur vi zh"
_PAWSX = "en de es fr ja ko zh"
_UDPOS = ("en af ar bg de el es et eu fa fi fr he hi hu id it ja kk ko mr nl pt ru ta te th tl tr ur "
          "vi yo zh")
_PANX = ("en af ar bg bn de el es et eu fa fi fr he hi hu id it ja jv ka kk ko ml mr ms my nl pt ru "
         "sw ta te th tl tr ur vi yo zh")
_XQUAD = "en es de el ru tr ar vi th zh hi"
_MLQA = "en ar de es hi vi zh"
_TYDIQA = "en ar bn fi id ko ru sw te"
_BUCC = "de fr ru zh"
_TATOEBA = ("af ar bg bn de el es et eu fa fi fr he hi hu id it ja jv ka kk ko ml mr nl pt ru sw ta te "
            "th tl tr ur vi zh")

_BUILTIN = [
    # XTREME targets. Retrieval tasks pair each language with English, so "en" is not scored.
    Task("xnli", "target", "classification", "accuracy", tuple(_XNLI.split()), 3, train_task="mnli"),
    Task("pawsx", "target", "classification", "accuracy", tuple(_PAWSX.split()), 2),
    Task("udpos", "target", "tagging", "f1", tuple(_UDPOS.split()), 17),
    Task("panx", "target", "tagging", "f1", tuple(_PANX.split()), 7),
    Task("xquad", "target", "extractive_qa", "f1", tuple(_XQUAD.split()), train_task="squad_v1"),
    Task("mlqa", "target", "extractive_qa", "f1", tuple(_MLQA.split()), train_task="squad_v1"),
    Task("tydiqa", "target", "extractive_qa", "f1", tuple(_TYDIQA.split())),
    Task("bucc2018", "target", "retrieval", "f1", tuple(_BUCC.split())),
    Task("tatoeba", "target", "retrieval", "accuracy", tuple(_TATOEBA.split())),
    # English intermediate tasks (Phang et al. 2020 Table 1, plus SST-2).
    Task("mnli", "intermediate", "classification", "accuracy", num_labels=3),
    Task("anli", "intermediate", "classification", "accuracy", num_labels=3),
    Task("qqp", "intermediate", "classification", "accuracy", num_labels=2),
    Task("sst2", "intermediate", "classification", "accuracy", num_labels=2),
    Task("squad_v1", "intermediate", "extractive_qa", "f1"),
    Task("squad_v2", "intermediate", "extractive_qa", "f1"),
    Task("hellaswag", "intermediate", "multiple_choice", "accuracy", num_labels=4),
    Task("commonsenseqa", "intermediate", "multiple_choice", "accuracy", num_labels=5),
    Task("cosmosqa", "intermediate", "multiple_choice", "accuracy", num_labels=4),
    Task("ccg", "intermediate", "tagging", "accuracy"),
]

_REGISTRY: dict[str, Task] = {task.id: task for task in _BUILTIN}
_BUILTIN_BY_ID: dict[str, Task] = dict(_REGISTRY)
# Tasks registered for the current ``with task_scope(...)`` block only, looked up before _REGISTRY.
# No default (a mutable default would be shared); an unset variable reads as "no scoped tasks".
_SCOPED: ContextVar[dict[str, Task]] = ContextVar("transferstats_scoped_tasks")

TARGET_TASKS = tuple(t.id for t in _BUILTIN if t.role == "target")
INTERMEDIATE_TASKS = tuple(t.id for t in _BUILTIN if t.role == "intermediate")


class UnknownTaskError(KeyError):
    """A task id that is neither built in nor registered."""

    def __str__(self):
        return self.args[0]


def get_task(task_id: str) -> Task:
    """Return the task with this id.

    An unknown id raises :class:`UnknownTaskError` naming the closest known ids
    (:func:`unknown_task_message`).
    """
    task = _SCOPED.get({}).get(task_id) or _REGISTRY.get(task_id)
    if task is None:
        raise UnknownTaskError(unknown_task_message(task_id))
    return task


#: How many of the closest known ids an unknown task id is answered with.
CLOSEST_IDS = 3


def unknown_task_message(task_id: str, role: str | None = None) -> str:
    """Say why an id that is no known task (of ``role``, when given) is refused.

    The message names the closest known ids (:func:`difflib.get_close_matches`), or all of them
    when none is close, and how to register one.

    Examples
    --------
    >>> unknown_task_message("xnly", "target")  # doctest: +NORMALIZE_WHITESPACE
    "unknown task id 'xnly' (closest known target tasks: 'xnli'); register your own with a
    [tasks.xnly] table in a TOML file given as --tasks FILE.toml (docs/tasks.md)"
    """
    known = sorted(task.id for task in {**_REGISTRY, **_SCOPED.get({})}.values()
                   if role is None or task.role == role)
    close = difflib.get_close_matches(task_id, known, n=CLOSEST_IDS)
    tasks = f"{role} tasks" if role else "tasks"
    listed = (f"closest known {tasks}: {', '.join(map(repr, close))}" if close
              else f"known {tasks}: {', '.join(known) or 'none'}")
    # A task id containing "." or spaces cannot be a bare TOML key.
    key = task_id if task_id.replace("_", "").replace("-", "").isalnum() else f'"{task_id}"'
    return (f"unknown task id {task_id!r} ({listed}); register your own with a [tasks.{key}] "
            "table in a TOML file given as --tasks FILE.toml (docs/tasks.md)")


def is_builtin(task: Task) -> bool:
    """Whether ``task`` is the built-in task of its id, as shipped (not a user's redefinition)."""
    return _BUILTIN_BY_ID.get(task.id) == task


def is_known(task_id: str) -> bool:
    """Whether ``task_id`` is built in, registered, or known in the current :func:`task_scope`."""
    return task_id in _SCOPED.get({}) or task_id in _REGISTRY


def _check_consistent(task: Task, *registries: dict[str, Task]) -> None:
    for registry in registries:
        existing = registry.get(task.id)
        if existing is not None and existing != task:
            raise ValueError(f"task {task.id!r} is already registered differently")


@contextmanager
def task_scope(tasks: Iterable[Task]) -> Iterator[None]:
    """Make ``tasks`` known inside a ``with`` block only; the global registry is left untouched.

    A task that clashes with a registered one of the same id (a different definition) is refused
    with a ``ValueError``; an identical one is accepted. Scopes nest.

    Examples
    --------
    >>> from transferstats.tasks import Task, is_known, task_scope
    >>> with task_scope([Task("my_nli", "intermediate", "classification", "accuracy")]):
    ...     is_known("my_nli")
    True
    >>> is_known("my_nli")
    False
    """
    overlay = dict(_SCOPED.get({}))
    for task in tasks:
        _check_consistent(task, _REGISTRY, overlay)
        overlay[task.id] = task
    token = _SCOPED.set(overlay)
    try:
        yield
    finally:
        _SCOPED.reset(token)


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add a task to the registry. Re-registering an identical task is a no-op."""
    existing = _REGISTRY.get(task.id)
    if existing is not None and existing != task and not replace:
        raise ValueError(f"task {task.id!r} is already registered differently; pass replace=True")
    _REGISTRY[task.id] = task
    return task


def tasks_from_table(table: dict, source: str) -> list[Task]:
    """Build tasks from a ``{id: {role, format, metric, ...}}`` table (TOML ``[tasks.<id>]``).

    ``source`` (a file name) is used in error messages.
    """
    allowed = {"role", "format", "metric", "languages", "num_labels", "train_task", "data"}
    tasks = []
    for task_id, entry in table.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{source}: [tasks.{task_id}] must be a table")
        unknown = set(entry) - allowed
        if unknown:
            raise ValueError(f"{source}: [tasks.{task_id}] has unknown key(s) {sorted(unknown)}; "
                             f"allowed: {sorted(allowed)}")
        for key in ("role", "format", "metric"):
            if key not in entry:
                raise ValueError(f"{source}: [tasks.{task_id}] is missing required key {key!r}")
        try:
            tasks.append(Task(
                id=task_id,
                role=entry["role"],
                format=entry["format"],
                metric=entry["metric"],
                languages=tuple(entry.get("languages", ["en"])),
                num_labels=entry.get("num_labels"),
                train_task=entry.get("train_task"),
                data=dict(entry.get("data", {})),
            ))
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
    return tasks


def read_task_file(path: str | Path) -> list[Task]:
    """Read the tasks of every ``[tasks.<id>]`` table of a TOML file, without registering them."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read the task file: {error.strerror}") from None
    return tasks_from_table(document.get("tasks", {}), str(path))


def load_task_file(path: str | Path) -> list[Task]:
    """Register every ``[tasks.<id>]`` table of a TOML file for the session; return the tasks."""
    return [register_task(task) for task in read_task_file(path)]
