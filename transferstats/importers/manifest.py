"""The import manifest: which model, mix, seed (and target) each source run belongs to.

Other tools' output says which task and language a score is for, but not which intermediate mix
the model was trained on, with how many examples, nor which seed of the grid the run is. The
manifest (TOML) says so; docs/importers.md documents it with an example per format::

    [defaults]                        # any run key but files/run, for every [[runs]] entry
    model = "xlm-roberta-large"

    [mixes.mnli-squad]                # a mix: its members and their training examples
    members = {mnli = 20000, squad_v1 = 20000}
    kind = "task"                     # "task" (default) or "language"
    sampling = "proportional"         # optional, as in run.json

    [[runs]]
    files = "mnli-squad-s1/*"         # a glob on result files relative to SOURCE, or
    # run = "mnli-squad-s1"           # a run's folder relative to SOURCE, or
    # model_name = "*/mnli-squad-s1"  # (lm-eval) a glob on the model name its results record
    mix = "mnli-squad"                # a [mixes] name, or "none" (the baseline)
    seed = 1

Every problem is collected and named with the manifest file and the key (``runs[0].seed``,
``mixes.mnli-squad.members.mnli``, ``defaults.model``); any of them refuses the import.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from transferstats.importers.common import DEFAULT_METRICS, DEFAULT_TARGETS, SCALES, SourceRun
from transferstats.languages import is_language_code, language_code_problem
from transferstats.problems import Problem, ResultsError
from transferstats.results import BASELINE_MIX
from transferstats.tasks import get_task, is_known, unknown_task_message

#: Keys of a ``[[runs]]`` entry; which ones a format requires or accepts is its own
#: ``REQUIRED_KEYS`` / ``OPTIONAL_KEYS``. One of the format's ``SELECTORS`` (of these) selects
#: source runs.
RUN_KEYS = ("model", "model_short", "mix", "seed", "target_task", "language", "metrics",
            "targets", "skip_tasks", "scale", "split")
SELECTORS = ("files", "run", "model_name")
SELECTOR_MEANING = {"files": "a glob on result files relative to SOURCE",
                    "run": "a run folder relative to SOURCE",
                    "model_name": "a glob on the model name recorded in the results"}
MIX_KEYS = ("members", "kind", "sampling")
KINDS = ("task", "language")
SAMPLING = ("proportional", "temperature", "uniform")
# Mix names and model_short become parts of run ids (<model_short>.<mix>.<target>.s<seed>) and
# folder names: no dots, no slashes.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")

Report = Callable[[str, str], None]


@dataclass(frozen=True)
class Mix:
    """An intermediate mix: its members (tasks or languages) and their training examples."""

    name: str
    members: dict[str, int]
    kind: str = "task"
    sampling: str | None = None

    def intermediate(self) -> dict:
        """The ``intermediate`` object of ``run.json``."""
        record: dict = {"name": self.name, "kind": self.kind, "tasks": dict(self.members)}
        if self.sampling:
            record["sampling"] = self.sampling
        return record


@dataclass(frozen=True)
class Entry:
    """One ``[[runs]]`` entry with ``[defaults]`` filled in; ``mix`` ``None`` is the baseline.

    ``metrics`` and ``targets`` are the built-in name tables updated by the manifest's.
    """

    index: int
    mix: Mix | None
    files: str | None = None
    run: str | None = None
    model: str | None = None
    model_short: str | None = None
    seed: int | None = None
    target_task: str | None = None
    language: str | None = None
    metrics: dict[str, str] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)
    skip_tasks: tuple[str, ...] = ()
    scale: str | None = None
    split: str | dict[str, str] | None = None
    model_name: str | None = None

    @property
    def label(self) -> str:
        """``runs[<index>]``, as problems name the entry."""
        return f"runs[{self.index}]"

    @property
    def selector(self) -> str:
        """The entry's selector as the manifest gives it (``run = 'mnli-s1'``)."""
        key = next(key for key in SELECTORS if getattr(self, key) is not None)
        return f"{key} = {getattr(self, key)!r}"

    def matches(self, source_run: SourceRun) -> bool:
        """Whether this entry selects ``source_run``: by file glob, by folder, or by a glob on
        the recorded model name, whole or its last path part (``*/tiny-s1`` and ``tiny-s1``
        both select ``/tmp/models/tiny-s1``)."""
        if self.files is not None:
            return any(fnmatch.fnmatchcase(label, self.files) for label in source_run.labels)
        if self.model_name is not None:
            name = source_run.model_name
            return name is not None and any(
                fnmatch.fnmatchcase(candidate, self.model_name)
                for candidate in (name, re.split(r"[\\/]", name.rstrip("/\\"))[-1]))
        return source_run.name == self.run

    def split_of(self, target: str) -> str | None:
        """The split the manifest gives for ``target``'s scores, if any (one for every target,
        or a table by target id)."""
        return self.split.get(target) if isinstance(self.split, dict) else self.split


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: the file it was read from, its mixes and its run entries."""

    path: str
    mixes: dict[str, Mix]
    entries: tuple[Entry, ...]


def read_manifest(path: str | Path, required: frozenset[str], optional: frozenset[str],
                  selectors: tuple[str, ...] = ("files", "run")) -> Manifest:
    """Read and validate a manifest for a format with these ``required`` / ``optional`` run keys
    and these ``selectors`` (of :data:`SELECTORS`).

    Task ids (mix members of kind ``task``, ``target_task``, ``targets``) are checked against
    the task registry, so call it inside ``task_scope`` when the user registered their own.

    Raises
    ------
    ResultsError
        Every problem, each naming the manifest file and the key.
    """
    source = str(path)
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ResultsError([Problem(source, "", "error",
                                    f"cannot read the manifest: {error.strerror}")]) from None
    except tomllib.TOMLDecodeError as error:
        raise ResultsError([Problem(source, "", "error", f"not valid TOML: {error}")]) from None
    problems: list[Problem] = []

    def report(key: str, message: str) -> None:
        problems.append(Problem(source, key, "error", message))

    _unknown_keys(document, ("defaults", "mixes", "runs"), "", report)
    mixes = _read_mixes(document.get("mixes", {}), report)
    allowed = required | optional
    given_defaults = _read_table(document.get("defaults", {}), "defaults", report)
    for key in given_defaults.keys() & set(SELECTORS):
        report(f"defaults.{key}", f"{key!r} selects the source runs of one [[runs]] entry; it "
                                  "cannot be a default")
    defaults = _read_run_keys(given_defaults, "defaults", allowed, mixes, report, selectors)
    runs = document.get("runs")
    if runs is None:
        report("runs", "missing: give one [[runs]] table per source run (or glob of them)")
        runs = []
    elif not isinstance(runs, list) or not all(isinstance(table, dict) for table in runs):
        report("runs", "must be an array of tables ([[runs]])")
        runs = []
    entries = [_read_entry(index, table, set(given_defaults), defaults,
                           (required, allowed, selectors), mixes, report)
               for index, table in enumerate(runs)]
    if problems:
        raise ResultsError(problems)
    return Manifest(path=source, mixes={name: mix for name, mix in mixes.items() if mix},
                    entries=tuple(entry for entry in entries if entry is not None))


def _unknown_keys(table: dict, allowed: tuple[str, ...] | frozenset[str], where: str,
                  report: Report) -> None:
    for key in table:
        if key not in allowed:
            report(f"{where}{key}", f"unknown key {key!r}; expected one of "
                                    f"{', '.join(sorted(allowed))}")


def _read_table(value: object, key: str, report: Report) -> dict:
    if not isinstance(value, dict):
        report(key, f"must be a table, got {value!r}")
        return {}
    return value


def _read_mixes(table: object, report: Report) -> dict[str, Mix | None]:
    """The mixes by name; ``None`` for one declared with a problem (reported), so that the runs
    naming it are not also told that it does not exist."""
    mixes: dict[str, Mix | None] = {}
    for name, entry in _read_table(table, "mixes", report).items():
        mixes[name] = None
        where = f"mixes.{name}"
        if not _SAFE_NAME.match(name) or name == BASELINE_MIX:
            report(where, f"a mix name is letters, digits, '_' or '-' and not {BASELINE_MIX!r} "
                          f"(the baseline), got {name!r}")
            continue
        if not isinstance(entry, dict):
            report(where, "must be a table with 'members' (and optionally 'kind', 'sampling')")
            continue
        _unknown_keys(entry, MIX_KEYS, f"{where}.", report)
        kind = entry.get("kind", "task")
        if kind not in KINDS:
            report(f"{where}.kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
            continue
        sampling = entry.get("sampling")
        if sampling is not None and sampling not in SAMPLING:
            report(f"{where}.sampling", f"must be one of {', '.join(SAMPLING)}, got {sampling!r}")
        members = entry.get("members")
        if "members" not in entry:
            report(f"{where}.members", "missing required key (member -> training examples)")
        elif not isinstance(members, dict) or not members:
            report(f"{where}.members", f"must be a non-empty table of member -> training "
                                       f"examples, got {members!r}")
        elif _check_members(members, kind, f"{where}.members", report):
            mixes[name] = Mix(name=name, members=dict(members), kind=kind, sampling=sampling)
    return mixes


def _check_members(members: dict, kind: str, where: str, report: Report) -> bool:
    """Whether every member is a registered intermediate task (kind ``task``) or an ISO 639
    language code (kind ``language``) with a positive whole number of examples."""
    ok = True
    for member, count in members.items():
        if kind == "language" and not is_language_code(member):
            report(f"{where}.{member}", language_code_problem(member))
            ok = False
        elif kind == "task" and not is_known(member):
            report(f"{where}.{member}", unknown_task_message(member, "intermediate"))
            ok = False
        elif kind == "task" and get_task(member).role != "intermediate":
            report(f"{where}.{member}", f"{member!r} is a target task, not an intermediate task")
            ok = False
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            report(f"{where}.{member}", f"expected a positive whole number of examples, "
                                        f"got {count!r}")
            ok = False
    return ok


def _read_run_keys(table: dict, where: str, allowed: frozenset[str], mixes: dict[str, Mix | None],
                   report: Report, selectors: tuple[str, ...]) -> dict:
    """The checked values of a ``[[runs]]`` entry's or ``[defaults]``'s run keys; a bad value
    is reported and left out. ``selectors`` are the format's, named with the keys it takes."""
    checked: dict = {}
    for key, value in table.items():
        if key in SELECTORS:
            continue
        place = f"{where}.{key}"
        if key not in RUN_KEYS:
            report(place, f"unknown key {key!r}; expected one of "
                          f"{', '.join(sorted(allowed | set(selectors)))}")
        elif key not in allowed:
            report(place, f"{key!r} is not a key of this format: it takes "
                          f"{', '.join(sorted(allowed))}")
        else:
            good = _check_value(key, value, mixes, place, report)
            if good is not None:
                checked[key] = good
    return checked


def _check_value(key: str, value: object, mixes: dict[str, Mix | None], place: str,
                 report: Report) -> object:
    """The value of a run key if it is valid, else ``None`` (reported)."""
    if key == "seed":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        report(place, f"expected an integer, got {value!r}")
    elif key in ("metrics", "targets"):
        if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
            report(place, f"expected a table of names to non-empty strings, got {value!r}")
        elif key == "targets":
            bad = [target for target in value.values() if not _is_target(target)]
            if not bad:
                return value
            for target in bad:
                report(place, _not_a_target(target))
        else:
            return value
    elif key == "split" and isinstance(value, dict):
        bad = [target for target in value if not _is_target(target)]
        for target in bad:
            report(f"{place}.{target}", f"{_not_a_target(target)} (the table gives the split "
                                        "of each target task id)")
        for target, split in value.items():
            if not isinstance(split, str) or not split:
                report(f"{place}.{target}", f"expected a non-empty string, got {split!r}")
                bad.append(target)
        return None if bad else value
    elif key == "skip_tasks":
        if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
            return tuple(value)
        report(place, f"expected a list of task-name globs, got {value!r}")
    elif not isinstance(value, str) or not value:
        report(place, f"expected a non-empty string, got {value!r}")
    elif key == "mix" and value != BASELINE_MIX and value not in mixes:
        report(place, f"no mix {value!r} in [mixes] (known: "
                      f"{', '.join(sorted(mixes)) or 'none'}); the baseline is {BASELINE_MIX!r}")
    elif key == "model_short" and not _SAFE_NAME.match(value):
        report(place, f"{value!r} must be letters, digits, '_' or '-' (it names the run folders)")
    elif key == "target_task" and not _is_target(value):
        report(place, _not_a_target(value))
    elif key == "scale" and value not in SCALES:
        report(place, f"must be one of {', '.join(SCALES)}, got {value!r}")
    else:
        return value
    return None


def _is_target(task_id: str) -> bool:
    return is_known(task_id) and get_task(task_id).role == "target"


def _not_a_target(task_id: str) -> str:
    """Why ``task_id`` is no target task: an intermediate task, or unknown."""
    if is_known(task_id):
        return f"{task_id!r} is an intermediate task, not a target task"
    return unknown_task_message(task_id, "target")


def _read_entry(index: int, table: dict, default_keys: set[str], defaults: dict,
                keys: tuple[frozenset[str], frozenset[str], tuple[str, ...]],
                mixes: dict[str, Mix | None], report: Report) -> Entry | None:
    """The entry with its defaults, or ``None`` when something is wrong with it (reported).

    ``keys`` are the format's required and allowed run keys and its selectors."""
    required, allowed, accepted = keys
    where = f"runs[{index}]"
    selectors = [key for key in SELECTORS if key in table]
    ok = len(selectors) == 1 and selectors[0] in accepted
    if len(selectors) != 1:
        choices = [f"{key!r} ({SELECTOR_MEANING[key]})" for key in accepted]
        report(where, f"give exactly one of {', '.join(choices[:-1])} or {choices[-1]}")
    elif not ok:
        report(f"{where}.{selectors[0]}", f"{selectors[0]!r} does not select runs of this "
                                          f"format: it takes {', '.join(accepted)}")
    for key in selectors:
        if not isinstance(table[key], str) or not table[key]:
            report(f"{where}.{key}", f"expected a non-empty string, got {table[key]!r}")
            ok = False
    own = _read_run_keys(table, where, allowed, mixes, report, accepted)
    ok = ok and set(table) <= {*SELECTORS, *own}
    for key in sorted(required - table.keys() - default_keys):
        report(f"{where}.{key}", "missing required key (give it here or in [defaults])")
        ok = False
    values = defaults | own
    language, target = values.get("language"), values.get("target_task")
    if language and target and language not in get_task(target).languages:
        report(f"{where}.language", f"{language!r} is not a language of {target} (expected one "
                                    f"of {', '.join(get_task(target).languages)})")
        ok = False
    name = values.pop("mix", None)
    mix = None if name == BASELINE_MIX else mixes.get(name)
    if not ok or name is None or (name != BASELINE_MIX and mix is None):
        return None  # a missing mix, or one declared with a problem: reported
    tables = {key: {**builtin, **defaults.get(key, {}), **own.get(key, {})}
              for key, builtin in (("metrics", DEFAULT_METRICS), ("targets", DEFAULT_TARGETS))}
    return Entry(index=index, mix=mix, files=table.get("files"), run=table.get("run"),
                 model_name=table.get("model_name"), **(values | tables))
