"""Problems in bulk: grouped into kinds for people, every one kept in a file."""

from __future__ import annotations

import pandas as pd
import pytest
from rich.console import Console

from transferstats.cli import main
from transferstats.problems import Problem, ResultsError, group_problems, print_problems, write_problems
from transferstats.report.tables import problems_table

UNKNOWN = "unknown task id {!r}; register it first"


def _flood(rows: int = 1000) -> list[Problem]:
    """What a table whose mix_tasks hold language codes gives: each code unknown, in every row."""
    return [Problem("flat.csv", f"row {row}, intermediate.tasks.{code}", "error", UNKNOWN.format(code))
            for row in range(1, rows + 1) for code in ("de", "fr", "sw")]


def _flood_table(rows: int = 300) -> pd.DataFrame:
    return pd.DataFrame({
        "run_id": [f"r{row // 3}" for row in range(rows)], "model": "xlmr", "mix": "langs",
        "mix_tasks": "de=1000+fr=1000+sw=1000", "target_task": "xnli",
        "seed": [row // 3 for row in range(rows)], "language": ["de", "fr", "ar"] * (rows // 3),
        "metric": "accuracy", "split": "test", "value": 50.0})


def test_identical_problems_are_one_row_each_with_their_count():
    problems = _flood() + [Problem("flat.csv", "row 7, value", "warning", "odd but usable")]
    grouped = group_problems(problems)
    assert grouped.columns.tolist() == ["severity", "message", "count", "first_locations"]
    assert grouped["message"].tolist() == [UNKNOWN.format(code) for code in ("de", "fr", "sw")] + [
        "odd but usable"]
    assert grouped["count"].tolist() == [1000, 1000, 1000, 1]
    assert grouped["first_locations"].iloc[1] == ("flat.csv:row 1, intermediate.tasks.fr; "
                                                  "flat.csv:row 2, intermediate.tasks.fr; "
                                                  "flat.csv:row 3, intermediate.tasks.fr")


def test_errors_come_before_warnings_then_the_most_frequent():
    problems = ([Problem("a", "", "warning", "left out")] * 5 + [Problem("b", "", "error", "rare")]
                + [Problem("c", "", "error", "common")] * 3)
    grouped = group_problems(problems)
    assert grouped[["severity", "message", "count"]].values.tolist() == [
        ["error", "common", 3], ["error", "rare", 1], ["warning", "left out", 5]]


def test_row_specific_values_fold_into_one_kind_keeping_what_they_share():
    problems = [Problem("t.csv", f"row {row}", "error",
                        f"'value' must be in percent (0-100), got {100 + row / 10}")
                for row in range(1, 501)]
    grouped = group_problems(problems)
    assert len(grouped) == 1 and grouped["count"].iloc[0] == 500
    assert grouped["message"].iloc[0] == ("'value' must be in percent (0-100), "
                                          "got [100.1, 100.2, 100.3, …]")


def test_a_few_different_messages_stay_apart():
    problems = [Problem("t.csv", "row 1", "error", "'value' must be in percent (0-100), got 181.0"),
                Problem("t.csv", "row 2", "error", "'value' must be in percent (0-100), got -1")]
    assert group_problems(problems)["message"].tolist() == [p.message for p in problems]


def test_print_problems_is_short_and_the_file_has_every_problem(tmp_path):
    problems = _flood()
    console = Console(record=True, width=100)
    path = print_problems(problems, console, full_list=tmp_path / "all.tsv")
    lines = console.export_text().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("error: unknown task id 'de'; register it first (1,000 times; "
                               "first at flat.csv: row 1, intermediate.tasks.de;")
    assert lines[-1] == f"all 3,000 problem(s), one per line: {path}"
    written = pd.read_csv(path, sep="\t", keep_default_na=False)
    assert written.columns.tolist() == ["severity", "file", "location", "message"]
    assert [Problem(r.file, r.location, r.severity, r.message) for r in written.itertuples()] == problems


def test_print_problems_counts_the_kinds_it_leaves_out(tmp_path):
    problems = [Problem("t.csv", f"row {row}", "error", f"no such task 't{row}'") for row in range(5)] * 2
    console = Console(record=True, width=200)
    print_problems(problems, console, limit=2, full_list=tmp_path / "all.tsv")
    lines = console.export_text().splitlines()
    assert lines[2] == "… and 3 more kind(s) of problem (6 problem(s))"
    assert len(pd.read_csv(tmp_path / "all.tsv", sep="\t")) == 10


def test_print_problems_writes_nothing_when_each_problem_has_its_line(tmp_path):
    problems = [Problem("a/run.json", "seed", "error", "missing required key 'seed'"),
                Problem("b/scores.jsonl", "line 2", "error", "malformed JSON")]
    console = Console(record=True, width=200)
    assert print_problems(problems, console, full_list=tmp_path / "all.tsv") is None
    assert console.export_text().splitlines() == [str(p) for p in problems]
    assert not (tmp_path / "all.tsv").exists()


def test_write_problems_keeps_tabs_and_newlines_in_messages(tmp_path):
    problems = [Problem("x.csv", "row 1", "error", "a\ttab"), Problem("y", "", "warning", "two\nlines")]
    for name, sep in (("p.tsv", "\t"), ("p.csv", ",")):
        written = pd.read_csv(write_problems(problems, tmp_path / "sub" / name), sep=sep,
                              keep_default_na=False)
        assert written["message"].tolist() == ["a\ttab", "two\nlines"]
        assert written["location"].tolist() == ["row 1", ""]


def test_results_error_message_is_grouped_but_keeps_every_problem():
    problems = _flood(5000)
    error = ResultsError(problems)
    assert error.problems == problems
    assert str(error).splitlines()[0] == "15000 error(s) in the results:"
    assert len(str(error).splitlines()) == 4


def test_report_problems_table_groups(tmp_path):
    problems = pd.DataFrame([vars(p) for p in _flood(2000)])
    frame = problems_table(problems).frame
    assert frame.columns.tolist() == ["Severity", "Message", "Count", "First locations"]
    assert frame["Count"].tolist() == ["2,000"] * 3


def _validate(capsys, *args) -> tuple[int, list[str]]:
    code = main(["validate", *map(str, args)])
    return code, capsys.readouterr().out.splitlines()


def test_validate_groups_and_writes_the_full_list(capsys, tmp_path, monkeypatch):
    table = tmp_path / "flat.csv"
    _flood_table().to_csv(table, index=False)
    monkeypatch.chdir(tmp_path)
    code, lines = _validate(capsys, table)
    assert code == 1
    assert len(lines) == 5
    assert lines[0].startswith("error: unknown task id 'de' (known intermediate tasks: ")
    assert f"(300 times; first at {table}: row 1, intermediate.tasks.de; row 2," in lines[0]
    assert lines[-2] == "all 900 problem(s), one per line: transferstats-problems.tsv"
    assert lines[-1] == "0 run(s) read; 900 error(s), 0 warning(s)"
    assert len(pd.read_csv(tmp_path / "transferstats-problems.tsv", sep="\t")) == 900

    code, lines = _validate(capsys, table, "--all", "--problems-file", tmp_path / "other.csv")
    assert code == 1
    assert len(lines) == 901
    assert lines[0].startswith(f"error: {table}:row 1, intermediate.tasks.de: unknown task id 'de' ")
    assert not (tmp_path / "other.csv").exists()


def test_validate_problems_file_option(capsys, tmp_path):
    table = tmp_path / "flat.csv"
    _flood_table().to_csv(table, index=False)
    _, lines = _validate(capsys, table, "--problems-file", tmp_path / "out" / "problems.csv")
    assert lines[-2].endswith(str(tmp_path / "out" / "problems.csv"))
    assert len(pd.read_csv(tmp_path / "out" / "problems.csv")) == 900


@pytest.mark.parametrize("flag", [[], ["--all"]])
def test_validate_clean_results(capsys, small_results, flag):
    code, lines = _validate(capsys, small_results, *flag)
    assert code == 0 and lines == ["78 run(s) read; 0 error(s), 0 warning(s)"]
