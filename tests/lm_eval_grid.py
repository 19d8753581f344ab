"""A grid of real lm-evaluation-harness 0.4 output, built by the tests, and its import.

Eight tiny randomly initialised GPT-2 models, one per language mix and seed (4 mixes at a fixed
budget of 12,000 examples x 2 seeds), saved to disk with ``save_pretrained`` beside a word-level
tokenizer trained on the data. lm-eval's Python API evaluates each one (``simple_evaluate`` with
``model="hf"``, ``model_args="pretrained=<dir>"``), offline, on local tasks read from 12-row JSON
Lines files (``dataset_path: json``): XNLI-like tasks in 5 languages on their validation split
(``xnli_<lang>``, in a group ``xnli``) and PAWS-X-like tasks in 3 languages on their test split
(``paws_<lang>``, in a group ``pawsx``), 10 of 12 documents each (``limit``). Its
``EvaluationTracker`` writes the results as ``lm_eval --output_path`` does:
``output/<sanitised model path>/results_<date>.json``.
One model is evaluated with ``bootstrap_iters=0`` (``--bootstrap_iters 0``), so its standard
errors are "N/A", as a user saving time would have them.

The harness runs in a child process (``python tests/lm_eval_grid.py WORKDIR``): the offline
switches of the Hugging Face libraries are read when they are imported, and ``simple_evaluate``
reseeds the global random generators.

:func:`build_lm_eval_grid` writes the output, the manifest selecting each run by the model path
the harness recorded (``model_name``), and imports it with ``transferstats import lm-eval``.
"""

from __future__ import annotations

import functools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from transferstats.cli import main

#: The language mixes at a fixed budget: one to four languages, English in three of them.
MIXES = {"en": {"en": 12_000}, "en-de": {"en": 6_000, "de": 6_000},
         "en-de-fr": {"en": 4_000, "de": 4_000, "fr": 4_000},
         "de-fr-es-ru": {"de": 3_000, "fr": 3_000, "es": 3_000, "ru": 3_000}}
SEEDS = (1, 2)
#: Target -> (the harness's task-name prefix, its group, its split, its languages).
TARGETS = {"xnli": ("xnli", "xnli", "validation", ("en", "de", "fr", "es", "ru")),
           "pawsx": ("paws", "pawsx", "test", ("de", "fr", "es"))}
ROWS = 12
LIMIT = 10
#: The model evaluated with ``bootstrap_iters=0``: its standard errors are "N/A".
NO_STDERR_MODEL = "tiny-de-fr-es-ru-s2"
BASE_MODEL = "tiny-random-gpt2"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
WORDS = {"en": "the dog cat sleeps eats runs house is old rain sun book reads",
         "de": "der hund katze schläft isst läuft haus ist alt regen sonne buch liest",
         "fr": "le chien chat dort mange court maison est vieille pluie soleil livre lit",
         "es": "el perro gato duerme come corre casa es vieja lluvia sol libro lee",
         "ru": "собака кошка спит ест бежит дом старый дождь солнце книга читает он она"}
#: The prompt's question word per language.
QUESTIONS = {"en": "right", "de": "richtig", "fr": "vrai", "es": "verdad", "ru": "верно"}


OUTPUT = "output"


def model_name(mix: str, seed: int) -> str:
    """The folder name of a grid model (the last part of the path the harness records)."""
    return f"tiny-{mix}-s{seed}"


def write_lm_eval_output(workdir: Path) -> Path:
    """Evaluate the grid's models with the installed harness; return its output folder."""
    workdir.mkdir(parents=True, exist_ok=True)
    # In workdir, so that the git hashes the harness records are not this repository's.
    subprocess.run([sys.executable, str(Path(__file__).resolve()), str(workdir.resolve())],
                   check=True, capture_output=True, cwd=workdir, env=os.environ | OFFLINE
                   | {"HF_DATASETS_CACHE": str(workdir.resolve() / "datasets-cache")})
    return workdir / OUTPUT


def write_manifest(path: Path) -> Path:
    """The import manifest: the mixes, and one entry per model selected by its model name."""
    lines = [f'[defaults]\nmodel = "{BASE_MODEL}"\nmodel_short = "tiny"\n']
    for mix, members in MIXES.items():
        table = ", ".join(f"{language} = {count}" for language, count in members.items())
        lines.append(f'[mixes.{mix}]\nmembers = {{{table}}}\nkind = "language"\n')
    for mix in MIXES:
        for seed in SEEDS:
            lines.append(f'[[runs]]\nmodel_name = "{model_name(mix, seed)}"\nmix = "{mix}"\n'
                         f"seed = {seed}\n")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def build_lm_eval_grid(workdir: Path) -> Path:
    """Build the grid's lm-eval output under ``workdir`` and import it with ``transferstats
    import lm-eval``; return the results folder (16 runs: 8 models x 2 targets).

    The harness's output is ``workdir / OUTPUT``, the manifest ``workdir / "manifest.toml"``.
    """
    source = write_lm_eval_output(workdir)
    results = workdir / "results"
    status = main(["import", "lm-eval", str(source), "--manifest",
                   str(write_manifest(workdir / "manifest.toml")), "--out", str(results)])
    if status != 0:
        raise RuntimeError(f"transferstats import lm-eval exited with {status}")
    return results


# ---------------------------------------------------------------- in the child process

def _write_tasks(workdir: Path) -> list[str]:
    """The data files and task YAML files; returns the words of the data, for the tokenizer.

    Each document's answer candidates are words of its language drawn for that document, so
    that a random model's preferences among words give accuracies that differ between models
    and languages (with the same answers everywhere, each model picks one and every accuracy
    is the share of its label).
    """
    data, tasks = workdir / "data", workdir / "tasks"
    data.mkdir(parents=True, exist_ok=True)
    tasks.mkdir(parents=True, exist_ok=True)
    draw = random.Random(0)
    words: list[str] = [",", "?"]
    for prefix, group, split, languages in TARGETS.values():
        n_choices = 3 if prefix == "xnli" else 2
        for language in languages:
            vocabulary = WORDS[language].split()
            words += [*vocabulary, QUESTIONS[language]]
            rows = [{"first": " ".join(draw.choices(vocabulary, k=3)),
                     "second": " ".join(draw.choices(vocabulary, k=2)),
                     "choices": draw.sample(vocabulary, n_choices),
                     "label": draw.randrange(n_choices)} for _ in range(ROWS)]
            name = f"{prefix}_{language}"
            (data / f"{name}.jsonl").write_text(
                "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                encoding="utf-8")
            (tasks / f"{name}.yaml").write_text(
                f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                f"    {split}: {(data / f'{name}.jsonl').as_posix()}\n{split}_split: {split}\n"
                "output_type: multiple_choice\n"
                f"doc_to_text: '{{{{first}}}} , {{{{second}}}} , {QUESTIONS[language]} ?'\n"
                "doc_to_target: label\ndoc_to_choice: choices\n"
                "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
                "metadata:\n  version: 1.0\n", encoding="utf-8")
        members = "".join(f"  - {prefix}_{language}\n" for language in languages)
        (tasks / f"{group}.yaml").write_text(
            f"group: {group}\ntask:\n{members}aggregate_metric_list:\n  - metric: acc\n"
            "    aggregation: mean\n    weight_by_size: true\nmetadata:\n  version: 1.0\n",
            encoding="utf-8")
    return words


def _save_models(workdir: Path, words: list[str]) -> list[Path]:
    """One random 1-layer GPT-2 per mix and seed, saved with the tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.train_from_iterator([" ".join(words)],
                                  trainers.WordLevelTrainer(special_tokens=["[UNK]", "<eos>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]",
                                   eos_token="<eos>", pad_token="<eos>")
    folders = []
    for number, (mix, seed) in enumerate((mix, seed) for mix in MIXES for seed in SEEDS):
        torch.manual_seed(number)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=fast.vocab_size, n_positions=32,
                                           n_embd=8, n_layer=1, n_head=2, bos_token_id=1,
                                           eos_token_id=1))
        folder = workdir / "models" / model_name(mix, seed)
        model.save_pretrained(folder)
        fast.save_pretrained(folder)
        folders.append(folder)
    return folders


def _evaluate(workdir: Path) -> None:
    """Evaluate every model and write its results file as ``lm_eval --output_path`` does."""
    import torch.utils.collect_env
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    # The harness records torch's description of the environment in every results file; it is
    # the same for every model, and collecting it (pip, compilers, GPUs) took most of the time
    # of an evaluation. The files still hold it, collected once.
    collect_env = torch.utils.collect_env
    collect_env.get_pretty_env_info = functools.cache(collect_env.get_pretty_env_info)
    folders = _save_models(workdir, _write_tasks(workdir))
    for folder in folders:
        arguments = {"pretrained": folder.as_posix(), "dtype": "float32"}
        tracker = EvaluationTracker(output_path=str(workdir / OUTPUT))
        # As the command line does: the model arguments are the tasks' metadata.
        tasks = TaskManager(include_path=str(workdir / "tasks"), include_defaults=False,
                            metadata=arguments)
        results = simple_evaluate(
            model="hf", model_args=",".join(f"{k}={v}" for k, v in arguments.items()),
            tasks=[group for _, group, _, _ in TARGETS.values()], task_manager=tasks,
            limit=LIMIT, device="cpu", batch_size=16, log_samples=False,
            evaluation_tracker=tracker,
            bootstrap_iters=0 if folder.name == NO_STDERR_MODEL else 100_000)
        tracker.save_results_aggregated(results=results, samples=None)


if __name__ == "__main__":
    _evaluate(Path(sys.argv[1]))
