"""Write the report of an analysis: Markdown, self-contained HTML, figures, LaTeX tables, estimates.

:func:`write_report` composes the report as a list of :class:`Block` (headings, paragraphs,
tables, figures), renders that one list to both ``report.md`` and ``report.html`` (Jinja
templates in ``templates/``), so the two never disagree, and swaps the finished folder into place.

The prose uses a small Markdown subset (``**bold**``, ``*italic*``, ```code```, backslash
escapes) that the HTML template converts; text coming from the data is escaped with
:func:`~transferstats.report.tables.md_escape` first.

References
----------
Phang et al. 2020, "English Intermediate-Task Training Improves Zero-Shot Cross-Lingual Transfer
Too", arXiv:2005.13013.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeGuard

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup, escape
from matplotlib.figure import Figure
from scipy import stats

from transferstats import __version__
from transferstats.analysis.coverage import coverage_sentence
from transferstats.analysis.derive import NO_BASELINE_CHOICE
from transferstats.analysis.descriptives import MAX_PAIRWISE_MIXES, RmAnova
from transferstats.analysis.members import MemberWords
from transferstats.analysis.result import CONTRAST, AnalysisResult
from transferstats.analysis.verdict import MAX_FAILED_SHARE
from transferstats.problems import Problem, write_problems
from transferstats.report import figures, tables
from transferstats.report.tables import (
    MINUS,
    Table,
    format_count,
    format_dof,
    format_interval,
    format_level,
    format_number,
    format_p,
    is_missing,
    md_escape,
    outcome_label,
    target_label,
)
from transferstats.tasks import get_task, is_builtin

#: The members' adjective in the report's title, by the mixes' kind.
TITLE_MEMBERS = {"task": "Intermediate-task", "language": "Source-language"}
TEMPLATES = Path(__file__).parent / "templates"
# Every warning of the analysis, one per line (the report's table groups them by kind).
PROBLEMS_FILE = "problems.tsv"
DISPLAY_PIXELS_PER_INCH = 120
MIN_DISPLAY_WIDTH = 560
# ``FitSummary.method`` names the implementation that fitted the model.
SOLVERS = {"fast": "profiled likelihood as in lme4, transferstats' crossed-effects solver",
           "statsmodels": "statsmodels MixedLM"}



def verdict_meaning(verdict: str, words: MemberWords) -> str:
    """What a verdict says, in the words of the mixes' members."""
    return {
        "supported": f"the diversity of the {words.qualified_plural} helps {words.transfer} more "
                     "than their volume of data",
        "refuted": f"the volume of {words.data} helps {words.transfer} more than the diversity "
                   f"of the {words.plural}",
        "inconclusive": f"the data cannot tell whether diversity or volume helps {words.transfer} "
                        "more",
        "confounded": "the design cannot separate diversity from volume, so the question is not "
                      "answered",
        "diversity_only": "only diversity varies in this grid (a fixed budget): it measures the "
                          "diversity effect, and cannot compare it with volume",
        "volume_only": "only volume varies in this grid (e.g. a single source): it measures the "
                       "volume effect, and cannot compare it with diversity",
    }.get(verdict, "")


def default_title(result: AnalysisResult) -> str:
    """The report's title (``write_report(title=...)`` overrides it): the factors the grid
    varies, in the members' words."""
    d = result.description
    members, transfer = TITLE_MEMBERS[d.kind], d.words.transfer
    if d.compared or d.check.varies == "neither":
        return f"{members} diversity versus volume for {transfer}"
    if d.single_factor == "diversity":
        return f"{members} diversity for {transfer}, at a fixed volume"
    return f"{members} data volume for {transfer}, at a fixed diversity"


def _words(result: AnalysisResult) -> MemberWords:
    return result.description.words

#: Past this many mixes per-mix figures and tables show design cells (mixes of the same number
#: of tasks and examples averaged) and the mix ranking its best and worst ten; every mix is in
#: the CSV files beside the tables.
MAX_MIXES_SHOWN = 40
#: The complete mix ranking, beside the LaTeX tables.
RANKING_FILE = "tables/mix_ranking.csv"
#: The complete per-mix improvement table, written when the report shows design cells.
IMPROVEMENT_FILE = "tables/improvement_by_mix.csv"

REFERENCES = (
    "Barr, D. J., Levy, R., Scheepers, C., & Tily, H. J. (2013). Random effects structure for "
    "confirmatory hypothesis testing: keep it maximal. *Journal of Memory and Language*, 68(3), "
    "255–278.",
    "Bates, D., Kliegl, R., Vasishth, S., & Baayen, H. (2015). Parsimonious mixed models. "
    "arXiv:1506.04967",
    "Bates, D., Mächler, M., Bolker, B., & Walker, S. (2015). Fitting linear mixed-effects "
    "models using lme4. *Journal of Statistical Software*, 67(1), 1–48. doi:10.18637/jss.v067.i01",
    "Connolly, J., Bell, T., Bolger, T., et al. (2013). An improved model to predict the effects "
    "of changing biodiversity levels on ecosystem function. *Journal of Ecology*, 101(2), "
    "344–355.",
    "Davison, A. C., & Hinkley, D. V. (1997). *Bootstrap Methods and Their Application*. "
    "Cambridge University Press.",
    "Efron, B. (1987). Better bootstrap confidence intervals. *Journal of the American "
    "Statistical Association*, 82(397), 171–185.",
    "El Karoui, N., & Purdom, E. (2018). Can we trust the bootstrap in high-dimensions? The "
    "case of linear models. *Journal of Machine Learning Research*, 19(5), 1–66.",
    "Hall, P. (1989). Antithetic resampling for the bootstrap. *Biometrika*, 76(4), 713–724.",
    "Holm, S. (1979). A simple sequentially rejective multiple test procedure. *Scandinavian "
    "Journal of Statistics*, 6(2), 65–70.",
    "Hu, J., Ruder, S., Siddhant, A., Neubig, G., Firat, O., & Johnson, M. (2020). XTREME: A "
    "massively multilingual multi-task benchmark for evaluating cross-lingual generalization. "
    "*ICML 2020*. arXiv:2003.11080",
    "Kenward, M. G., & Roger, J. H. (1997). Small sample inference for fixed effects from "
    "restricted maximum likelihood. *Biometrics*, 53(3), 983–997.",
    "Kirwan, L., Connolly, J., Finn, J. A., et al. (2009). Diversity–interaction modeling: "
    "estimating contributions of species identities and interactions to ecosystem function. "
    "*Ecology*, 90(8), 2032–2038.",
    "Kuznetsova, A., Brockhoff, P. B., & Christensen, R. H. B. (2017). lmerTest package: tests "
    "in linear mixed effects models. *Journal of Statistical Software*, 82(13), 1–26.",
    "Loreau, M., & Hector, A. (2001). Partitioning selection and complementarity in "
    "biodiversity experiments. *Nature*, 412, 72–76.",
    "Owen, A. B. (2007). The pigeonhole bootstrap. *The Annals of Applied Statistics*, 1(2), "
    "386–411.",
    "Phang, J., Calixto, I., Htut, P. M., Pruksachatkun, Y., Liu, H., Vania, C., Kann, K., & "
    "Bowman, S. R. (2020). English intermediate-task training improves zero-shot cross-lingual "
    "transfer too. *AACL-IJCNLP 2020*. arXiv:2005.13013",
    "Pinheiro, J. C., & Bates, D. M. (2000). *Mixed-Effects Models in S and S-PLUS*. Springer.",
    "Satterthwaite, F. E. (1946). An approximate distribution of estimates of variance "
    "components. *Biometrics Bulletin*, 2(6), 110–114.",
)


@dataclass(frozen=True)
class Block:
    """One piece of the report.

    ``kind`` is ``heading`` (``text``, ``level``), ``paragraph`` (``text``), ``callout``
    (``text``; ``name`` is its style class), ``bullets`` (``items``), ``table`` (``table``,
    ``number``) or ``figure`` (``figure``, ``text`` as caption, ``number``; ``name`` is its file
    stem).
    """

    kind: str
    text: str = ""
    level: int = 2
    items: tuple[str, ...] = ()
    table: Table | None = None
    figure: Figure | None = None
    name: str = ""
    number: int = 0

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.text.lower()).strip("-")


def _heading(text: str, level: int = 2) -> Block:
    return Block("heading", text=text, level=level)


def _paragraph(text: str) -> Block:
    return Block("paragraph", text=text)


def _bullets(items) -> Block:
    return Block("bullets", items=tuple(items))


def _table(table: Table) -> Block:
    return Block("table", table=table, name=table.name)


def _figure(name: str, figure, caption: str) -> Block:
    return Block("figure", figure=figure, name=name, text=caption)


# --- text helpers ----------------------------------------------------------------------------

def _code(text: str) -> str:
    return f"`{str(text).replace('`', '')}`"


_INLINE = re.compile(r"\\(?P<escaped>[\\`*_|])|`(?P<code>[^`]*)`|\*\*(?P<strong>.+?)\*\*"
                     r"|\*(?P<em>[^*]+?)\*")


def inline_html(text: str) -> Markup:
    """Turn the report's Markdown subset into HTML, escaping everything else."""
    def convert(match: re.Match) -> str:
        if match["escaped"] is not None:
            return str(escape(match["escaped"]))
        if match["code"] is not None:
            return f"<code>{escape(match['code'])}</code>"
        if match["strong"] is not None:
            return f"<strong>{inline_html(match['strong'])}</strong>"
        return f"<em>{inline_html(match['em'])}</em>"

    parts, position = [], 0
    for match in _INLINE.finditer(text):
        parts.append(str(escape(text[position:match.start()])))
        parts.append(convert(match))
        position = match.end()
    parts.append(str(escape(text[position:])))
    return Markup("".join(parts))


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:] + "." if text else ""


def _list(values, code: bool = False) -> str:
    return ", ".join(_code(v) if code else md_escape(v) for v in values)


def _resampling(result: AnalysisResult) -> str:
    """``crossed cluster`` or ``parametric``: the bootstrap of the primary model."""
    return result.intervals.resampling


def _level(result: AnalysisResult) -> float:
    return result.intervals.level


def _effect(result: AnalysisResult, term: str) -> dict | None:
    effect = result.term(term)
    return effect.to_dict() if effect is not None else None


def _has_estimate(row: dict | None) -> TypeGuard[dict]:
    return row is not None and not is_missing(row.get("estimate"))


def _estimate_text(row: dict, level: float, unit: str | None = None) -> str:
    """``0.87 points per doubling (95% CI [0.52, 1.22])``."""
    unit = unit if unit is not None else row.get("unit")
    value = format_number(row["estimate"]) + (f" {unit}" if unit else "")
    return (f"{value} ({format_level(level)} CI "
            f"{format_interval(row.get('ci_low'), row.get('ci_high'))})")


# --- sections ---

def _question(result: AnalysisResult) -> list[Block]:
    """The question, asked of the model in the data and of the factors the grid varies."""
    d = result.description
    words = d.words
    lead = f"When {_code(d.model)} is {words.training}, "
    if d.compared:
        text = (f"{lead}does the *diversity* of those {words.qualified_plural} make "
                f"{words.transfer} more robust than their sheer *volume* of data? Diversity is log2 "
                f"of the {md_escape(d.diversity_description)} and volume log2 of the number of "
                f"{words.examples}, so both effects are in points per doubling and can be compared "
                "directly.")
    elif d.single_factor == "diversity":
        text = (f"{lead}how does the *diversity* of those {words.qualified_plural} change "
                f"{words.transfer}? This grid keeps the volume fixed at "
                f"{md_escape(d.check.fixed_at or '')}, so it measures the diversity effect alone: "
                f"diversity is log2 of the {md_escape(d.diversity_description)}, and the effect is "
                "in points per doubling.")
    elif d.single_factor == "volume":
        text = (f"{lead}how does the *volume* of {words.data} change {words.transfer}? This grid "
                f"keeps the diversity fixed at {md_escape(d.check.fixed_at or '')}, so it measures "
                f"the volume effect alone: volume is log2 of the number of {words.examples}, and "
                "the effect is in points per doubling.")
    else:
        text = (f"{lead}do the diversity and the volume of those {words.qualified_plural} change "
                f"{words.transfer}? {md_escape(_sentence(d.check.reason))}")
    return [_heading("Question"), _paragraph(text)]


def _simulation_note(result: AnalysisResult) -> list[Block]:
    source = result.description.source
    if not source.simulated:
        return []
    truth = source.truth or {}
    known = [(label, truth[key]) for key, label in (("diversity_effect", "diversity"),
                                                     ("volume_effect", "volume"),
                                                     ("interaction", "diversity × volume"))
             if key in truth]
    effects = ", ".join(f"{label} {format_number(value)}" for label, value in known)
    realised = truth.get("realised") or {}
    extra = ""
    identity = {task: value for task, value in (realised.get("identity") or {}).items() if value}
    if identity:
        extra += (" Identity effects (points at full share): "
                  + ", ".join(f"{md_escape(task)} {format_number(value)}"
                              for task, value in identity.items())
                  + f"; composition {md_escape(truth.get('composition', 'random'))}.")
    if truth.get("in_mix_effect"):
        extra += (f" What is evaluated in the mix (`target_in_mix`): "
                  f"{format_number(truth['in_mix_effect'])} points at full share.")
    for term in ("diversity", "volume"):
        slopes = realised.get(term) or {}
        if len(set(slopes.values())) > 1:
            extra += (f" Per-target {term} effects: "
                      + ", ".join(f"{target_label(t)} {format_number(v)}" for t, v in slopes.items())
                      + ".")
    return [Block("callout", name="simulated", text=(
        "**Simulated data.** These results are simulated by `transferstats simulate` with known "
        f"effects: {effects} points per doubling.{extra} A correct analysis recovers them within "
        "its intervals; the numbers below are not evidence about real models."))]


def _key_numbers(result: AnalysisResult) -> list[str]:
    """The effects, their difference and the minimum detectable difference, as phrases."""
    level = _level(result)
    numbers = []
    for term in ("diversity", "volume"):
        effect = _effect(result, term)
        if _has_estimate(effect):
            numbers.append(f"{term} effect {_estimate_text(effect, level)}")
    comparison = result.comparison
    if comparison.estimated:
        numbers.append(f"difference diversity {MINUS} volume "
                       f"{_estimate_text(comparison.to_dict(), level, 'points per doubling')}")
    detectable = comparison.minimum_detectable_difference
    if not is_missing(detectable):
        numbers.append(f"minimum detectable difference {format_number(detectable)} points per "
                       f"doubling at {format_level(result.settings.power)} power")
    return numbers


def _verdict(result: AnalysisResult) -> list[Block]:
    verdict = result.verdict
    words = _words(result)
    text = f"**Verdict: {verdict}** \N{EM DASH} {verdict_meaning(verdict, words)}"
    numbers = _key_numbers(result)
    # A confounded design's estimates cannot be attributed to either factor, so the verdict does
    # not quote them; the effects section still shows whatever the model estimated.
    if numbers and verdict != "confounded":
        text += ": " + "; ".join(numbers) + "."
    else:
        text += "."
    blocks = [_heading("Verdict"), Block("callout", text=text, name=f"verdict-{verdict}")]
    if result.verdict_reason:
        blocks.append(_paragraph(f"Why: {md_escape(result.verdict_reason.strip().rstrip('.'))}."))
    if numbers and verdict == "confounded":
        blocks.append(_paragraph("The estimates below are shown for completeness; with this "
                                 "design they mix the effects of diversity and volume."))
    coverage = coverage_sentence(result.coverage)
    if coverage and verdict != "confounded":
        blocks.append(_paragraph(md_escape(coverage)))
    plain = result.plain
    if result.structure.identity.used and plain.fitted and plain.sentence:
        lead = "**" + md_escape(plain.sentence) + "**" if plain.disagrees \
            else md_escape(plain.sentence)
        blocks.append(_paragraph(f"The verdict comes from the model with {words.noun} identity "
                                 f"effects (see *{words.which}*). {lead}"))
    return blocks


def _seeds_text(data: pd.DataFrame) -> str | None:
    if not {"mix", "target_task", "seed"} <= set(data.columns) or data.empty:
        return None
    counts = data.groupby(["mix", "target_task"])["seed"].nunique()
    low, high = int(counts.min()), int(counts.max())
    return f"Seeds per mix and target: {low}" + (f" to {high}." if high != low else ".")


def _data_summary(result: AnalysisResult) -> list[Block]:
    d, data = result.description, result.model_data
    mixes = list(dict.fromkeys(result.improvement_table["mix"])) or list(d.mixes)
    # The improvement table keeps the grid's (XTREME) order of targets; fall back to the model data.
    targets = ([t for t in dict.fromkeys(result.improvement_table["target_task"]) if t != "average"]
               or list(d.targets))
    splits = {s.target: s for s in d.splits}
    items = [f"{format_count(d.n_runs)} runs and {format_count(d.n_rows)} rows of model "
             f"{_code(d.model)} entered the model."]
    baseline = " (baseline runs included)" if d.has_baselines else ""
    items.append(f"Runs of {_code(d.model)} found: {format_count(d.runs_complete)} complete"
                 f"{baseline}, {format_count(d.runs_failed)} failed"
                 + (" (left out, listed below)." if d.runs_failed else "."))
    if d.other_models:
        items.append(f"Other models in the results, left out: {_list(d.other_models, code=True)}.")
    items.append(f"Outcome: {_code(d.outcome)}, the {md_escape(d.outcome_description)} "
                 f"({md_escape(_outcome_reason(d.outcome_reason))}).")
    mixes_label = f"Mixes of {d.words.qualified_plural} ({len(mixes)})"
    if len(mixes) > MAX_MIXES_SHOWN:
        items.append(f"{mixes_label}: {_list(mixes[:10], code=True)}, ... "
                     f"(every one in {_code(RANKING_FILE)}).")
    else:
        items.append(f"{mixes_label}: {_list(mixes, code=True)}.")
    items.append(f"Target tasks ({len(targets)}), each on its split: " + ", ".join(
        f"{md_escape(target_label(t))} ({md_escape(splits[t].split)})" if t in splits
        else md_escape(target_label(t)) for t in targets) + ".")
    if d.languages:
        items.append(f"Languages ({len(d.languages)}): {_list(d.languages)}. "
                     f"{md_escape(_sentence(d.language_rule.reason))}")
    seeds = _seeds_text(data)
    if seeds:
        items.append(seeds)
    items.append(f"Source: {_code(d.source.path)}.")
    blocks = [_heading("Data"), _bullets(items), *_left_out(result)]
    problems = result.problems
    if problems.empty:
        blocks.append(_paragraph("No problems were met while loading or analysing the results."))
    else:
        counts = problems["severity"].value_counts()
        summary = ", ".join(f"{n} {severity}{'s' if n > 1 else ''}" for severity, n in counts.items())
        blocks.append(_paragraph(f"**Problems and warnings ({summary}),** one row per kind; "
                                 f"every one, with its file and place, is in {_code(PROBLEMS_FILE)}."))
        blocks.append(_table(tables.problems_table(problems)))
    return blocks


def _outcome_reason(reason: str) -> str:
    known = {"given": "as set",
             NO_BASELINE_CHOICE: "chosen because the results hold no baseline runs"}
    return known.get(reason, reason.replace("auto: ", "chosen because "))


def _left_out(result: AnalysisResult) -> list[Block]:
    """What every filter removed, per reason and target."""
    dropped = result.description.dropped
    if not dropped:
        return [_paragraph("No score of the analysed model was left out.")]
    frame = pd.DataFrame([{"Reason": x.reason, "Target": target_label(x.target),
                           "Rows": format_count(x.rows), "Runs": format_count(x.runs),
                           "What": x.detail} for x in dropped])
    return [_paragraph("**Left out,** by every filter between the results and the model, per "
                       "target:"),
            _table(Table("left_out", "Scores left out of the model, per reason and target: rows "
                                     "(scores) and the runs they belong to.", frame))]


def _effects(result: AnalysisResult) -> list[Block]:
    level = _level(result)
    effects = [e.to_dict() for e in result.terms]
    comparison = result.comparison.to_dict()
    method = result.intervals.method
    blocks = [_heading("Effects"), _table(tables.effects_table(
        effects, comparison, level, _resampling(result), result.intervals.df_method))]
    if any(e.estimated for e in result.terms):
        caption = f"Fixed effects with {format_level(level)} intervals ({md_escape(method)})"
        if result.comparison.estimated:
            caption += (f" and the contrast diversity {MINUS} volume (vermillion); dashed line at "
                        "zero. Both effects are per doubling, so their difference is meaningful.")
        else:
            caption += "; dashed line at zero."
        blocks.append(_figure("effects_forest", figures.effects_forest(
            effects, comparison, result.description.outcome, level), caption))
    covariates = result.description.covariates
    if covariates:
        blocks.append(_paragraph(
            "Covariates (fixed effects, centred at their mean so that the other effects hold at "
            "the average covariate value"
            + ("; never part of the contrast" if result.description.compared else "") + "): "
            + "; ".join(f"{_code(c.name)} ({md_escape(c.source)}; mean "
                        f"{format_number(c.mean, 3)}, range {format_number(c.min, 3)} to "
                        f"{format_number(c.max, 3)})" for c in covariates) + "."))
    return blocks


def _identity_text(result: AnalysisResult) -> str:
    plan, words = result.structure.identity, _words(result)
    text = (
        f"The primary model gives each {words.qualified} an identity effect entering by its "
        "share of the mix's examples, as Diversity-Interactions models do for species mixtures "
        "(Kirwan et al. 2009; Connolly et al. 2013), so the effects are measured *beyond* which "
        f"{words.plural} the mixes contain: what the identity effects carry is the selection "
        "effect of Loreau & Hector (2001), mixes winning because they hold the strongest "
        f"{words.plural}. Identity effects are used because {md_escape(plan.reason.rstrip('.'))}. "
        f"{md_escape(_sentence(plan.rule))}")
    test = result.identity.test
    if test:
        differ = "differ" if test["p_value"] < 1 - _level(result) else "do not differ detectably"
        text += (f" The {words.plural}' identity effects {differ} (likelihood-ratio test against "
                 f"the plain model, χ²({test['df']}) = {format_number(test['chi2'])}, p "
                 f"{_p_phrase(test['p_value'])}).")
    if result.intervals.resampling == "parametric":
        text += (f" Its intervals come from a parametric bootstrap: the design (every mix, "
                 f"{words.noun} share, language and seed) is kept and the random effects and "
                 "residuals are redrawn from the fitted model, then refitted. Resampling mixes, as "
                 "the plain model's crossed cluster bootstrap does, overstates the uncertainty "
                 f"badly once the model has a coefficient per {words.noun} (El Karoui & Purdom "
                 "2018); the intervals are widened to t quantiles on the "
                 f"{result.intervals.t_df} degrees of freedom left for the mix variance.")
    return text


def _identity(result: AnalysisResult) -> list[Block]:
    plan = result.structure.identity
    words = _words(result)
    level = _level(result)
    blocks = [_heading(f"{words.which}: identity effects")]
    if not plan.used:
        return blocks + [_paragraph(
            f"The primary model is the plain one: {md_escape(plan.reason.rstrip('.'))}. "
            f"{md_escape(_sentence(plan.rule))} A model that gives each {words.noun} an identity "
            f"effect by its share of the mix would tell whether the mixes win because of *which* "
            f"{words.plural} they contain rather than how many.")]
    blocks.append(_paragraph(_identity_text(result)))
    plain = result.plain
    if plain.fitted:
        shown = [e.term for e in result.terms if e.term in ("diversity", "volume")]
        if result.comparison.estimated:
            shown.append(result.comparison.contrast)
        models = [(f"Plain (no {words.noun} identity)", [e.to_dict() for e in plain.effects],
                   plain.comparison.to_dict(), plain.verdict.value),
                  (f"With {words.noun} identity (primary)", [e.to_dict() for e in result.terms],
                   result.comparison.to_dict(), result.verdict)]
        blocks.append(_table(tables.model_comparison_table(models, shown, level, words)))
        if plain.sentence:
            sentence = md_escape(plain.sentence)
            blocks.append(_paragraph(f"**{sentence}**" if plain.disagrees else sentence))
        blocks.append(_paragraph(
            f"The two models are said to disagree when {md_escape(plain.disagreement_rule)}."))
    tasks = list(result.identity.tasks)
    if tasks:
        blocks.append(_table(tables.identity_table(tasks, level, _resampling(result), words)))
        blocks.append(_figure("identity_effects", figures.identity_forest(
            tasks, result.description.outcome, level, words),
            f"Identity effect of each {words.qualified}: the outcome of a mix of that "
            f"{words.noun} alone at the design's centre volume, with {format_level(level)} "
            f"{tables.interval_kind(_resampling(result))} intervals; the dashed line is the mean over "
            f"{words.plural}. {words.plural.capitalize()} to the right carry more transfer."))
    return blocks


def _target_slopes(result: AnalysisResult) -> list[Block]:
    """Each target's own slopes beside their average, for a model with slopes by target."""
    table, heterogeneity, level = result.per_target_table, result.heterogeneity, _level(result)
    terms = [t for t in ("diversity", "volume") if t in set(table["term"])]
    text = (f"The model gives each target its own {' and '.join(terms)} slope "
            f"({_code(result.slopes.fitted)}), so the effects above are their average over "
            f"targets like these {len(result.description.targets)}, with intervals that carry the "
            "variation between targets. Each target's own slope (the average plus its random "
            "slope: lme4's `coef`, a conditional mode without an interval of its own) is below.")
    if heterogeneity.tested:
        text += (f" The slopes' variance is {'clear' if heterogeneity.differ else 'not detectable'}"
                 f": REML likelihood-ratio test against the model without them, "
                 f"χ²({heterogeneity.df}) = {format_number(heterogeneity.chi2)}, p "
                 f"{_p_phrase(heterogeneity.p_value)} (conservative: the variances are on the "
                 "boundary under the null).")
    pivot = table.pivot(index="target", columns="term", values="estimate")[terms]
    frame = pd.DataFrame({"Target": [target_label(t) for t in pivot.index],
                          **{t.capitalize(): [format_number(v) for v in pivot[t]] for t in terms}})
    average = {"Target": f"Average ({format_level(level)} CI)"}
    for term in terms:
        effect = result.term(term)
        average[term.capitalize()] = (f"{format_number(effect.estimate)}\n"
                                      f"{format_interval(effect.ci_low, effect.ci_high)}"
                                      if effect is not None else "")
    frame = pd.concat([frame, pd.DataFrame([average])], ignore_index=True)
    caption = (f"Each target's own {' and '.join(terms)} slope (points per doubling; conditional "
               "modes), and their average over targets with its Wald t interval underneath.")
    return [_heading("Per target"), _paragraph(text),
            _table(Table("per_target", caption, frame))]


def _per_target(result: AnalysisResult) -> list[Block]:
    if result.slopes.used and result.slopes.fitted:
        return _target_slopes(result)
    rows = result.per_target_table.to_dict("records")
    heterogeneity = result.heterogeneity
    if not rows:
        if "companions" in heterogeneity.reason or result.fit is None:
            return []
        return [_heading("Per target"), _paragraph(
            f"Per-target effects were not estimated: {md_escape(heterogeneity.reason.rstrip('.'))}.")]
    level = _level(result)
    terms = [t for t in ("diversity", "volume") if t in set(result.per_target_table["term"])]
    text = (f"{' and '.join(terms).capitalize()} effects per target task come from one model with "
            f"a {' and a '.join(terms)} slope per target (everything else as in the primary "
            "model), bootstrapped like it.")
    if heterogeneity.tested:
        verb = ("differ between targets" if heterogeneity.differ
                else "do not differ detectably between targets")
        text += (f" The effects {verb}: likelihood-ratio test of per-target against common "
                 f"slopes, χ²({heterogeneity.df}) = {format_number(heterogeneity.chi2)}, p "
                 f"{_p_phrase(heterogeneity.p_value)}"
                 + (", both models with a random intercept per (mix, target) cell"
                    if "mix_target" in heterogeneity.random else "") + ".")
    panels = (" (left) and ".join(t.capitalize() for t in terms) + " (right)"
              if len(terms) == 2 else terms[0].capitalize())
    return [_heading("Per target"), _paragraph(text),
            _figure("per_target", figures.per_target_forest(rows, level),
                    f"{panels} effects per target task, points per doubling, with "
                    f"{format_level(level)} {_resampling(result)} bootstrap intervals; dashed "
                    "line at zero."),
            _table(tables.per_target_table(rows, level, _resampling(result)))]


def _comparison(result: AnalysisResult) -> list[Block]:
    d, comparison = result.description, result.comparison
    if not d.compared:
        return []
    if not comparison.estimated:
        return [_heading("Diversity versus volume"), _paragraph(
            f"The contrast diversity {MINUS} volume was not estimated: "
            f"{md_escape(result.verdict_reason or 'the model could not be fitted')}.")]
    level = _level(result)
    intervals = result.intervals
    if intervals.resampling == "wald t":
        return [_heading("Diversity versus volume"), _paragraph(
            f"Diversity {MINUS} volume = "
            f"{_estimate_text(comparison.to_dict(), level, 'points per doubling')}, a Wald t "
            f"interval on {format_dof(comparison.df)} degrees of freedom "
            f"({md_escape(intervals.df_method)}): it generalises over targets like these "
            f"{len(d.targets)}, not only over the mixes and languages of this grid.")]
    method = md_escape(intervals.method) + " bootstrap"
    if intervals.resampling == "parametric":
        method = ("parametric bootstrap (antithetic pairs; percentile intervals widened to t "
                  f"quantiles on {intervals.t_df} degrees of freedom; see *{_words(result).which}*)")
    text = (f"Diversity {MINUS} volume = "
            f"{_estimate_text(comparison.to_dict(), level, 'points per doubling')}, from a "
            f"{method} with {format_count(intervals.resamples)} resamples (seed {intervals.seed}).")
    if not is_missing(comparison.percentile_ci_low):
        text += (" The percentile interval, "
                 f"{format_interval(comparison.percentile_ci_low, comparison.percentile_ci_high)}"
                 ", is given for comparison.")
    if comparison.direction != "higher is better":
        text += f" Note: {md_escape(comparison.direction)}."
    blocks = [_heading("Diversity versus volume"), _paragraph(text)]
    draws = result.bootstrap_draws
    if CONTRAST in draws.columns and draws[CONTRAST].notna().any():
        blocks.append(_figure("bootstrap_difference", figures.bootstrap_difference(
            draws[CONTRAST], comparison.to_dict(), level),
            f"Bootstrap distribution of diversity {MINUS} volume over "
            f"{format_count(draws[CONTRAST].notna().sum())} {_resampling(result)} resamples: "
            f"estimate (solid), {format_level(level)} interval (shaded) and zero (dashed)."))
    return blocks


def _design_items(result: AnalysisResult) -> list[str]:
    check = result.description.check
    items = []
    if not is_missing(check.correlation):
        items.append(f"Across the {check.n_mixes} mixes, log2 diversity and log2 volume correlate "
                     f"at r = {format_number(check.correlation)} (variance inflation factor "
                     f"{format_number(check.vif)}; the analysis calls |r| ≥ "
                     f"{check.max_correlation} confounded).")
    if check.single_factor:
        items.append(f"**One factor varies:** {md_escape(_sentence(check.reason))} "
                     "The model has that factor's term alone.")
    elif check.confounded:
        items.append(f"**Confounded design:** {md_escape(_sentence(check.reason))} "
                     "Add mixes that vary diversity at fixed volume (and the reverse) to separate "
                     "the two.")
    else:
        items.append("Diversity and volume vary independently enough across mixes to be "
                     "separated.")
    return items


def _diagnostics(result: AnalysisResult) -> list[Block]:
    structure, fit = result.structure, result.fit
    items = []
    solver = SOLVERS.get(fit.method, fit.method) if fit else None
    items.append(f"Model: {_code(structure.formula(True, _words(result)))}"
                 + (f", fitted by REML ({md_escape(solver)})." if solver else
                    " (not fitted)."))
    if fit is not None:
        items.append("The fit converged." if fit.converged
                     else "**The fit did not converge**: treat the estimates with caution.")
        if fit.on_boundary:
            items.append(f"On the boundary (variance estimated as zero): "
                         f"{_list(fit.on_boundary, True)}. That grouping adds no detectable "
                         "variation; the fixed effects stay valid.")
        else:
            items.append("No variance component is on the boundary.")
    items += [md_escape(_sentence(note)) for note in structure.notes]
    if result.slopes.requested or result.slopes.reason:
        items.append(f"Random slopes by target: {md_escape(_sentence(result.slopes.reason))}"
                     + (f" Fitted: {_code(result.slopes.fitted)}." if result.slopes.fitted else ""))
        items += [f"Reduction step: {_code(step['structure'])}: {md_escape(step['decision'])}."
                  for step in result.slopes.steps if step.get("singular")]
    failed = result.intervals.failed_resamples
    if failed:
        share = failed / result.intervals.resamples
        items.append(f"{failed} bootstrap resamples ({share:.0%}) failed to fit and are not in "
                     "the intervals" + (f"; past {MAX_FAILED_SHARE:.0%} the intervals rest on the "
                                        "resamples that happened to keep the design's variation "
                                        "and are not trustworthy." if share > MAX_FAILED_SHARE
                                        else "."))
    if result.intervals.why:
        items.append(f"Intervals: {md_escape(_sentence(result.intervals.why))}")
    if result.collinearity is not None and result.collinearity.warning:
        items.append(f"**Collinearity:** {md_escape(_sentence(result.collinearity.warning))}")
    items += _design_items(result)
    blocks = [_heading("Model diagnostics"), _bullets(items)]
    if fit is not None:
        blocks.append(_table(tables.variance_components_table(
            fit.variance_components, fit.residual_variance, list(fit.on_boundary))))
    data = result.model_data
    if {"fitted", "residual"} <= set(data.columns) and data["residual"].notna().any():
        usable = data[["fitted", "residual"]].dropna()
        blocks.append(_figure("residuals", figures.residual_diagnostics(
            usable["fitted"].to_numpy(), usable["residual"].to_numpy()),
            "Residuals against fitted values with binned means (left) and a normal Q\N{EN DASH}Q "
            "plot of the residuals (right). A flat binned mean and points along the reference "
            "line support the model's linearity and normality assumptions."))
    return blocks


def by_design_cell(improvement: pd.DataFrame, ranking: pd.DataFrame, level: float) -> pd.DataFrame:
    """The improvement table with the mixes of each design cell (number of tasks and examples)
    averaged: the mean of the mixes' means and a t interval over them (NaN for a lone mix).

    ``ranking`` (:attr:`AnalysisResult.mix_ranking`) gives each mix's number of tasks and
    examples; cells are ordered by tasks, then examples, and named like ``4 tasks, 40k``.
    """
    design = ranking.set_index("mix")[["n_tasks", "examples"]]
    frame = improvement.join(design, on="mix").dropna(subset=["n_tasks"])
    targets = list(dict.fromkeys(improvement["target_task"]))  # XTREME order, average last
    rows = []
    for (n_tasks, examples), cell in frame.groupby(["n_tasks", "examples"], sort=True):
        name = (f"{float(n_tasks):g} task{'' if n_tasks == 1 else 's'}, "  # type: ignore[arg-type]
                f"{figures.examples_label(float(examples))}")  # type: ignore[arg-type]
        for target in targets:
            group = cell[cell["target_task"] == target]
            if group.empty:
                continue
            values = group["mean"].to_numpy(dtype=float)
            mean = float(values.mean())
            low = high = float("nan")
            if len(values) > 1 and np.ptp(values) > 0:
                low, high = stats.t.interval(level, len(values) - 1, loc=mean,
                                             scale=stats.sem(values))
            rows.append({"mix": name, "target_task": target, "mean": mean, "ci_low": float(low),
                         "ci_high": float(high), "n_runs": int(group["n_runs"].sum()),
                         "n_mixes": len(values)})
    return pd.DataFrame(rows, columns=["mix", "target_task", "mean", "ci_low", "ci_high",
                                       "n_runs", "n_mixes"])


def _improvement_table(result: AnalysisResult) -> list[Block]:
    """The Phang et al. (2020) table of improvement over the baseline per mix and target; of the
    score where the grid has no baselines."""
    level, words = _level(result), _words(result)
    baseline = result.description.has_baselines
    improvement = result.improvement_table
    if improvement.empty:
        return []
    many = improvement["mix"].nunique() > MAX_MIXES_SHOWN and not result.mix_ranking.empty
    shown = by_design_cell(improvement, result.mix_ranking, level) if many else improvement
    blocks = []
    if many:
        blocks.append(_paragraph(
            f"With {improvement['mix'].nunique()} mixes, the table "
            + ("and the heatmap show" if baseline else "shows")
            + f" design cells: the mixes of the same number of {words.plural} and examples "
            f"averaged. Every mix is in {_code(IMPROVEMENT_FILE)}."))
    rows = "design cell" if many else "mix"
    blocks.append(_table(tables.improvement_table(shown, level, by_cell=many, words=words,
                                                  baseline=baseline)))
    if baseline:
        blocks.append(_figure("improvement_heatmap", figures.improvement_heatmap(shown),
                              f"Mean improvement over the baseline (points) per {rows} (rows) and "
                              "target task (columns), averaged over languages and seeds; Avg is "
                              "the mean over targets. Blue cells beat the baseline, red cells "
                              "fall below it."))
    return blocks


def _improvement(result: AnalysisResult) -> list[Block]:
    d = result.description
    level, words = _level(result), d.words
    heading = ("Improvement" if d.has_baselines else "Score") + " per mix and target"
    blocks = [_heading(heading), *_improvement_table(result)]
    cells = result.interaction_table
    if cells.empty:
        return blocks
    label = outcome_label(d.outcome)
    varied = d.single_factor
    if varied:
        axis = (f"number of {words.qualified_plural}" if varied == "diversity"
                else words.examples)
        blocks.append(_figure("levels", figures.level_plot(cells, varied, label, level, words),
                              f"{label} at each level of {varied}, the one factor this grid "
                              f"varies, averaged over the mixes of the level, against the {axis} "
                              f"(log2 axis), with {format_level(level)} intervals over those "
                              "mixes."))
        return blocks
    blocks.append(_figure("interaction", figures.interaction_plot(cells, label, level, words),
        f"{label} per design cell, averaged over its mixes, "
        f"against the number of {words.qualified_plural} (log2 axis), one line per volume budget, "
        f"with {format_level(level)} intervals over the mixes of a cell. Parallel lines mean "
        "diversity and volume add up without interacting."))
    return blocks


def _languages(result: AnalysisResult) -> list[Block]:
    languages = result.language_table
    if languages.empty:
        return []
    level, outcome = _level(result), result.description.outcome
    return [
        _heading("Per language"),
        _figure("languages", figures.language_dotplot(languages, outcome_label(outcome), level),
                f"{outcome_label(outcome)} per evaluation language, averaged over mixes and "
                f"targets, with {format_level(level)} intervals over mixes, sorted by the mean."),
        _table(tables.language_table(languages, outcome, level)),
    ]


def _omnibus_text(anova: RmAnova | None) -> str | None:
    if anova is None or is_missing(anova.F):
        return None
    p_value = anova.p_gg if not is_missing(anova.p_gg) else anova.p_unc
    return (f"Repeated-measures ANOVA across mixes ({md_escape(anova.subjects)} as subjects, "
            f"n = {anova.n_subjects}): F({format_dof(anova.ddof1)}, {format_dof(anova.ddof2)}) = "
            f"{format_number(anova.F)}, p (Greenhouse\N{EN DASH}Geisser) {_p_phrase(p_value)}, "
            f"generalised η² = {format_number(anova.ng2)}.")


def _p_phrase(p_value) -> str:
    text = format_p(p_value)
    return text if text.startswith("<") else f"= {text}"


def _pairwise(result: AnalysisResult) -> list[Block]:
    blocks = [_heading("Pairwise comparisons of mixes")]
    comparisons = result.comparisons
    omnibus = _omnibus_text(comparisons.rm_anova)
    if omnibus:
        blocks.append(_paragraph(omnibus))
    names = {"rm_anova": "The repeated-measures ANOVA across mixes",
             "pairwise_mixes": "The pairwise tests of the mixes"}
    blocks += [_paragraph(f"{names.get(s.test, s.test)} was left out: "
                          f"{md_escape(s.reason.rstrip('.'))}.") for s in comparisons.skipped
               if s.test != "pairwise_mixes" or len(result.mix_ranking) <= MAX_PAIRWISE_MIXES]
    ranking = result.mix_ranking
    if result.pairwise.empty and len(ranking) > MAX_PAIRWISE_MIXES:
        pairs = len(ranking) * (len(ranking) - 1) // 2
        shown = ("the ten best and the ten worst are below" if len(ranking) > 20
                 else "all are below")
        return blocks + [_paragraph(
            f"With {len(ranking)} mixes there would be {format_count(pairs)} pairwise tests, "
            f"past what can be read or corrected usefully (more than {MAX_PAIRWISE_MIXES} mixes), "
            f"so the mixes are ranked by their mean instead, each with an interval over its "
            f"target-language pairs: {shown}, every mix in {_code(RANKING_FILE)}. The model's "
            "effects, not the ranking, answer the question."),
            _table(tables.mix_ranking_table(ranking, result.description.outcome, _level(result)))]
    if result.pairwise.empty:
        return blocks + [_paragraph("Pairwise comparisons need at least two mixes measured on "
                                    "the same target-language pairs; there were none.")]
    return blocks + [_table(tables.pairwise_table(result.pairwise))]


def _bootstrap_methods(result: AnalysisResult) -> str:
    """The methods sentence on how the intervals were made: crossed cluster, or parametric for
    a model with identity effects (then the plain model's crossed bootstrap too)."""
    intervals = result.intervals
    what = ("the effects and the contrast diversity " + MINUS + " volume"
            if result.description.compared else "the effects")
    if intervals.resampling == "wald t":
        return (f"The model has correlated random slopes of {' and '.join(result.slopes.requested)} "
                f"by target wherever the design allows them (Barr et al. 2013), reduced only where "
                "the fit is singular: first to uncorrelated slopes, then without the slopes "
                "estimated at zero (Bates et al. 2015, arXiv:1506.04967); the structure fitted "
                f"was {_code(result.slopes.fitted)}. Intervals and p-values for {what} are Wald t "
                f"on {md_escape(intervals.df_method)}'s degrees of freedom (Satterthwaite 1946; "
                "Kuznetsova et al. 2017; Kenward & Roger 1997), at the "
                f"{format_level(intervals.level)} level: they are about the average effect over "
                "targets like these, which a percentile bootstrap of a few targets cannot reach.")
    resamples = (f"at the {format_level(intervals.level)} level from "
                 f"{format_count(intervals.resamples)} resamples (seed {intervals.seed})")
    crossed = ("a crossed cluster bootstrap (pigeonhole bootstrap; Owen 2007) resampling "
               f"{_list(intervals.units)}")
    if intervals.resampling != "parametric":
        return (f"Intervals for {what} come from {crossed} ({md_escape(intervals.replicates)}), "
                f"with {md_escape(intervals.method.split(', ')[-1])} intervals (Efron 1987) "
                f"{resamples}.")
    if not result.structure.identity.used:
        return (f"Intervals for {what} come from a parametric bootstrap (Davison & Hinkley 1997), "
                f"because {md_escape(intervals.why)}: the random intercepts and residuals are "
                "redrawn from the fitted model in antithetic pairs (Hall 1989) and each draw is "
                f"refitted by REML, {resamples}.")
    plain_kind = (intervals.plain_method or "BCa").split(", ")[-1]
    return (f"Intervals for {what} come from a parametric bootstrap (Davison & Hinkley 1997): the "
            "design is kept, the random intercepts and residuals are redrawn from the fitted model "
            "in antithetic pairs (Hall 1989) and each draw is refitted by REML; the percentile "
            f"intervals of the draws are widened to t quantiles on {intervals.t_df} degrees of "
            "freedom (the mixes minus the rank of the per-mix design; Pinheiro & Bates 2000), "
            f"{resamples}. The plain model's intervals come from {crossed}, with "
            f"{md_escape(plain_kind)} intervals (Efron 1987), from the same number of resamples.")


def _verdict_rule(result: AnalysisResult) -> str:
    d = result.description
    if d.compared:
        return ("The verdict is *supported* when the interval of the difference lies above zero, "
                "*refuted* when it lies below, *inconclusive* otherwise, and *confounded* when "
                "log2 diversity and log2 volume correlate across mixes at |r| ≥ "
                f"{d.check.max_correlation}. The minimum detectable difference is "
                "(z₁₋α/₂ + z_power) × the bootstrap standard error of the difference.")
    if d.single_factor:
        other = "volume" if d.single_factor == "diversity" else "diversity"
        return (f"This grid varies only {d.single_factor} ({other} is fixed at "
                f"{md_escape(d.check.fixed_at or '')}), so the model has the {d.single_factor} "
                f"term alone and the verdict is *{d.single_factor}_only*, with that effect and "
                "its interval.")
    return f"The verdict is *confounded*: {md_escape(d.check.reason)}."


def _model_methods(result: AnalysisResult) -> str:
    d, structure = result.description, result.structure
    varied = [t for t in ("diversity", "volume") if t in structure.mix_terms]
    seeds = "seeds are replicates" if d.seeds_per_cell[1] > 1 else "one seed per mix and target"
    text = (f"The outcome ({_code(d.outcome)}) was modelled with the linear mixed model "
            f"{_code(structure.formula(True, d.words))}, fitted by restricted maximum likelihood "
            f"(REML; Bates et al. 2015), with crossed random intercepts for "
            f"{_list(structure.random, code=True)}; {seeds}. ")
    if varied:
        each = "each main effect is" if len(varied) > 1 else "the effect is"
        text += (f"{' and '.join(v.capitalize() if i == 0 else v for i, v in enumerate(varied))} "
                 f"{'are' if len(varied) > 1 else 'is'} log2-transformed and centred at the design "
                 f"mean, so {each} the change per doubling at the centre of the design. ")
    return text + ("Each fixed term was tested by a likelihood-ratio test between "
                   "maximum-likelihood fits with and without it.")


def _descriptive_methods(result: AnalysisResult) -> str:
    d = result.description
    text = ("Descriptive intervals in the " + ("improvement and " if d.has_baselines else "")
            + "language tables are percentile bootstrap intervals; pairwise comparisons of mixes "
            "are paired t tests with Holm's (1979) correction (past "
            f"{MAX_PAIRWISE_MIXES} mixes, the mixes are ranked with t intervals instead).")
    if all(is_builtin(get_task(t)) for t in d.targets):
        text += " Targets and languages follow XTREME (Hu et al. 2020)."
    if d.has_baselines:
        text += " The improvement table follows the layout of Phang et al. (2020)."
    return text


def _methods(result: AnalysisResult) -> list[Block]:
    words = _words(result)
    text = " ".join([_model_methods(result), _bootstrap_methods(result), _verdict_rule(result),
                     _descriptive_methods(result)])
    paragraphs = [_paragraph(text)]
    plan = result.structure.identity
    if plan.rule:
        paragraphs.append(_paragraph(
            f"{words.noun.capitalize()} identity. Each {words.qualified} may enter the model with "
            "an identity effect weighted by its share of the mix's examples "
            "(Diversity-Interactions models; Kirwan et al. 2009; Connolly et al. 2013); the "
            "shares sum to one, so the model keeps its intercept and leaves out the share of a "
            f"reference {words.noun}, and a {words.noun}'s identity effect -- the outcome of a "
            f"mix of that {words.noun} alone at the design's centre volume -- is a "
            "linear combination of the coefficients, bootstrapped like the other outputs. "
            f"{md_escape(_sentence(plan.rule))} With identity = \"auto\" the "
            "model with identity effects is the primary one whenever this holds, and the plain "
            "model is fitted and bootstrapped beside it with the same resamples. A model "
            "with identity effects is bootstrapped parametrically (random effects and residuals "
            "redrawn from the fitted model, the design kept), with intervals widened to t "
            "quantiles on the degrees of freedom left for the mix variance, because resampling "
            f"mixes overstates the uncertainty when the model has a coefficient per {words.noun} "
            "(El Karoui & Purdom 2018). Per-target effects come from a model with one slope per "
            "target for each varied factor; their heterogeneity is tested by a likelihood-ratio "
            "test against common slopes, with a random intercept per (mix, target) cell in both "
            "models when the cells hold several rows. Covariates are centred fixed effects"
            + (" and never enter the contrast." if result.description.compared else ".")))
    return [_heading("Methods"), *paragraphs, _heading("References", 3),
            _bullets(REFERENCES)]


def compose(result: AnalysisResult) -> list[Block]:
    """The report as blocks, in reading order, with tables and figures numbered."""
    blocks = (_question(result) + _simulation_note(result)
              + _verdict(result) + _data_summary(result) + _effects(result)
              + _comparison(result) + _identity(result) + _per_target(result)
              + _diagnostics(result) + _improvement(result)
              + _languages(result) + _pairwise(result) + _methods(result))
    counters = {"table": 0, "figure": 0}
    numbered = []
    for block in blocks:
        if block.kind in counters:
            counters[block.kind] += 1
            block = replace(block, number=counters[block.kind])
        numbered.append(block)
    return numbered


# --- files -----------------------------------------------------------------------------------

def _json_safe(value):
    """Plain JSON values: NaN and infinities become null, numpy scalars and arrays plain values."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def estimates_json(estimates: dict) -> str:
    """``estimates`` as indented JSON, NaN as ``null`` (strict JSON has no NaN)."""
    return json.dumps(_json_safe(estimates), indent=2, allow_nan=False) + "\n"


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",),
                                            default_for_string=False),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined)
    environment.filters["inline"] = inline_html
    return environment


def _write_files(result: AnalysisResult, folder: Path, title: str) -> list[str]:
    """Everything of the report into ``folder``; returns the written paths relative to it."""
    blocks = compose(result)
    written = []
    images = {}
    for block in blocks:
        if block.kind == "figure":
            assert block.figure is not None, "a figure block holds its figure"
            paths = figures.save_figure(block.figure, folder / "figures", block.name)
            written += [f"figures/{p.name}" for p in paths.values()]
            width, _ = block.figure.get_size_inches()
            images[block.name] = {
                "data": base64.b64encode(paths["png"].read_bytes()).decode("ascii"),
                # Shown above print size (96 px per inch), single-column figures more so:
                # 8 pt text reads small on screens. The 300 dpi PNG stays sharp at these sizes.
                "width": max(round(width * DISPLAY_PIXELS_PER_INCH), MIN_DISPLAY_WIDTH),
            }
        elif block.kind == "table" and block.name != "load_problems":
            assert block.table is not None, "a table block holds its table"
            path = folder / "tables" / f"{block.name}.tex"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(tables.to_latex(block.table), encoding="utf-8")
            written.append(f"tables/{path.name}")
    environment = _environment()
    context: dict[str, object] = {"title": title, "blocks": blocks, "images": images, "version": __version__,
               "markdown_table": tables.to_markdown, "html_table": tables.to_html,
               "css": (TEMPLATES / "report.css").read_text(encoding="utf-8")}
    for name in ("report.md", "report.html"):
        text = environment.get_template(f"{name}.j2").render(context)
        (folder / name).write_text(text, encoding="utf-8")
        written.append(name)
    (folder / "estimates.json").write_text(estimates_json(result.to_dict()), encoding="utf-8")
    written.append("estimates.json")
    # Past what the report shows, every mix is in a CSV: the ranking, and the improvement table
    # when the report shows design cells.
    (folder / "tables").mkdir(exist_ok=True)
    if len(result.mix_ranking) > MAX_PAIRWISE_MIXES:
        result.mix_ranking.to_csv(folder / RANKING_FILE, index=False)
        written.append(RANKING_FILE)
    if result.improvement_table["mix"].nunique() > MAX_MIXES_SHOWN:
        result.improvement_table.to_csv(folder / IMPROVEMENT_FILE, index=False)
        written.append(IMPROVEMENT_FILE)
    if not result.problems.empty:
        write_problems([Problem(*row) for row in result.problems[["file", "location", "severity",
                                                                   "message"]].itertuples(index=False)],
                       folder / PROBLEMS_FILE)
        written.append(PROBLEMS_FILE)
    return written


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Put ``staging`` at ``out_dir``, keeping any previous report until the new one is in place."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    retired = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}.old")
    out_dir.rename(retired)
    try:
        staging.rename(out_dir)
    except BaseException:
        retired.rename(out_dir)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def write_report(result: AnalysisResult, out_dir: Path, *, title: str | None = None) -> dict[str, Path]:
    """Write the report of an analysis into ``out_dir``.

    Writes ``report.md``, a self-contained ``report.html`` (figures embedded as PNG, stylesheet
    inline, no external resources), ``figures/<name>.png`` and ``.pdf``, ``tables/<name>.tex``
    (booktabs) and ``estimates.json`` (``result.estimates``, NaN as ``null``). The files are
    written into a temporary sibling folder that replaces ``out_dir`` only once complete, so a
    failure leaves the previous report untouched.

    Parameters
    ----------
    result:
        The analysis to report.
    out_dir:
        Report folder; created, or replaced as a whole.
    title:
        Report title; by default the question the toolkit answers.

    Returns
    -------
    dict
        Path of every written file, keyed by its path relative to ``out_dir`` (``"report.html"``,
        ``"figures/effects_forest.pdf"``, ``"tables/effects.tex"``, ...).

    Examples
    --------
    >>> from transferstats.report.render import write_report
    >>> paths = write_report(result, Path("reports/xtreme"))  # doctest: +SKIP
    >>> paths["report.html"]  # doctest: +SKIP
    PosixPath('reports/xtreme/report.html')
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"report folder {out_dir} exists and is not a folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        # mkdtemp makes the folder private (0700); a report is meant to be shared and read.
        os.chmod(staging, 0o755)
        written = _write_files(result, staging, title or default_title(result))
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {relative: out_dir / relative for relative in written}
