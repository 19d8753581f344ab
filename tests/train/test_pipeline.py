"""Each format end to end through the real loading code, on the tiny smoke model and data."""

import json

import pytest

pytest.importorskip("torch")

from transferstats.results import RUN_FILE, SCORES_FILE
from transferstats.tasks import task_scope, tasks_from_table
from transferstats.train.jobs import IntermediateJob, Mix, TargetJob
from transferstats.train.pipeline import EXAMPLES_FILE, run_intermediate, run_target

pytestmark = pytest.mark.train

MIX = Mix("four-formats", {"mnli": 20, "squad_v2": 12, "hellaswag": 8, "ccg": 16})


@pytest.fixture(scope="module")
def encoder(smoke):
    job = IntermediateJob(model=smoke["model"], mix=MIX, seed=1,
                          output_dir=smoke["root"] / "encoders" / "four.s1",
                          hyperparameters=smoke["hp"], data=smoke["data"])
    return run_intermediate(job)


def test_intermediate_saves_encoder_and_exact_examples(encoder, smoke):
    record = json.loads((encoder / EXAMPLES_FILE).read_text())
    assert record["tasks"] == MIX.tasks
    assert {task: len(indices) for task, indices in record["examples"].items()} == MIX.tasks
    assert all(len(set(ix)) == len(ix) for ix in record["examples"].values())
    assert record["probabilities"] == pytest.approx({t: n / 56 for t, n in MIX.tasks.items()})
    assert (encoder / "config.json").is_file() and (encoder / "tokenizer.json").is_file()
    assert not list(encoder.parent.glob(".*tmp*"))


def test_intermediate_is_not_retrained_when_complete(encoder, smoke):
    before = (encoder / EXAMPLES_FILE).stat().st_mtime_ns
    job = IntermediateJob(model="no/such-model", mix=MIX, seed=1, output_dir=encoder)
    assert run_intermediate(job) == encoder
    assert (encoder / EXAMPLES_FILE).stat().st_mtime_ns == before


def test_same_seed_uses_the_same_examples(smoke):
    mix = Mix("mnli-only", {"mnli": 10})
    paths = [run_intermediate(IntermediateJob(
        model=smoke["model"], mix=mix, seed=7, output_dir=smoke["root"] / "encoders" / f"m{i}",
        hyperparameters={**smoke["hp"], "max_steps": 1}, data=smoke["data"])) for i in range(2)]
    used = [json.loads((p / EXAMPLES_FILE).read_text())["examples"]["mnli"] for p in paths]
    assert used[0] == used[1] and len(used[0]) == 10


@pytest.mark.parametrize("target, metrics", [
    ("xnli", {"accuracy"}), ("pawsx", {"accuracy"}), ("panx", {"f1"}), ("udpos", {"f1"}),
    ("xquad", {"f1", "exact_match"}), ("mlqa", {"f1", "exact_match"}),
    ("tydiqa", {"f1", "exact_match"}), ("tatoeba", {"accuracy"}), ("bucc2018", {"f1"}),
])
def test_target_end_to_end(encoder, smoke, tmp_path, target, metrics):
    languages = tuple(smoke["languages"][target])
    job = TargetJob(run_id=f"tiny.four.{target}.s1", model=smoke["model"], mix=MIX,
                    target_task=target, seed=1, results_dir=tmp_path, encoder=encoder,
                    hyperparameters=smoke["hp"], data=smoke["data"], languages=languages)
    run_dir = run_target(job)
    run = json.loads((run_dir / RUN_FILE).read_text())
    assert run["status"] == "complete" and run["target_task"] == target
    assert run["intermediate"] == {"name": MIX.name, "tasks": MIX.tasks, "sampling": "proportional"}
    assert run["started_at"].endswith("Z") and run["finished_at"].endswith("Z")
    assert run["code_version"].startswith("0.1.0") and run["hardware"]
    assert run["hyperparameters"]["learning_rate"] == smoke["hp"]["learning_rate"]
    scores = [json.loads(line) for line in (run_dir / SCORES_FILE).read_text().splitlines()]
    assert {(s["language"], s["metric"]) for s in scores} == {
        (lang, metric) for lang in languages for metric in metrics}
    assert all(0 <= s["value"] <= 100 and s["split"] == "test" and s["n_examples"] > 0
               for s in scores)


def test_baseline_starts_from_the_pretrained_model(smoke, tmp_path):
    job = TargetJob(run_id="tiny.none.pawsx.s2", model=smoke["model"], mix=None, target_task="pawsx",
                    seed=2, results_dir=tmp_path, hyperparameters=smoke["hp"], data=smoke["data"],
                    languages=("en", "de"))
    run = json.loads((run_target(job) / RUN_FILE).read_text())
    assert run["intermediate"] is None and run["status"] == "complete"
    assert run["selection"]["split"] == "pawsx/dev"


def test_crash_writes_failed_status_and_no_scores(smoke, tmp_path):
    run_dir = tmp_path / "tiny.none.xnli.s1"
    run_dir.mkdir()
    (run_dir / SCORES_FILE).write_text('{"stale": true}\n')
    job = TargetJob(run_id="tiny.none.xnli.s1", model=smoke["model"], mix=None, target_task="xnli",
                    seed=1, results_dir=tmp_path, hyperparameters=smoke["hp"], data=smoke["data"],
                    languages=("en", "sw"))  # no Swahili test data
    with pytest.raises(FileNotFoundError, match="test.sw"):
        run_target(job)
    run = json.loads((run_dir / RUN_FILE).read_text())
    assert run["status"] == "failed" and "test.sw" in run["error"]
    assert "Traceback" in run["traceback"]
    assert not (run_dir / SCORES_FILE).exists()


def test_user_task_trains_without_editing_the_package(smoke, tmp_path):
    rows = [{"claim": f"ka lo mi {i}", "evidence": "ne tu sa", "verdict": ["no", "yes"][i % 2]}
            for i in range(12)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tasks_from_table({"factcheck": {
        "role": "intermediate", "format": "classification", "metric": "accuracy",
        "num_labels": 2, "data": {"files": {"train": str(tmp_path / "train.jsonl")},
                                  "labels": ["no", "yes"],
                                  "fields": {"text": "claim", "text_pair": "evidence",
                                             "label": "verdict"}}}}, "user.toml")
    with task_scope(tasks):
        output = run_intermediate(IntermediateJob(
            model=smoke["model"], mix=Mix("fc", {"factcheck": 12, "mnli": 4}, sampling="uniform"),
            seed=1, output_dir=tmp_path / "enc", hyperparameters=smoke["hp"], data=smoke["data"]))
    record = json.loads((output / EXAMPLES_FILE).read_text())
    assert record["tasks"] == {"factcheck": 12, "mnli": 4}
    assert record["probabilities"] == {"factcheck": 0.5, "mnli": 0.5}


def test_user_target_with_file_templates(smoke, tmp_path):
    def rows(n, lang):
        return [{"premise": f"ka lo {lang} {i}", "options": ["mi ne", "tu sa", "ri po"],
                 "answer": i % 3} for i in range(n)]

    for split, lang, n in (("train", "en", 12), ("dev", "en", 6), ("test", "en", 6),
                           ("test", "de", 6)):
        (tmp_path / f"{split}.{lang}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows(n, lang)))
    files = {split: str(tmp_path / f"{split}.{{lang}}.jsonl") for split in ("train", "dev", "test")}
    tasks = tasks_from_table({"xchoice": {
        "role": "target", "format": "multiple_choice", "metric": "accuracy",
        "languages": ["en", "de"],
        "data": {"files": files,
                 "fields": {"context": "premise", "choices": "options", "label": "answer"}}}},
        "user.toml")
    job = TargetJob(run_id="tiny.none.xchoice.s1", model=smoke["model"], mix=None,
                    target_task="xchoice", seed=1, results_dir=tmp_path / "results",
                    hyperparameters=smoke["hp"], data=smoke["data"])
    with task_scope(tasks):
        run_dir = run_target(job)
    scores = [json.loads(line) for line in (run_dir / SCORES_FILE).read_text().splitlines()]
    assert [(s["language"], s["metric"], s["n_examples"]) for s in scores] == [
        ("en", "accuracy", 6), ("de", "accuracy", 6)]


def test_crash_midway_through_evaluation_leaves_no_partial_scores(smoke, tmp_path, monkeypatch):
    from transferstats.train import evaluation

    real_score = evaluation.score

    def score_then_crash(task_format, examples, features, outputs, labels, lang):
        if lang == "de":  # English dev and test were already scored
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real_score(task_format, examples, features, outputs, labels, lang)

    monkeypatch.setattr(evaluation, "score", score_then_crash)
    job = TargetJob(run_id="tiny.none.pawsx.s1", model=smoke["model"], mix=None, target_task="pawsx",
                    seed=1, results_dir=tmp_path, hyperparameters=smoke["hp"], data=smoke["data"],
                    languages=("en", "de"))
    with pytest.raises(RuntimeError, match="illegal memory"):
        run_target(job)
    run = json.loads((tmp_path / job.run_id / RUN_FILE).read_text())
    assert run["status"] == "failed" and run["error"].startswith("RuntimeError: CUDA error")
    assert not (tmp_path / job.run_id / SCORES_FILE).exists()
