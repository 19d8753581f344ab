"""The lm-evaluation-harness grid (tests/lm_eval_grid.py): real harness output of 8 tiny random
models, imported by the command line, every score and standard error checked against the files
the harness wrote."""

from __future__ import annotations

import json
import math

import pytest

import transferstats as ts
from lm_eval_grid import LIMIT, MIXES, NO_STDERR_MODEL, OUTPUT, SEEDS, TARGETS, model_name
from transferstats.cli import main

pytestmark = pytest.mark.slow


def _harness_files(results):
    """Each results file the harness wrote, by the folder name of the model it evaluated."""
    files = {}
    for file in sorted((results.parent / OUTPUT).glob("*/results_*.json")):
        document = json.loads(file.read_text(encoding="utf-8"))
        files[document["model_name"].rsplit("/", 1)[-1]] = (file, document)
    return files


def test_every_score_and_standard_error_is_the_harness_s(lm_eval_grid):
    files = _harness_files(lm_eval_grid)
    assert sorted(files) == sorted(model_name(mix, seed) for mix in MIXES for seed in SEEDS)
    loaded = ts.load_results(lm_eval_grid)
    assert loaded.problems == []
    n_languages = sum(len(languages) for _, _, _, languages in TARGETS.values())
    assert len(loaded.runs) == len(files) * len(TARGETS)
    assert len(loaded.scores) == len(files) * n_languages
    checked = 0
    for row in loaded.scores.itertuples():
        mix, seed = row.mix, row.seed
        file, document = files[model_name(mix, seed)]
        prefix, _, split, _ = TARGETS[row.target_task]
        metrics = document["results"][f"{prefix}_{row.language}"]
        assert row.value == pytest.approx(100 * metrics["acc,none"], abs=1e-9)
        assert (row.metric, row.split, row.n_examples) == ("accuracy", split, LIMIT)
        stderr = metrics["acc_stderr,none"]
        if stderr == "N/A":
            assert model_name(mix, seed) == NO_STDERR_MODEL and math.isnan(row.stderr)
        else:
            assert row.stderr == pytest.approx(100 * stderr, abs=1e-9) and row.stderr > 0
        checked += 1
    assert checked == 64
    # The two targets of one harness call sit on different splits, as the harness recorded.
    assert loaded.scores.groupby("target_task")["split"].unique().map(list).to_dict() == {
        "pawsx": ["test"], "xnli": ["validation"]}


def test_the_runs_record_their_mix_and_source(lm_eval_grid):
    files = _harness_files(lm_eval_grid)
    for mix, members in MIXES.items():
        for seed in SEEDS:
            for target in TARGETS:
                run = json.loads((lm_eval_grid / f"tiny.{mix}.{target}.s{seed}" / "run.json")
                                 .read_text(encoding="utf-8"))
                assert run["model"] == "tiny-random-gpt2" and run["seed"] == seed
                assert run["intermediate"] == {"name": mix, "kind": "language",
                                               "tasks": members}
                file, _ = files[model_name(mix, seed)]
                assert run["imported_from"] == {
                    "format": "lm-eval",
                    "files": [file.relative_to(lm_eval_grid.parent / OUTPUT).as_posix()]}
    # lm-eval named each folder after the sanitised model path, not the name selected by.
    assert all(file.parent.name.endswith("__" + name) for name, (file, _) in files.items())
    assert main(["validate", str(lm_eval_grid)]) == 0
