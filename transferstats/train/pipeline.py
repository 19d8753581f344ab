"""The two entry points executors call: phase 2 (:func:`run_intermediate`) and phase 3 with
zero-shot evaluation (:func:`run_target`). Phase 1, loading the pretrained encoder, is part of both.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
import traceback
from pathlib import Path

import numpy as np
import torch

import transferstats
from transferstats.results import write_run
from transferstats.tasks import Task, get_task
from transferstats.train import evaluation, metrics, retrieval
from transferstats.train.data import default_cache_dir, locate, read, selection_source, source_of
from transferstats.train.features import cached_encode
from transferstats.train.hyperparameters import resolve, retrieval_layer
from transferstats.train.jobs import IntermediateJob, TargetJob
from transferstats.train.loop import pick_device, predict, train
from transferstats.train.model import MultiTaskModel, load_encoder, make_head
from transferstats.train.sampling import subsample, task_probabilities

EXAMPLES_FILE = "examples_used.json"
HOLDOUT_FRACTION, HOLDOUT_MAX = 0.1, 2000


# ---------------------------------------------------------------------------------------- phase 2

def checkpoint_dir_of(output: Path) -> Path:
    """Where the training that writes ``output`` (an encoder or a run folder) keeps its checkpoint:
    a hidden sibling, which the results loader skips. It is removed once ``output`` is written."""
    return output.with_name(f".{output.name}.checkpoint")


def run_intermediate(job: IntermediateJob) -> Path:
    """Train the shared encoder on the mix; save encoder, tokenizer and ``examples_used.json``.

    The folder is written under a temporary name and renamed, so if it exists it is complete and
    is returned without retraining. A training stopped part-way resumes from its checkpoint.
    """
    output_dir = Path(job.output_dir)
    if (output_dir / EXAMPLES_FILE).is_file():
        return output_dir
    checkpoint_dir = checkpoint_dir_of(output_dir)
    try:
        _train_encoder(job, output_dir, checkpoint_dir)
    except Exception:
        # A failure is final (the worker records it, a retry starts afresh): the checkpoint would
        # only hold on to gigabytes. A preemption (SystemExit) keeps it to resume from.
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        raise
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return output_dir


def _train_encoder(job: IntermediateJob, output_dir: Path, checkpoint_dir: Path) -> None:
    hp = resolve(job.hyperparameters, job.data)
    device = pick_device(job.device)
    torch.manual_seed(job.seed)
    encoder, tokenizer = load_encoder(job.model)

    tasks, heads, used = {}, {}, {}
    for task_id, requested in job.mix.tasks.items():
        task = get_task(task_id)
        examples, features, labels = _features(task, "train", "en", tokenizer, hp, job.data,
                                               encoder.config)
        chosen = subsample(len(examples), requested, job.seed, task_id)
        keep = set(chosen)
        features = [f for f in features if f["example"] in keep]
        labels = _labels(task, labels, examples)
        tasks[task_id] = (task.format, _with_tag_ids(task, features, examples, labels))
        heads[task_id] = make_head(task.format, encoder.config.hidden_size,
                                   _num_labels(task, labels, examples), hp["dropout"])
        used[task_id] = chosen

    model = MultiTaskModel(encoder, heads).to(device)
    probabilities = task_probabilities({t: len(chosen) for t, chosen in used.items()},
                                       job.mix.sampling, job.mix.temperature)
    log = train(model, tasks, probabilities, hp, job.seed, device, tokenizer.pad_token_id,
                checkpoint_dir=checkpoint_dir)

    record = {"mix": job.mix.name, "model": job.model, "seed": job.seed,
              "tasks": {t: len(chosen) for t, chosen in used.items()},
              "sampling": job.mix.sampling, "temperature": job.mix.temperature,
              "probabilities": probabilities, "hyperparameters": hp, "train": log,
              "examples": used}
    _save_atomically(output_dir, model.encoder, tokenizer, record)


def _save_atomically(output_dir: Path, encoder, tokenizer, record: dict) -> None:
    """Write everything under a temporary name, then rename: the folder appears complete or not
    at all. A twin job that finished first wins; its folder is kept."""
    temporary = output_dir.parent / f".{output_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        encoder.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        (temporary / EXAMPLES_FILE).write_text(json.dumps(record) + "\n", encoding="utf-8")
        if output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()
        os.rename(temporary, output_dir)
    except OSError:
        if not (output_dir / EXAMPLES_FILE).is_file():
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


# ---------------------------------------------------------------------------------------- phase 3

def run_target(job: TargetJob) -> Path:
    """Fine-tune on the target's English data (or embed, for retrieval), evaluate every language
    zero-shot, and write the run's results folder. A failure writes ``status: failed`` (no
    scores) and is re-raised."""
    run_dir = Path(job.results_dir) / job.run_id
    checkpoint_dir = checkpoint_dir_of(run_dir)
    started = _now()
    run = {"run_id": job.run_id, "model": job.model, "intermediate": _intermediate_record(job),
           "target_task": job.target_task, "seed": job.seed,
           "hyperparameters": dict(job.hyperparameters), "started_at": started,
           "code_version": _code_version(), "encoder": str(job.encoder) if job.encoder else None}
    try:
        run["hardware"] = _hardware(pick_device(job.device))
        hp = resolve(job.hyperparameters, job.data)
        run["hyperparameters"] = hp
        task = get_task(job.target_task)
        languages = tuple(job.languages or task.languages)
        if task.format == "retrieval":
            scores, extra = _evaluate_retrieval(job, task, languages, hp)
        else:
            scores, extra = _fine_tune_and_evaluate(job, task, languages, hp, checkpoint_dir)
        write_run(run_dir, {**run, **extra, "status": "complete", "finished_at": _now()}, scores)
    except Exception as error:
        tail = "".join(traceback.format_exception(error))[-4000:]
        write_run(run_dir, {**run, "status": "failed", "finished_at": _now(),
                            "error": f"{type(error).__name__}: {error}", "traceback": tail})
        # As in phase 2: a failure is final, a preemption (SystemExit) keeps the checkpoint.
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        raise
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return run_dir


def _fine_tune_and_evaluate(job: TargetJob, task: Task, languages, hp: dict,
                            checkpoint_dir: Path):
    for lang in languages:  # a missing test set should fail before the GPU time is spent
        locate(task, "test", lang, job.data)
    device = pick_device(job.device)
    torch.manual_seed(job.seed)
    encoder, tokenizer = load_encoder(str(job.encoder) if job.encoder else job.model)
    config, pad_id = encoder.config, tokenizer.pad_token_id

    train_task = get_task(task.train_task) if task.train_task else task
    examples, features, labels = _features(train_task, "train", "en", tokenizer, hp, job.data, config)
    labels = _labels(task, labels, examples)
    selection = selection_source(task)
    if selection is None:
        dev_examples, dev_features, examples, features = _holdout(examples, features)
    else:
        dev_task, dev_split = selection
        dev_examples, dev_features, _ = _features(dev_task, dev_split, "en", tokenizer, hp, job.data,
                                                  config)
    features = _with_tag_ids(task, features, examples, labels)

    head = make_head(task.format, config.hidden_size, _num_labels(task, labels, examples),
                     hp["dropout"])
    model = MultiTaskModel(encoder, {task.id: head}).to(device)

    def evaluate(lang, eval_examples, eval_features) -> dict[str, float]:
        outputs = predict(model, task.id, task.format, eval_features, hp, device, pad_id)
        return evaluation.score(task.format, eval_examples, eval_features, outputs, labels, lang)

    log = train(model, {task.id: (task.format, features)}, {task.id: 1.0}, hp, job.seed, device,
                pad_id, evaluate=lambda: evaluate("en", dev_examples, dev_features)[task.metric],
                checkpoint_dir=checkpoint_dir)

    scores = []
    for lang in languages:
        test_examples, test_features, _ = _features(task, "test", lang, tokenizer, hp, job.data, config)
        for metric, value in evaluate(lang, test_examples, test_features).items():
            scores.append({"language": lang, "metric": metric, "split": "test",
                           "value": round(value, 4), "n_examples": len(test_examples)})
    extra = {"train_examples": len(examples), "selection": {
        "split": f"{selection[0].id}/{selection[1]}" if selection else "holdout from train",
        "n_examples": len(dev_examples), "metric": task.metric, **log}}
    return scores, extra


def _evaluate_retrieval(job: TargetJob, task: Task, languages, hp: dict):
    device = pick_device(job.device)
    encoder, tokenizer = load_encoder(str(job.encoder) if job.encoder else job.model)
    encoder.to(device)
    layer = retrieval_layer(hp, encoder.config.num_hidden_layers)
    max_length = _max_length("retrieval", hp, encoder.config)

    def embed(sentences):
        return retrieval.embed(encoder, tokenizer, sentences, layer, hp, max_length, device)

    def load(split, lang):
        examples, _ = read(task, locate(task, split, lang, job.data), job.data)
        return examples[0]

    scores: list[dict] = []
    thresholds: dict[str, float] = {}
    for lang in languages:
        test = load("test", lang)
        if task.id == "bucc2018":
            # The threshold comes from dev only: tuning it on the test gold would inflate F1.
            dev_candidates, dev_gold = retrieval.bucc_candidates(embed, load("dev", lang))
            thresholds[lang] = metrics.best_threshold(dev_candidates, dev_gold)
            candidates, gold = retrieval.bucc_candidates(embed, test)
            values = {"f1": metrics.bucc_f1(candidates, gold, thresholds[lang])}
            count = len(gold)
        else:
            values, count = retrieval.tatoeba(embed, test), len(test["source"])
        scores.extend({"language": lang, "metric": metric, "split": "test",
                       "value": round(value, 4), "n_examples": count}
                      for metric, value in values.items())
    extra = {"retrieval": {"layer": layer, "pooling": "mean", "similarity": "cosine",
                           **({"margin_thresholds": thresholds} if thresholds else {})}}
    return scores, extra


# ---------------------------------------------------------------------------------------- helpers

def _max_length(task_format: str, hp: dict, config) -> int:
    wanted = hp["qa_max_length"] if task_format == "extractive_qa" else hp["max_length"]
    return min(wanted, config.max_position_embeddings - 2)  # XLM-R reserves two positions


def _features(task: Task, split: str, lang: str, tokenizer, hp: dict, data: dict, config):
    """(examples, features, labels) of one split, tokenised once per data, tokenizer and length."""
    location = locate(task, split, lang, data)
    max_length = _max_length(task.format, hp, config)
    # A window must leave room for the question, so the stride shrinks with short windows.
    doc_stride = min(hp["doc_stride"], max_length // 3)
    key = [location.fingerprint(), task.id, json.dumps(source_of(task), sort_keys=True, default=str)]
    return cached_encode(default_cache_dir(data), key, lambda: read(task, location, data),
                         task.format, tokenizer, max_length, doc_stride)


def _labels(task: Task, declared: list[str] | None, examples: list[dict]) -> list[str] | None:
    """Tag names for tagging tasks: the declared set, else those seen in training, sorted."""
    if task.format != "tagging":
        return declared
    return list(declared) if declared else sorted({tag for e in examples for tag in e["tags"]})


def _num_labels(task: Task, labels: list[str] | None, examples: list[dict]) -> int | None:
    if task.format == "tagging":
        assert labels is not None, "a tagging task always has its tag names (see _labels)"
        return len(labels)
    if task.format == "classification":
        return task.num_labels or max(e["label"] for e in examples) + 1
    return None


def _with_tag_ids(task: Task, features: list[dict], examples: list[dict], labels) -> list[dict]:
    """Training targets for tagging: the tag id of each kept word (by its first sub-token)."""
    if task.format != "tagging":
        return features
    index = {tag: i for i, tag in enumerate(labels)}
    tagged = []
    for feature in features:
        tags = examples[feature["example"]]["tags"][:len(feature["word_starts"])]
        unknown = [tag for tag in tags if tag not in index]
        if unknown:
            raise ValueError(f"task {task.id!r}: tag {unknown[0]!r} is not in its label set {labels}")
        tagged.append({**feature, "tag_ids": [index[tag] for tag in tags]})
    return tagged


def _holdout(examples, features):
    """A fixed slice of the English training set for checkpoint selection (same for every seed)."""
    count = max(1, min(HOLDOUT_MAX, int(len(examples) * HOLDOUT_FRACTION)))
    held = set(int(i) for i in np.random.default_rng(0).choice(len(examples), count, replace=False))
    dev_indices = sorted(held)
    train_indices = [i for i in range(len(examples)) if i not in held]
    renumber_dev = {old: new for new, old in enumerate(dev_indices)}
    renumber_train = {old: new for new, old in enumerate(train_indices)}
    dev_examples = [examples[i] for i in dev_indices]
    train_examples = [examples[i] for i in train_indices]
    dev_features = [{**f, "example": renumber_dev[f["example"]]} for f in features
                    if f["example"] in held]
    train_features = [{**f, "example": renumber_train[f["example"]]} for f in features
                      if f["example"] not in held]
    return dev_examples, dev_features, train_examples, train_features


def _intermediate_record(job: TargetJob) -> dict | None:
    """run.json's ``intermediate``: the examples actually used, read from the phase-2 folder."""
    if job.mix is None:
        return None
    tasks = dict(job.mix.tasks)
    if job.encoder is not None:
        try:
            tasks = json.loads((Path(job.encoder) / EXAMPLES_FILE).read_text(encoding="utf-8"))["tasks"]
        except (OSError, ValueError, KeyError):
            pass  # the run fails later on the missing encoder; the requested mix is recorded
    return {"name": job.mix.name, "tasks": tasks, "sampling": job.mix.sampling}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _code_version() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5, cwd=Path(transferstats.__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return transferstats.__version__
    if commit.returncode != 0 or not commit.stdout.strip():
        return transferstats.__version__
    return f"{transferstats.__version__}+g{commit.stdout.strip()}"


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(device)}"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
