"""Results of other tools as runs in the contract: ``transferstats import FORMAT SOURCE``.

Three formats, one module each: ``lm-eval`` (:mod:`~transferstats.importers.harness`,
lm-evaluation-harness), ``hf-trainer`` (:mod:`~transferstats.importers.trainer`, Hugging Face
``Trainer``) and ``jiant`` (:mod:`~transferstats.importers.jiant`). A manifest
(:mod:`~transferstats.importers.manifest`) says which model, mix and seed each source run belongs
to. docs/importers.md documents the formats and the manifest.

Nothing reaches the results folder unless everything is right: the runs are written with
:func:`transferstats.results.write_run` into a temporary folder beside it, validated there by the
contract's loader (every problem translated back to the source file and key, or to the manifest
key, it came from), checked against the runs already in the folder, and only then moved in, one
folder rename per run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pandas as pd

from transferstats.grid.spec import _default_model_short
from transferstats.importers import harness, jiant, trainer
from transferstats.importers.common import Reading, Score, SourceRun
from transferstats.importers.manifest import Entry, Manifest, read_manifest
from transferstats.loading import load_results
from transferstats.problems import Problem, ResultsError
from transferstats.results import (
    BASELINE_MIX,
    RUN_FILE,
    SCHEMA_VERSION,
    SCORES_FILE,
    format_mix_tasks,
    write_run,
)
from transferstats.tasks import Task, task_scope

#: Format name (the command's FORMAT) -> its module.
FORMATS: dict[str, ModuleType] = {module.NAME: module for module in (harness, trainer, jiant)}


@dataclass(frozen=True)
class ImportedRun:
    """One run to write: its ``run.json`` and scores, and where they came from."""

    run_id: str
    record: dict
    scores: list[Score]
    entry: Entry
    source: SourceRun


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: the run ids moved into ``out``, and those already there unchanged."""

    out: Path
    written: tuple[str, ...]
    unchanged: tuple[str, ...]


def import_results(format: str, source: str | Path, manifest: str | Path, out: str | Path, *,
                   tasks: Iterable[Task] = ()) -> ImportSummary:
    """Write the runs of another tool's output into a results folder, or refuse and write nothing.

    Parameters
    ----------
    format : str
        ``lm-eval``, ``hf-trainer`` or ``jiant``.
    source : str or pathlib.Path
        The folder holding the tool's output, searched at any depth.
    manifest : str or pathlib.Path
        The TOML manifest (docs/importers.md).
    out : str or pathlib.Path
        The results folder (created). Runs already there are kept; importing the same run again
        leaves it as it is.
    tasks : iterable of Task, optional
        Your own tasks, known during this import only.

    Returns
    -------
    ImportSummary
        The run ids written and those found unchanged.

    Raises
    ------
    ResultsError
        Every problem, each naming the source file and key or the manifest key; nothing written.
    ValueError
        An unknown format.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    reader = FORMATS[format]
    source, out = Path(source), Path(out)
    if out.exists() and not out.is_dir():
        raise ResultsError([Problem(str(out), "", "error", "not a folder: --out is the results "
                                                           "folder to write the runs into")])
    with task_scope(tasks):
        plan = read_manifest(manifest, reader.REQUIRED_KEYS, reader.OPTIONAL_KEYS,
                             reader.SELECTORS)
        runs = _read_source(reader, source, plan)
        new, unchanged, problems = _compare_with_out(runs, out, plan)
        if problems:
            raise ResultsError(problems)
        if new:
            _write_validated(new, out, plan)
    return ImportSummary(out=out, written=tuple(run.run_id for run in new),
                         unchanged=tuple(unchanged))


def _read_source(reader: ModuleType, source: Path, plan: Manifest) -> list[ImportedRun]:
    """Every source run matched to its one manifest entry and read; refuse on any problem."""
    if not source.is_dir():
        raise ResultsError([Problem(str(source), "", "error", "no such folder")])
    source_runs = reader.find(source)
    if not source_runs:
        raise ResultsError([Problem(str(source), "", "error",
                                    f"no {reader.WHAT} found at any depth")])
    problems: list[Problem] = []
    runs: list[ImportedRun] = []
    used = set()
    for source_run in source_runs:
        entries = [entry for entry in plan.entries if entry.matches(source_run)]
        used |= {entry.index for entry in entries}
        place = str(source_run.files[0])
        if not entries:
            recorded = f", model_name {source_run.model_name!r}" if source_run.model_name else ""
            problems.append(Problem(place, "", "error",
                                    f"no manifest entry for this run (folder "
                                    f"{source_run.name!r}{recorded}): add a [[runs]] entry "
                                    f"selecting it to {plan.path}"))
        elif len(entries) > 1:
            problems.append(Problem(place, "", "error",
                                    f"selected by several manifest entries "
                                    f"({', '.join(entry.label for entry in entries)}); "
                                    "each run must have one"))
        else:
            reading = reader.read(source_run, entries[0])
            problems += reading.problems
            built, build_problems = _build_runs(reader.NAME, source_run, entries[0], reading,
                                                plan)
            runs += built
            problems += build_problems
    for entry in plan.entries:
        if entry.index not in used:
            problems.append(Problem(plan.path, entry.label, "error",
                                    f"selects no source run in {source} ({entry.selector}); "
                                    f"{_what_exists(entry, source_runs)}"))
    first_of: dict[str, ImportedRun] = {}
    for run in runs:
        other = first_of.setdefault(run.run_id, run)
        if other is not run:
            problems.append(Problem(str(run.source.files[0]), "", "error",
                                    f"gives run {run.run_id!r}, as {other.source.files[0]} does "
                                    "(the same model, mix, target and seed): select one of "
                                    "them, or give them different seeds"))
    if problems:
        raise ResultsError(problems)
    return runs


#: How many names a selection that matches nothing lists of those that exist.
LISTED_NAMES = 12


def _what_exists(entry: Entry, source_runs: list[SourceRun]) -> str:
    """The names an entry's selector could have matched: result files for ``files``, folders
    for ``run``, recorded model names for ``model_name``."""
    names: list[str | None]
    if entry.files is not None:
        what, names = "result files", [label for run in source_runs for label in run.labels]
    elif entry.model_name is not None:
        what, names = "model names recorded", [run.model_name for run in source_runs]
    else:
        what, names = "run folders", [run.name for run in source_runs]
    names = list(dict.fromkeys(names))
    shown = ", ".join("(none)" if name is None else repr(name) for name in names[:LISTED_NAMES])
    more = f" and {len(names) - LISTED_NAMES} more" if len(names) > LISTED_NAMES else ""
    return f"the {what} there: {shown}{more}"


def _build_runs(format: str, source_run: SourceRun, entry: Entry, reading: Reading,
                plan: Manifest) -> tuple[list[ImportedRun], list[Problem]]:
    """One contract run per target task of the source run's scores."""
    problems = []
    model = entry.model or reading.model
    seed = entry.seed if entry.seed is not None else reading.seed
    for key, value in (("model", model), ("seed", seed)):
        if value is None:
            problems.append(Problem(plan.path, f"{entry.label}.{key}", "error",
                                    f"missing: the run config of {source_run.name!r} records "
                                    f"no {key}; give it here or in [defaults]"))
    if not reading.scores and not reading.problems:
        problems.append(Problem(str(source_run.files[0]), "", "error",
                                "no score to import: none of its tasks or keys gives a score "
                                "(see `metrics` and `skip_tasks`)"))
    first: dict[tuple, Score] = {}
    for score in reading.scores:
        earlier = first.setdefault((score.target_task, score.language, score.metric, score.split),
                                   score)
        if earlier is not score:
            first_place = earlier.key if earlier.file == score.file else \
                f"{earlier.file}:{earlier.key}"
            problems.append(Problem(score.file, score.key, "error",
                                    f"a second {score.metric} score for {score.target_task} "
                                    f"{score.language} ({score.split}), the first from "
                                    f"{first_place}; map one of them to another name in "
                                    "`metrics`"))
    if problems or model is None or seed is None:
        return [], problems
    model_short = entry.model_short or _default_model_short(model)
    mix = entry.mix.name if entry.mix else BASELINE_MIX
    runs = []
    for target in dict.fromkeys(score.target_task for score in reading.scores):
        run_id = f"{model_short}.{mix}.{target}.s{seed}"
        record = {"run_id": run_id, "model": model,
                  "intermediate": entry.mix.intermediate() if entry.mix else None,
                  "target_task": target, "seed": seed, "status": "complete",
                  "imported_from": {"format": format, "files": list(source_run.labels)}}
        scores = [score for score in reading.scores if score.target_task == target]
        runs.append(ImportedRun(run_id=run_id, record=record, scores=scores, entry=entry,
                                source=source_run))
    return runs, problems


def _compare_with_out(runs: list[ImportedRun], out: Path, plan: Manifest
                      ) -> tuple[list[ImportedRun], list[str], list[Problem]]:
    """Split ``runs`` into new ones and ones already in ``out`` unchanged; a run id in ``out``
    with other content, a second run of one (model, mix, target, seed), or a mix name with other
    members there is a problem."""
    new, unchanged, problems = [], [], []
    for run in runs:
        folder = out / run.run_id
        if not folder.exists():
            new.append(run)
        elif _same_run(folder, run):
            unchanged.append(run.run_id)
        else:
            problems.append(Problem(str(folder), "", "error",
                                    f"run {run.run_id!r} is already in {out} with other content "
                                    f"than {run.source.labels[0]} gives; remove it to import it "
                                    "again, or give this import another model_short"))
    try:
        existing = load_results(out, strict=False).runs
    except ResultsError:  # no run there yet
        existing = None
    if existing is not None and not existing.empty:
        problems += _conflicts(new, existing, plan)
    return new, unchanged, problems


def _same_run(folder: Path, run: ImportedRun) -> bool:
    try:
        record = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
        lines = (folder / SCORES_FILE).read_text(encoding="utf-8").splitlines()
        scores = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return False
    return record == {"schema_version": SCHEMA_VERSION, **run.record} and \
        scores == [score.row() for score in run.scores]


def _conflicts(new: list[ImportedRun], existing: pd.DataFrame, plan: Manifest) -> list[Problem]:
    """Problems the loader would find in ``out`` once the new runs are in: a second run of one
    (model, mix, target, seed) under another id, or a mix name with other members."""
    problems = []
    for run in new:
        record = run.record
        mix = run.entry.mix.name if run.entry.mix else BASELINE_MIX
        twin = existing[(existing["model"] == record["model"]) & (existing["mix"] == mix)
                        & (existing["target_task"] == record["target_task"])
                        & (existing["seed"] == record["seed"])]
        if not twin.empty:
            problems.append(Problem(plan.path, run.entry.label, "error",
                                    f"run {run.run_id!r} of {run.source.labels[0]} repeats run "
                                    f"{twin['run_id'].iloc[0]!r} already in the results "
                                    f"({twin['file'].iloc[0]}): same model, mix, target, seed"))
        if run.entry.mix:
            members = format_mix_tasks(run.entry.mix.members)
            others = set(existing.loc[existing["mix"] == mix, "mix_tasks"]) - {members}
            if others:
                problems.append(Problem(plan.path, f"mixes.{mix}", "error",
                                        f"mix {mix!r} is already in the results with other "
                                        f"members ({', '.join(sorted(others))}); give this mix "
                                        "another name"))
    return list(dict.fromkeys(problems))


def _write_validated(runs: list[ImportedRun], out: Path, plan: Manifest) -> None:
    """Write the runs beside ``out``, validate them with the loader, then move them into ``out``."""
    # The nearest existing folder: creating out's parents before the validation would write
    # something on refusal. A sibling of out is on its file system, so the moves are renames.
    anchor = next(folder for folder in out.absolute().parents if folder.exists())
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=anchor))
    try:
        for run in runs:
            write_run(temporary / run.run_id, run.record, [score.row() for score in run.scores])
        problems = load_results(temporary, strict=False).problems
        if any(problem.severity == "error" for problem in problems):
            by_id = {run.run_id: run for run in runs}
            raise ResultsError([_translate(problem, temporary, by_id, plan)
                                for problem in problems])
        out.mkdir(parents=True, exist_ok=True)
        for run in runs:
            os.replace(temporary / run.run_id, out / run.run_id)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _translate(problem: Problem, temporary: Path, runs: dict[str, ImportedRun],
               plan: Manifest) -> Problem:
    """A problem the loader found in the temporary copy, named where it came from: the source
    file and key for a score, the manifest entry or mix for the rest of ``run.json``."""
    parts = Path(problem.file).relative_to(temporary).parts
    run = runs.get(parts[0]) if parts else None
    if run is None:  # about the temporary folder as a whole
        return problem
    if parts[-1] == SCORES_FILE and problem.location.startswith("line "):
        score = run.scores[int(problem.location.removeprefix("line ")) - 1]
        message = problem.message
        if "'value'" in message:
            message += f" (read {score.raw!r} with scale {score.scale!r})"
        return Problem(score.file, score.key, problem.severity, message)
    if problem.location.startswith("intermediate") and run.entry.mix:
        members = problem.location.removeprefix("intermediate.tasks")
        key = f"mixes.{run.entry.mix.name}" + \
            (f".members{members}" if members != problem.location else "")
        return Problem(plan.path, key, problem.severity, problem.message)
    return Problem(plan.path, run.entry.label, problem.severity,
                   f"{problem.message} (run.json {problem.location or 'as a whole'} of run "
                   f"{run.run_id!r})")
