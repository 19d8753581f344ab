"""lm-evaluation-harness: the ``results_*.json`` files that ``lm_eval --output_path DIR`` writes.

The structure followed (lm-eval 0.4, ``EvaluationTracker.save_results_aggregated``; the tests
import files the installed harness wrote): ``results`` maps each task (``xnli_de``) and each group
(``xnli``) to ``"<metric>,<filter>"`` keys (``"acc,none"``, ``"acc_stderr,none"``) with values
in 0-1; ``group_subtasks`` names the groups; ``configs`` holds each task's configuration, whose
``test_split`` is set when the harness evaluated the test split (otherwise it evaluated the
validation split); ``n-samples`` counts the documents (``effective``: after ``--limit``);
``model_name`` is the evaluated model as given (``pretrained=`` of ``config.model_args``). The
harness writes one file per call into ``DIR/<model_name_sanitized>/``: one file is one source run,
named by that folder.
"""

from __future__ import annotations

from pathlib import Path

from transferstats.importers.common import (
    Reading,
    SourceRun,
    find_runs,
    make_score,
    no_target,
    read_json_object,
    skipped,
    source_run,
    target_and_language,
)
from transferstats.importers.manifest import Entry
from transferstats.problems import Problem

NAME = "lm-eval"
WHAT = "results_*.json file"
PATTERNS = ("results_*.json",)
SELECTORS = ("files", "run", "model_name")
REQUIRED_KEYS = frozenset({"model", "mix", "seed"})
OPTIONAL_KEYS = frozenset({"model_short", "metrics", "targets", "skip_tasks", "scale", "split"})
#: The harness's metrics (acc, f1, exact_match) are means over documents, in 0-1.
DEFAULT_SCALE = "fraction"


def find(source: Path) -> list[SourceRun]:
    """Every ``results_*.json`` below ``source``, each a source run with its model name."""
    return [source_run(source, folder, [file], model_name(file))
            for folder, files in find_runs(source, PATTERNS).items() for file in files]


def model_name(file: Path) -> str | None:
    """The evaluated model a results file records: ``model_name``, else the ``pretrained``
    argument of ``config.model_args`` (an object, or the command line's ``key=value,...``);
    ``None`` when it records neither or is no JSON object (:func:`read` reports that)."""
    document, _ = read_json_object(file)
    if document is None:
        return None
    if isinstance(document.get("model_name"), str) and document["model_name"]:
        return document["model_name"]
    arguments = (document.get("config") or {}).get("model_args") if isinstance(
        document.get("config"), dict) else None
    if isinstance(arguments, str):
        arguments = dict(part.partition("=")[::2] for part in arguments.split(",") if part)
    pretrained = arguments.get("pretrained") if isinstance(arguments, dict) else None
    return pretrained if isinstance(pretrained, str) and pretrained else None


def read(run: SourceRun, entry: Entry) -> Reading:
    """The scores of every task of the file except groups and ``skip_tasks``."""
    reading = Reading()
    file = run.files[0]
    document, reading.problems = read_json_object(file)
    if document is None:
        return reading
    results = document.get("results")
    if not isinstance(results, dict):
        reading.problems.append(Problem(str(file), "results", "error",
                                        "missing or not an object: not a results file of "
                                        "lm-evaluation-harness?"))
        return reading
    groups = set(document.get("group_subtasks") or {}) | set(document.get("groups") or {})
    for task, metrics in results.items():
        if task not in groups and not skipped(task, entry.skip_tasks):
            _read_task(document, task, metrics, entry, file, reading)
    return reading


def _read_task(document: dict, task: str, metrics: object, entry: Entry, file: Path,
               reading: Reading) -> None:
    where = f"results.{task}"
    target_language = target_and_language(task, entry.targets)
    if target_language is None:
        reading.problems.append(no_target(file, where, task, entry.targets))
        return
    if not isinstance(metrics, dict):
        reading.problems.append(Problem(str(file), where, "error",
                                        f"expected an object of metrics, got {metrics!r}"))
        return
    target, language = target_language
    config = (document.get("configs") or {}).get(task) or {}
    split = entry.split_of(target) or ("test" if config.get("test_split") else "validation")
    n_examples = ((document.get("n-samples") or {}).get(task) or {}).get("effective")
    names, mapped = [], False
    for key, value in metrics.items():
        name, comma, filter_name = key.partition(",")
        if not comma or name.endswith("_stderr"):
            continue  # alias, sample_len and standard errors: not scores
        names.append(key)
        metric = entry.metrics.get(key, entry.metrics.get(name))
        if metric is None:
            continue
        mapped = True
        stderr_key = f"{name}_stderr,{filter_name}"
        reading.add(make_score(target=target, language=language, metric=metric, split=split,
                               value=value, n_examples=n_examples,
                               scale=entry.scale or DEFAULT_SCALE, file=file, key=f"{where}.{key}",
                               stderr=metrics.get(stderr_key), stderr_key=f"{where}.{stderr_key}"))
    if not mapped:
        reading.problems.append(Problem(str(file), where, "error",
                                        f"none of its metrics ({', '.join(names) or 'none'}) maps "
                                        "to a contract metric; map one in `metrics`"))
