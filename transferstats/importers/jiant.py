"""jiant 2: run folders holding ``val_metrics.json`` and the run's configuration.

jiant cannot be installed here (it pins old transformers and torch); this module follows its
output as its source writes it (github.com/nyu-mll/jiant, jiant 2.x), and the tests import a
fixture written in that format, not output of a jiant run:

- ``jiant/proj/main/components/evaluate.py`` (``write_val_results``, called by
  ``jiant/proj/main/runscript.py`` when ``do_val``) writes ``<output_dir>/val_metrics.json``:
  ``{"aggregated": <mean of the tasks' major metrics>, "<task>": {"loss": <float>, "metrics":
  {"major": <float>, "minor": {<metric>: <value>, ...}}}, ...}``, from the validation split.
- ``jiant/shared/initialization.py`` (``save_args``) writes the run configuration
  ``<output_dir>/args.json``, holding ``hf_pretrained_model_name_or_path`` (``model_type`` in
  early 2.x versions) and the ``seed`` used; the simple CLI (``jiant/proj/simple/runscript.py``)
  also writes ``simple_run_config.json``, read when there is no ``args.json``.
- ``jiant/tasks/evaluate/core.py``: the ``minor`` metrics of the XTREME tasks, named
  ``xnli_de``, ``pawsx_de``, ``udpos_de``, ``panx_de``, ``xquad_de``, ``mlqa_de_de``,
  ``tydiqa_ar``, ``bucc2018_de``, ``tatoeba_de``: ``acc`` (XNLI, PAWS-X, Tatoeba) and
  ``precision``/``recall``/``f1`` (UDPOS, PAN-X, seqeval) and ``precision``/``recall``/``F1``
  (BUCC) in 0-1; ``exact``/``f1`` (XQuAD, TyDiQA: the SQuAD script) and ``exact_match``/``f1``
  (MLQA: the MLQA script) in percent.
"""

from __future__ import annotations

from pathlib import Path

from transferstats.importers.common import (
    Reading,
    SourceRun,
    find_runs,
    make_score,
    no_target,
    qa_percent_scale,
    read_json_object,
    skipped,
    source_run,
    target_and_language,
)
from transferstats.importers.manifest import Entry
from transferstats.problems import Problem

NAME = "jiant"
WHAT = "val_metrics.json"
METRICS_FILE = "val_metrics.json"
CONFIG_FILES = ("args.json", "simple_run_config.json")
# The model and seed are in the run configuration; the manifest may still give (override) them.
SELECTORS = ("files", "run")
REQUIRED_KEYS = frozenset({"mix"})
OPTIONAL_KEYS = frozenset({"model", "model_short", "seed", "metrics", "targets", "skip_tasks",
                           "scale", "split"})
#: ``val_metrics.json`` holds the validation split's scores.
SPLIT = "validation"


def find(source: Path) -> list[SourceRun]:
    """Every folder below ``source`` holding a ``val_metrics.json``."""
    return [source_run(source, folder, files)
            for folder, files in find_runs(source, (METRICS_FILE,)).items()]


def read(run: SourceRun, entry: Entry) -> Reading:
    """The scores of every task but ``skip_tasks``, with the model and seed of the run config."""
    file = run.files[0]
    reading = Reading()
    document, reading.problems = read_json_object(file)
    _read_config(file.parent, reading)
    for task, result in (document or {}).items():
        if task == "aggregated" or skipped(task, entry.skip_tasks):
            continue
        target_language = target_and_language(task, entry.targets)
        if target_language is None:
            reading.problems.append(no_target(file, task, task, entry.targets))
            continue
        metrics = result.get("metrics") if isinstance(result, dict) else None
        minor = metrics.get("minor") if isinstance(metrics, dict) else None
        if not isinstance(minor, dict):
            reading.problems.append(Problem(str(file), task, "error",
                                            'expected {"metrics": {"major": ..., "minor": '
                                            "{<metric>: <value>, ...}}}, as jiant writes"))
            continue
        target, language = target_language
        for name, value in minor.items():
            metric = entry.metrics.get(name)
            if metric is not None:
                reading.add(make_score(target=target, language=language, metric=metric,
                                       split=entry.split_of(target) or SPLIT, value=value, n_examples=None,
                                       scale=entry.scale or qa_percent_scale(target), file=file,
                                       key=f"{task}.metrics.minor.{name}"))
    return reading


def _read_config(folder: Path, reading: Reading) -> None:
    """The model and seed of the run's ``args.json`` (or ``simple_run_config.json``), if any."""
    for name in CONFIG_FILES:
        if (folder / name).is_file():
            config, problems = read_json_object(folder / name)
            reading.problems += problems
            config = config or {}
            model = config.get("hf_pretrained_model_name_or_path") or config.get("model_type")
            seed = config.get("seed")
            reading.model = model if isinstance(model, str) and model else None
            reading.seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
            return
