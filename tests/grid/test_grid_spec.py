"""Every bad grid specification is refused with the key and the reason; good ones parse."""

from __future__ import annotations

import copy

import pytest

from transferstats.cli import main
from transferstats.grid.expand import expand_grid
from transferstats.grid.factorial import INTERMEDIATE_TRAIN_SIZES
from transferstats.grid.spec import SpecError, grid_from_dict, load_grid
from transferstats.tasks import is_known

VALID = {
    "model": "xlm-roberta-large",
    "targets": ["xnli", "pawsx"],
    "seeds": [1, 2],
    "mixes": [{"name": "mnli-squad_v1", "tasks": {"mnli": 20000, "squad_v1": 20000}}],
}


def _with(change):
    document = copy.deepcopy(VALID)
    change(document)
    return document


def _factorial(**overrides):
    table = {"diversity": [1, 2], "volume": [10000, 40000], "draws": 2,
             "tasks": ["mnli", "qqp", "ccg", "commonsenseqa"], "seed": 0}
    return lambda d: d.update(factorial={**table, **overrides})


BAD = [
    ("unknown top-level key", lambda d: d.update(modle="x"), "modle", "unknown key"),
    ("missing model", lambda d: d.pop("model"), "model", "missing"),
    ("missing seeds", lambda d: d.pop("seeds"), "seeds", "missing"),
    ("unknown target", lambda d: d.update(targets=["xnli", "xnlii"]), "targets[1]",
     "unknown task id"),
    ("intermediate task as target", lambda d: d.update(targets=["mnli"]), "targets[0]",
     "target task needed"),
    ("empty targets", lambda d: d.update(targets=[]), "targets", "non-empty"),
    ("duplicate targets", lambda d: d.update(targets=["xnli", "xnli"]), "targets", "duplicates"),
    ("seed not an integer", lambda d: d.update(seeds=[1, "2"]), "seeds[1]", "integer"),
    ("unknown intermediate task", lambda d: d["mixes"][0]["tasks"].update(mlni=10),
     "mixes[0].tasks.mlni", "unknown task id"),
    ("target task in a mix", lambda d: d["mixes"][0]["tasks"].update(xnli=10),
     "mixes[0].tasks.xnli", "intermediate task needed"),
    ("unknown mix key", lambda d: d["mixes"][0].update(weight=2), "mixes[0].weight",
     "unknown key"),
    ("impossible mix budget", lambda d: d["mixes"][0]["tasks"].update(commonsenseqa=20000),
     "mixes[0].tasks.commonsenseqa", "has only 9,741"),
    ("non-positive count", lambda d: d["mixes"][0]["tasks"].update(mnli=0), "mixes[0].tasks.mnli",
     "positive integer"),
    ("empty mix", lambda d: d["mixes"][0].update(tasks={}), "mixes[0].tasks", "at least one"),
    ("bad sampling", lambda d: d["mixes"][0].update(sampling="random"), "mixes[0].sampling",
     "must be one of"),
    ("bad temperature", lambda d: d["mixes"][0].update(temperature=0), "mixes[0].temperature",
     "positive number"),
    ("mix name with a dot", lambda d: d["mixes"][0].update(name="a.b"), "mixes[0].name",
     "letters, digits"),
    ("mix named like the baseline", lambda d: d["mixes"][0].update(name="none"),
     "mixes[0].name", "not 'none'"),
    ("mix without a name", lambda d: d["mixes"][0].pop("name"), "mixes[0].name", "missing"),
    ("duplicate mix names", lambda d: d["mixes"].append(copy.deepcopy(d["mixes"][0])), "mixes",
     "more than once"),
    ("mixes not an array", lambda d: d.update(mixes={"name": "x"}), "mixes", "array of tables"),
    ("nothing to run", lambda d: d.update(mixes=[], baseline=False), "mixes", "no runs"),
    ("baseline not a boolean", lambda d: d.update(baseline="yes"), "baseline", "true or false"),
    ("languages of no target", lambda d: d.update(languages=["xx"]), "languages",
     "evaluated for target"),
    ("unknown hyperparameter table", lambda d: d.update(hyperparameters={"optimizer": {"a": 1}}),
     "hyperparameters.optimizer", "per-phase overrides"),
    ("unknown prepare step", lambda d: d.update(prepare="download"), "prepare", "must be one of"),
    ("unknown slurm key", lambda d: d.update(slurm={"qos": "high"}), "slurm.qos", "unknown key"),
    ("unreadable slurm time", lambda d: d.update(slurm={"time": "soon"}), "slurm.time",
     "cannot read time"),
    ("negative slurm gpus", lambda d: d.update(slurm={"gpus": -1}), "slurm.gpus",
     "whole number"),
    ("zero slurm parallelism", lambda d: d.update(slurm={"parallelism": 0}), "slurm.parallelism",
     "positive integer"),
    ("bad throughput", lambda d: d.update(estimate={"examples_per_second": -1}),
     "estimate.examples_per_second", "positive number"),
    ("bad user task", lambda d: d.update(tasks={"mytask": {"role": "intermediate"}}), "tasks",
     "missing required key 'format'"),
    ("unknown factorial key", _factorial(draw=2), "factorial.draw", "unknown key"),
    ("factorial without volume", lambda d: d.update(factorial={"diversity": [1], "draws": 1,
                                                                "tasks": ["mnli"]}),
     "factorial.volume", "missing"),
    ("more tasks per mix than listed", _factorial(diversity=[1, 8]), "factorial.diversity[1]",
     "lists only 4"),
    ("zero diversity", _factorial(diversity=[0, 2]), "factorial.diversity[0]", "positive"),
    ("impossible factorial budget", _factorial(volume=[10000, 2_000_000]), "factorial.volume",
     "cannot be drawn"),
    ("more draws than task sets", _factorial(draws=7), "factorial.draws", "set(s) of 1 task(s)"),
    ("more draws than sets that hold the volume", _factorial(volume=[300_000], draws=3),
     "factorial.draws", "can hold that volume"),
    ("unknown factorial task", _factorial(tasks=["mnli", "qqp", "nope"]), "factorial.tasks[2]",
     "unknown task id"),
    ("factorial name clash", lambda d: (_factorial()(d), d["mixes"].append(
        {"name": "d1-v10k-r1", "tasks": {"mnli": 5}})), "mixes", "more than once"),
]


@pytest.mark.parametrize("change, key, reason", [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_bad_spec_is_refused_naming_key_and_reason(change, key, reason):
    with pytest.raises(SpecError) as caught:
        grid_from_dict(_with(change), "grid.toml")
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"grid.toml: {key}: ")


def test_invalid_toml_is_refused(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("model = \n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_grid(path)


def test_plan_command_reports_the_bad_key(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('model = "xlm-roberta-large"\ntargets = ["xnli"]\nseeds = [1]\n'
                    '[[mixes]]\nname = "m"\ntasks = {ccg = 50000}\n')
    assert main(["plan", str(path)]) == 2
    assert "mixes[0].tasks.ccg: 50,000 examples requested but ccg has only 38,015" in \
        capsys.readouterr().err.replace("\n", "")


def test_valid_spec_expands_with_baselines_and_shared_encoders(tmp_path):
    grid = grid_from_dict(_with(lambda d: d.update(hyperparameters={
        "learning_rate": 1e-5, "intermediate": {"epochs": 2}, "target": {"epochs": 3}})), "g")
    plan = expand_grid(grid, tmp_path)
    assert grid.model_short == "xlmr-large"
    assert len(plan.intermediate_jobs) == 2  # one encoder per (mix, seed), shared by targets
    assert len(plan.target_jobs) == 2 * 2 * 2  # (baseline + 1 mix) x 2 targets x 2 seeds
    ids = {job.run_id for job in plan.target_jobs}
    assert "xlmr-large.mnli-squad_v1.xnli.s1" in ids and "xlmr-large.none.pawsx.s2" in ids
    encoder = plan.intermediate_jobs[0]
    assert encoder.hyperparameters == {"learning_rate": 1e-5, "epochs": 2}
    assert encoder.output_dir == tmp_path / ".encoders" / "xlmr-large.mnli-squad_v1.s1"
    targets = [job for job in plan.target_jobs if job.mix is not None and job.seed == 1]
    assert {job.encoder for job in targets} == {encoder.output_dir}
    assert targets[0].hyperparameters == {"learning_rate": 1e-5, "epochs": 3}


def test_task_list_means_whole_training_sets_and_user_tasks_stay_in_the_grid():
    grid = grid_from_dict(_with(lambda d: d.update(
        tasks={"mytask": {"role": "intermediate", "format": "classification",
                          "metric": "accuracy", "data": {"train_size": 500}}},
        mixes=[{"name": "all", "tasks": ["ccg", "mytask"]}])), "g")
    assert grid.mixes[0].tasks == {"ccg": INTERMEDIATE_TRAIN_SIZES["ccg"], "mytask": 500}
    assert [task.id for task in grid.tasks] == ["mytask"]
    assert not is_known("mytask")


USER_TASKS_TOML = """
model = "xlm-roberta-base"
targets = ["mytarget"]
seeds = [1]
languages = ["en", "sw"]
[[mixes]]
name = "mine"
tasks = ["mnli", "myinter"]
[factorial]
diversity = [1, 2]
volume = [100, 200]
draws = 1
tasks = ["myinter", "myother"]
[tasks.myinter]
role = "intermediate"
format = "classification"
metric = "accuracy"
data = {train_size = 300}
[tasks.myother]
role = "intermediate"
format = "tagging"
metric = "accuracy"
[tasks.mytarget]
role = "target"
format = "classification"
metric = "accuracy"
languages = ["en", "de", "sw"]
"""


def test_loading_a_grid_leaves_the_task_registry_alone(tmp_path, capsys):
    path = tmp_path / "user.toml"
    path.write_text(USER_TASKS_TOML)
    grid = load_grid(path)
    assert {task.id for task in grid.tasks} == {"myinter", "myother", "mytarget"}
    assert not any(is_known(task.id) for task in grid.tasks)
    plan = expand_grid(grid, tmp_path / "results")
    assert {job.languages for job in plan.target_jobs} == {("en", "sw")}
    assert all(job.tasks == grid.tasks for job in plan.intermediate_jobs + plan.target_jobs)

    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "300 (all)" in out and "not counted: mytarget" in out  # sizes of the grid's tasks
    assert main(["status", str(tmp_path / "results"), "--grid", str(path)]) == 0
    assert not any(is_known(task.id) for task in grid.tasks)


def test_user_task_redefining_a_built_in_one_is_refused():
    with pytest.raises(SpecError) as caught:
        grid_from_dict(_with(lambda d: d.update(tasks={"mnli": {
            "role": "intermediate", "format": "tagging", "metric": "accuracy"}})), "g")
    assert caught.value.key == "tasks"
    assert "'mnli' is already registered differently" in caught.value.reason


def test_languages_restrict_each_target_to_its_own():
    grid = grid_from_dict(_with(lambda d: d.update(languages=["en", "ar", "ja"])), "g")
    plan = expand_grid(grid, "results")
    by_target = {job.target_task: job.languages for job in plan.target_jobs}
    assert by_target == {"xnli": ("en", "ar"), "pawsx": ("en", "ja")}
