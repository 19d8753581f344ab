"""Where each task's data comes from, and reading it into canonical examples.

A task's data is found, in this order:

1. ``job.data["files"][task][key]``: a path the user points to. ``key`` is a split (``train``,
   ``dev``, ``test``) or ``split.lang`` (``test.de``); a path may hold ``{lang}`` (``xnli/{lang}.tsv``)
   and, for Tatoeba, ``{lang3}`` (its three-letter codes).
2. The folder convention under ``job.data["data_dir"]``: ``<data_dir>/<task>/<split>.<lang>.<ext>``,
   and for English ``<split>.<ext>`` too; ``ext`` is one of ``jsonl json parquet tsv csv conll txt``.
   BUCC and Tatoeba may also keep their original file names there (see :func:`_original_files`).
3. The Hugging Face hub id and config of the task's source (the local ``datasets`` cache works
   offline; set ``HF_DATASETS_OFFLINE=1`` on a cluster without network).

``job.data`` keys (the grid spec's ``[data]`` table):

- ``data_dir``: folder of local files laid out as above.
- ``files``: ``{task: {key: path}}`` as above; wins over ``data_dir`` and the hub.
- ``cache_dir``: where ``datasets`` caches and where tokenised features are kept
  (default ``~/.cache/transferstats``).
- ``hub`` (default true): false never asks the hub or its cache, so a missing file fails at once.
- ``max_length``: default for the ``max_length`` hyperparameter.

A source (built-in below, or a user task's ``data`` table, whose keys override the built-in ones):

- ``hub``, ``config``: ``datasets.load_dataset(hub, config)``; ``config`` may hold ``{lang}``,
  ``{lang3}`` or ``{name}`` (from ``names``, a language -> name table).
- ``splits``: canonical split -> hub split (a list is concatenated).
- ``fields``: canonical field -> column (see the format readers below); a list of columns is joined.
- ``labels``: label names, for labels stored as strings (``"entailment"``, ``"A"``) or tag sets.
- ``files``: like ``job.data["files"][task]``.
- ``select`` (targets): where checkpoint selection data comes from: ``{"task": t, "split": s}``,
  or ``"holdout"`` (a fixed 10% of the English training set, at most 2000 examples). Default: the
  task's own English ``dev`` split.
- ``id_prefix``: language -> prefix of the example ids that belong to it (TyDiQA mixes languages).

Canonical examples by format:

- classification: ``text``, ``text_pair`` (or None), ``label`` (int)
- multiple_choice: ``context``, ``choices`` (list of str), ``label`` (int)
- extractive_qa: ``id``, ``context``, ``question``, ``answers`` = ``{"text": [...],
  "answer_start": [...]}`` (empty lists: unanswerable)
- tagging: ``tokens``, ``tags`` (lists of str)
- retrieval: one example per language: ``source`` and ``target`` sentence lists and ``gold``, the
  list of ``[source index, target index]`` pairs (Tatoeba: the i-th source translates the i-th target).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from transferstats.tasks import Task, get_task

EXTENSIONS = ("jsonl", "json", "parquet", "tsv", "csv", "conll", "txt")

_NLI = {"text": "premise", "text_pair": "hypothesis", "label": "label"}
_SQUAD = {"id": "id", "context": "context", "question": "question", "answers": "answers"}
_PANX_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
_UPOS_TAGS = ["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
              "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X"]
_UDPOS_NAMES = {
    "en": "English", "af": "Afrikaans", "ar": "Arabic", "bg": "Bulgarian", "de": "German",
    "el": "Greek", "es": "Spanish", "et": "Estonian", "eu": "Basque", "fa": "Persian",
    "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian",
    "id": "Indonesian", "it": "Italian", "ja": "Japanese", "kk": "Kazakh", "ko": "Korean",
    "mr": "Marathi", "nl": "Dutch", "pt": "Portuguese", "ru": "Russian", "ta": "Tamil",
    "te": "Telugu", "th": "Thai", "tl": "Tagalog", "tr": "Turkish", "ur": "Urdu",
    "vi": "Vietnamese", "yo": "Yoruba", "zh": "Chinese",
}
# Tatoeba names its files by three-letter codes (XTREME's choice of macro-language codes).
TATOEBA_CODES = {
    "af": "afr", "ar": "ara", "bg": "bul", "bn": "ben", "de": "deu", "el": "ell", "es": "spa",
    "et": "est", "eu": "eus", "fa": "pes", "fi": "fin", "fr": "fra", "he": "heb", "hi": "hin",
    "hu": "hun", "id": "ind", "it": "ita", "ja": "jpn", "jv": "jav", "ka": "kat", "kk": "kaz",
    "ko": "kor", "ml": "mal", "mr": "mar", "nl": "nld", "pt": "por", "ru": "rus", "sw": "swh",
    "ta": "tam", "te": "tel", "th": "tha", "tl": "tgl", "tr": "tur", "ur": "urd", "vi": "vie",
    "zh": "cmn",
}

BUILTIN_SOURCES: dict[str, dict] = {
    "mnli": {"hub": "nyu-mll/glue", "config": "mnli",
             "splits": {"train": "train", "dev": "validation_matched"}, "fields": _NLI},
    "anli": {"hub": "facebook/anli",
             "splits": {"train": ["train_r1", "train_r2", "train_r3"],
                        "dev": ["dev_r1", "dev_r2", "dev_r3"]}, "fields": _NLI},
    "qqp": {"hub": "nyu-mll/glue", "config": "qqp", "splits": {"train": "train", "dev": "validation"},
            "fields": {"text": "question1", "text_pair": "question2", "label": "label"}},
    "sst2": {"hub": "nyu-mll/glue", "config": "sst2", "splits": {"train": "train", "dev": "validation"},
             "fields": {"text": "sentence", "label": "label"}},
    "squad_v1": {"hub": "rajpurkar/squad", "splits": {"train": "train", "dev": "validation"},
                 "fields": _SQUAD},
    "squad_v2": {"hub": "rajpurkar/squad_v2", "splits": {"train": "train", "dev": "validation"},
                 "fields": _SQUAD},
    # Rowan/hellaswag and allenai/cosmos_qa are canonical but still loading-script repositories
    # (Parquet conversions only as open pull requests): with datasets >= 4 give them as local files.
    # HellaSwag's label is a string ("0".."3"; "" in test); CommonsenseQA's answerKey is a letter
    # ("" in test); Cosmos QA's test labels are hidden, so neither test split is used here.
    "hellaswag": {"hub": "Rowan/hellaswag", "splits": {"train": "train", "dev": "validation"},
                  "fields": {"context": "ctx", "choices": "endings", "label": "label"}},
    "commonsenseqa": {"hub": "tau/commonsense_qa", "splits": {"train": "train", "dev": "validation"},
                      "fields": {"context": "question", "choices": "choices", "label": "answerKey"},
                      "labels": ["A", "B", "C", "D", "E"]},
    "cosmosqa": {"hub": "allenai/cosmos_qa", "splits": {"train": "train", "dev": "validation"},
                 "fields": {"context": ["context", "question"],
                            "choices": ["answer0", "answer1", "answer2", "answer3"], "label": "label"}},
    # CCGbank is LDC-licensed: local CoNLL files only (token<TAB>supertag, blank line between).
    "ccg": {"fields": {"tokens": "tokens", "tags": "tags"}},
    "xnli": {"hub": "facebook/xnli", "config": "{lang}",
             "splits": {"train": "train", "dev": "validation", "test": "test"}, "fields": _NLI},
    "pawsx": {"hub": "google-research-datasets/paws-x", "config": "{lang}",
              "splits": {"train": "train", "dev": "validation", "test": "test"},
              "fields": {"text": "sentence1", "text_pair": "sentence2", "label": "label"}},
    "panx": {"hub": "google/xtreme", "config": "PAN-X.{lang}",
             "splits": {"train": "train", "dev": "validation", "test": "test"},
             "fields": {"tokens": "tokens", "tags": "ner_tags"}, "labels": _PANX_TAGS},
    "udpos": {"hub": "google/xtreme", "config": "udpos.{name}", "names": _UDPOS_NAMES,
              "splits": {"train": "train", "dev": "validation", "test": "test"},
              "fields": {"tokens": "tokens", "tags": "pos_tags"}, "labels": _UPOS_TAGS},
    "xquad": {"hub": "google/xquad", "config": "xquad.{lang}", "splits": {"test": "validation"},
              "fields": _SQUAD, "select": {"task": "squad_v1", "split": "dev"}},
    # facebook/mlqa (configs mlqa.{lang}.{lang}) is still a loading-script repository, which
    # datasets >= 4 refuses to run; google/xtreme carries the same MLQA v1 data as Parquet.
    "mlqa": {"hub": "google/xtreme", "config": "MLQA.{lang}.{lang}",
             "splits": {"dev": "validation", "test": "test"}, "fields": _SQUAD},
    "tydiqa": {"hub": "google-research-datasets/tydiqa", "config": "secondary_task",
               "splits": {"train": "train", "test": "validation"}, "fields": _SQUAD,
               "select": "holdout",
               "id_prefix": {"en": "english", "ar": "arabic", "bn": "bengali", "fi": "finnish",
                             "id": "indonesian", "ko": "korean", "ru": "russian", "sw": "swahili",
                             "te": "telugu"}},
    "tatoeba": {"hub": "google/xtreme", "config": "tatoeba.{lang3}", "splits": {"test": "validation"},
                "fields": {"source": "source_sentence", "target": "target_sentence"}},
    # google/xtreme's bucc18 rows are the gold pairs only (validation: the BUCC sample set, test:
    # the BUCC training set, as in XTREME), without the non-parallel distractor sentences.
    "bucc2018": {"hub": "google/xtreme", "config": "bucc18.{lang}",
                 "splits": {"dev": "validation", "test": "test"},
                 "fields": {"source": "source_sentence", "target": "target_sentence"}},
}


class MissingDataError(FileNotFoundError):
    """No local file and no hub data set for a (task, split, language)."""


def source_of(task: Task) -> dict:
    """The data source of a task: the built-in one, overridden by the task's own ``data`` table."""
    return {**BUILTIN_SOURCES.get(task.id, {}), **task.data}


@dataclass(frozen=True)
class Location:
    """Where one (task, split, language) lives: local ``paths`` or a hub (id, config, splits).

    ``original`` marks retrieval data in its original files (see :func:`_original_files`)."""

    task: str
    split: str
    lang: str
    paths: tuple[Path, ...] = ()
    hub: tuple[str, str | None, tuple[str, ...]] | None = None
    original: bool = False

    def fingerprint(self) -> str:
        """Changes when the data changes: file sizes and times, or the hub coordinates."""
        parts = [self.task, self.split, self.lang]
        for path in self.paths:
            stat = path.stat()
            parts.append(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
        if self.hub:
            parts.append(repr(self.hub))
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def _expand(template: str, lang: str) -> Path:
    return Path(template.format(lang=lang, lang3=TATOEBA_CODES.get(lang, lang)))


def _original_files(stem: Path, task_id: str, lang: str) -> tuple[Path, ...]:
    """Retrieval data in its original files, named by a stem. BUCC: ``<stem>.{lang}`` and
    ``<stem>.en`` (id<TAB>sentence a line) and ``<stem>.gold`` (source id<TAB>target id); in a
    data_dir the stem is ``{lang}-en.{split}``. Tatoeba: ``<stem>.{lang3}`` and ``<stem>.eng``, one
    sentence a line, aligned; in a data_dir the stem is ``tatoeba.{lang3}-eng``."""
    suffixes: tuple[str, ...]
    if task_id == "bucc2018":
        suffixes = (lang, "en", "gold")
    else:
        suffixes = (TATOEBA_CODES.get(lang, lang), "eng")
    return tuple(Path(f"{stem}.{suffix}") for suffix in suffixes)


def locate(task: Task, split: str, lang: str, data: dict) -> Location:
    """Find a (task, split, language); :class:`MissingDataError` says what was looked for."""
    source = source_of(task)
    looked: list[str] = []

    def found(paths: tuple[Path, ...], original: bool = False) -> Location | None:
        if all(path.is_file() for path in paths):
            return Location(task.id, split, lang, paths=paths, original=original)
        looked.extend(str(path) for path in paths)
        return None

    files = {**source.get("files", {}), **data.get("files", {}).get(task.id, {})}
    for key in (f"{split}.{lang}", split):
        if key in files:
            path = _expand(files[key], lang)
            if task.format == "retrieval" and path.suffix[1:] not in EXTENSIONS:
                location = found(_original_files(path, task.id, lang), original=True)
            else:
                location = found((path,))
            if location:
                return location
    if data.get("data_dir"):
        task_dir = Path(data["data_dir"]) / task.id
        names = [f"{split}.{lang}"] + ([split] if lang == "en" else [])
        for name in names:
            for ext in EXTENSIONS:
                if location := found((task_dir / f"{name}.{ext}",)):
                    return location
        if task.format == "retrieval":
            code = TATOEBA_CODES.get(lang, lang)
            stem = task_dir / (f"{lang}-en.{split}" if task.id == "bucc2018" else f"tatoeba.{code}-eng")
            if location := found(_original_files(stem, task.id, lang), original=True):
                return location
    hub_split = source.get("splits", {}).get(split)
    if source.get("hub") and hub_split and data.get("hub", True):
        config = source.get("config")
        if config:
            config = config.format(lang=lang, lang3=TATOEBA_CODES.get(lang, lang),
                                   name=source.get("names", {}).get(lang, lang))
        hub_splits = tuple(hub_split) if isinstance(hub_split, list) else (hub_split,)
        return Location(task.id, split, lang, hub=(source["hub"], config, hub_splits))
    if not source.get("hub"):
        hub_note = "it has no hub data set"
    elif not hub_split:
        hub_note = f"its hub data set has no '{split}' split"
    else:
        hub_note = "the hub is switched off ([data] hub = false)"
    raise MissingDataError(
        f"no {split} data for task {task.id!r}, language {lang!r}: looked for "
        f"{', '.join(looked) or 'no local files (no data_dir or files given)'}; {hub_note}. "
        f"Provide it with [data] files = {{{task.id} = "
        f"{{\"{split}\" = \"path/to/{split}.{{lang}}.jsonl\"}}}} or as "
        f"<data_dir>/{task.id}/{split}.{lang}.<{'|'.join(EXTENSIONS)}>"
    )


def read(task: Task, location: Location, data: dict) -> tuple[list[dict], list[str] | None]:
    """The canonical examples of a location, and the label names the source declares (or None)."""
    source = source_of(task)
    if location.hub:
        rows, names = _read_hub(location, data)
    elif location.original:
        return [_read_retrieval_original(task.id, location.paths)], None
    elif location.paths[0].suffix in (".conll", ".txt"):
        rows, names = _read_conll(location.paths[0], location.lang), None
        source = {**source, "fields": {"tokens": "tokens", "tags": "tags"}}  # already canonical
    else:
        rows, names = _read_table(location.paths[0], data), None
    prefix = source.get("id_prefix", {}).get(location.lang) if location.hub else None
    if prefix:
        rows = [row for row in rows if str(row.get("id", "")).startswith(prefix)]
    labels = source.get("labels") or names
    fields = source.get("fields", {})
    if task.format == "retrieval":
        return [_retrieval_from_rows(rows, fields)], labels
    convert = _CONVERTERS[task.format]
    examples = [example for row in rows
                if (example := convert(row, fields, labels, location)) is not None]
    return examples, labels


def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def _read_hub(location: Location, data: dict) -> tuple[list[dict], list[str] | None]:
    datasets = _quiet_datasets()

    assert location.hub is not None, "a hub location names its data set"
    hub_id, config, splits = location.hub
    rows: list[dict] = []
    names: list[str] | None = None
    for split in splits:
        try:
            table = datasets.load_dataset(hub_id, config, split=split, cache_dir=_datasets_cache(data))
        except Exception as error:
            raise MissingDataError(
                f"task {location.task!r} ({location.split}, {location.lang}): could not load hub "
                f"data set {hub_id!r} config {config!r} split {split!r} from the hub or the local "
                f"datasets cache ({type(error).__name__}: {error}). Download it once where there is "
                f"network, or provide local files with [data] files = {{{location.task} = "
                f"{{\"{location.split}\" = \"path/{{lang}}.jsonl\"}}}} or data_dir"
            ) from error
        names = names or _feature_names(table)
        rows.extend(table.to_list())
    return rows, names


def _feature_names(table) -> list[str] | None:
    """Class names of the first label-like ClassLabel column (int labels -> names)."""
    for feature in table.features.values():
        inner = getattr(feature, "feature", feature)
        if hasattr(inner, "names") and hasattr(inner, "str2int"):
            return list(inner.names)
    return None


def _datasets_cache(data: dict) -> str | None:
    return str(Path(data["cache_dir"]) / "datasets") if data.get("cache_dir") else None


def _read_table(path: Path, data: dict) -> list[dict]:
    datasets = _quiet_datasets()

    suffix = path.suffix[1:]
    builder, options = {"jsonl": ("json", {}), "json": ("json", {}), "parquet": ("parquet", {}),
                        "csv": ("csv", {}), "tsv": ("csv", {"delimiter": "\t", "quoting": 3})}[suffix]
    if suffix == "json":
        # SQuAD's original nesting (data -> paragraphs -> qas) is flattened here; anything else
        # (a list of records, or JSON Lines named .json) goes to the datasets json reader.
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            document = None
        if isinstance(document, dict) and "data" in document:
            return _flatten_squad(document["data"])
    table = datasets.load_dataset(builder, data_files=str(path), split="train",
                                  cache_dir=_datasets_cache(data), **options)
    return table.to_list()


def _flatten_squad(articles: list[dict]) -> list[dict]:
    rows = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else qa["answers"]
                rows.append({"id": qa["id"], "context": paragraph["context"],
                             "question": qa["question"],
                             "answers": {"text": [a["text"] for a in answers],
                                         "answer_start": [a["answer_start"] for a in answers]}})
    return rows


def _read_conll(path: Path, lang: str) -> list[dict]:
    """CoNLL-style: one token a line, its tag in the last column, a blank line between sentences.
    XTREME's PAN-X/UDPOS files prefix tokens with ``lang:``; that prefix is removed."""
    rows: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []
    prefix = f"{lang}:"
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if not line.strip() or line.startswith("-DOCSTART-"):
            if tokens:
                rows.append({"tokens": tokens, "tags": tags})
            tokens, tags = [], []
            continue
        columns = line.split("\t") if "\t" in line else line.split()
        token = columns[0].removeprefix(prefix) if columns[0] != prefix else columns[0]
        tokens.append(token)
        tags.append(columns[-1] if len(columns) > 1 else "O")
    return rows


def _read_retrieval_original(task_id: str, paths: tuple[Path, ...]) -> dict:
    if task_id == "tatoeba":
        source = paths[0].read_text(encoding="utf-8").splitlines()
        target = paths[1].read_text(encoding="utf-8").splitlines()
        if len(source) != len(target):
            raise ValueError(f"{paths[0]} and {paths[1]} differ in length")
        return {"source": source, "target": target, "gold": [[i, i] for i in range(len(source))]}

    def sentences(path):
        pairs = [line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines() if line]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    source_ids, source = sentences(paths[0])
    target_ids, target = sentences(paths[1])
    gold = []
    if len(paths) > 2:
        source_index = {key: i for i, key in enumerate(source_ids)}
        target_index = {key: i for i, key in enumerate(target_ids)}
        for line in paths[2].read_text(encoding="utf-8").splitlines():
            if line:
                s, t = line.split("\t")
                gold.append([source_index[s], target_index[t]])
    return {"source": source, "target": target, "gold": gold}


def _retrieval_from_rows(rows: list[dict], fields: dict) -> dict:
    """Table form (the hub's): each row is one gold pair."""
    source = [row[fields.get("source", "source_sentence")] for row in rows]
    target = [row[fields.get("target", "target_sentence")] for row in rows]
    return {"source": source, "target": target, "gold": [[i, i] for i in range(len(rows))]}


def _column(row: dict, column, field: str, location: Location):
    if isinstance(column, list):
        return " ".join(str(row[c]) for c in column if row.get(c))
    if column not in row:
        raise KeyError(f"task {location.task!r}: column {column!r} (field {field!r}) is not in the "
                       f"data ({sorted(row)}); map it with data.fields.{field} = \"<column>\"")
    return row[column]


def _label(value, labels: list[str] | None) -> int:
    if isinstance(value, str):
        if labels and value in labels:
            return labels.index(value)
        return int(value)
    return int(value)


def _classification(row, fields, labels, location):
    label = _label(_column(row, fields.get("label", "label"), "label", location), labels)
    if label < 0:  # unlabelled rows (GLUE test, SNLI without consensus)
        return None
    pair = fields.get("text_pair")
    return {"text": _column(row, fields.get("text", "text"), "text", location),
            "text_pair": _column(row, pair, "text_pair", location) if pair else None,
            "label": label}


def _multiple_choice(row, fields, labels, location):
    spec = fields.get("choices", "choices")
    if isinstance(spec, list):  # one column per choice (Cosmos QA: answer0..answer3)
        choices = [row[column] for column in spec]
    else:
        choices = _column(row, spec, "choices", location)
    if isinstance(choices, dict):  # CommonsenseQA: {"label": [...], "text": [...]}
        choices = choices["text"]
    label = _column(row, fields.get("label", "label"), "label", location)
    if label in ("", None):
        return None
    return {"context": _column(row, fields.get("context", "context"), "context", location),
            "choices": list(choices), "label": _label(label, labels)}


def _extractive_qa(row, fields, labels, location):
    answers = _column(row, fields.get("answers", "answers"), "answers", location)
    if isinstance(answers, list):  # a list of {"text", "answer_start"} records
        answers = {"text": [a["text"] for a in answers],
                   "answer_start": [a["answer_start"] for a in answers]}
    return {"id": str(_column(row, fields.get("id", "id"), "id", location)),
            "context": _column(row, fields.get("context", "context"), "context", location),
            "question": _column(row, fields.get("question", "question"), "question", location),
            "answers": {"text": list(answers["text"]),
                        "answer_start": [int(a) for a in answers["answer_start"]]}}


def _tagging(row, fields, labels, location):
    tokens = _column(row, fields.get("tokens", "tokens"), "tokens", location)
    tags = _column(row, fields.get("tags", "tags"), "tags", location)
    tags = [labels[t] if isinstance(t, int) and labels else str(t) for t in tags]
    return {"tokens": [str(t) for t in tokens], "tags": tags}


_CONVERTERS = {"classification": _classification, "multiple_choice": _multiple_choice,
               "extractive_qa": _extractive_qa, "tagging": _tagging}


def selection_source(task: Task) -> tuple[Task, str] | None:
    """The (task, split) whose English data selects the checkpoint; None: hold out from train."""
    select = source_of(task).get("select", {"task": task.id, "split": "dev"})
    if select == "holdout":
        return None
    return get_task(select["task"]), select["split"]


def default_cache_dir(data: dict) -> Path:
    return Path(data.get("cache_dir") or os.environ.get("TRANSFERSTATS_CACHE")
                or Path.home() / ".cache" / "transferstats")
