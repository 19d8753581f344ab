import json

import pytest

pytest.importorskip("torch")

from transferstats.tasks import get_task, tasks_from_table
from transferstats.train.data import MissingDataError, locate, read

pytestmark = pytest.mark.train


def _load(task_id, split, lang, data):
    task = get_task(task_id)
    return read(task, locate(task, split, lang, data), data)


@pytest.mark.parametrize("task_id, split, lang, fmt_check", [
    ("mnli", "train", "en", lambda e: {"text", "text_pair", "label"} <= set(e)),
    ("pawsx", "test", "de", lambda e: e["label"] in (0, 1) and e["text_pair"]),
    ("hellaswag", "train", "en", lambda e: len(e["choices"]) == 4 and isinstance(e["label"], int)),
    ("squad_v2", "train", "en", lambda e: set(e["answers"]) == {"text", "answer_start"}),
    ("panx", "test", "de",
     lambda e: not e["tokens"][0].startswith("de:") and len(e["tags"]) == len(e["tokens"])),
    ("udpos", "dev", "en", lambda e: all(isinstance(t, str) for t in e["tags"])),
    ("ccg", "train", "en", lambda e: len(e["tags"]) == len(e["tokens"])),
])
def test_every_file_format_reads_into_canonical_examples(smoke, task_id, split, lang, fmt_check):
    examples, _ = _load(task_id, split, lang, smoke["data"])
    assert len(examples) >= 16
    assert all(fmt_check(e) for e in examples)


def test_squad_answers_point_into_the_context(smoke):
    examples, _ = _load("squad_v1", "train", "en", smoke["data"])
    for e in examples:
        for text, start in zip(e["answers"]["text"], e["answers"]["answer_start"], strict=True):
            assert e["context"][start:start + len(text)] == text


def test_retrieval_original_files(smoke):
    (bucc,), _ = _load("bucc2018", "dev", "de", smoke["data"])
    assert len(bucc["source"]) == len(bucc["target"]) == 20 and len(bucc["gold"]) == 12
    (tatoeba,), _ = _load("tatoeba", "test", "fr", smoke["data"])
    assert len(tatoeba["source"]) == len(tatoeba["target"]) == 16
    assert tatoeba["gold"][3] == [3, 3]


def test_original_squad_json_and_files_override(tmp_path):
    document = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{
        "context": "Paris is in France.",
        "qas": [{"id": "q1", "question": "Where?", "answers": [{"text": "France", "answer_start": 12}]},
                {"id": "q2", "question": "Who?", "answers": [], "is_impossible": True}]}]}]}
    path = tmp_path / "squad-{lang}.json"
    (tmp_path / "squad-en.json").write_text(json.dumps(document))
    data = {"files": {"squad_v2": {"dev": str(path)}}, "hub": False}
    examples, _ = _load("squad_v2", "dev", "en", data)
    assert [e["answers"]["text"] for e in examples] == [["France"], []]


def test_user_task_with_its_own_columns(tmp_path):
    rows = [{"claim": f"c{i}", "evidence": f"e{i}", "verdict": ["yes", "no"][i % 2]} for i in range(4)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task, = tasks_from_table({"factcheck": {
        "role": "intermediate", "format": "classification", "metric": "accuracy", "num_labels": 2,
        "data": {"files": {"train": str(tmp_path / "train.jsonl")}, "labels": ["no", "yes"],
                 "fields": {"text": "claim", "text_pair": "evidence", "label": "verdict"}}}}, "t.toml")
    examples, _ = read(task, locate(task, "train", "en", {}), {})
    assert [e["label"] for e in examples] == [1, 0, 1, 0] and examples[0]["text_pair"] == "e0"


def test_missing_data_says_what_was_looked_for(tmp_path):
    with pytest.raises(MissingDataError) as error:
        locate(get_task("xnli"), "test", "sw", {"data_dir": str(tmp_path), "hub": False})
    message = str(error.value)
    assert str(tmp_path / "xnli" / "test.sw.jsonl") in message
    assert "hub is switched off" in message and "[data] files" in message


def test_missing_hub_data_names_the_hub_id(tmp_path):
    task = get_task("mnli")
    location = locate(task, "train", "en", {"cache_dir": str(tmp_path)})
    assert location.hub == ("nyu-mll/glue", "mnli", ("train",))
    with pytest.raises(MissingDataError, match="nyu-mll/glue"):
        read(task, location, {"cache_dir": str(tmp_path)})
