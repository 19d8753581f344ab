"""Loading and validating results: every bad input gets a message naming file, place and what was
expected; nothing is silently dropped."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from transferstats import loading
from transferstats.loading import load_results, validate_results
from transferstats.problems import ResultsError
from transferstats.results import format_mix_tasks, parse_mix_tasks, write_run
from transferstats.tasks import get_task, register_task


def _a_run(results, pattern="*.d2-*.xnli.s1"):
    return sorted(results.glob(pattern))[0]


def _messages(problems):
    return "\n".join(str(p) for p in problems)


def test_loads_a_clean_folder(small_results):
    loaded = load_results(small_results)
    assert loaded.problems == []
    assert loaded.runs["status"].eq("complete").all()
    # 12 mixes + baseline, 3 targets, 2 seeds
    assert len(loaded.runs) == 13 * 3 * 2
    assert set(loaded.scores.columns) >= {"run_id", "model", "mix", "mix_tasks", "target_task", "seed",
                                          "language", "metric", "split", "value"}
    assert (loaded.scores.loc[loaded.scores["mix"] == "none", "mix_tasks"] == "").all()


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(ResultsError, match="no run.json found"):
        load_results(tmp_path)


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(ResultsError, match="no such file or folder"):
        load_results(tmp_path / "absent")


def test_malformed_json_line_names_file_and_line(small_results):
    scores = _a_run(small_results) / "scores.jsonl"
    lines = scores.read_text().splitlines()
    lines[1] = '{"language": "ar", "metric": "accuracy", "split": "test", "value": 7'
    scores.write_text("\n".join(lines) + "\n")
    problems = validate_results(small_results)
    assert len(problems) == 1
    assert problems[0].file == str(scores) and problems[0].location == "line 2"
    assert "malformed JSON" in problems[0].message
    with pytest.raises(ResultsError, match="line 2"):
        load_results(small_results)


def test_malformed_run_json(small_results):
    run_file = _a_run(small_results) / "run.json"
    run_file.write_text('{"run_id": "x",\n "model": }')
    problems = validate_results(small_results)
    assert [p.location for p in problems] == ["line 2"]
    assert problems[0].file == str(run_file)


def test_missing_required_key(small_results):
    run_file = _a_run(small_results) / "run.json"
    run = json.loads(run_file.read_text())
    del run["seed"]
    run_file.write_text(json.dumps(run))
    problems = validate_results(small_results)
    assert [(p.file, p.location) for p in problems] == [(str(run_file), "seed")]
    assert "missing required key 'seed'" in problems[0].message


@pytest.mark.parametrize("value, expected", [("high", "finite number"), (181.0, "percent (0-100)"),
                                             (-1, "percent (0-100)"), (None, "finite number")])
def test_bad_values(small_results, value, expected):
    scores = _a_run(small_results) / "scores.jsonl"
    lines = scores.read_text().splitlines()
    row = json.loads(lines[0])
    row["value"] = value
    lines[0] = json.dumps(row)
    scores.write_text("\n".join(lines) + "\n")
    problems = validate_results(small_results)
    assert [(p.location, p.severity) for p in problems] == [("line 1", "error")]
    assert expected in problems[0].message


def test_unknown_task_ids(small_results):
    run_dir = _a_run(small_results)
    run = json.loads((run_dir / "run.json").read_text())
    run["target_task"] = "xnli2"
    run["intermediate"]["tasks"] = {"mnli": 100, "nosuchtask": 100}
    (run_dir / "run.json").write_text(json.dumps(run))
    problems = validate_results(small_results)
    locations = {p.location: p.message for p in problems}
    assert locations["target_task"] == (
        "unknown task id 'xnli2' (closest known target tasks: 'xnli'); register your own with a "
        "[tasks.xnli2] table in a TOML file given as --tasks FILE.toml (docs/tasks.md)")
    assert locations["intermediate.tasks.nosuchtask"].startswith(
        "unknown task id 'nosuchtask' (known intermediate tasks: anli, ccg, ")


def test_a_language_code_outside_xtremes_list_is_one_warning(small_results):
    """A built-in target takes valid ISO 639 codes beyond XTREME's list, with one warning naming
    them; a string that is no language code stays an error naming its file and line."""
    for run, codes in ((_a_run(small_results), ("ja", "gsw")),
                       (_a_run(small_results, "*.d4-*.xnli.s1"), ("ja", "yue"))):
        with (run / "scores.jsonl").open("a") as handle:
            for code in codes:
                handle.write(json.dumps({"language": code, "metric": "accuracy",
                                         "split": "test", "value": 50}) + "\n")
    loaded = load_results(small_results)
    assert [p.severity for p in loaded.problems] == ["warning"]
    assert "xnli: gsw, ja, yue" in loaded.problems[0].message
    assert {"ja", "gsw", "yue"} <= set(loaded.scores["language"])
    scores = _a_run(small_results) / "scores.jsonl"
    with scores.open("a") as handle:
        handle.write(json.dumps({"language": "xx", "metric": "accuracy", "split": "test",
                                 "value": 50}) + "\n")
    line = len(scores.read_text().splitlines())
    errors = [p for p in validate_results(small_results) if p.severity == "error"]
    assert [(p.file, p.location) for p in errors] == [(str(scores), f"line {line}")]
    assert "'xx' is not a language of xnli (expected an ISO 639 language code" in errors[0].message
    assert errors[0].message.endswith("any code of the IANA registry is taken)")


def test_a_target_with_its_own_language_list_is_strict(small_results):
    """Users who want strictness register the target with its own languages."""
    scores = _a_run(small_results) / "scores.jsonl"
    with scores.open("a") as handle:
        handle.write(json.dumps({"language": "ja", "metric": "accuracy", "split": "test",
                                 "value": 50}) + "\n")
    builtin = get_task("xnli")
    register_task(replace(builtin, languages=("en", "ar", "de")), replace=True)
    try:
        problems = validate_results(small_results)
    finally:
        register_task(builtin, replace=True)
    assert [p.message for p in problems if "'ja'" in p.message] == [
        "language 'ja' is not a language of xnli (expected one of en, ar, de, the languages xnli "
        "was registered with (docs/tasks.md))"]


@pytest.mark.parametrize(("written", "meant"), [("deu", "de"), ("DE", "de"), ("pt-BR", "pt"),
                                                ("German", "de")])
def test_a_language_in_another_spelling_is_answered_with_its_code(small_results, written, meant):
    scores = _a_run(small_results) / "scores.jsonl"
    with scores.open("a") as handle:
        handle.write(json.dumps({"language": written, "metric": "accuracy", "split": "test",
                                 "value": 50}) + "\n")
    (problem,) = validate_results(small_results)
    assert problem.message == (
        f"language {written!r} is not a language of xnli (expected an ISO 639 language code such "
        f"as {', '.join(get_task('xnli').languages[:5])}; any code of the IANA registry is "
        f"taken); did you mean {meant!r}?")


def test_duplicate_runs_are_refused(small_results):
    original = _a_run(small_results)
    shutil.copytree(original, small_results / "rerun" / original.name)
    problems = validate_results(small_results)
    assert any("duplicate run" in p.message and p.severity == "error" for p in problems)


def test_duplicate_score_lines(small_results):
    scores = _a_run(small_results) / "scores.jsonl"
    first = scores.read_text().splitlines()[0]
    with scores.open("a") as handle:
        handle.write(first + "\n")
    problems = validate_results(small_results)
    assert len(problems) == 1 and "duplicate score" in problems[0].message


def test_same_mix_name_with_two_compositions(small_results):
    run_dir = _a_run(small_results)
    run = json.loads((run_dir / "run.json").read_text())
    run["intermediate"]["tasks"] = {task: count + 1 for task, count in run["intermediate"]["tasks"].items()}
    (run_dir / "run.json").write_text(json.dumps(run))
    problems = validate_results(small_results)
    assert any("different task compositions" in p.message for p in problems)


def test_failed_runs_are_warnings_and_left_out(small_results):
    run_dir = _a_run(small_results)
    run = json.loads((run_dir / "run.json").read_text())
    write_run(run_dir, run | {"status": "failed", "error": "CUDA out of memory"})
    loaded = load_results(small_results)
    assert not loaded.errors
    assert [p.severity for p in loaded.problems] == ["warning"]
    assert "CUDA out of memory" in loaded.problems[0].message
    assert run["run_id"] not in set(loaded.scores["run_id"])
    assert run["run_id"] in set(loaded.runs["run_id"])


def test_orphan_scores_are_reported(small_results):
    run_dir = _a_run(small_results)
    (run_dir / "run.json").unlink()
    problems = validate_results(small_results)
    assert [p.severity for p in problems] == ["warning"]
    assert "interrupted" in problems[0].message


def test_complete_run_without_scores(small_results):
    run_dir = _a_run(small_results)
    (run_dir / "scores.jsonl").unlink()
    problems = validate_results(small_results)
    assert [p.severity for p in problems] == ["error"]
    assert problems[0].file.endswith("scores.jsonl")


def test_hidden_folders_are_not_runs(small_results):
    hidden = small_results / ".encoders" / "x"
    hidden.mkdir(parents=True)
    (hidden / "run.json").write_text("not json")
    assert validate_results(small_results) == []


def test_every_problem_is_listed_not_just_the_first(small_results):
    runs = sorted(small_results.glob("*.xnli.s1"))[:3]
    for run_dir in runs:
        (run_dir / "scores.jsonl").write_text("oops\n")
    problems = validate_results(small_results)
    assert len(problems) == 3


def test_mix_tasks_round_trip():
    tasks = {"squad_v1": 20000, "mnli": 20000}
    assert format_mix_tasks(tasks) == "mnli=20000+squad_v1=20000"
    assert parse_mix_tasks(format_mix_tasks(tasks)) == tasks
    assert parse_mix_tasks("") == {}
    with pytest.raises(ValueError, match="task=examples"):
        parse_mix_tasks("mnli:20000")
    with pytest.raises(ValueError, match="positive"):
        parse_mix_tasks("mnli=0")


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_flat_tables_load_like_folders(small_results, tmp_path, suffix):
    folder = load_results(small_results)
    table = folder.scores.drop(columns="n_examples")
    path = tmp_path / f"flat{suffix}"
    if suffix == ".csv":
        table.to_csv(path, index=False)
    elif suffix == ".parquet":
        table.to_parquet(path)
    else:
        table.to_json(path, orient="records", lines=True)
    flat = load_results(path)
    assert flat.problems == []
    key = ["run_id", "language", "metric"]
    pd.testing.assert_frame_equal(
        flat.scores.drop(columns="n_examples").sort_values(key).reset_index(drop=True),
        table.sort_values(key).reset_index(drop=True), check_dtype=False)


def test_flat_table_errors_name_the_row(small_results, tmp_path):
    table = load_results(small_results).scores.drop(columns="n_examples")
    table["value"] = table["value"].astype(object)
    table.loc[4, "value"] = "n/a"
    table.loc[6, "target_task"] = "nosuch"
    path = tmp_path / "flat.csv"
    table.to_csv(path, index=False)
    problems = validate_results(path)
    located = {p.location.split(",")[0]: p.message for p in problems}
    assert "finite number" in located["row 5"]
    assert "unknown task id 'nosuch'" in located["row 7"]


def test_flat_table_missing_columns(tmp_path):
    path = tmp_path / "flat.csv"
    pd.DataFrame({"run_id": ["a"], "value": [1.0]}).to_csv(path, index=False)
    with pytest.raises(ResultsError, match="missing column"):
        load_results(path)


def test_registered_tasks_are_accepted(small_results, tmp_path):
    from transferstats.tasks import load_task_file

    run_dir = _a_run(small_results)
    run = json.loads((run_dir / "run.json").read_text())
    run["intermediate"]["tasks"] = {"my_nli_task": 5000}
    run["intermediate"]["name"] = "custom"
    (run_dir / "run.json").write_text(json.dumps(run))
    assert any("my_nli_task" in p.message for p in validate_results(small_results))
    spec = tmp_path / "tasks.toml"
    spec.write_text('[tasks.my_nli_task]\nrole = "intermediate"\nformat = "classification"\n'
                    'metric = "accuracy"\nnum_labels = 3\n')
    load_task_file(spec)
    assert validate_results(small_results) == []


def _flat(results) -> pd.DataFrame:
    return load_results(results).scores.drop(columns="n_examples")


def test_a_dataframe_names_its_bad_row_by_index_label(small_results):
    table = _flat(small_results)
    table.index = [f"score-{i}" for i in range(len(table))]
    table["value"] = table["value"].astype(object)
    table.loc["score-4", "value"] = "n/a"
    problems = validate_results(table)
    assert [(p.file, p.location, p.severity) for p in problems] == [("DataFrame", "row score-4", "error")]
    assert "finite number" in problems[0].message
    with pytest.raises(ResultsError, match="row score-4"):
        load_results(table)


def test_a_dataframe_loads_like_its_csv(small_results, tmp_path):
    table = _flat(small_results)
    table.loc[3, "target_task"] = "nosuch"
    table.loc[8, "language"] = "xx"
    table.loc[11, "mix_tasks"] = "mnli:100"
    path = tmp_path / "flat.csv"
    table.to_csv(path, index=False)
    from_frame, from_file = load_results(table, strict=False), load_results(path, strict=False)
    pd.testing.assert_frame_equal(from_frame.scores, from_file.scores, check_dtype=False)
    assert len(from_frame.scores) == len(table) - 3
    assert [p.message for p in from_frame.problems] == [p.message for p in from_file.problems]
    # The frame's index starts at 0, a file's rows at 1.
    assert [p.location for p in from_frame.problems][:3] == ["row 3, target_task", "row 8",
                                                            "row 11, column mix_tasks"]
    assert [p.location for p in from_file.problems][:3] == ["row 4, target_task", "row 9",
                                                           "row 12, column mix_tasks"]
    assert {p.file for p in from_frame.problems} == {"DataFrame"}


def test_a_dataframe_with_n_examples_keeps_them(small_results):
    table = _flat(small_results)
    # Missing counts make the column float, as reading a file would.
    table["n_examples"] = [2000.0 if i % 2 else None for i in range(len(table))]
    loaded = load_results(table)
    assert loaded.problems == []
    pd.testing.assert_series_equal(loaded.scores["n_examples"], table["n_examples"])
    table.loc[0, "n_examples"] = -3.0
    assert [p.location for p in validate_results(table)] == ["row 0"]


def test_standard_errors_are_kept_from_folders_and_tables(small_results, tmp_path):
    """``stderr`` is optional per score: kept where given, NaN where missing or null."""
    scores_file = _a_run(small_results) / "scores.jsonl"
    rows = [json.loads(line) for line in scores_file.read_text().splitlines()]
    rows[0]["stderr"], rows[1]["stderr"] = 1.25, None
    scores_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    loaded = load_results(small_results)
    assert loaded.problems == [] and loaded.scores["stderr"].dtype == float
    run_id = _a_run(small_results).name
    of_run = loaded.scores[loaded.scores["run_id"] == run_id].set_index("language")["stderr"]
    assert of_run[rows[0]["language"]] == 1.25 and of_run.drop(rows[0]["language"]).isna().all()
    assert loaded.scores["stderr"].notna().sum() == 1
    table = loaded.scores.drop(columns="n_examples")
    table.to_csv(tmp_path / "flat.csv", index=False)
    pd.testing.assert_series_equal(load_results(tmp_path / "flat.csv").scores["stderr"],
                                   loaded.scores["stderr"])


@pytest.mark.parametrize("stderr", [-0.5, "0.3", True, float("inf")])
def test_a_bad_standard_error_is_named(small_results, stderr):
    scores_file = _a_run(small_results) / "scores.jsonl"
    lines = scores_file.read_text().splitlines()
    lines[2] = json.dumps(json.loads(lines[2]) | {"stderr": stderr}, allow_nan=True)
    scores_file.write_text("\n".join(lines) + "\n")
    problems = validate_results(small_results)
    assert [(p.file, p.location, p.message) for p in problems] == [
        (str(scores_file), "line 3", "'stderr' must be a non-negative number (the score's "
                                     f"standard error, in percent) or null, got {stderr!r}")]


def test_flat_duplicate_score_names_its_own_row(small_results):
    table = _flat(small_results)
    table.loc[0, "value"] = 500.0  # left out, so the rows after it shift in the scores
    table = pd.concat([table, table.iloc[[5]]], ignore_index=True)
    problems = validate_results(table)
    assert [p.location for p in problems] == ["row 0", f"row {len(table) - 1}"]
    assert "duplicate score" in problems[1].message


def test_flat_run_id_of_two_runs_is_refused(small_results):
    table = _flat(small_results)
    first = table["run_id"] == table.at[0, "run_id"]
    other = table.loc[~first, "run_id"].iloc[0]
    table.loc[table["run_id"] == other, "run_id"] = table.at[0, "run_id"]
    problems = validate_results(table)
    assert any(f"run_id {table.at[0, 'run_id']!r} is used by 2 different runs" in p.message
               for p in problems)


def test_each_distinct_run_of_a_table_is_checked_once(monkeypatch):
    """The same unknown tasks in every row: checked once per run, reported once per row."""
    codes = "+".join(f"{code}=1000" for code in ("de", "fr", "es", "ru", "zh", "ar", "hi"))
    runs, languages = 500, ("de", "fr", "es", "ru", "zh", "ar", "hi")
    table = pd.DataFrame({
        "run_id": [f"r{i // len(languages)}" for i in range(runs * len(languages))],
        "model": "xlmr", "mix": "langs", "mix_tasks": codes, "target_task": "xnli",
        "seed": [i // len(languages) for i in range(runs * len(languages))],
        "language": list(languages) * runs, "metric": "accuracy", "split": "test", "value": 50.0})
    calls = []
    check_run = loading._check_run
    monkeypatch.setattr(loading, "_check_run", lambda *args: calls.append(1) or check_run(*args))
    problems = validate_results(table)
    assert len(calls) == runs
    assert len(problems) == len(table) * len(languages)
    assert problems[-1].location == f"row {len(table) - 1}, intermediate.tasks.hi"


def _screened_table(typed: bool, rows: int = 600) -> pd.DataFrame:
    """One-score runs of XNLI whose score cells are good (90%) or drawn from bad values (the
    missing, the out-of-range, the wrong type), so that most bad rows have one bad cell.
    ``typed`` gives each score column one dtype (floats, strings), as a CSV would."""
    rng = np.random.default_rng(7 if typed else 8)
    if typed:  # (good values, bad values)
        pools = {"value": ([50.0, 0.0, 100.0], [101.0, -0.5, np.nan, np.inf]),
                 "language": (["de", "fr", "nl"], ["", np.nan, "xq", "l001"]),
                 "metric": (["accuracy"], ["", np.nan]), "split": (["test"], [""]),
                 "n_examples": ([100.0, 0.0, np.nan], [2.5, -1.0]),
                 "stderr": ([0.5, 0.0, np.nan], [-0.1, np.inf])}
    else:
        pools = {"value": ([50.0, 0, 100, np.float64(7.5)],
                           [101.0, -0.5, np.nan, np.inf, None, "50", True, np.int64(5)]),
                 "language": (["de", "fr", "nl"], ["", None, 5, "xq", "l001"]),
                 "metric": (["accuracy"], ["", None, 1.0]), "split": (["test"], ["", None]),
                 "n_examples": ([100, 100.0, None, np.nan, True], [2.5, -1, "7", np.int64(3)]),
                 "stderr": ([0.5, 0, None, np.nan, np.float64(1.5)], [-1, "0.5", True, np.inf])}

    def cell(good: list, bad: list) -> object:
        values = good if rng.random() < 0.9 else bad
        return values[rng.integers(len(values))]

    cells = {name: [cell(*pool) for _ in range(rows)] for name, pool in pools.items()}
    table = pd.DataFrame({"run_id": [f"r{i}" for i in range(rows)], "model": "xlmr",
                          "mix": "m", "mix_tasks": "mnli=1000", "target_task": "xnli",
                          "seed": range(rows),
                          **{name: pd.Series(values, dtype=float if name in ("value", "n_examples")
                                             else "str") if typed and name != "stderr"
                             else pd.Series(values, dtype=float if typed else object)
                             for name, values in cells.items()}})
    assert table["value"].dtype == (float if typed else object)
    return table


@pytest.mark.parametrize("typed", [True, False])
def test_the_column_screen_refuses_every_bad_score_with_its_words(typed):
    """The table loader screens the score columns before checking rows one by one: each row
    must get exactly the problems that the row-by-row check (_check_score) gives it."""
    table = _screened_table(typed)
    expected = []
    for label, row in table.iterrows():
        value = row["value"]
        expected += loading._check_score(
            {"language": row["language"], "metric": row["metric"], "split": row["split"],
             "value": float(value) if loading._is_number(value) else value,
             "n_examples": loading._count(row["n_examples"]),
             "stderr": None if loading._missing(row["stderr"]) else row["stderr"]},
            "DataFrame", f"row {label}", "xnli")[1]
    assert 0.2 < len({p.location for p in expected}) / len(table) < 0.6
    problems = [p for p in validate_results(table) if p.severity == "error"]
    assert problems == expected
    clean = [label for label in table.index if not any(p.location == f"row {label}"
                                                       for p in expected)]
    loaded = load_results(table.loc[clean])
    assert loaded.scores["run_id"].tolist() == table.loc[clean, "run_id"].tolist()


# ---------------------------------------------------------------- mixes of languages

def test_a_language_mix_table_loads_without_registration(tmp_path, language_table):
    table = language_table
    path = tmp_path / "languages.csv"
    table.to_csv(path, index=False)
    loaded = load_results(path)
    assert loaded.problems == []
    assert set(loaded.scores["source_kind"]) == {"language"}
    assert set(loaded.runs["source_kind"]) == {"language"}


def test_an_unknown_language_code_is_named_with_its_row(tmp_path, language_table):
    table = language_table
    bad = table["mix_tasks"].iloc[0]
    table.loc[table["mix_tasks"] == bad, "mix_tasks"] = "xyz=1000"
    path = tmp_path / "languages.csv"
    table.to_csv(path, index=False)
    problems = validate_results(path)
    assert str(problems[0]) == (
        f"error: {path}:row 1, intermediate.tasks.xyz: unknown language code 'xyz': expected an "
        "ISO 639 code of the IANA registry, such as 'de', 'sw' or 'yue' (lowercase, the two-letter "
            "code where one exists, no region or script)")


def test_a_bad_source_kind_is_named(tmp_path, language_table):
    table = language_table
    table.loc[2, "source_kind"] = "languages"
    path = tmp_path / "languages.csv"
    table.to_csv(path, index=False)
    problems = validate_results(path)
    assert [(p.location, p.message) for p in problems] == [
        ("row 3, column source_kind",
         "expected one of 'task', 'language' (or empty: 'task'), got 'languages'")]


def test_run_json_kind_is_checked_and_language_codes_with_it(small_results):
    run_dir = _a_run(small_results)
    run = json.loads((run_dir / "run.json").read_text())
    run["intermediate"] |= {"kind": "language", "tasks": {"de": 100, "en-US": 100}}
    (run_dir / "run.json").write_text(json.dumps(run))
    problems = validate_results(small_results)
    located = {p.location: p for p in problems}
    assert located["intermediate.tasks.en-US"].file == str(run_dir / "run.json")
    assert "unknown language code 'en-US'" in located["intermediate.tasks.en-US"].message
    run["intermediate"] |= {"kind": "dialect"}
    (run_dir / "run.json").write_text(json.dumps(run))
    located = {p.location: p.message for p in validate_results(small_results)}
    assert located["intermediate.kind"] == "expected one of 'task', 'language', got 'dialect'"


def test_task_and_language_mixes_are_not_analysed_together(small_results):
    run_dir = _a_run(small_results)
    run = json.loads((run_dir / "run.json").read_text())
    run["intermediate"] = {"name": "de-sw", "kind": "language", "tasks": {"de": 100, "sw": 100}}
    (run_dir / "run.json").write_text(json.dumps(run))
    problems = validate_results(small_results)
    assert len(problems) == 1 and problems[0].location == "intermediate.kind"
    assert "the results hold mixes of tasks and mixes of languages" in problems[0].message
