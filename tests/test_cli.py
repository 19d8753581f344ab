"""The commands as a user types them."""

from __future__ import annotations

import json

from transferstats.cli import main


def test_analyze_writes_the_report_and_prints_the_verdict(small_results, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["analyze", str(small_results), "--out", str(out), "--resamples", "100",
                 "--seed", "3", "--jobs", "1"])
    assert code == 0
    for name in ("report.md", "report.html", "estimates.json"):
        assert (out / name).is_file()
    assert list((out / "figures").glob("*.pdf")) and list((out / "tables").glob("*.tex"))
    estimates = json.loads((out / "estimates.json").read_text())
    assert estimates["settings"]["resamples"] == 100 and estimates["settings"]["seed"] == 3
    assert {e["term"] for e in estimates["effects"]} >= {"diversity", "volume"}
    printed = capsys.readouterr().out
    assert f"verdict: {estimates['verdict']}" in printed
    assert "diversity - volume" in printed


def test_analyze_refuses_bad_input_and_writes_nothing(small_results, tmp_path, capsys):
    run_dir = sorted(small_results.glob("*.xnli.s1"))[3]
    (run_dir / "scores.jsonl").write_text('{"language": "de"}\n')
    out = tmp_path / "report"
    assert main(["analyze", str(small_results), "--out", str(out), "--resamples", "100"]) == 2
    assert not out.exists()
    printed = capsys.readouterr().err
    assert "scores.jsonl:line 1" in printed and "missing required key 'metric'" in printed
    assert "no report was written" in printed


def test_analyze_groups_a_flood_of_problems_and_keeps_the_full_list(small_results, tmp_path, capsys):
    import transferstats as ts

    flat = ts.load_results(small_results).scores
    flat["mix_tasks"] = flat["mix_tasks"].str.replace(r"^[a-z_0-9]+=", "xx=", regex=True)
    table = tmp_path / "flat.csv"
    flat.to_csv(table, index=False)
    full_list = tmp_path / "problems.tsv"
    assert main(["analyze", str(table), "--problems-file", str(full_list)]) == 2
    printed = capsys.readouterr().err
    n_bad = int((flat["mix_tasks"].str.startswith("xx=")).sum())
    assert "unknown task id 'xx'" in printed and f"{n_bad:,} times" in printed
    assert len(printed.splitlines()) < 10
    assert len(full_list.read_text().splitlines()) == n_bad + 1  # a header line, then every problem


def test_analyze_refuses_a_bad_spec(small_results, tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text("[bootstrap]\nresample = 10\n")
    assert main(["analyze", str(small_results), "--spec", str(spec)]) == 2
    assert "unknown key 'resample' in [bootstrap]" in capsys.readouterr().err


def test_validate_lists_problems_and_sets_the_exit_code(small_results, capsys):
    assert main(["validate", str(small_results)]) == 0
    run_dir = sorted(small_results.glob("*.xnli.s1"))[0]
    run = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps(run | {"target_task": "xnl"}))
    assert main(["validate", str(small_results)]) == 1
    printed = capsys.readouterr().out
    assert "unknown task id 'xnl'" in printed and "1 error(s)" in printed


def test_simulate_writes_a_valid_results_folder(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", str(out), "--targets", "xnli,pawsx", "--max-languages", "2",
                 "--diversity-levels", "1,2", "--volume-levels", "1000,4000", "--draws", "1",
                 "--seeds", "1", "--diversity-effect", "3"]) == 0
    truth = json.loads((out / "simulation.json").read_text())
    assert truth["diversity_effect"] == 3.0 and truth["targets"] == ["xnli", "pawsx"]
    assert len(list(out.glob("*/run.json"))) == (4 + 1) * 2
    assert main(["validate", str(out)]) == 0


def test_simulate_a_language_grid_as_a_flat_table(tmp_path):
    import pandas as pd

    out = tmp_path / "languages.csv"
    assert main(["simulate", "--kind", "language", str(out), "--diversity-levels", "1,2",
                 "--volume-levels", "1000,4000", "--draws", "1", "--targets", "xnli",
                 "--max-languages", "2"]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert set(table["source_kind"]) == {"language"} and "none" not in set(table["mix"])
    assert set(table["seed"]) == {1}
    truth = json.loads(out.with_suffix(".simulation.json").read_text())
    assert (truth["kind"], truth["in_mix_effect"], truth["baseline"]) == ("language", 6.0, False)
def test_no_target_mix_reaches_the_analysis_settings():
    import argparse

    from transferstats.commands import analyze

    parser = argparse.ArgumentParser()
    analyze.add_arguments(parser)
    args = parser.parse_args(["results", "--no-target-mix"])
    options = {key: getattr(args, key) for key in analyze.SPEC_OPTIONS
               if getattr(args, key) is not None}
    assert options == {"target_mix": False}
