"""Load and validate results: a folder of runs (the contract) or a flat table (CSV, Parquet, JSONL).

Every problem is collected, not just the first: each names the file, the line or key, and what
was expected. Errors make the analysis refuse; warnings (failed runs, interrupted runs) are
reported and the runs concerned are left out, visibly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from transferstats.results import (BASELINE_MIX, FLAT_COLUMNS, REQUIRED_RUN_KEYS, REQUIRED_SCORE_KEYS,
                                   RUN_FILE, SCORES_FILE, format_mix_tasks, parse_mix_tasks)
from transferstats.tasks import get_task, is_known



@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input. ``severity`` is ``error`` (refuse) or ``warning``."""

    file: str
    location: str
    severity: str
    message: str

    def __str__(self):
        where = f"{self.file}:{self.location}" if self.location else self.file
        return f"{self.severity}: {where}: {self.message}"


class ResultsError(ValueError):
    """The input cannot be analysed; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        super().__init__(f"{len(errors)} error(s) in the results:\n" +
                         "\n".join(f"  {p}" for p in errors))


@dataclass
class LoadedResults:
    """Tidy scores of the complete runs, one row per run, and every problem met."""

    scores: pd.DataFrame
    runs: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    source: str = ""

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------- one run's files

def _check_run(run: object, file: str) -> tuple[dict | None, list[Problem]]:
    """Validate a parsed run.json; return the normalised run record (or None) and problems."""
    problems: list[Problem] = []

    def error(key, message):
        problems.append(Problem(file, key, "error", message))

    if not isinstance(run, dict):
        error("", f"expected a JSON object, got {type(run).__name__}")
        return None, problems
    for key in REQUIRED_RUN_KEYS:
        if key not in run:
            error(key, f"missing required key {key!r}")
    if problems:
        return None, problems
    if run["schema_version"] != 1:
        error("schema_version", f"expected 1, got {run['schema_version']!r}")
    if run["status"] not in ("complete", "failed"):
        error("status", f"expected 'complete' or 'failed', got {run['status']!r}")
    for key in ("run_id", "model", "target_task"):
        if not isinstance(run[key], str) or not run[key]:
            error(key, f"expected a non-empty string, got {run[key]!r}")
    if not isinstance(run["seed"], int) or isinstance(run["seed"], bool):
        error("seed", f"expected an integer, got {run['seed']!r}")
    if isinstance(run["target_task"], str) and run["target_task"]:
        if not is_known(run["target_task"]):
            error("target_task", f"unknown task id {run['target_task']!r}; register it first")
        elif get_task(run["target_task"]).role != "target":
            error("target_task", f"{run['target_task']!r} is an intermediate task, not a target")
    mix_name, mix_tasks, sampling = BASELINE_MIX, {}, None
    intermediate = run["intermediate"]
    if intermediate is not None:
        if not isinstance(intermediate, dict):
            error("intermediate", "expected null (baseline) or an object with 'name' and 'tasks'")
        else:
            mix_name = intermediate.get("name")
            sampling = intermediate.get("sampling")
            if not isinstance(mix_name, str) or not mix_name or mix_name == BASELINE_MIX:
                error("intermediate.name", f"expected a non-empty mix name other than "
                                           f"{BASELINE_MIX!r}, got {mix_name!r}")
            tasks = intermediate.get("tasks")
            if not isinstance(tasks, dict) or not tasks:
                error("intermediate.tasks", "expected a non-empty object mapping task id to "
                                            "the number of examples used")
            else:
                for task_id, count in tasks.items():
                    key = f"intermediate.tasks.{task_id}"
                    if not is_known(task_id):
                        error(key, f"unknown task id {task_id!r}; register it first")
                    elif get_task(task_id).role != "intermediate":
                        error(key, f"{task_id!r} is a target task, not an intermediate task")
                    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
                        error(key, f"expected a positive whole number of examples, got {count!r}")
                mix_tasks = tasks
    if problems:
        return None, problems
    record = {
        "run_id": run["run_id"], "model": run["model"], "mix": mix_name,
        "mix_tasks": format_mix_tasks(mix_tasks), "sampling": sampling,
        "target_task": run["target_task"], "seed": run["seed"], "status": run["status"],
        "error": run.get("error"), "file": file,
    }
    if run["status"] == "failed" and not run.get("error"):
        problems.append(Problem(file, "error", "warning", "failed run without an 'error' message"))
    return record, problems


def _check_score(score: object, file: str, location: str, target_task: str) -> tuple[dict | None, list[Problem]]:
    if not isinstance(score, dict):
        return None, [Problem(file, location, "error", f"expected a JSON object, got {type(score).__name__}")]
    problems = [Problem(file, location, "error", f"missing required key {key!r}")
                for key in REQUIRED_SCORE_KEYS if key not in score]
    if problems:
        return None, problems
    value = score["value"]
    if not _is_number(value):
        problems.append(Problem(file, location, "error", f"'value' must be a finite number, got {value!r}"))
    elif not 0 <= value <= 100:
        problems.append(Problem(file, location, "error",
                                f"'value' must be in percent (0-100), got {value!r}"))
    for key in ("language", "metric", "split"):
        if not isinstance(score[key], str) or not score[key]:
            problems.append(Problem(file, location, "error", f"{key!r} must be a non-empty string, "
                                                             f"got {score[key]!r}"))
    n_examples = score.get("n_examples")
    if n_examples is not None and (not isinstance(n_examples, int) or n_examples < 0):
        problems.append(Problem(file, location, "error",
                                f"'n_examples' must be a non-negative integer, got {n_examples!r}"))
    if not problems and is_known(target_task):
        languages = get_task(target_task).languages
        if score["language"] not in languages:
            problems.append(Problem(file, location, "error",
                                    f"language {score['language']!r} is not a language of "
                                    f"{target_task} (expected one of {', '.join(languages)})"))
    if problems:
        return None, problems
    return {k: score[k] for k in ("language", "metric", "split", "value")} | {
        "n_examples": n_examples}, []


def _read_scores(path: Path, target_task: str) -> tuple[list[dict], list[Problem]]:
    file = str(path)
    rows, problems, seen = [], [], {}
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                score = json.loads(line)
            except json.JSONDecodeError as error:
                problems.append(Problem(file, f"line {line_number}", "error",
                                        f"malformed JSON ({error.msg} at column {error.colno})"))
                continue
            row, score_problems = _check_score(score, file, f"line {line_number}", target_task)
            problems += score_problems
            if row is None:
                continue
            key = (row["language"], row["metric"], row["split"])
            if key in seen:
                problems.append(Problem(file, f"line {line_number}", "error",
                                        f"duplicate score for language/metric/split {key} "
                                        f"(first at line {seen[key]})"))
                continue
            seen[key] = line_number
            rows.append(row)
    if not rows and not problems:
        problems.append(Problem(file, "", "error", "no scores in a run marked complete"))
    return rows, problems


# ---------------------------------------------------------------- whole inputs

def _check_duplicates_and_mixes(runs: pd.DataFrame) -> list[Problem]:
    """Two runs of the same (model, mix, target, seed), or one mix name with two compositions."""
    problems = []
    if runs.empty:
        return problems
    for _, group in runs.groupby(["model", "mix", "target_task", "seed"]):
        if len(group) > 1:
            files = ", ".join(group["file"])
            problems.append(Problem(group["file"].iloc[1], "", "error",
                                    f"duplicate run of model={group['model'].iloc[0]} "
                                    f"mix={group['mix'].iloc[0]} target={group['target_task'].iloc[0]} "
                                    f"seed={group['seed'].iloc[0]}: also in {files}; keep one"))
    for run_id, group in runs.groupby("run_id"):
        if len(group) > 1 and group[["model", "mix", "target_task", "seed"]].drop_duplicates().shape[0] > 1:
            problems.append(Problem(group["file"].iloc[1], "run_id", "error",
                                    f"run_id {run_id!r} is used by {len(group)} different runs: "
                                    f"{', '.join(group['file'])}"))
    for mix, group in runs.groupby("mix"):
        compositions = group["mix_tasks"].unique()
        if len(compositions) > 1:
            problems.append(Problem(group["file"].iloc[0], "intermediate.tasks", "error",
                                    f"mix {mix!r} has different task compositions in different "
                                    f"runs: {sorted(compositions)}; give them different names"))
    return problems


def load_run_folder(root: str | Path) -> LoadedResults:
    """Read every ``run.json`` (and its ``scores.jsonl``) at any depth below ``root``.

    Hidden folders (such as ``.encoders``) are not searched. A ``scores.jsonl`` without a
    ``run.json`` is an interrupted run: a warning, never analysed.
    """
    root = Path(root)
    problems: list[Problem] = []
    if not root.exists():
        raise ResultsError([Problem(str(root), "", "error", "no such file or folder")])

    def visible(path: Path) -> bool:
        return not any(part.startswith(".") for part in path.relative_to(root).parts[:-1])

    run_files = sorted(p for p in root.rglob(RUN_FILE) if visible(p))
    for orphan in sorted(p for p in root.rglob(SCORES_FILE) if visible(p)):
        if not (orphan.parent / RUN_FILE).exists():
            problems.append(Problem(str(orphan), "", "warning",
                                    "scores without run.json (an interrupted run?); left out"))
    if not run_files:
        problems.append(Problem(str(root), "", "error",
                                f"no {RUN_FILE} found at any depth: expected one folder per run "
                                f"holding {RUN_FILE} and {SCORES_FILE}"))
        raise ResultsError(problems)

    run_records, score_rows = [], []
    for run_file in run_files:
        file = str(run_file)
        try:
            run = json.loads(run_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            problems.append(Problem(file, f"line {error.lineno}", "error",
                                    f"malformed JSON ({error.msg} at column {error.colno})"))
            continue
        record, run_problems = _check_run(run, file)
        problems += run_problems
        if record is None:
            continue
        run_records.append(record)
        if record["status"] == "failed":
            problems.append(Problem(file, "status", "warning",
                                    f"run {record['run_id']} failed ({record['error']}); "
                                    "left out of the analysis"))
            continue
        scores_path = run_file.parent / SCORES_FILE
        if not scores_path.is_file():
            problems.append(Problem(str(scores_path), "", "error",
                                    "missing: a run marked complete must have its scores"))
            continue
        rows, score_problems = _read_scores(scores_path, record["target_task"])
        problems += score_problems
        run_fields = {k: record[k] for k in ("run_id", "model", "mix", "mix_tasks", "target_task", "seed")}
        score_rows += [run_fields | row for row in rows]

    runs = pd.DataFrame(run_records, columns=["run_id", "model", "mix", "mix_tasks", "sampling",
                                              "target_task", "seed", "status", "error", "file"])
    problems += _check_duplicates_and_mixes(runs)
    scores = pd.DataFrame(score_rows, columns=[*FLAT_COLUMNS, "n_examples"])
    return LoadedResults(scores=scores, runs=runs, problems=problems, source=str(root))


def _read_flat_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path, dtype={"mix_tasks": str}, keep_default_na=False, na_values=[""])
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise ResultsError([Problem(str(path), f"line {line_number}", "error",
                                                    f"malformed JSON ({error.msg} at column "
                                                    f"{error.colno})")]) from None
        return pd.DataFrame(rows)
    raise ResultsError([Problem(str(path), "", "error",
                                "expected a results folder or a .csv, .parquet or .jsonl table")])


def load_flat_table(path: str | Path) -> LoadedResults:
    """Read the flat-table form: one row per score with the columns of ``FLAT_COLUMNS``.

    Row locations in messages are 1-based data rows ("row 3" is the third score; for CSV that is
    file line 4, after the header).
    """
    path = Path(path)
    file = str(path)
    table = _read_flat_table(path)
    missing = [c for c in FLAT_COLUMNS if c not in table.columns]
    if missing:
        raise ResultsError([Problem(file, "columns", "error",
                                    f"missing column(s) {missing}; expected {list(FLAT_COLUMNS)}")])
    if table.empty:
        raise ResultsError([Problem(file, "", "error", "the table has no rows")])
    problems, runs, score_rows = [], {}, []
    for index, row in enumerate(table.to_dict("records"), start=1):
        location = f"row {index}"
        try:
            tasks = parse_mix_tasks(row["mix_tasks"])
        except ValueError as error:
            problems.append(Problem(file, f"{location}, column mix_tasks", "error", str(error)))
            continue
        seed = row["seed"]
        if isinstance(seed, float) and seed.is_integer():
            seed = int(seed)
        mix = BASELINE_MIX if (row["mix"] is None or (isinstance(row["mix"], float)
                                                        and math.isnan(row["mix"]))) else str(row["mix"])
        if (mix == BASELINE_MIX) != (not tasks):
            problems.append(Problem(file, f"{location}, column mix", "error",
                                    f"mix {mix!r} with mix_tasks {row['mix_tasks']!r}: the baseline "
                                    f"mix {BASELINE_MIX!r} has no tasks and every other mix has some"))
            continue
        run = {"schema_version": 1, "run_id": row["run_id"], "model": row["model"],
               "intermediate": {"name": mix, "tasks": tasks} if tasks else None,
               "target_task": row["target_task"], "seed": seed, "status": "complete"}
        record, run_problems = _check_run(run, file)
        problems += [Problem(p.file, f"{location}, {p.location}", p.severity, p.message)
                     for p in run_problems]
        if record is None:
            continue
        value = row["value"]
        score, score_problems = _check_score(
            {"language": row["language"], "metric": row["metric"], "split": row["split"],
             "value": float(value) if _is_number(value) else value},
            file, location, record["target_task"])
        problems += score_problems
        if score is None:
            continue
        key = record["run_id"]
        runs.setdefault(key, record | {"file": f"{file} ({location})"})
        score_rows.append({k: record[k] for k in ("run_id", "model", "mix", "mix_tasks",
                                                  "target_task", "seed")} | score)
    runs_table = pd.DataFrame(list(runs.values()),
                              columns=["run_id", "model", "mix", "mix_tasks", "sampling",
                                       "target_task", "seed", "status", "error", "file"])
    scores = pd.DataFrame(score_rows, columns=[*FLAT_COLUMNS, "n_examples"])
    duplicated = scores.duplicated(["run_id", "language", "metric", "split"], keep="first")
    for index in scores.index[duplicated]:
        problems.append(Problem(file, f"row {index + 1}", "error",
                                f"duplicate score for run {scores.at[index, 'run_id']} language "
                                f"{scores.at[index, 'language']} metric {scores.at[index, 'metric']}"))
    problems += _check_duplicates_and_mixes(runs_table)
    return LoadedResults(scores=scores, runs=runs_table, problems=problems, source=file)


def load_results(path: str | Path, *, strict: bool = True) -> LoadedResults:
    """Load a results folder or flat table. With ``strict``, any error raises :class:`ResultsError`
    listing all of them; warnings stay in ``problems``."""
    path = Path(path)
    loaded = load_flat_table(path) if path.is_file() else load_run_folder(path)
    if strict and loaded.errors:
        raise ResultsError(loaded.problems)
    return loaded


def validate_results(path: str | Path) -> list[Problem]:
    """Every problem of a results folder or table, errors and warnings, without raising."""
    try:
        return load_results(path, strict=False).problems
    except ResultsError as error:
        return error.problems
