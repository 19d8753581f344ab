"""Offline, deterministic assets for the CPU smoke grid and the tests: a tiny XLM-R (random
weights, built from config), a real XLM-R tokenizer trained on synthetic text, and small
synthetic data sets in each task's real file format, laid out as a ``data_dir`` (see
:mod:`transferstats.train.data`).

The text is pseudo-words from a per-language syllable set; labels are random. Nothing here is
meant to be learnable, only to go through the real loading, tokenising, training and scoring code.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# Languages each smoke task has test data for (pass them as a TargetJob's ``languages``).
LANGUAGES = {
    "xnli": ["en", "de", "fr"], "pawsx": ["en", "de"], "panx": ["en", "de", "fr"], "udpos": ["en", "de"],
    "xquad": ["en", "de"], "mlqa": ["en", "de"], "tydiqa": ["en", "fi"],
    "tatoeba": ["de", "fr"], "bucc2018": ["de", "fr"],
}
_SYLLABLES = {
    "en": "ka lo mi ne tu sa ri po de fa", "de": "sch ein ber ung ach tal wei mer zu",
    "fr": "eau oux ier lle mon pré sai cou dé", "fi": "kka pää lli nen sto vaa tii ju",
}
_NER_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
_POS_TAGS = ["NOUN", "VERB", "ADJ", "DET", "ADP", "PRON", "PUNCT"]
_CCG_TAGS = ["NP", "N", "N/N", "(S\\NP)/NP", "S\\NP", "NP/N", "PP/NP"]
TRAIN_SIZE, EVAL_SIZE = 48, 16


class _Text:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.words = {lang: sorted({"".join(self.rng.choice(syllables.split())
                                            for _ in range(self.rng.randint(1, 3)))
                                    for _ in range(120)})
                      for lang, syllables in _SYLLABLES.items()}

    def tokens(self, lang: str, low: int = 4, high: int = 12) -> list[str]:
        return [self.rng.choice(self.words[lang]) for _ in range(self.rng.randint(low, high))]

    def sentence(self, lang: str, low: int = 4, high: int = 12) -> str:
        return " ".join(self.tokens(lang, low, high))


def make_smoke_assets(root: Path) -> dict:
    """Create (or reuse) the tiny model and the synthetic data under ``root``."""
    root = Path(root)
    model_dir, data_dir = root / "model", root / "data"
    text = _Text(seed=0)
    writers = _datasets(text)
    for relative, write in writers.items():
        path = data_dir / relative
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)
    if not (model_dir / "config.json").is_file():
        _make_model(model_dir, text)
    return {"model": str(model_dir), "data_dir": str(data_dir), "languages": LANGUAGES}


def _make_model(model_dir: Path, text: _Text) -> None:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM, XLMRobertaTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R's ids 0-4
    trainer_model = Tokenizer(models.Unigram())
    trainer_model.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    corpus = [text.sentence(lang) for lang in _SYLLABLES for _ in range(400)]
    corpus += ["0 1 2 3 4 5 6 7 8 9 . , ? !"] * 10
    trainer_model.train_from_iterator(corpus, trainers.UnigramTrainer(
        vocab_size=1000, special_tokens=specials, unk_token="<unk>"))
    vocab = [tuple(piece) for piece in json.loads(trainer_model.to_str())["model"]["vocab"]]
    tokenizer = XLMRobertaTokenizer(vocab=vocab)

    config = XLMRobertaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=64,
                              max_position_embeddings=66, type_vocab_size=1, pad_token_id=1,
                              bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    temporary = model_dir.parent / f".{model_dir.name}.tmp"
    XLMRobertaForMaskedLM(config).save_pretrained(temporary)
    tokenizer.save_pretrained(temporary)
    temporary.rename(model_dir)


# ------------------------------------------------------------------------------ synthetic data

def _jsonl(rows):
    def write(path: Path):
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                        encoding="utf-8")
    return write


def _tsv(header, rows):
    def write(path: Path):
        lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return write


def _parquet(rows):
    def write(path: Path):
        import pandas as pd

        pd.DataFrame(rows).to_parquet(path)
    return write


def _conll(sentences, lang_prefix: str | None):
    """XTREME's layout: ``lang:token<TAB>tag``; CCG's plain ``token<TAB>tag``."""
    def write(path: Path):
        blocks = ["\n".join(f"{lang_prefix + ':' if lang_prefix else ''}{t}\t{g}"
                            for t, g in zip(s["tokens"], s["tags"], strict=True)) for s in sentences]
        path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return write


def _lines(lines):
    def write(path: Path):
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return write


def _nli(text, lang, n):
    return [{"premise": text.sentence(lang), "hypothesis": text.sentence(lang, 3, 6),
             "label": text.rng.randrange(3)} for _ in range(n)]


def _squad(text, lang, n, unanswerable=0.0):
    rows = []
    for i in range(n):
        words = text.tokens(lang, 12, 30)
        context = " ".join(words)
        answers: dict[str, list] = {"text": [], "answer_start": []}
        if text.rng.random() >= unanswerable:
            begin = text.rng.randrange(len(words) - 2)
            answer = " ".join(words[begin:begin + text.rng.randint(1, 2)])
            answers = {"text": [answer], "answer_start": [len(" ".join(words[:begin])) + (begin > 0)]}
        rows.append({"id": f"{lang}-{i}", "title": "synthetic", "context": context,
                     "question": text.sentence(lang, 3, 6) + " ?", "answers": answers})
    return rows


def _tagged(text, lang, n, tags):
    sentences = []
    for _ in range(n):
        tokens = text.tokens(lang, 3, 10)
        sentences.append({"tokens": tokens, "tags": [text.rng.choice(tags) for _ in tokens]})
    return sentences


def _bio(text, lang, n):
    """NER tags that respect BIO (an I- only after its own B- or I-)."""
    sentences = []
    for s in _tagged(text, lang, n, _NER_TAGS):
        fixed, previous = [], "O"
        for tag in s["tags"]:
            if tag.startswith("I-") and previous[2:] != tag[2:]:
                tag = "B-" + tag[2:]
            fixed.append(tag)
            previous = tag
        sentences.append({"tokens": s["tokens"], "tags": fixed})
    return sentences


def _bucc(text, lang, split):
    """Original BUCC files: ids and sentences; 12 gold pairs among 20 sentences a side."""
    source, target, gold = [], [], []
    for i in range(20):
        source.append(f"{lang}-{split}-{i:06d}\t{text.sentence(lang)}")
        target.append(f"en-{split}-{i:06d}\t{text.sentence('en')}")
        if i < 12:
            gold.append(f"{lang}-{split}-{i:06d}\ten-{split}-{i:06d}")
    stem = f"bucc2018/{lang}-en.{split}"
    return {f"{stem}.{lang}": _lines(source), f"{stem}.en": _lines(target),
            f"{stem}.gold": _lines(gold)}


def _datasets(text: _Text) -> dict:
    """Relative path -> writer. Built in a fixed order so the text is deterministic."""
    files = {
        "mnli/train.jsonl": _jsonl(_nli(text, "en", TRAIN_SIZE)),
        "mnli/dev.jsonl": _jsonl(_nli(text, "en", EVAL_SIZE)),
        "squad_v1/train.jsonl": _jsonl(_squad(text, "en", TRAIN_SIZE)),
        "squad_v1/dev.jsonl": _jsonl(_squad(text, "en", EVAL_SIZE)),
        "squad_v2/train.jsonl": _jsonl(_squad(text, "en", TRAIN_SIZE, unanswerable=0.3)),
        "hellaswag/train.jsonl": _jsonl([
            {"ind": i, "activity_label": "synthetic", "ctx": text.sentence("en"),
             "endings": [text.sentence("en", 2, 5) for _ in range(4)],
             "label": str(text.rng.randrange(4)), "split": "train"} for i in range(TRAIN_SIZE)]),
        "ccg/train.conll": _conll(_tagged(text, "en", TRAIN_SIZE, _CCG_TAGS), None),
        "xnli/dev.en.jsonl": _jsonl(_nli(text, "en", EVAL_SIZE)),
        "pawsx/train.en.tsv": _tsv(["id", "sentence1", "sentence2", "label"], [
            (i, text.sentence("en"), text.sentence("en"), text.rng.randrange(2))
            for i in range(TRAIN_SIZE)]),
        "panx/train.en.conll": _conll(_bio(text, "en", TRAIN_SIZE), "en"),
        "udpos/train.en.parquet": _parquet([{"tokens": s["tokens"], "pos_tags": s["tags"]} for s in
                                            _tagged(text, "en", TRAIN_SIZE, _POS_TAGS)]),
        "mlqa/dev.en.jsonl": _jsonl(_squad(text, "en", EVAL_SIZE)),
        "tydiqa/train.en.jsonl": _jsonl(_squad(text, "en", TRAIN_SIZE)),
    }
    per_language = {
        "pawsx": ("tsv", lambda lang: _tsv(["id", "sentence1", "sentence2", "label"], [
            (i, text.sentence(lang), text.sentence(lang), text.rng.randrange(2))
            for i in range(EVAL_SIZE)])),
        "panx": ("conll", lambda lang: _conll(_bio(text, lang, EVAL_SIZE), lang)),
        "udpos": ("parquet", lambda lang: _parquet([
            {"tokens": s["tokens"], "pos_tags": s["tags"]}
            for s in _tagged(text, lang, EVAL_SIZE, _POS_TAGS)])),
    }
    for task, (ext, writer) in per_language.items():
        files[f"{task}/dev.en.{ext}"] = writer("en")
        for lang in LANGUAGES[task]:
            files[f"{task}/test.{lang}.{ext}"] = writer(lang)
    for lang in LANGUAGES["xnli"]:
        files[f"xnli/test.{lang}.jsonl"] = _jsonl(_nli(text, lang, EVAL_SIZE))
    for task in ("xquad", "mlqa", "tydiqa"):
        for lang in LANGUAGES[task]:
            files[f"{task}/test.{lang}.jsonl"] = _jsonl(_squad(text, lang, EVAL_SIZE))
    for lang, code in (("de", "deu"), ("fr", "fra")):
        pairs = [(text.sentence(lang), text.sentence("en")) for _ in range(EVAL_SIZE)]
        files[f"tatoeba/tatoeba.{code}-eng.{code}"] = _lines([p[0] for p in pairs])
        files[f"tatoeba/tatoeba.{code}-eng.eng"] = _lines([p[1] for p in pairs])
        for split in ("dev", "test"):
            files.update(_bucc(text, lang, split))
    return files
