"""The diversity-by-volume generator: exact budgets, low correlations, balance, determinism; and
``plan`` on every shipped grid."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import pytest

from transferstats.cli import main
from transferstats.grid.factorial import (
    INTERMEDIATE_TRAIN_SIZES,
    allocate_volume,
    diversity_volume_correlation,
    factorial_mixes,
    mix_volume,
    task_frequencies,
    task_volume_correlations,
)
from transferstats.grid.spec import load_grid

RUNNERS = Path(__file__).resolve().parents[2] / "runners"


@pytest.fixture(scope="module")
def shipped():
    return load_grid(RUNNERS / "diversity_volume.toml")


def test_shipped_design_has_no_diversity_volume_correlation(shipped):
    assert abs(diversity_volume_correlation(shipped.mixes)) < 0.05


def test_every_mix_hits_its_volume_budget_exactly(shipped):
    spec = shipped.factorial
    assert len(shipped.mixes) == len(spec.diversity) * len(spec.volume) * spec.draws
    for mix in shipped.mixes:
        diversity, volume = re.match(r"d(\d+)-v(\d+)k-r\d+", mix.name).groups()
        assert len(mix.tasks) == int(diversity)
        assert mix_volume(mix) == int(volume) * 1000
        for task, count in mix.tasks.items():
            assert 0 < count <= INTERMEDIATE_TRAIN_SIZES[task]


def test_task_identity_is_balanced_across_diversity_and_volume(shipped):
    spec = shipped.factorial
    frequencies = task_frequencies(shipped.mixes)
    for level in spec.diversity:
        counts = [frequencies.get(task, {}).get(level, 0) for task in spec.tasks]
        assert max(counts) - min(counts) <= 1, (level, counts)
    for task, r in task_volume_correlations(shipped.mixes).items():
        assert abs(r) < 0.15, (task, r)
    for level in spec.diversity:  # the draws of a cell are distinct task sets
        for volume in spec.volume:
            cell = [frozenset(m.tasks) for m in shipped.mixes
                    if len(m.tasks) == level and mix_volume(m) == volume]
            assert len(set(cell)) == len(cell) == spec.draws


def test_generator_is_deterministic_for_a_seed(shipped):
    spec = shipped.factorial
    assert factorial_mixes(spec) == factorial_mixes(spec) == shipped.mixes
    assert factorial_mixes(replace(spec, seed=1)) != shipped.mixes


def test_shortfall_is_redistributed_to_the_other_tasks():
    sizes = {"commonsenseqa": 9_741, "cosmosqa": 25_262, "mnli": 392_702}
    allocation = allocate_volume(["commonsenseqa", "cosmosqa", "mnli"], 90_000, sizes)
    assert allocation == {"commonsenseqa": 9_741, "cosmosqa": 25_262, "mnli": 54_997}
    even = allocate_volume(["cosmosqa", "mnli"], 10_001, sizes)
    assert even == {"cosmosqa": 5_001, "mnli": 5_000}
    unbounded = allocate_volume(["commonsenseqa", "mine"], 30_000,
                                {"commonsenseqa": 9_741, "mine": None})
    assert unbounded == {"commonsenseqa": 9_741, "mine": 20_259}


def test_impossible_allocation_is_refused():
    with pytest.raises(ValueError, match="hold only"):
        allocate_volume(["commonsenseqa", "cosmosqa"], 40_000,
                        {"commonsenseqa": 9_741, "cosmosqa": 25_262})


def _plan_output(name, capsys) -> str:
    assert main(["plan", str(RUNNERS / f"{name}.toml")]) == 0
    return " ".join(capsys.readouterr().out.split())


def test_plan_smoke(capsys):
    out = _plan_output("smoke", capsys)
    assert "6 intermediate trainings, 32 target trainings (8 baselines)" in out
    assert "r = +0.000" in out
    assert "estimated GPU hours" in out and "200 training examples/s" in out


def test_plan_phang2020(capsys):
    out = _plan_output("phang2020", capsys)
    assert "30 intermediate trainings, 297 target trainings (27 baselines)" in out
    for task in ["anli", "mnli", "qqp", "squad_v1", "squad_v2", "hellaswag", "commonsenseqa",
                 "cosmosqa", "ccg"]:
        assert f"│ {task} " in out
    assert "multitask" in out and "1,250,254" in out
    assert "60 training examples/s" in out
    assert "diversity-volume correlation: r = +0.600" in out


def test_plan_diversity_volume(capsys):
    out = _plan_output("diversity_volume", capsys)
    assert "108 intermediate trainings, 999 target trainings (27 baselines)" in out
    assert "diversity-volume correlation: r = +0.000" in out
    assert "Task appearances by number of tasks in the mix" in out
    hours = float(re.search(r"estimated GPU hours: ([\d,.]+)", out).group(1).replace(",", ""))
    assert math.isfinite(hours) and hours > 100


def test_plan_names_a_single_source_grid(tmp_path, capsys):
    path = tmp_path / "single_source.toml"
    path.write_text('model = "xlm-roberta-large"\ntargets = ["xnli"]\nseeds = [1]\n' + "".join(
        f'[[mixes]]\nname = "mnli-{n}"\ntasks = {{mnli = {n}}}\n' for n in (1000, 2000, 4000)))
    assert main(["plan", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "r = undefined (only volume varies)" in out
    assert "analyze will estimate the volume effect (verdict volume_only)" in out
