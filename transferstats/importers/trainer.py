"""Hugging Face ``Trainer``: the ``*_results.json`` files of ``Trainer.save_metrics``.

``trainer.save_metrics(split, metrics)`` writes ``<output_dir>/<split>_results.json`` and merges
the same metrics into ``<output_dir>/all_results.json``. ``Trainer.evaluate`` names its metrics
``eval_<metric>`` and ``Trainer.predict`` ``test_<metric>`` (the example scripts pass
``metric_key_prefix="predict"``); evaluating one language with ``metric_key_prefix="eval_de"``
gives ``eval_de_<metric>``. So a key is ``<eval|test|predict>[_<language>]_<metric>``; ``eval`` is
taken as the validation split and ``test``/``predict`` as the test split. The other keys (loss,
runtime, throughput, ``train_*``, ``epoch``) are not scores; ``<prefix>[_<language>]_samples``
(written by the example scripts) is the number of examples.

One output folder is one source run, for one target task (the manifest's ``target_task``): its
``all_results.json`` when there is one (it holds everything), else its ``eval_results.json``,
``test_results.json`` and ``predict_results.json``. Keys without a language take the manifest's
``language``.
"""

from __future__ import annotations

from pathlib import Path

from transferstats.importers.common import (
    Reading,
    SourceRun,
    find_runs,
    make_score,
    qa_percent_scale,
    read_json_object,
    source_run,
)
from transferstats.importers.manifest import Entry
from transferstats.problems import Problem

NAME = "hf-trainer"
WHAT = "all_results.json, eval_results.json, test_results.json or predict_results.json"
ALL_RESULTS = "all_results.json"
PATTERNS = (ALL_RESULTS, "eval_results.json", "test_results.json", "predict_results.json")
SELECTORS = ("files", "run")
REQUIRED_KEYS = frozenset({"model", "mix", "seed", "target_task"})
OPTIONAL_KEYS = frozenset({"model_short", "language", "metrics", "scale", "split"})
#: ``metric_key_prefix`` -> the contract's split.
SPLITS = {"eval": "validation", "test": "test", "predict": "test"}


def find(source: Path) -> list[SourceRun]:
    """Every folder below ``source`` holding a results file of ``save_metrics``."""
    runs = []
    for folder, files in find_runs(source, PATTERNS).items():
        # all_results.json repeats every other file's keys: read it alone.
        chosen = [file for file in files if file.name == ALL_RESULTS] or files
        runs.append(source_run(source, folder, chosen))
    return runs


def read(run: SourceRun, entry: Entry) -> Reading:
    """The scores of every ``<prefix>[_<language>]_<metric>`` key whose metric maps to the contract."""
    target = entry.target_task
    assert target is not None, "target_task is a required key of this format"
    reading = Reading()
    for file in run.files:
        metrics, problems = read_json_object(file)
        reading.problems += problems
        if metrics is None:
            continue
        for key, value in metrics.items():
            prefix, _, rest = key.partition("_")
            key_language, name = _language_and_metric(rest, entry.metrics)
            if prefix not in SPLITS or name is None:
                continue
            language = key_language or entry.language
            if language is None:
                reading.problems.append(Problem(
                    str(file), key, "error",
                    f"no language: the key has none (as {prefix}_de_{name} would) and the "
                    "manifest gives no `language` for this run"))
                continue
            reading.add(make_score(target=target, language=language, metric=entry.metrics[name],
                                   split=entry.split_of(target) or SPLITS[prefix], value=value,
                                   n_examples=metrics.get(key.removesuffix(name) + "samples"),
                                   scale=entry.scale or qa_percent_scale(target), file=file,
                                   key=key))
    return reading


def _language_and_metric(rest: str, metrics: dict[str, str]) -> tuple[str | None, str | None]:
    """``"accuracy"`` -> ``(None, "accuracy")``, ``"de_accuracy"`` -> ``("de", "accuracy")``;
    ``(None, None)`` when no known metric name ends the key (loss, runtime, ...)."""
    if rest in metrics:
        return None, rest
    language, _, name = rest.partition("_")
    return (language, name) if name in metrics else (None, None)
