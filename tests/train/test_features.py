import pytest

pytest.importorskip("torch")

from transferstats.tasks import get_task
from transferstats.train.data import locate, read
from transferstats.train.features import cached_encode

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def tokenizer(smoke):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smoke["model"])


def _encode(task_id, split, smoke, tokenizer, tmp_path, loader=None, max_length=64):
    task = get_task(task_id)
    location = locate(task, split, "en", smoke["data"])
    loader = loader or (lambda: read(task, location, smoke["data"]))
    return cached_encode(tmp_path, [location.fingerprint()], loader, task.format, tokenizer,
                         max_length, 16)


def test_tokenisation_is_cached_and_reused(smoke, tokenizer, tmp_path):
    examples, features, _ = _encode("mnli", "train", smoke, tokenizer, tmp_path)
    assert len(examples) == len(features) == 48

    def must_not_load():
        raise AssertionError("the cached features should have been used")

    again = _encode("mnli", "train", smoke, tokenizer, tmp_path, loader=must_not_load)
    assert again[1] == features
    # Another max length is another cache entry.
    with pytest.raises(AssertionError):
        _encode("mnli", "train", smoke, tokenizer, tmp_path, loader=must_not_load, max_length=32)


def test_qa_windows_find_the_answer(smoke, tokenizer, tmp_path):
    examples, features, _ = _encode("squad_v1", "train", smoke, tokenizer, tmp_path, max_length=48)
    assert len(features) > len(examples)  # long contexts were split into windows
    answered = {f["example"] for f in features if f["start"] > 0}
    assert answered == set(range(len(examples)))
    for f in features:
        if f["start"] > 0:
            e = examples[f["example"]]
            span = e["context"][f["offsets"][f["start"]][0]:f["offsets"][f["end"]][1]].strip()
            assert span == e["answers"]["text"][0]


def test_tagging_marks_the_first_subtoken_of_each_word(smoke, tokenizer, tmp_path):
    examples, features, _ = _encode("panx", "train", smoke, tokenizer, tmp_path)
    for e, f in zip(examples, features, strict=True):
        assert len(f["word_starts"]) == len(e["tokens"])
        assert f["word_starts"] == sorted(set(f["word_starts"])) and f["word_starts"][0] == 1


@pytest.mark.slow
def test_benchmark_runs_on_cpu_with_the_tiny_model(capsys):
    from transferstats.train.benchmark import main

    rows = main(["--tiny", "--steps", "2", "--batch-size", "4", "--length", "32", "--device", "cpu"])
    assert {(r["phase"], r["trainer"]) for r in rows} == {
        (p, t) for p in ("phase 2", "phase 3") for t in ("transferstats", "HF Trainer (defaults)")}
    assert all(r["samples_per_s"] > 0 for r in rows)
    assert "samples/s" in capsys.readouterr().out
