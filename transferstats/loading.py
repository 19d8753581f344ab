"""Load and validate results: a folder of runs (the contract) or a flat table (CSV, Parquet, JSONL).

Every problem is collected, not just the first: each names the file, the line or key, and what
was expected. Errors make the analysis refuse; warnings (failed runs, interrupted runs) are
reported and the runs concerned are left out, visibly.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from transferstats.languages import closest_language_code, is_language_code, language_code_problem
from transferstats.problems import Problem, ResultsError
from transferstats.results import (
    BASELINE_MIX,
    FLAT_COLUMNS,
    OPTIONAL_SCORE_KEYS,
    REQUIRED_RUN_KEYS,
    REQUIRED_SCORE_KEYS,
    RUN_FILE,
    SCORES_FILE,
    SOURCE_KIND_COLUMN,
    SOURCE_KINDS,
    format_mix_tasks,
    parse_mix_tasks,
)
from transferstats.tasks import Task, get_task, is_builtin, is_known, unknown_task_message


@dataclass
class LoadedResults:
    """Tidy scores of the complete runs, one row per run, and every problem met."""

    scores: pd.DataFrame
    runs: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    source: str = ""
    #: Possible covariates (extra numeric columns of a flat table, keys of run.json's
    #: ``covariates``; carried as columns of ``scores``) -> {position of a ``scores`` row: its
    #: missing or non-numeric value, naming the file and row or key}. An analysis that uses the
    #: covariate turns those of the rows it models into errors.
    covariate_problems: dict[str, dict[int, Problem]] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        """The problems that make the analysis refuse."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        """The problems reported with the analysis (runs left out)."""
        return [p for p in self.problems if p.severity == "warning"]


#: A run's fields carried on each of its score rows: the flat-table run columns and the mix's kind.
RUN_FIELDS = ("run_id", "model", "mix", "mix_tasks", SOURCE_KIND_COLUMN, "target_task", "seed")

#: Columns of ``LoadedResults.runs``, one row per run.
RUN_TABLE_COLUMNS = (*RUN_FIELDS[:5], "sampling", *RUN_FIELDS[5:], "status", "error", "file")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------- one run's files

def _check_run(run: object, file: str) -> tuple[dict | None, list[Problem]]:
    """Validate a parsed run.json; return the normalised run record (or None) and problems."""
    if not isinstance(run, dict):
        return None, [Problem(file, "", "error", f"expected a JSON object, got {type(run).__name__}")]
    problems = [Problem(file, key, "error", f"missing required key {key!r}")
                for key in REQUIRED_RUN_KEYS if key not in run]
    if problems:
        return None, problems
    mix, mix_errors = _check_intermediate(run["intermediate"])
    errors = _header_errors(run) + mix_errors + _covariate_errors(run.get("covariates", {}))
    if errors:
        return None, [Problem(file, key, "error", message) for key, message in errors]
    record = {
        "covariates": dict(run.get("covariates", {})),
        "run_id": run["run_id"], "model": run["model"], "mix": mix["name"],
        "mix_tasks": format_mix_tasks(mix["tasks"]), SOURCE_KIND_COLUMN: mix["kind"],
        "sampling": mix["sampling"], "target_task": run["target_task"], "seed": run["seed"],
        "status": run["status"], "error": run.get("error"), "file": file,
    }
    if run["status"] == "failed" and not run.get("error"):
        problems.append(Problem(file, "error", "warning", "failed run without an 'error' message"))
    return record, problems


def _header_errors(run: dict) -> list[tuple[str, str]]:
    """Return (key, message) for each problem with the run's own fields.

    The fields: schema version, status, names, seed and target task.
    """
    errors = []
    if run["schema_version"] != 1:
        errors.append(("schema_version", f"expected 1, got {run['schema_version']!r}"))
    if run["status"] not in ("complete", "failed"):
        errors.append(("status", f"expected 'complete' or 'failed', got {run['status']!r}"))
    for key in ("run_id", "model", "target_task"):
        if not isinstance(run[key], str) or not run[key]:
            errors.append((key, f"expected a non-empty string, got {run[key]!r}"))
    if not isinstance(run["seed"], int) or isinstance(run["seed"], bool):
        errors.append(("seed", f"expected an integer, got {run['seed']!r}"))
    target = run["target_task"]
    if isinstance(target, str) and target:
        if not is_known(target):
            errors.append(("target_task", unknown_task_message(target, "target")))
        elif get_task(target).role != "target":
            errors.append(("target_task", f"{target!r} is an intermediate task, not a target"))
    return errors


def _check_intermediate(intermediate: object) -> tuple[dict, list[tuple[str, str]]]:
    """Return the mix a run trained on and (key, message) for each problem with it.

    The mix: name, member kind, sampling and members; for null, the baseline's, which has no
    members and so no kind.
    """
    mix: dict = {"name": BASELINE_MIX, "tasks": {}, "sampling": None, "kind": None}
    if intermediate is None:
        return mix, []
    if not isinstance(intermediate, dict):
        return mix, [("intermediate",
                      "expected null (baseline) or an object with 'name' and 'tasks'")]
    name, kind = intermediate.get("name"), intermediate.get("kind", SOURCE_KINDS[0])
    mix.update(name=name, kind=kind, sampling=intermediate.get("sampling"))
    errors = []
    if not isinstance(name, str) or not name or name == BASELINE_MIX:
        errors.append(("intermediate.name", f"expected a non-empty mix name other than "
                                            f"{BASELINE_MIX!r}, got {name!r}"))
    if kind not in SOURCE_KINDS:
        errors.append(("intermediate.kind",
                       f"expected one of {', '.join(map(repr, SOURCE_KINDS))}, got {kind!r}"))
    tasks = intermediate.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        return mix, errors + [("intermediate.tasks", "expected a non-empty object mapping each "
                               "member (task id or language code) to the number of examples "
                               "used")]
    for member, count in tasks.items():
        key = f"intermediate.tasks.{member}"
        member_problem = _member_problem(member, kind) if kind in SOURCE_KINDS else ""
        if member_problem:
            errors.append((key, member_problem))
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            errors.append((key, f"expected a positive whole number of examples, got {count!r}"))
    mix["tasks"] = tasks
    return mix, errors


def _covariate_errors(covariates: object) -> list[tuple[str, str]]:
    """Return (key, message) for each covariate that is not a number or names a column."""
    if not isinstance(covariates, dict):
        return [("covariates", "expected an object mapping covariate names to numbers")]
    errors = []
    for name, value in covariates.items():
        if name in (*FLAT_COLUMNS, SOURCE_KIND_COLUMN, *OPTIONAL_SCORE_KEYS) or not name.strip():
            errors.append((f"covariates.{name}",
                           f"{name!r} cannot name a covariate (a results column)"))
        elif not _is_number(value):
            errors.append((f"covariates.{name}", f"expected a finite number, got {value!r}"))
    return errors


def _member_problem(member: str, kind: str) -> str:
    """Why ``member`` cannot be in a mix of ``kind`` (empty when it can)."""
    if kind == "language":
        return "" if is_language_code(member) else language_code_problem(member)
    if not is_known(member):
        return unknown_task_message(member, "intermediate")
    if get_task(member).role != "intermediate":
        return f"{member!r} is a target task, not an intermediate task"
    return ""


def _check_score(score: object, file: str, location: str,
                 target_task: str) -> tuple[dict | None, list[Problem]]:
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
    stderr = score.get("stderr")
    if stderr is not None and not (_is_number(stderr) and stderr >= 0):
        problems.append(Problem(file, location, "error",
                                f"'stderr' must be a non-negative number (the score's standard "
                                f"error, in percent) or null, got {stderr!r}"))
    if not problems and is_known(target_task):
        task = get_task(target_task)
        # A built-in target takes any ISO 639 code beyond XTREME's list, with one warning for the
        # whole load (outside_xtreme); a user's target keeps to its own list.
        if score["language"] not in task.languages and not (
                is_builtin(task) and is_language_code(score["language"])):
            problems.append(Problem(file, location, "error",
                                    _not_a_language_of(score["language"], task)))
    if problems:
        return None, problems
    return {k: score[k] for k in ("language", "metric", "split", "value")} | {
        "n_examples": n_examples, "stderr": stderr}, []


def _not_a_language_of(language: object, task: Task) -> str:
    """Say why a score's ``language`` is refused for ``task``.

    The message names the codes the target takes and the closest one to what was written: the
    registry's reading of it, or a close code of the target's own list.
    """
    if is_builtin(task):
        expected = (f"an ISO 639 language code such as {', '.join(task.languages[:5])}; any "
                    "code of the IANA registry is taken")
        suggestion = closest_language_code(language) if isinstance(language, str) else None
    else:
        expected = (f"one of {', '.join(task.languages)}, the languages {task.id} was "
                    "registered with (docs/tasks.md)")
        read = closest_language_code(language) if isinstance(language, str) else None
        close = difflib.get_close_matches(language, task.languages, n=1) \
            if isinstance(language, str) else []
        suggestion = read if read in task.languages else (close[0] if close else None)
    hint = f"; did you mean {suggestion!r}?" if suggestion else ""
    return (f"language {language!r} is not a language of {task.id} (expected {expected}){hint}")


def _read_scores(path: Path, target_task: str) -> tuple[list[dict], list[Problem]]:
    file = str(path)
    rows: list[dict] = []
    problems: list[Problem] = []
    seen: dict[tuple, int] = {}
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

def outside_xtreme(scores: pd.DataFrame, source: str) -> list[Problem]:
    """Warn once about the languages outside XTREME's list of their built-in target.

    They are valid ISO 639 codes (:func:`_check_score` refuses the others); the warning names
    them per target, and there is none when every language is on XTREME's list.
    """
    extra = {}
    for target, languages in scores.groupby("target_task")["language"].unique().items():
        if is_known(str(target)) and is_builtin(task := get_task(str(target))):
            outside = sorted(set(languages) - set(task.languages))
            if outside:
                extra[task.id] = outside
    if not extra:
        return []
    named = "; ".join(f"{target}: {', '.join(codes)}" for target, codes in extra.items())
    count = sum(len(codes) for codes in extra.values())
    return [Problem(source, "language", "warning",
                    f"{count} language(s) outside XTREME's list for their target, accepted as ISO "
                    f"639 codes: {named} (register the target with its own language list to "
                    "refuse them; docs/tasks.md)")]


def _check_duplicates_and_mixes(runs: pd.DataFrame) -> list[Problem]:
    """Two runs of the same (model, mix, target, seed), or one mix name with two compositions."""
    problems: list[Problem] = []
    if runs.empty:
        return problems
    # Each check visits only the groups of more than one run (or composition): a grid of tens
    # of thousands of runs has few or none, and a loop over every group took seconds.
    run_key = ["model", "mix", "target_task", "seed"]
    repeated = runs[runs.duplicated(run_key, keep=False)]
    for _, group in repeated.groupby(run_key):
        files = ", ".join(map(repr, group["file"]))
        problems.append(Problem(group["file"].iloc[1], "", "error",
                                f"duplicate run of model={group['model'].iloc[0]!r} "
                                f"mix={group['mix'].iloc[0]!r} "
                                f"target={group['target_task'].iloc[0]!r} "
                                f"seed={group['seed'].iloc[0]!r}: also in {files}; keep one"))
    shared_ids = runs[runs.duplicated("run_id", keep=False)]
    for run_id, group in shared_ids.groupby("run_id"):
        if group[run_key].drop_duplicates().shape[0] > 1:
            problems.append(Problem(group["file"].iloc[1], "run_id", "error",
                                    f"run_id {run_id!r} is used by {len(group)} different runs: "
                                    f"{', '.join(map(repr, group['file']))}"))
    per_mix = runs.groupby("mix")["mix_tasks"].nunique(dropna=False)
    for mix, group in runs[runs["mix"].isin(per_mix.index[per_mix > 1])].groupby("mix"):
        compositions = group["mix_tasks"].unique()
        problems.append(Problem(group["file"].iloc[0], "intermediate.tasks", "error",
                                f"mix {mix!r} has different task compositions in different "
                                f"runs: {sorted(compositions)}; give them different names"))
    kinds = runs.dropna(subset=[SOURCE_KIND_COLUMN]).groupby(SOURCE_KIND_COLUMN)["file"].first()
    if len(kinds) > 1:
        problems.append(Problem(kinds.iloc[-1], "intermediate.kind", "error",
                                "the results hold mixes of tasks and mixes of languages (first of "
                                f"each: {', '.join(f'{kind} in {file}' for kind, file in kinds.items())}); "
                                "one analysis compares mixes of one kind: analyse them separately"))
    return problems


def load_run_folder(root: str | Path) -> LoadedResults:
    """Read every ``run.json`` (and its ``scores.jsonl``) at any depth below ``root``.

    Hidden folders (such as ``.encoders``) are not searched. A ``scores.jsonl`` without a
    ``run.json`` is an interrupted run: a warning, never analysed.
    """
    root = Path(root)
    run_files, problems = _run_files(root)
    run_records: list[dict] = []
    score_rows: list[dict] = []
    spans: list[tuple[dict, int, int]] = []  # each run's rows in score_rows
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
                                    f"run {record['run_id']!r} failed ({record['error']}); "
                                    "left out of the analysis"))
            continue
        scores_path = run_file.parent / SCORES_FILE
        if not scores_path.is_file():
            problems.append(Problem(str(scores_path), "", "error",
                                    "missing: a run marked complete must have its scores"))
            continue
        rows, score_problems = _read_scores(scores_path, record["target_task"])
        problems += score_problems
        run_fields = {k: record[k] for k in RUN_FIELDS}
        spans.append((record, len(score_rows), len(score_rows) + len(rows)))
        score_rows += [run_fields | row | record["covariates"] for row in rows]

    runs = pd.DataFrame(run_records, columns=RUN_TABLE_COLUMNS)
    problems += _check_duplicates_and_mixes(runs)
    covariate_problems = _missing_covariates(spans)
    scores = pd.DataFrame(score_rows, columns=[*FLAT_COLUMNS, SOURCE_KIND_COLUMN,
                                               *OPTIONAL_SCORE_KEYS, *covariate_problems])
    scores["stderr"] = scores["stderr"].astype(float)
    problems += outside_xtreme(scores, str(root))
    return LoadedResults(scores=scores, runs=runs, problems=problems, source=str(root),
                         covariate_problems=covariate_problems)


def _run_files(root: Path) -> tuple[list[Path], list[Problem]]:
    """Return every visible ``run.json`` below ``root``, and a warning per orphaned scores file.

    Raises ``ResultsError`` when ``root`` does not exist or holds no run.
    """
    if not root.exists():
        raise ResultsError([Problem(str(root), "", "error", "no such file or folder")])

    def visible(path: Path) -> bool:
        return not any(part.startswith(".") for part in path.relative_to(root).parts[:-1])

    problems = [Problem(str(orphan), "", "warning",
                        "scores without run.json (an interrupted run?); left out")
                for orphan in sorted(p for p in root.rglob(SCORES_FILE) if visible(p))
                if not (orphan.parent / RUN_FILE).exists()]
    run_files = sorted(p for p in root.rglob(RUN_FILE) if visible(p))
    if not run_files:
        problems.append(Problem(str(root), "", "error",
                                f"no {RUN_FILE} found at any depth: expected one folder per run "
                                f"holding {RUN_FILE} and {SCORES_FILE}"))
        raise ResultsError(problems)
    return run_files, problems


def _missing_covariates(spans: list[tuple[dict, int, int]]) -> dict[str, dict[int, Problem]]:
    """Return, per covariate any run has (sorted), a problem for each score row of a run without it.

    run.json's covariates become columns; ``spans`` are each run's record and its rows.
    """
    names = sorted({name for record, _, _ in spans for name in record["covariates"]})
    return {name: {row: Problem(record["file"], f"covariates.{name}", "error",
                                f"no covariate {name!r} (other runs have it)")
                   for record, start, stop in spans if name not in record["covariates"]
                   for row in range(start, stop)}
            for name in names}


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
    table = _read_flat_table(path)
    table.index = pd.RangeIndex(1, len(table) + 1)
    return _load_table(table, str(path))


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _table_run(row: dict, source: str) -> tuple[dict | None, list[Problem]]:
    """Check the run of a table row like a ``run.json``; locations are within the row."""
    try:
        tasks = parse_mix_tasks(row["mix_tasks"])
    except ValueError as error:
        return None, [Problem(source, "column mix_tasks", "error", str(error))]
    seed = row["seed"]
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    mix = BASELINE_MIX if _missing(row["mix"]) else str(row["mix"])
    if (mix == BASELINE_MIX) != (not tasks):
        return None, [Problem(source, "column mix", "error",
                              f"mix {mix!r} with mix_tasks {row['mix_tasks']!r}: the baseline mix "
                              f"{BASELINE_MIX!r} has no tasks and every other mix has some")]
    kind = row.get(SOURCE_KIND_COLUMN)
    kind = SOURCE_KINDS[0] if _missing(kind) or kind == "" else kind
    if kind not in SOURCE_KINDS:
        return None, [Problem(source, f"column {SOURCE_KIND_COLUMN}", "error",
                              f"expected one of {', '.join(map(repr, SOURCE_KINDS))} (or empty: "
                              f"{SOURCE_KINDS[0]!r}), got {kind!r}")]
    run = {"schema_version": 1, "run_id": row["run_id"], "model": row["model"],
           "intermediate": {"name": mix, "kind": kind, "tasks": tasks} if tasks else None,
           "target_task": row["target_task"], "seed": seed, "status": "complete"}
    return _check_run(run, source)


def _load_table(table: pd.DataFrame, source: str) -> LoadedResults:
    """Validate a table in the flat form; problems name a row by its index label.

    The checks are a run folder's: :func:`_check_run` on each distinct run (once, its problems
    named on each of its rows) and :func:`_check_score` on each score. Row by row the score
    checks took a minute for a million rows, so the columns are screened first
    (:func:`_screened_scores`) and only the rows the screen cannot clear, and the rows of runs
    with problems, go through the row-by-row checks that word the problems.
    """
    missing = [c for c in FLAT_COLUMNS if c not in table.columns]
    if missing:
        raise ResultsError([Problem(source, "columns", "error",
                                    f"missing column(s) {missing}; expected {list(FLAT_COLUMNS)}")])
    if table.empty:
        raise ResultsError([Problem(source, "", "error", "the table has no rows")])
    run_columns = ["run_id", "model", "mix", "mix_tasks", "target_task", "seed"]
    if SOURCE_KIND_COLUMN in table.columns:
        run_columns.append(SOURCE_KIND_COLUMN)
    run_of_row, first_rows = _distinct_runs(table[run_columns])
    checked = [_table_run(row, source) for row in _rows(table, run_columns, first_rows)]
    run_ok = np.array([record is not None for record, _ in checked])[run_of_row]
    kept = run_ok & _screened_scores(table)
    problems = _check_unscreened_rows(table, source, kept, checked, run_of_row)
    positions = np.flatnonzero(kept)
    records = [record for record, _ in checked]
    runs_table = _kept_runs(records, run_of_row[positions], table.index[positions], source)
    scores, covariate_problems = _kept_scores(table.iloc[positions], records,
                                              run_of_row[positions], source)
    labels = table.index[positions]
    duplicated = scores.duplicated(["run_id", "language", "metric", "split"], keep="first")
    for position in duplicated.to_numpy().nonzero()[0]:
        duplicate = scores.iloc[position]
        problems.append(Problem(source, f"row {labels[int(position)]}", "error",
                                f"duplicate score for run {duplicate['run_id']!r} language "
                                f"{duplicate['language']!r} metric {duplicate['metric']!r}"))
    problems += _check_duplicates_and_mixes(runs_table)
    problems += outside_xtreme(scores, source)
    return LoadedResults(scores=scores, runs=runs_table, problems=problems, source=source,
                         covariate_problems=covariate_problems)


def _check_unscreened_rows(table: pd.DataFrame, source: str, kept: np.ndarray, checked: list,
                           run_of_row: np.ndarray) -> list[Problem]:
    """Return the problems of the rows the screen did not clear: their runs' and their scores'.

    Those whose run and score are fine after all are kept (set in ``kept``, in place).
    """
    problems: list[Problem] = []
    to_check = np.flatnonzero(~kept)
    score_columns = ["language", "metric", "split", "value", *OPTIONAL_SCORE_KEYS]
    for position, row in zip(to_check, _rows(table, score_columns, to_check), strict=True):
        location = f"row {table.index[int(position)]}"
        record, run_problems = checked[run_of_row[position]]
        problems += [Problem(source, f"{location}, {p.location}", p.severity, p.message)
                     for p in run_problems]
        if record is None:
            continue
        value = row["value"]
        score, score_problems = _check_score(
            {"language": row["language"], "metric": row["metric"], "split": row["split"],
             "value": float(value) if _is_number(value) else value,
             "n_examples": _count(row["n_examples"]),
             "stderr": None if _missing(row["stderr"]) else row["stderr"]},
            source, location, record["target_task"])
        problems += score_problems
        kept[position] = score is not None
    return problems


def _kept_runs(records: list, run_codes_of_kept: np.ndarray, labels: pd.Index, source: str
               ) -> pd.DataFrame:
    """Return one row per run with a kept score, in the order of their first kept rows."""
    runs: dict[tuple, dict] = {}
    run_codes, first_kept = np.unique(run_codes_of_kept, return_index=True)
    for code, first in sorted(zip(run_codes, first_kept, strict=True), key=lambda pair: pair[1]):
        record = records[code]
        # Keyed by the whole run, not its id, so that one run_id given to two runs is reported.
        runs.setdefault(tuple(record[k] for k in RUN_FIELDS),
                        record | {"file": f"{source} (row {labels[int(first)]})"})
    return pd.DataFrame(list(runs.values()), columns=RUN_TABLE_COLUMNS)


def _kept_scores(kept_rows: pd.DataFrame, records: list, run_codes_of_kept: np.ndarray,
                 source: str) -> tuple[pd.DataFrame, dict[str, dict[int, Problem]]]:
    """Return the kept rows as scores, with their runs' fields and covariates.

    Also return the covariates' problems.
    """
    run_codes = np.unique(run_codes_of_kept)
    # The kept rows' runs, one row each (column types inferred as from a folder's runs), then
    # one row per kept score.
    run_fields = pd.DataFrame([{k: records[code][k] for k in RUN_FIELDS} for code in run_codes],
                              columns=RUN_FIELDS)
    run_fields = run_fields.take(np.searchsorted(run_codes, run_codes_of_kept))
    scores = pd.DataFrame({
        **{name: run_fields[name].to_numpy() for name in RUN_FIELDS},
        **{name: kept_rows[name].to_numpy(dtype=object) for name in ("language", "metric", "split")},
        "value": kept_rows["value"].to_numpy(dtype=float),
        "n_examples": (list(map(_count, kept_rows["n_examples"].tolist()))
                       if "n_examples" in kept_rows.columns else [None] * len(kept_rows)),
        "stderr": (pd.to_numeric(kept_rows["stderr"]).to_numpy(dtype=float)
                   if "stderr" in kept_rows.columns else np.full(len(kept_rows), np.nan)),
    }, columns=[*FLAT_COLUMNS, SOURCE_KIND_COLUMN, *OPTIONAL_SCORE_KEYS])
    extra = kept_rows.drop(columns=[*FLAT_COLUMNS, SOURCE_KIND_COLUMN, *OPTIONAL_SCORE_KEYS],
                           errors="ignore")
    covariates, covariate_problems = _covariate_columns(extra, source)
    return pd.concat([scores, covariates], axis=1), covariate_problems


def _distinct_runs(runs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each row's run, numbered in order of appearance, and the first row of each run.

    Rows are one run when they are equal in every run column. Cells of object columns are
    compared by their repr, as the JSON they came from would be: pandas takes 1, 1.0 and True
    for one value (a bool seed is an error), and JSON Lines cells may be lists, which do not
    hash.
    """
    key = np.zeros(len(runs), dtype=np.int64)
    for name in runs.columns:
        column = runs[name]
        if column.dtype == object:
            column = column.map(repr)
        codes, uniques = pd.factorize(column, use_na_sentinel=False)
        key = pd.factorize(key * len(uniques) + codes)[0]
    return key, np.unique(key, return_index=True)[1]


def _rows(table: pd.DataFrame, columns: list[str], positions: np.ndarray) -> list[dict]:
    """Return the rows at ``positions`` as dicts of Python values (absent columns: None).

    Built a column at a time: five times faster than ``DataFrame.to_dict`` on the Arrow-backed
    string columns of pandas 3.
    """
    part = table.iloc[positions]
    values = [part[c].tolist() if c in part.columns else [None] * len(part) for c in columns]
    return [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]


def _count(n_examples: object) -> object:
    """Return a score's ``n_examples`` as :func:`_check_score` takes it.

    None when missing, an integer when a float column holds it (a column with missing values
    is read as floats).
    """
    if _missing(n_examples):
        return None
    if isinstance(n_examples, float) and n_examples.is_integer():
        return int(n_examples)
    return n_examples


def _screened_scores(table: pd.DataFrame) -> np.ndarray:
    """Flag the rows whose score certainly passes :func:`_check_score`, a column at a time.

    False sends a row to :func:`_check_score`, which words its problems or accepts it: the
    screen may send it a good row (a count given as True, say), never clears a bad one
    (tests/test_loading.py holds it to that).
    """
    value = table["value"]
    if pd.api.types.is_numeric_dtype(value) and not pd.api.types.is_bool_dtype(value):
        numbers = value.to_numpy(dtype=float, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            clean = np.isfinite(numbers) & (numbers >= 0) & (numbers <= 100)
    else:
        clean = np.fromiter((_is_number(v) and 0 <= v <= 100 for v in value.tolist()), bool,
                            len(value))
    for name in ("language", "metric", "split"):
        column = table[name]
        if isinstance(column.dtype, pd.StringDtype):
            clean &= (column.notna() & column.ne("")).to_numpy(dtype=bool, na_value=False)
        else:
            clean &= np.fromiter((isinstance(v, str) and v != "" for v in column.tolist()), bool,
                                 len(column))
    if "n_examples" in table.columns:
        clean &= np.fromiter((_countable(v) for v in table["n_examples"].tolist()), bool,
                             len(table))
    if "stderr" in table.columns:
        clean &= np.fromiter((_missing(v) or (_is_number(v) and v >= 0)
                              for v in table["stderr"].tolist()), bool, len(table))
    # A score's language is checked against its target once per distinct pair.
    pairs = table.loc[clean, ["target_task", "language"]].drop_duplicates()
    refused = [(target, language) for target, language in pairs.itertuples(index=False)
               if not _language_of(target, language)]
    if refused:
        clean &= ~pd.MultiIndex.from_frame(table[["target_task", "language"]]).isin(refused)
    return clean


def _countable(n_examples: object) -> bool:
    """Whether a raw ``n_examples`` cell certainly passes: missing or a non-negative integer."""
    count = _count(n_examples)
    return count is None or (type(count) is int and count >= 0)


def _language_of(target: object, language: str) -> bool:
    """Whether ``language`` may be scored on ``target`` (:func:`_check_score`'s rule)."""
    if not isinstance(target, str) or not is_known(target):
        return True
    task = get_task(target)
    return language in task.languages or (is_builtin(task) and is_language_code(language))


def _covariate_columns(extra: pd.DataFrame, source: str
                       ) -> tuple[pd.DataFrame, dict[str, dict[int, Problem]]]:
    """Carry the extra columns of a flat table that hold numbers (possible covariates).

    Returns them as floats and, per column, the rows (by position) whose value is missing or not
    a finite number. A column without any number (notes, host names) is not carried.
    """
    columns: dict[str, object] = {}
    problems: dict[str, dict[int, Problem]] = {}
    for name in extra.columns:
        values = extra[name]
        numbers = pd.to_numeric(values, errors="coerce").astype(float)
        finite = numbers.notna() & numbers.abs().lt(float("inf"))
        if not finite.any():
            continue
        columns[str(name)] = numbers.where(finite).to_numpy()
        problems[str(name)] = {
            position: Problem(source, f"row {label}, column {name}", "error",
                              "missing value" if _missing(value)
                              else f"expected a finite number, got {value!r}")
            for position, (label, value, ok) in enumerate(zip(extra.index, values, finite,
                                                              strict=True)) if not ok}
    return pd.DataFrame(columns), problems


def load_results(results: str | Path | pd.DataFrame, *, strict: bool = True) -> LoadedResults:
    """Load and validate a results folder, a flat table file or a DataFrame in the flat form.

    Parameters
    ----------
    results : str, pathlib.Path or pandas.DataFrame
        A folder of runs (any depth), a ``.csv``, ``.parquet`` or ``.jsonl`` table, or a
        DataFrame with the columns of ``FLAT_COLUMNS`` (and optionally ``n_examples`` and
        ``stderr``). A
        DataFrame is validated like a file; its problems name the file ``DataFrame`` and the row
        by its index label (``row <label>``, for ``df.loc[label]``). A file's rows are numbered
        from 1.
    strict : bool, default True
        Raise :class:`ResultsError` listing every problem when there is any error; warnings
        stay in ``problems``.

    Returns
    -------
    LoadedResults
        The scores of the complete runs, one row per run, and every problem met.

    Examples
    --------
    >>> table = pd.DataFrame({"run_id": ["r1"], "model": ["xlmr"], "mix": ["none"],
    ...                       "mix_tasks": [""], "target_task": ["xnli"], "seed": [1],
    ...                       "language": ["de"], "metric": ["accuracy"], "split": ["test"],
    ...                       "value": [71.5]}, index=["first"])
    >>> load_results(table).scores["value"].tolist()
    [71.5]
    """
    if isinstance(results, pd.DataFrame):
        loaded = _load_table(results, "DataFrame")
    else:
        path = Path(results)
        loaded = load_flat_table(path) if path.is_file() else load_run_folder(path)
    if strict and loaded.errors:
        raise ResultsError(loaded.problems)
    return loaded


def validate_results(results: str | Path | pd.DataFrame) -> list[Problem]:
    """Every problem of a results folder, table or DataFrame, errors and warnings, without raising."""
    try:
        return load_results(results, strict=False).problems
    except ResultsError as error:
        return error.problems
