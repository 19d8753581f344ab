"""``transferstats import``: lm-evaluation-harness, Hugging Face Trainer and jiant results as runs.

The first two are tested against output of the real tools, run here offline on tiny randomly
initialised models: ``tests/fixtures/importers/lm-eval/`` holds a file the installed harness wrote
(:func:`run_harness` writes it again, in the slow test), and the Trainer tests run ``Trainer``.
jiant cannot be installed: ``tests/fixtures/importers/jiant/`` and :func:`write_jiant_run` follow
its output format as its source writes it (see transferstats/importers/jiant.py).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import transferstats as ts
from transferstats.cli import main
from transferstats.importers import import_results
from transferstats.problems import ResultsError

FIXTURES = Path(__file__).parent / "fixtures" / "importers"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
QUICK = {"resamples": 60, "seed": 2, "jobs": 1}

# A small grid: diversity 1 and 2 crossed with volume 10k and 40k, two task sets each, a baseline.
GRID_MIXES = {
    "d1-v10k-a": {"mnli": 10_000}, "d1-v10k-b": {"qqp": 10_000},
    "d1-v40k-a": {"anli": 40_000}, "d1-v40k-b": {"sst2": 40_000},
    "d2-v10k-a": {"mnli": 5_000, "qqp": 5_000}, "d2-v10k-b": {"anli": 5_000, "sst2": 5_000},
    "d2-v40k-a": {"mnli": 20_000, "sst2": 20_000}, "d2-v40k-b": {"qqp": 20_000, "anli": 20_000},
}
GRID_SEEDS = (1, 2)
GRID_LANGUAGES = ("de", "fr", "es", "ru")


def manifest(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def refused(*args, **kwargs) -> list[str]:
    """The problems of an import that must be refused, as ``file:location: message`` lines."""
    with pytest.raises(ResultsError) as caught:
        import_results(*args, **kwargs)
    return [f"{p.place}: {p.message}" for p in caught.value.problems]


# ---------------------------------------------------------------- lm-evaluation-harness

HARNESS_ROWS = {
    "xnli_de": [("Der Hund schläft", "Ein Tier ruht", 0), ("Die Katze isst", "Sie hungert", 1),
                ("Es regnet heute", "Die Sonne scheint", 2), ("Ich lese ein Buch", "Ich lese", 0),
                ("Er läuft schnell", "Er sitzt", 2)],
    "xnli_fr": [("Le chien dort", "Un animal dort", 0), ("Le chat mange", "Il a faim", 1),
                ("Il pleut", "Le soleil brille", 2), ("Je lis un livre", "Je lis", 0),
                ("Il court vite", "Il est assis", 2)],
    "paws_de": [("Das Haus ist alt", "Das alte Haus", 1), ("Er kam spät", "Er kam früh", 0),
                ("Sie singt gern", "Gern singt sie", 1), ("Wir essen Brot", "Wir backen Brot", 0),
                ("Der Zug fährt", "Der Zug fährt ab", 1)],
}


def run_harness(workdir: Path) -> Path:
    """Run the installed lm-evaluation-harness offline and return the results file it wrote.

    The model is a 2-layer GPT-2 with random weights and a word-level tokenizer trained on the
    data; the tasks are local YAML files over 5-row JSON Lines files: ``xnli_de`` and ``xnli_fr``
    (validation split, as the harness's XNLI tasks) in a group ``xnli``, and ``paws_de`` (test
    split, as the harness's PAWS-X tasks).
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    data, tasks, model_dir = workdir / "data", workdir / "tasks", workdir / "tiny-gpt2"
    for folder in (data, tasks):
        folder.mkdir(parents=True, exist_ok=True)
    words = ["richtig", "?", "Ja", "Auch", "Nein", "vrai", "Oui", "Aussi", "Non", ","]
    for task, rows in HARNESS_ROWS.items():
        keys = ("sentence1", "sentence2") if task.startswith("paws") else ("premise", "hypothesis")
        (data / f"{task}.jsonl").write_text("".join(
            json.dumps({keys[0]: first, keys[1]: second, "label": label}, ensure_ascii=False) + "\n"
            for first, second, label in rows), encoding="utf-8")
        words += [word for first, second, _ in rows for word in f"{first} {second}".split()]
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.train_from_iterator([" ".join(words)],
                                  trainers.WordLevelTrainer(special_tokens=["[UNK]", "<eos>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]",
                                   eos_token="<eos>", pad_token="<eos>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=fast.vocab_size, n_positions=64, n_embd=16,
                                       n_layer=2, n_head=2, bos_token_id=1, eos_token_id=1))
    model.save_pretrained(model_dir)
    fast.save_pretrained(model_dir)

    xnli = ("output_type: multiple_choice\nvalidation_split: validation\ndoc_to_text: ''\n"
            "doc_to_target: label\n"
            "doc_to_choice: '{{{{[premise+\" , {q} ? {y} , \"+hypothesis, premise+\" , {q} ? {a} "
            ", \"+hypothesis, premise+\" , {q} ? {n} , \"+hypothesis]}}}}'\n")
    configs = {
        "xnli_de": xnli.format(q="richtig", y="Ja", a="Auch", n="Nein"),
        "xnli_fr": xnli.format(q="vrai", y="Oui", a="Aussi", n="Non"),
        "paws_de": ("output_type: multiple_choice\ntest_split: test\ndoc_to_text: ''\n"
                    "doc_to_target: label\n"
                    "doc_to_choice: '{{[sentence1+\" , richtig ? Nein , \"+sentence2, "
                    "sentence1+\" , richtig ? Ja , \"+sentence2]}}'\n"),
    }
    for task, config in configs.items():
        split = "test" if "test_split" in config else "validation"
        (tasks / f"{task}.yaml").write_text(
            f"task: {task}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    {split}: {data / f'{task}.jsonl'}\n{config}"
            "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
            "metadata:\n  version: 1.0\n", encoding="utf-8")
    (tasks / "xnli.yaml").write_text(
        "group: xnli\ntask:\n  - xnli_de\n  - xnli_fr\naggregate_metric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    weight_by_size: true\nmetadata:\n"
        "  version: 1.0\n", encoding="utf-8")
    output = workdir / "output"
    # The model path relative to workdir names the output folder: output/tiny-gpt2/.
    subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                    f"pretrained={model_dir.name},dtype=float32", "--tasks", "xnli,paws_de",
                    "--include_path", str(tasks), "--output_path", str(output), "--device", "cpu",
                    "--batch_size", "4"],
                   check=True, capture_output=True, env=os.environ | OFFLINE, cwd=workdir)
    (results,) = output.glob("*/results_*.json")
    return results


HARNESS_SOURCE = FIXTURES / "lm-eval"
HARNESS_MANIFEST = """
[defaults]
model = "xlm-roberta-large"

[mixes.mnli-squad_v1]
members = {mnli = 20000, squad_v1 = 20000}

[[runs]]
files = "tiny-gpt2/results_*.json"
mix = "mnli-squad_v1"
seed = 1
"""


def harness_scores(results_file: Path, key: str = "acc,none") -> dict[str, float]:
    """Task -> accuracy (or ``key``) as the harness wrote it (0-1)."""
    return {task: metrics[key] for task, metrics in
            json.loads(results_file.read_text(encoding="utf-8"))["results"].items()}


def check_harness_import(source: Path, results_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    summary = import_results("lm-eval", source, manifest(tmp_path / "m.toml", HARNESS_MANIFEST),
                             out)
    # Two targets in one file: two runs. The group "xnli" (a mean of its tasks) is not a score.
    assert summary.written == ("xlmr-large.mnli-squad_v1.xnli.s1",
                               "xlmr-large.mnli-squad_v1.pawsx.s1")
    scores = ts.load_results(out).scores.set_index(["target_task", "language"])
    raw = harness_scores(results_file)
    assert scores.loc[("xnli", "de"), "value"] == pytest.approx(100 * raw["xnli_de"])
    assert scores.loc[("xnli", "fr"), "value"] == pytest.approx(100 * raw["xnli_fr"])
    assert scores.loc[("pawsx", "de"), "value"] == pytest.approx(100 * raw["paws_de"])
    assert set(scores["metric"]) == {"accuracy"} and set(scores["n_examples"]) == {5}
    # The standard errors, in percent like the scores.
    for (target, language), task in {("xnli", "de"): "xnli_de", ("xnli", "fr"): "xnli_fr",
                                     ("pawsx", "de"): "paws_de"}.items():
        assert scores.loc[(target, language), "stderr"] == pytest.approx(
            100 * harness_scores(results_file, "acc_stderr,none")[task])
    # The XNLI tasks evaluated the validation split, PAWS-X the test split.
    assert scores.loc[("xnli", "de"), "split"] == "validation"
    assert scores.loc[("pawsx", "de"), "split"] == "test"
    run = json.loads((out / summary.written[0] / "run.json").read_text(encoding="utf-8"))
    assert run["intermediate"] == {"name": "mnli-squad_v1", "kind": "task",
                                   "tasks": {"mnli": 20000, "squad_v1": 20000}}
    assert run["imported_from"] == {"format": "lm-eval",
                                    "files": [results_file.relative_to(source).as_posix()]}
    assert main(["validate", str(out)]) == 0


def test_the_real_harness_output_imports_as_one_run_per_target(tmp_path):
    (results_file,) = HARNESS_SOURCE.glob("*/results_*.json")
    check_harness_import(HARNESS_SOURCE, results_file, tmp_path)


@pytest.mark.slow
def test_the_harness_runs_offline_and_its_output_imports(tmp_path):
    """The harness run end to end (about 40 s on a CPU): how the committed fixture was made."""
    pytest.importorskip("lm_eval")
    results_file = run_harness(tmp_path / "harness")
    check_harness_import(results_file.parents[1], results_file, tmp_path)


def test_a_harness_task_of_no_target_is_refused_unless_skipped(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(HARNESS_SOURCE, source)
    (results_file,) = source.glob("*/results_*.json")
    document = json.loads(results_file.read_text(encoding="utf-8"))
    document["results"]["arc_easy"] = {"alias": "arc_easy", "acc,none": 0.25,
                                       "acc_stderr,none": 0.1}
    results_file.write_text(json.dumps(document), encoding="utf-8")
    out = tmp_path / "results"
    problems = refused("lm-eval", source, manifest(tmp_path / "m.toml", HARNESS_MANIFEST), out)
    assert problems == [f"{results_file}:results.arc_easy: task 'arc_easy' names no target: "
                        "expected <prefix>_<language> with a prefix of `targets` (bucc2018, mlqa, "
                        "panx, paws, pawsx, tatoeba, tydiqa, tydiqa_goldp, udpos, wikiann, xnli, "
                        "xquad); map yours in `targets` or leave the task out with `skip_tasks`"]
    assert not out.exists()
    skipping = HARNESS_MANIFEST.replace("seed = 1", 'seed = 1\nskip_tasks = ["arc_*"]')
    assert len(import_results("lm-eval", source, manifest(tmp_path / "m.toml", skipping),
                              out).written) == 2


def harness_copy(tmp_path: Path, edit) -> Path:
    """A copy of the committed harness output with ``edit(document)`` applied to its file."""
    source = tmp_path / "source"
    shutil.copytree(HARNESS_SOURCE, source)
    (results_file,) = source.glob("*/results_*.json")
    document = json.loads(results_file.read_text(encoding="utf-8"))
    edit(document)
    results_file.write_text(json.dumps(document), encoding="utf-8")
    return source


def test_a_standard_error_the_harness_did_not_compute_is_left_empty(tmp_path):
    """The harness writes "N/A" where it computed no standard error (``--bootstrap_iters 0``,
    one document); anything else that is not a number is refused, naming the key."""
    def no_stderr(document):
        document["results"]["xnli_de"]["acc_stderr,none"] = "N/A"
        del document["results"]["xnli_fr"]["acc_stderr,none"]

    out = tmp_path / "results"
    import_results("lm-eval", harness_copy(tmp_path, no_stderr),
                   manifest(tmp_path / "m.toml", HARNESS_MANIFEST), out)
    scores = ts.load_results(out).scores.set_index(["target_task", "language"])["stderr"]
    assert scores.loc[[("xnli", "de"), ("xnli", "fr")]].isna().all()
    assert scores.loc[("pawsx", "de")] > 0
    source = harness_copy(tmp_path / "bad", lambda document: document["results"]["paws_de"]
                          .update({"acc_stderr,none": "high"}))
    (results_file,) = source.glob("*/results_*.json")
    assert refused("lm-eval", source, manifest(tmp_path / "m.toml", HARNESS_MANIFEST),
                   tmp_path / "out2") == [
        f"{results_file}:results.paws_de.acc_stderr,none: expected a standard error (a number, "
        "or \"N/A\"), got 'high'"]


def _model_path(path: str, *, in_config: bool = False):
    """An edit giving the harness file the model path ``path``, as ``model_name`` (the harness
    0.4) or only as ``pretrained`` of the command line's ``config.model_args``."""
    def edit(document):
        if in_config:
            del document["model_name"]
            document["config"]["model_args"] = f"pretrained={path},dtype=float32"
        else:
            document["model_name"] = path
    return edit


@pytest.mark.parametrize("selector", ["tiny-en-de-s1", "/scratch/*/tiny-en-de-s1", "*-de-s?"])
@pytest.mark.parametrize("in_config", [False, True])
def test_harness_runs_are_selected_by_their_model_name(tmp_path, selector, in_config):
    """lm-eval names its output folder after the sanitised model path
    (``__scratch__models__tiny-en-de-s1``); the manifest may select the run by the model path it
    recorded instead: whole, or its last part, as a glob."""
    source = harness_copy(tmp_path, _model_path("/scratch/models/tiny-en-de-s1",
                                                in_config=in_config))
    text = HARNESS_MANIFEST.replace('files = "tiny-gpt2/results_*.json"',
                                    f"model_name = {selector!r}")
    summary = import_results("lm-eval", source, manifest(tmp_path / "m.toml", text),
                             tmp_path / "results")
    assert summary.written == ("xlmr-large.mnli-squad_v1.xnli.s1",
                               "xlmr-large.mnli-squad_v1.pawsx.s1")


@pytest.mark.parametrize(("selector", "listed"), [
    ('model_name = "en-de-s1"', "model names recorded there: '/scratch/models/tiny-en-de-s1'"),
    ('run = "en-de-s1"', "run folders there: 'tiny-gpt2'"),
    ('files = "en-de-s1/*"', "result files there: 'tiny-gpt2/results_2026-11-25T09-45-44.529578"
                             ".json'")])
def test_a_selection_that_matches_nothing_lists_what_exists(tmp_path, selector, listed):
    source = harness_copy(tmp_path, _model_path("/scratch/models/tiny-en-de-s1"))
    path = manifest(tmp_path / "m.toml", HARNESS_MANIFEST.replace(
        'files = "tiny-gpt2/results_*.json"', selector))
    (results_file,) = source.glob("*/results_*.json")
    assert refused("lm-eval", source, path, tmp_path / "results") == [
        f"{results_file}: no manifest entry for this run (folder 'tiny-gpt2', model_name "
        f"'/scratch/models/tiny-en-de-s1'): add a [[runs]] entry selecting it to {path}",
        f"{path}:runs[0]: selects no source run in {source} ({selector.replace(chr(34), chr(39))}"
        f"); the {listed}"]


def test_model_name_selects_harness_runs_only(tmp_path):
    path = manifest(tmp_path / "m.toml", JIANT_MANIFEST.replace('run = "xnli-mnli-squad_v1-s1"',
                                                                'model_name = "xlm*"'))
    assert refused("jiant", JIANT_SOURCE, path, tmp_path / "results") == [
        f"{path}:runs[0].model_name: 'model_name' does not select runs of this format: it takes "
        "files, run"]


def test_the_manifest_gives_a_split_per_target(tmp_path):
    """A table of target -> split relabels the targets it names; the others keep the split the
    harness recorded (XNLI validation, PAWS-X test)."""
    out = tmp_path / "results"
    path = manifest(tmp_path / "m.toml", HARNESS_MANIFEST + 'split = {xnli = "test"}\n')
    import_results("lm-eval", HARNESS_SOURCE, path, out)
    splits = ts.load_results(out).scores.groupby("target_task")["split"].unique()
    assert splits.to_dict() == {"pawsx": ["test"], "xnli": ["test"]}
    path = manifest(tmp_path / "m.toml", HARNESS_MANIFEST + 'split = {xnly = "test", '
                                                            'pawsx = 1}\n')
    assert refused("lm-eval", HARNESS_SOURCE, path, tmp_path / "out2") == [
        f"{path}:runs[0].split.xnly: unknown task id 'xnly' (closest known target tasks: "
        "'xnli'); register your own with a [tasks.xnly] table in a TOML file given as --tasks "
        "FILE.toml (docs/tasks.md) (the table gives the split of each target task id)",
        f"{path}:runs[0].split.pawsx: expected a non-empty string, got 1"]


# ---------------------------------------------------------------- Hugging Face Trainer

@pytest.fixture(scope="module")
def tiny_trainer():
    """``evaluate(folder, seed, prefixes)``: a real ``Trainer`` evaluation of a tiny random BERT
    classifier, its metrics saved with ``save_metrics`` into ``folder`` as a script does."""
    pytest.importorskip("transformers")
    import numpy as np
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
        intermediate_size=16, max_position_embeddings=16, num_labels=3))

    def accuracy(prediction):
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    def examples(seed: int) -> list[dict]:
        generator = np.random.default_rng(seed)
        return [{"input_ids": generator.integers(1, 30, 6).tolist(), "attention_mask": [1] * 6,
                 "labels": int(generator.integers(0, 3))} for _ in range(12)]

    def evaluate(folder: Path, seed: int, prefixes: dict[str, tuple[str, ...]]) -> None:
        arguments = TrainingArguments(output_dir=str(folder), per_device_eval_batch_size=12,
                                      report_to=[], use_cpu=True, disable_tqdm=True)
        trainer = Trainer(model=model, args=arguments, compute_metrics=accuracy)
        for split, metric_prefixes in prefixes.items():
            metrics = {}
            for number, prefix in enumerate(metric_prefixes):
                metrics |= trainer.evaluate(eval_dataset=examples(seed * 100 + number),
                                            metric_key_prefix=prefix)
                metrics[f"{prefix}_samples"] = 12
            trainer.save_metrics(split, metrics)

    return evaluate


TRAINER_MANIFEST = """
[defaults]
model = "xlm-roberta-large"
seed = 1

[mixes.mnli]
members = {mnli = 40000}

[[runs]]
run = "pawsx-de"          # one language per run: eval_accuracy, predict_accuracy
mix = "mnli"
target_task = "pawsx"
language = "de"

[[runs]]
run = "xnli"              # per-language keys: predict_de_accuracy, predict_fr_accuracy
mix = "none"
target_task = "xnli"
"""


@pytest.mark.train
def test_real_trainer_outputs_import(tiny_trainer, tmp_path):
    source = tmp_path / "outputs"
    tiny_trainer(source / "pawsx-de", 1, {"eval": ("eval",), "predict": ("predict",)})
    tiny_trainer(source / "xnli", 2, {"predict": ("predict_de", "predict_fr")})
    out = tmp_path / "results"
    summary = import_results("hf-trainer", source,
                             manifest(tmp_path / "m.toml", TRAINER_MANIFEST), out)
    assert summary.written == ("xlmr-large.mnli.pawsx.s1", "xlmr-large.none.xnli.s1")
    scores = ts.load_results(out).scores.set_index(["target_task", "language", "split"])
    # all_results.json holds every key save_metrics wrote; eval is the validation split.
    written = json.loads((source / "pawsx-de" / "all_results.json").read_text(encoding="utf-8"))
    assert scores.loc[("pawsx", "de", "validation"), "value"] == \
        pytest.approx(100 * written["eval_accuracy"])
    assert scores.loc[("pawsx", "de", "test"), "value"] == \
        pytest.approx(100 * written["predict_accuracy"])
    written = json.loads((source / "xnli" / "predict_results.json").read_text(encoding="utf-8"))
    for language in ("de", "fr"):
        assert scores.loc[("xnli", language, "test"), "value"] == \
            pytest.approx(100 * written[f"predict_{language}_accuracy"])
    assert set(scores["metric"]) == {"accuracy"} and set(scores["n_examples"]) == {12}
    assert main(["validate", str(out)]) == 0


@pytest.mark.train
def test_a_trainer_key_without_a_language_needs_one_in_the_manifest(tiny_trainer, tmp_path):
    source = tmp_path / "outputs"
    tiny_trainer(source / "xnli", 1, {"eval": ("eval",)})
    text = TRAINER_MANIFEST.split("[[runs]]")[0] + '[[runs]]\nrun = "xnli"\nmix = "none"\n' \
        'target_task = "xnli"\n'
    problems = refused("hf-trainer", source, manifest(tmp_path / "m.toml", text),
                       tmp_path / "results")
    assert problems == [f"{source / 'xnli' / 'all_results.json'}:eval_accuracy: no language: the "
                        "key has none (as eval_de_accuracy would) and the manifest gives no "
                        "`language` for this run"]


# ---------------------------------------------------------------- jiant

JIANT_SOURCE = FIXTURES / "jiant" / "runs"
JIANT_MANIFEST = """
[mixes.mnli-squad_v1]
members = {mnli = 20000, squad_v1 = 20000}

[defaults]
mix = "mnli-squad_v1"
skip_tasks = ["mnli"]     # evaluated on the intermediate task too: not a target

[[runs]]
run = "xnli-mnli-squad_v1-s1"

[[runs]]
run = "xquad-mnli-squad_v1-s1"
"""


def test_jiant_run_folders_import_with_the_model_and_seed_of_their_config(tmp_path):
    """The fixture follows jiant's documented output format (jiant cannot be installed here)."""
    out = tmp_path / "results"
    summary = import_results("jiant", JIANT_SOURCE,
                             manifest(tmp_path / "m.toml", JIANT_MANIFEST), out)
    assert summary.written == ("xlmr-large.mnli-squad_v1.xnli.s1",
                               "xlmr-large.mnli-squad_v1.xquad.s1")
    scores = ts.load_results(out).scores.set_index(["target_task", "language", "metric"])
    assert set(scores["split"]) == {"validation"}
    # Accuracy is 0-1 in jiant; the SQuAD script's exact and f1 are already percent.
    assert scores.loc[("xnli", "de", "accuracy"), "value"] == pytest.approx(78.1)
    assert scores.loc[("xquad", "de", "exact_match"), "value"] == pytest.approx(55.21)
    assert scores.loc[("xquad", "de", "f1"), "value"] == pytest.approx(71.34)
    assert "mnli" not in set(scores.reset_index()["language"])
    run = json.loads((out / summary.written[0] / "run.json").read_text(encoding="utf-8"))
    assert (run["model"], run["seed"]) == ("xlm-roberta-large", 1)
    assert main(["validate", str(out)]) == 0
    # The manifest's seed overrides the config's.
    text = JIANT_MANIFEST.replace('run = "xnli-mnli-squad_v1-s1"',
                                  'run = "xnli-mnli-squad_v1-s1"\nseed = 7')
    again = import_results("jiant", JIANT_SOURCE, manifest(tmp_path / "m.toml", text), out)
    assert again.written == ("xlmr-large.mnli-squad_v1.xnli.s7",)
    assert again.unchanged == ("xlmr-large.mnli-squad_v1.xquad.s1",)


def test_your_own_tasks_are_known_for_the_import(tmp_path, capsys):
    tasks = tmp_path / "tasks.toml"
    tasks.write_text('[tasks.my_nli]\nrole = "intermediate"\nformat = "classification"\n'
                     'metric = "accuracy"\n', encoding="utf-8")
    path = manifest(tmp_path / "m.toml", JIANT_MANIFEST.replace("mnli = 20000", "my_nli = 20000"))
    out = tmp_path / "results"
    command = ["import", "jiant", str(JIANT_SOURCE), "--manifest", str(path), "--out", str(out)]
    assert main(command) == 2
    assert "mixes.mnli-squad_v1.members.my_nli: unknown task id 'my_nli'" in capsys.readouterr().err
    assert main([*command, "--tasks", str(tasks)]) == 0
    assert "imported 2 run(s)" in capsys.readouterr().out
    assert main(["validate", str(out), "--tasks", str(tasks)]) == 0


# ---------------------------------------------------------------- bad input: nothing written

def nothing_written(out: Path) -> bool:
    """``out`` is absent and no temporary folder was left beside it."""
    return not out.exists() and not list(out.parent.glob(f".{out.name}.import-*"))


def test_a_source_run_without_a_manifest_entry_is_named(tmp_path):
    text = JIANT_MANIFEST.split('[[runs]]\nrun = "xquad')[0]
    out = tmp_path / "results"
    problems = refused("jiant", JIANT_SOURCE, manifest(tmp_path / "m.toml", text), out)
    assert problems == [f"{JIANT_SOURCE / 'xquad-mnli-squad_v1-s1' / 'val_metrics.json'}: no "
                        "manifest entry for this run (folder 'xquad-mnli-squad_v1-s1'): add a "
                        f"[[runs]] entry selecting it to {tmp_path / 'm.toml'}"]
    assert nothing_written(out)


def test_every_bad_manifest_key_is_named(tmp_path):
    path = manifest(tmp_path / "m.toml", """
[defaults]
model = "xlm-roberta-large"
language = "de"

[mixes.good]
members = {mnli = 1000}

[mixes.bad]
members = {mnli = 0, xnli = 10, nosuchtask = 5}
kind = "tasks"

[[runs]]
run = "a"
mix = "good"
seed = "1"
target_task = "xnli"
sede = 2

[[runs]]
files = "b/*"
run = "b"
mix = "elsewhere"
target_task = "xnli"
""")
    out = tmp_path / "results"
    problems = refused("hf-trainer", tmp_path, path, out)
    assert problems == [
        f"{path}:mixes.bad.kind: must be one of task, language, got 'tasks'",
        f"{path}:runs[0].seed: expected an integer, got '1'",
        f"{path}:runs[0].sede: unknown key 'sede'; expected one of files, language, metrics, "
        "mix, model, model_short, run, scale, seed, split, target_task",
        f"{path}:runs[1]: give exactly one of 'files' (a glob on result files relative to "
        "SOURCE) or 'run' (a run folder relative to SOURCE)",
        f"{path}:runs[1].mix: no mix 'elsewhere' in [mixes] (known: bad, good); the baseline is "
        "'none'",
        f"{path}:runs[1].seed: missing required key (give it here or in [defaults])",
    ]
    assert nothing_written(out)
    path.write_text('[mixes.bad]\nmembers = {mnli = 0, xnli = 10, nosuchtask = 5}\n'
                    '[[runs]]\nrun = "a"\nmix = "bad"\nseed = 1\ntargets = {x = "xnli"}\n'
                    '[defaults]\nmodel = "m"\ntarget_task = "xnli"\n', encoding="utf-8")
    assert refused("lm-eval", tmp_path, path, out) == [
        f"{path}:mixes.bad.members.mnli: expected a positive whole number of examples, got 0",
        f"{path}:mixes.bad.members.xnli: 'xnli' is a target task, not an intermediate task",
        f"{path}:mixes.bad.members.nosuchtask: unknown task id 'nosuchtask' (known intermediate "
        "tasks: anli, ccg, commonsenseqa, cosmosqa, hellaswag, mnli, qqp, squad_v1, squad_v2, "
        "sst2); register your own with a [tasks.nosuchtask] table in a TOML file given as "
        "--tasks FILE.toml (docs/tasks.md)",
        f"{path}:defaults.target_task: 'target_task' is not a key of this format: it takes "
        "metrics, mix, model, model_short, scale, seed, skip_tasks, split, targets",
    ]


def test_an_unknown_target_is_named_with_its_manifest_key(tmp_path):
    path = manifest(tmp_path / "m.toml", TRAINER_MANIFEST.replace('target_task = "pawsx"',
                                                                 'target_task = "pawsx2"'))
    assert refused("hf-trainer", tmp_path, path, tmp_path / "results") == [
        f"{path}:runs[0].target_task: unknown task id 'pawsx2' (closest known target tasks: "
        "'pawsx', 'panx'); register your own with a [tasks.pawsx2] table in a TOML file given as "
        "--tasks FILE.toml (docs/tasks.md)"]
    path = manifest(tmp_path / "m.toml", HARNESS_MANIFEST + 'targets = {myxnli = "xnli2"}\n')
    assert refused("lm-eval", HARNESS_SOURCE, path, tmp_path / "results") == [
        f"{path}:runs[0].targets: unknown task id 'xnli2' (closest known target tasks: 'xnli'); "
        "register your own with a [tasks.xnli2] table in a TOML file given as --tasks "
        "FILE.toml (docs/tasks.md)"]
    path = manifest(tmp_path / "m.toml", HARNESS_MANIFEST + 'targets = {myxnli = "mnli"}\n')
    assert refused("lm-eval", HARNESS_SOURCE, path, tmp_path / "results") == [
        f"{path}:runs[0].targets: 'mnli' is an intermediate task, not a target task"]
    assert nothing_written(tmp_path / "results")


def test_a_value_out_of_range_names_the_source_key_and_the_scale(tmp_path, capsys):
    path = manifest(tmp_path / "m.toml", JIANT_MANIFEST + 'scale = "fraction"\n')
    out = tmp_path / "results"
    source_file = JIANT_SOURCE / "xquad-mnli-squad_v1-s1" / "val_metrics.json"
    assert f"{source_file}:xquad_de.metrics.minor.f1: 'value' must be in percent (0-100), got " \
           "7134.0 (read 71.34 with scale 'fraction')" in refused("jiant", JIANT_SOURCE, path, out)
    assert nothing_written(out)
    assert main(["import", "jiant", str(JIANT_SOURCE), "--manifest", str(path), "--out", str(out),
                 "--problems-file", str(tmp_path / "problems.tsv")]) == 2
    printed = capsys.readouterr().err
    assert "xquad_de.metrics.minor.f1" in printed and "import refused: nothing written" in printed
    assert nothing_written(out)


def test_ambiguous_selections_and_scores_are_refused(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(HARNESS_SOURCE, source)
    (results_file,) = source.glob("*/results_*.json")
    document = json.loads(results_file.read_text(encoding="utf-8"))
    document["results"]["xnli_de"]["acc_norm,none"] = 0.6
    results_file.write_text(json.dumps(document), encoding="utf-8")
    twice = results_file.with_name("results_2027-01-01T00-00-00.json")
    shutil.copy(results_file, twice)
    text = HARNESS_MANIFEST + 'metrics = {acc_norm = "accuracy"}\n' \
        '[[runs]]\nfiles = "*/results_2027*"\nmix = "none"\nseed = 1\n'
    path = manifest(tmp_path / "m.toml", text)
    assert refused("lm-eval", source, path, tmp_path / "results") == [
        f"{results_file}:results.xnli_de.acc_norm,none: a second accuracy score for xnli de "
        "(validation), the first from results.xnli_de.acc,none; map one of them to another name "
        "in `metrics`",
        f"{twice}: selected by several manifest entries (runs[0], runs[1]); each run must have one",
    ]
    path = manifest(tmp_path / "m.toml", HARNESS_MANIFEST)
    assert refused("lm-eval", source, path, tmp_path / "results") == [
        f"{twice}: gives run 'xlmr-large.mnli-squad_v1.xnli.s1', as {results_file} does (the same "
        "model, mix, target and seed): select one of them, or give them different seeds",
        f"{twice}: gives run 'xlmr-large.mnli-squad_v1.pawsx.s1', as {results_file} does (the "
        "same model, mix, target and seed): select one of them, or give them different seeds",
    ]
    assert nothing_written(tmp_path / "results")


# ---------------------------------------------------------------- the results folder

def test_runs_already_in_the_results_folder_are_kept_and_a_changed_one_is_refused(tmp_path):
    path = manifest(tmp_path / "m.toml", JIANT_MANIFEST)
    out = tmp_path / "results"
    first = import_results("jiant", JIANT_SOURCE, path, out)
    again = import_results("jiant", JIANT_SOURCE, path, out)
    assert again.written == () and again.unchanged == first.written
    changed = out / first.written[0] / "scores.jsonl"
    changed.write_text(changed.read_text(encoding="utf-8").replace("78.1", "77.0"),
                       encoding="utf-8")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    problems = refused("jiant", JIANT_SOURCE, path, out)
    assert problems == [f"{out / first.written[0]}: run {first.written[0]!r} is already in {out} "
                        "with other content than xnli-mnli-squad_v1-s1/val_metrics.json gives; "
                        "remove it to import it again, or give this import another model_short"]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # One mix name must keep its members across imports into one folder.
    other = JIANT_MANIFEST.replace("mnli = 20000", "mnli = 10000") \
        .replace("[defaults]\n", '[defaults]\nmodel_short = "other"\n')
    problems = refused("jiant", JIANT_SOURCE, manifest(tmp_path / "m.toml", other), out)
    assert f"{tmp_path / 'm.toml'}:mixes.mnli-squad_v1: mix 'mnli-squad_v1' is already in the " \
           "results with other members (mnli=20000+squad_v1=20000); give this mix another " \
           "name" in problems
    # ... and its runs would repeat those of the same model, mix, target and seed there.
    assert f"{tmp_path / 'm.toml'}:runs[0]: run 'other.mnli-squad_v1.xnli.s1' of " \
           "xnli-mnli-squad_v1-s1/val_metrics.json repeats run 'xlmr-large.mnli-squad_v1.xnli.s1' " \
           f"already in the results ({out / first.written[0] / 'run.json'}): same model, mix, " \
           "target, seed" in problems
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------- mixes of languages

LANGUAGE_MANIFEST = """
[mixes.de-fr-sw]
kind = "language"
members = {de = 5000, fr = 5000, sw = 5000}

[[runs]]
run = "xnli-mnli-squad_v1-s1"
mix = "de-fr-sw"
skip_tasks = ["mnli"]
"""


def test_a_language_mix_is_written_with_its_kind_and_loaded(tmp_path):
    from transferstats.importers import FORMATS, _read_source
    from transferstats.importers.manifest import read_manifest
    from transferstats.results import write_run

    reader = FORMATS["jiant"]
    path = manifest(tmp_path / "m.toml", LANGUAGE_MANIFEST)
    plan = read_manifest(path, reader.REQUIRED_KEYS, reader.OPTIONAL_KEYS)
    # SOURCE is the run folder itself: the run is named by the folder's own name.
    source = JIANT_SOURCE / "xnli-mnli-squad_v1-s1"
    (run,) = _read_source(reader, source, plan)
    write_run(tmp_path / "written" / run.run_id, run.record, [s.row() for s in run.scores])
    record = json.loads((tmp_path / "written" / run.run_id / "run.json").read_text("utf-8"))
    assert run.run_id == "xlmr-large.de-fr-sw.xnli.s1"
    assert record["intermediate"] == {"name": "de-fr-sw", "kind": "language",
                                      "tasks": {"de": 5000, "fr": 5000, "sw": 5000}}
    out = tmp_path / "results"
    import_results("jiant", source, path, out)
    scores = ts.load_results(out).scores
    assert set(scores["source_kind"]) == {"language"}
    assert set(scores["mix_tasks"]) == {"de=5000+fr=5000+sw=5000"}


def test_an_unknown_language_member_is_named_in_the_manifest(tmp_path):
    from transferstats.importers import FORMATS
    from transferstats.importers.manifest import read_manifest

    reader = FORMATS["jiant"]
    path = manifest(tmp_path / "m.toml", LANGUAGE_MANIFEST.replace("sw = 5000", "xyz = 5000"))
    with pytest.raises(ResultsError) as error:
        read_manifest(path, reader.REQUIRED_KEYS, reader.OPTIONAL_KEYS)
    assert [str(p) for p in error.value.problems] == [
        f"error: {path}:mixes.de-fr-sw.members.xyz: unknown language code 'xyz': expected an ISO 639 "
        "code of the IANA registry, such as 'de', 'sw' or 'yue' (lowercase, the two-letter code "
        "where one exists, no region or script)"]


# ---------------------------------------------------------------- analysed after import

def grid_value(mix: str, seed: int, language: str) -> float:
    """A made-up accuracy in percent: diversity and volume help, plus noise."""
    import random

    noise = random.Random(f"{mix}/{seed}/{language}").gauss(0, 1)
    if mix == "none":
        return 68 + noise
    tasks = GRID_MIXES[mix]
    return 70 + math.log2(len(tasks)) + 0.5 * math.log2(sum(tasks.values()) / 10_000) + noise


def grid_manifest(path: Path, extra: str = "") -> Path:
    lines = ['[defaults]\nmodel = "xlm-roberta-large"\n' + extra]
    lines += [f"[mixes.{name}]\nmembers = {{{', '.join(f'{t} = {n}' for t, n in tasks.items())}}}"
              for name, tasks in GRID_MIXES.items()]
    lines += [f'[[runs]]\nrun = "{mix}-s{seed}"\nmix = "{mix}"\nseed = {seed}'
              for mix in ("none", *GRID_MIXES) for seed in GRID_SEEDS]
    return manifest(path, "\n\n".join(lines) + "\n")


def write_jiant_run(folder: Path, mix: str, seed: int) -> None:
    """A jiant run folder as ``write_val_results`` and ``save_args`` write it."""
    folder.mkdir(parents=True)
    tasks = {f"xnli_{language}": grid_value(mix, seed, language) / 100
             for language in GRID_LANGUAGES}
    metrics = {"aggregated": sum(tasks.values()) / len(tasks)}
    metrics |= {task: {"loss": 0.7, "metrics": {"major": acc, "minor": {"acc": acc}}}
                for task, acc in tasks.items()}
    (folder / "val_metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    (folder / "args.json").write_text(json.dumps(
        {"output_dir": str(folder), "hf_pretrained_model_name_or_path": "xlm-roberta-large",
         "seed": seed, "learning_rate": 1e-5}, indent=2), encoding="utf-8")


def write_harness_run(folder: Path, mix: str, seed: int) -> None:
    """The committed harness output with an XNLI task per grid language and the grid's values."""
    (template,) = HARNESS_SOURCE.glob("*/results_*.json")
    document = json.loads(template.read_text(encoding="utf-8"))
    for language in GRID_LANGUAGES:
        task = f"xnli_{language}"
        document["results"][task] = document["results"]["xnli_de"] | {
            "name": task, "alias": task, "acc,none": grid_value(mix, seed, language) / 100}
        document["configs"][task] = document["configs"]["xnli_de"] | {"task": task}
        document["n-samples"][task] = document["n-samples"]["xnli_de"]
    document["group_subtasks"]["xnli"] = [f"xnli_{language}" for language in GRID_LANGUAGES]
    folder.mkdir(parents=True)
    (folder / template.name).write_text(json.dumps(document, indent=2), encoding="utf-8")


@pytest.mark.parametrize("format", ["jiant", "lm-eval",
                                    pytest.param("hf-trainer", marks=pytest.mark.train)])
def test_imported_grids_validate_and_are_analysed(format, tmp_path, request):
    source = tmp_path / "source"
    for mix in ("none", *GRID_MIXES):
        for seed in GRID_SEEDS:
            folder = source / f"{mix}-s{seed}"
            if format == "jiant":
                write_jiant_run(folder, mix, seed)
            elif format == "lm-eval":
                write_harness_run(folder, mix, seed)
            else:  # real evaluations, whose accuracies are noise around chance
                request.getfixturevalue("tiny_trainer")(
                    folder, seed * 100 + len(mix),
                    {"predict": tuple(f"predict_{language}" for language in GRID_LANGUAGES)})
    extra = 'target_task = "xnli"\n' if format == "hf-trainer" else ""
    out = tmp_path / "results"
    summary = import_results(format, source, grid_manifest(tmp_path / "m.toml", extra), out)
    assert len(summary.written) == 9 * len(GRID_SEEDS) * (2 if format == "lm-eval" else 1)
    assert main(["validate", str(out)]) == 0
    split = "test" if format == "hf-trainer" else "validation"
    result = ts.analyze(out, split=split, **QUICK)
    assert {"diversity", "volume"} <= set(result.effects["term"])
    assert result.design["n_mixes"] == len(GRID_MIXES)


def test_a_long_list_of_what_exists_is_cut(tmp_path, monkeypatch):
    """Past LISTED_NAMES names the message counts the rest; a file recording no model name is
    listed as "(none)"."""
    import transferstats.importers as importers

    monkeypatch.setattr(importers, "LISTED_NAMES", 2)
    source = tmp_path / "source"
    for name in ("a", "b", "c"):
        shutil.copytree(HARNESS_SOURCE / "tiny-gpt2", source / name)
    for file in source.glob("c/results_*.json"):
        document = json.loads(file.read_text(encoding="utf-8"))
        del document["model_name"], document["config"]["model_args"]
        file.write_text(json.dumps(document), encoding="utf-8")
    text = HARNESS_MANIFEST.replace('files = "tiny-gpt2/results_*.json"', 'run = "d"')
    path = manifest(tmp_path / "m.toml", text)
    assert refused("lm-eval", source, path, tmp_path / "results")[-1] == (
        f"{path}:runs[0]: selects no source run in {source} (run = 'd'); the run folders there: "
        "'a', 'b' and 1 more")
    path = manifest(tmp_path / "m.toml", text.replace('run = "d"', 'model_name = "d"'))
    assert refused("lm-eval", source, path, tmp_path / "results")[-1] == (
        f"{path}:runs[0]: selects no source run in {source} (model_name = 'd'); the model names "
        "recorded there: 'tiny-gpt2', (none)")
