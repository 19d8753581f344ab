"""Report tables: tidy analysis output -> display frames -> LaTeX (booktabs), Markdown and HTML.

Each ``*_table`` function takes tidy data and returns a :class:`Table` whose ``frame`` holds the
display strings. A cell may carry a secondary line after a newline (the confidence interval under
a mean, as in Phang et al. 2020, Table 2); :func:`to_latex` sets it as a second, smaller row,
:func:`to_html` as a second line, and :func:`to_markdown` after the main value.

References
----------
Phang et al. 2020, "English Intermediate-Task Training Improves Zero-Shot Cross-Lingual Transfer
Too", arXiv:2005.13013.
Holm 1979, "A simple sequentially rejective multiple test procedure", Scand. J. Statist. 6:65-70.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from transferstats.analysis.members import TASK_WORDS, MemberWords

MINUS = "\N{MINUS SIGN}"

# XTREME's own spelling of its tasks (Hu et al. 2020, Table 1); unknown ids are shown as they are.
TARGET_LABELS = {
    "xnli": "XNLI", "pawsx": "PAWS-X", "udpos": "POS", "panx": "NER", "xquad": "XQuAD",
    "mlqa": "MLQA", "tydiqa": "TyDiQA", "bucc2018": "BUCC", "tatoeba": "Tatoeba", "average": "Avg",
}

TERM_LABELS = {
    "diversity": "Diversity", "volume": "Volume", "diversity:volume": "Diversity × volume",
    "diversity - volume": f"Diversity {MINUS} volume",
    # The target's own task (task mixes) or the evaluated language (language mixes).
    "target_in_mix": "Target in the mix (share)",
}


OUTCOME_LABELS = {
    "improvement": "Improvement over baseline (points)",
    "score": "Score (points)",
    "nonenglish_mean": "Non-English mean score (points)",
    "transfer_gap": "Transfer gap (points, lower is better)",
    "worst_language": "Worst-language score (points)",
}


def outcome_label(outcome: str) -> str:
    """Axis and caption label of an analysis outcome, with its unit."""
    return OUTCOME_LABELS.get(outcome, f"{outcome} (points)")


def target_label(task_id: str) -> str:
    """Display name of a target task (``"average"`` becomes ``"Avg"``)."""
    return TARGET_LABELS.get(task_id, task_id)


def term_label(term: str) -> str:
    """Display name of a model term or of the diversity - volume contrast."""
    return TERM_LABELS.get(term, term)


def interval_kind(resampling: str) -> str:
    """How intervals were made, as a caption says it: "Wald t", "crossed cluster bootstrap"."""
    return "Wald t" if resampling == "wald t" else f"{resampling} bootstrap"


def is_missing(value) -> bool:
    """True for ``None`` and NaN, the two ways the analysis says "no value"."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_number(value, digits: int = 2) -> str:
    """A number with fixed decimals and a true minus sign; an en dash when missing."""
    if is_missing(value):
        return "\N{EN DASH}"
    text = f"{float(value):.{digits}f}"
    if float(text) == 0:
        text = text.lstrip("-")  # -0.004 rounds to 0.00, not to a negative zero
    return text.replace("-", MINUS)


def format_dof(value) -> str:
    """Degrees of freedom: whole numbers without decimals, corrected (fractional) ones with one."""
    if is_missing(value):
        return "\N{EN DASH}"
    return format_number(value, 0 if float(value).is_integer() else 1)


def format_interval(low, high, digits: int = 2) -> str:
    """``[low, high]``, or an en dash when either end is missing."""
    if is_missing(low) or is_missing(high):
        return "\N{EN DASH}"
    return f"[{format_number(low, digits)}, {format_number(high, digits)}]"


def format_p(p_value) -> str:
    """A p-value to three decimals, ``< 0.001`` below that; an en dash when missing."""
    if is_missing(p_value):
        return "\N{EN DASH}"
    return "< 0.001" if p_value < 0.001 else f"{p_value:.3f}"


def format_level(level: float) -> str:
    """A confidence level or power as a percentage without spurious decimals (95%, 97.5%)."""
    return f"{round(level * 100, 4):g}%"


def format_count(value) -> str:
    """An integer count with thousands separators (``160,000``)."""
    return f"{int(value):,}"


@dataclass(frozen=True)
class Table:
    """A display table.

    Attributes
    ----------
    name:
        File stem of its LaTeX version (``tables/<name>.tex``) and its HTML anchor.
    caption:
        One-sentence caption (plain text; Markdown-style ``*emphasis*`` is not interpreted).
    frame:
        Display strings, one column per table column; ``"main\\nsecondary"`` cells have a second line.
    """

    name: str
    caption: str
    frame: pd.DataFrame

    @property
    def label(self) -> str:
        return f"tab:{self.name}"


def improvement_table(improvement: pd.DataFrame, confidence: float = 0.95,
                      by_cell: bool = False, words: MemberWords = TASK_WORDS,
                      baseline: bool = True) -> Table:
    """Improvement over the baseline per mix and target, Phang et al. (2020) layout; the score
    itself where the grid has no baseline (``baseline=False``).

    Parameters
    ----------
    improvement:
        Long form ``mix, target_task, mean, ci_low, ci_high, n_runs``; ``target_task ==
        "average"`` holds each mix's average. Row order is kept; targets keep their first-seen
        order and the average comes last. An optional ``score_stderr`` (the mean standard error
        of the scores, :func:`transferstats.analysis.descriptives.improvement_table`) adds a
        column ``Score SE`` per row where any is given: the average row's, else the mean of the
        row's cells.
    confidence:
        Level of the intervals, for the caption.
    by_cell:
        The rows are design cells (mixes of the same number of tasks and examples averaged,
        :func:`transferstats.report.render.by_design_cell`), not mixes.

    Returns
    -------
    Table
        Mixes as rows, targets then ``Avg`` as columns; each cell ``mean`` over ``[lo, hi]``.
    """
    first = "Design cell" if by_cell else f"Mix of {words.qualified_plural}"
    mixes = list(dict.fromkeys(improvement["mix"]))
    targets = [t for t in dict.fromkeys(improvement["target_task"]) if t != "average"]
    if (improvement["target_task"] == "average").any():
        targets.append("average")
    cells = improvement.set_index(["mix", "target_task"])
    rows = []
    for mix in mixes:
        row = {first: mix}
        for target in targets:
            if (mix, target) in cells.index:
                cell = cells.loc[(mix, target)]
                # One decimal, as in Phang et al. (2020): the grid's noise is larger than that.
                row[target_label(target)] = (
                    f"{format_number(cell['mean'], 1)}\n"
                    f"{format_interval(cell['ci_low'], cell['ci_high'], 1)}")
            else:
                row[target_label(target)] = "\N{EN DASH}"
        rows.append(row)
    with_stderr = "score_stderr" in improvement and improvement["score_stderr"].notna().any()
    if with_stderr:
        for row, mix in zip(rows, mixes, strict=True):
            row["Score SE"] = format_number(_row_stderr(improvement[improvement["mix"] == mix]), 1)
    rows_are = (f"design cell (the mixes of the same number of {words.plural} and examples "
                "averaged; intervals are t intervals over those mixes)" if by_cell else "mix")
    what = "Improvement over the baseline (mix none, points)" if baseline else "Score (points)"
    caption = (f"{what}, per {rows_are} and target task, averaged over languages and seeds, with "
               f"{format_level(confidence)} confidence intervals underneath. Avg is the mean over "
               "targets.")
    if with_stderr:
        caption += (" Score SE is the mean standard error of the scores as the evaluation tool "
                    "reported it, where it did: the noise of the evaluation sets"
                    + (", not of the improvement." if baseline else "."))
    return Table("improvement" if baseline else "scores", caption, pd.DataFrame(rows))


def _row_stderr(cells: pd.DataFrame) -> float:
    """A row's mean score standard error: its average cell's, else the mean of its cells'."""
    average = cells.loc[cells["target_task"] == "average", "score_stderr"]
    return float(average.iloc[0]) if len(average) else float(cells["score_stderr"].mean())


def effects_table(effects: list[dict], comparison: dict, confidence: float = 0.95,
                  resampling: str = "crossed cluster", df_method: str = "Satterthwaite") -> Table:
    """Fixed effects of the model and the diversity - volume contrast.

    Parameters
    ----------
    effects:
        ``estimates["effects"]``: dicts with ``term, estimate, ci_low, ci_high, p_value, unit``.
    comparison:
        ``estimates["comparison"]``: ``contrast, estimate, ci_low, ci_high`` (``p_value``, ``unit``
        optional).
    confidence:
        Level of the intervals, for the column header.
    resampling:
        The bootstrap that made the intervals (``IntervalMethod.resampling``), or ``"wald t"``.
    df_method:
        Whose degrees of freedom the Wald t intervals have.
    """
    rows = list(effects)
    # A grid that varies one factor (or a confounded one) has no contrast: no empty row for it.
    compared = not is_missing(comparison.get("estimate"))
    if compared:
        rows.append({"term": comparison["contrast"], **comparison})
    ci_header = f"{format_level(confidence)} CI"
    wald = resampling == "wald t"
    frame = pd.DataFrame([{
        "Term": term_label(row["term"]),
        "Estimate": format_number(row.get("estimate")),
        ci_header: format_interval(row.get("ci_low"), row.get("ci_high")),
        **({"df": format_dof(row.get("df"))} if wald else {}),
        ("p (t)" if wald else "p (LRT)"): format_p(row.get("p_value")),
        "Unit": row.get("unit") or "points per doubling",
    } for row in rows])
    how = (f"{format_level(confidence)} Wald t intervals and t-test p-values on {df_method}'s "
           "degrees of freedom (df)" if wald else
           f"{format_level(confidence)} {resampling} bootstrap intervals and likelihood-ratio-test "
           "p-values")
    caption = (f"Fixed effects of the mixed model with {how}"
               + (f", and the contrast diversity {MINUS} volume." if compared else "."))
    return Table("effects", caption, frame)


def variance_components_table(variances: dict[str, float], residual_variance: float | None,
                              on_boundary: Sequence[str] = ()) -> Table:
    """Variance components of the mixed model.

    Parameters
    ----------
    variances:
        Random-intercept variance per grouping factor (``estimates["model"]
        ["variance_components"]``).
    residual_variance:
        Residual (within-cell) variance; ``None`` leaves its row out.
    on_boundary:
        Grouping factors whose variance was estimated at the boundary (zero).
    """
    rows = [(group, variance, group in on_boundary) for group, variance in variances.items()]
    if residual_variance is not None and not is_missing(residual_variance):
        rows.append(("Residual", residual_variance, False))
    frame = pd.DataFrame([{
        "Grouping": group,
        "Variance": format_number(variance, 3),
        "SD": format_number(math.sqrt(max(variance, 0.0)), 3),
        "At boundary": "yes" if boundary else "no",
    } for group, variance, boundary in rows])
    caption = ("Variance components of the mixed model (REML), in squared points. A variance at "
               "the boundary (estimated as zero) means that grouping adds no detectable variation.")
    return Table("variance_components", caption, frame)


def language_table(languages: pd.DataFrame, outcome: str = "improvement",
                   confidence: float = 0.95) -> Table:
    """The outcome per language, averaged over mixes and targets (``language, mean, ci_low,
    ci_high, n``), in the given order."""
    frame = pd.DataFrame({
        "Language": languages["language"],
        "Mean": [format_number(v) for v in languages["mean"]],
        f"{format_level(confidence)} CI": [format_interval(lo, hi)
                                 for lo, hi in zip(languages["ci_low"], languages["ci_high"], strict=True)],
        "n": [format_count(n) for n in languages["n"]],
    })
    caption = (f"{outcome_label(outcome)} per evaluation language, averaged over mixes and "
               f"targets, with {format_level(confidence)} confidence intervals over mixes.")
    return Table("languages", caption, frame)


_EFFECT_SIZE_COLUMNS = {"hedges": "Hedges' g", "cohen": "Cohen's d", "r": "r", "cles": "CLES",
                        "AUC": "AUC", "eta_square": "η²", "odds_ratio": "Odds ratio"}


def _first_column(frame: pd.DataFrame, *candidates: str) -> str | None:
    return next((c for c in candidates if c in frame.columns), None)


def pairwise_table(pairwise: pd.DataFrame) -> Table:
    """Holm-corrected pairwise comparisons of mixes from pingouin's ``pairwise_tests``.

    Accepts both pingouin spellings of the p-value columns (``p_corr`` since 0.7, ``p-corr``
    before).
    """
    p_corrected = _first_column(pairwise, "p_corr", "p-corr")
    p_uncorrected = _first_column(pairwise, "p_unc", "p-unc")
    effect_size = _first_column(pairwise, *_EFFECT_SIZE_COLUMNS)
    columns = {
        "A": pairwise["A"].astype(str),
        "B": pairwise["B"].astype(str),
        "T": [format_number(v) for v in pairwise["T"]],
        "df": [format_dof(v) for v in pairwise["dof"]],
        "p": [format_p(v) for v in pairwise[p_uncorrected]],
    }
    if p_corrected is not None:
        columns["p (Holm)"] = [format_p(v) for v in pairwise[p_corrected]]
    if effect_size is not None:
        columns[_EFFECT_SIZE_COLUMNS[effect_size]] = [format_number(v) for v in pairwise[effect_size]]
    caption = ("Pairwise comparisons of mixes (paired t tests over target-language "
               "pairs), p-values adjusted with Holm's (1979) method.")
    return Table("pairwise", caption, pd.DataFrame(columns))


def mix_ranking_table(ranking: pd.DataFrame, outcome: str, confidence: float = 0.95,
                      shown: int = 10) -> Table:
    """The ``shown`` best and ``shown`` worst mixes of
    :func:`transferstats.analysis.descriptives.mix_ranking`, with their intervals (all of them
    when there are at most 2 x ``shown``)."""
    ci = f"{format_level(confidence)} CI"
    rows = ranking if len(ranking) <= 2 * shown else pd.concat([ranking.head(shown),
                                                                ranking.tail(shown)])
    frame = pd.DataFrame({
        "Rank": [format_count(v) for v in rows["rank"]],
        "Mix": rows["mix"].astype(str).to_numpy(),
        "Tasks": [f"{v:g}" for v in rows["n_tasks"]],
        "Examples": [format_count(v) for v in rows["examples"]],
        outcome_label(outcome): [format_number(v) for v in rows["mean"]],
        ci: [format_interval(low, high) for low, high in zip(rows["ci_low"], rows["ci_high"],
                                                             strict=True)],
    })
    part = ("every mix" if len(ranking) <= 2 * shown
            else f"the {shown} best and the {shown} worst of the {len(ranking)} mixes")
    caption = (f"Mixes ranked by their mean {outcome.replace('_', ' ')}, {part}, with {ci} "
               "(t intervals over target-language pairs); a description of each mix, not a test "
               "between mixes.")
    return Table("mix_ranking", caption, frame)


def problems_table(problems: pd.DataFrame) -> Table:
    """Problems met while loading and analysing the results (``file, location, severity,
    message``), one row per kind with how many there are and where the first ones are
    (:func:`transferstats.problems.group_problems`), so that thousands stay readable."""
    from transferstats.problems import Problem, group_problems

    columns = problems[["file", "location", "severity", "message"]].fillna("").astype(str)
    grouped = group_problems(Problem(*row) for row in columns.itertuples(index=False))
    frame = pd.DataFrame({
        "Severity": grouped["severity"],
        "Message": grouped["message"],
        "Count": [f"{count:,}" for count in grouped["count"]],
        "First locations": grouped["first_locations"],
    })
    caption = ("Problems and warnings met while loading and analysing the results, one row per "
               "kind with its first locations; failed or unreadable runs were left out of the "
               "analysis.")
    return Table("load_problems", caption, frame)


# --- LaTeX -----------------------------------------------------------------------------------

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    MINUS: "$-$", "\N{EN DASH}": "--", "×": r"$\times$", "≥": r"$\geq$", "<": r"$<$",
    "η": r"$\eta$", "²": r"$^2$",
}
_LATEX_PATTERN = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIALS))


def latex_escape(text: str) -> str:
    """Escape LaTeX specials and set the few non-ASCII signs the report uses in math mode."""
    return _LATEX_PATTERN.sub(lambda m: _LATEX_SPECIALS[m.group(0)], text)


_NUMBER = rf"(< )?[{MINUS}-]?\d[\d,]*(\.\d+)?"
_NUMERIC_CELL = re.compile(rf"{_NUMBER}(\n.*)?|\[{_NUMBER}, {_NUMBER}\]|\N{{EN DASH}}")


def numeric_columns(frame: pd.DataFrame) -> list[bool]:
    """Which columns hold numbers (right-aligned); the first column is always a label."""
    return [i > 0 and all(_NUMERIC_CELL.fullmatch(str(v)) for v in frame[column])
            for i, column in enumerate(frame.columns)]


# Text width of one column of a two-column paper (ACL, ICML: 3.0-3.3 in) in em of the
# table's \small font; wider tables span both columns (table*).
SINGLE_COLUMN_EM = 26


def estimated_width_em(frame: pd.DataFrame) -> float:
    """Rough natural width of the LaTeX table: half an em per character (a quarter less for the
    ``\\scriptsize`` second lines) plus the column gaps. Only decides table versus table*."""
    width = 0.0
    for column in frame.columns:
        cells = [str(cell).split("\n", 1) for cell in frame[column]]
        main = max([len(str(column))] + [len(cell[0]) for cell in cells])
        secondary = max([len(cell[1]) for cell in cells if len(cell) == 2], default=0)
        width += max(0.5 * main, 0.375 * secondary) + 1.2
    return width


def to_latex(table: Table) -> str:
    """A booktabs table; needs ``\\usepackage{booktabs}`` and ``\\usepackage{graphicx}``.

    Number columns are right-aligned, text columns left-aligned. Secondary lines become a second,
    ``\\scriptsize`` row under their row. Tables too wide for one column of a two-column paper
    use ``table*`` with tighter column gaps, and any table still wider than the text is scaled
    down to fit (never up).
    """
    frame = table.frame
    column_format = "".join("r" if numeric else "l" for numeric in numeric_columns(frame))
    wide = estimated_width_em(frame) > SINGLE_COLUMN_EM
    environment = "table*" if wide else "table"
    lines = [
        r"% Requires \usepackage{booktabs} and \usepackage{graphicx}.",
        rf"\begin{{{environment}}}[t]",
        r"\centering",
        r"\small",
        *([r"\setlength{\tabcolsep}{4pt}"] if wide else []),
        # Scales the table down only when it is wider than the text (\width is its natural width).
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        rf"\begin{{tabular}}{{{column_format}}}",
        r"\toprule",
        " & ".join(latex_escape(str(c)) for c in frame.columns) + r" \\",
        r"\midrule",
    ]
    for values in frame.itertuples(index=False):
        parts = [str(v).split("\n", 1) for v in values]
        lines.append(" & ".join(latex_escape(p[0]) for p in parts) + r" \\")
        if any(len(p) == 2 for p in parts):
            lines.append(" & ".join(rf"{{\scriptsize {latex_escape(p[1])}}}" if len(p) == 2 else ""
                                    for p in parts) + r" \\")
    lines += [
        r"\bottomrule",
        r"\end{tabular}}",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{{table.label}}}",
        rf"\end{{{environment}}}",
    ]
    return "\n".join(lines) + "\n"


# --- Markdown and HTML -----------------------------------------------------------------------

# Underscores inside words (``target_language``) are not emphasis in Markdown; only those at a
# word's edge need escaping, which keeps identifiers readable in the raw report.md.
_MARKDOWN_SPECIALS = re.compile(r"[\\`*|]|(?<!\w)_|_(?!\w)")


def md_escape(text: str) -> str:
    """Backslash-escape the Markdown characters in text that comes from the data."""
    return _MARKDOWN_SPECIALS.sub(lambda m: "\\" + m.group(0), str(text))


def _markdown_cell(value: str) -> str:
    return md_escape(str(value).replace("\n", " "))


def to_markdown(table: Table) -> str:
    """A pipe table (GitHub-flavoured Markdown); secondary lines follow the main value."""
    frame = table.frame
    align = ["--:" if numeric else ":--" for numeric in numeric_columns(frame)]
    lines = ["| " + " | ".join(_markdown_cell(c) for c in frame.columns) + " |",
             "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_markdown_cell(v) for v in values) + " |"
              for values in frame.itertuples(index=False)]
    return "\n".join(lines)


def _html_cell(value: str) -> str:
    main, _, secondary = str(value).partition("\n")
    cell = html.escape(main)
    if secondary:
        cell += f'<br><span class="ci">{html.escape(secondary)}</span>'
    return cell


def to_html(table: Table) -> str:
    """An HTML ``<table>`` without inline styles; number cells have class ``num``."""
    frame = table.frame
    classes = [' class="num"' if numeric else "" for numeric in numeric_columns(frame)]
    head = "".join(f"<th{c}>{html.escape(str(name))}</th>"
                   for c, name in zip(classes, frame.columns, strict=True))
    body = "".join("<tr>" + "".join(f"<td{c}>{_html_cell(v)}</td>"
                                    for c, v in zip(classes, values, strict=True))
                   + "</tr>\n" for values in frame.itertuples(index=False))
    return (f'<table id="{html.escape(table.name)}">\n<thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}</tbody>\n</table>")


def model_comparison_table(models: Sequence[tuple[str, Sequence[dict], dict, str]],
                           shown: Sequence[str], confidence: float = 0.95,
                           words: MemberWords = TASK_WORDS) -> Table:
    """The plain model (no identity effects) beside the primary model with identity effects.

    ``models`` holds, per model, its name, its effects, its comparison (dicts as
    :meth:`~transferstats.analysis.result.Effect.to_dict` gives them) and its verdict;
    ``shown`` the terms (and the contrast) to show.
    """
    ci = f"{format_level(confidence)} CI"
    rows = []
    for name, effects, comparison, verdict in models:
        terms = {e["term"]: e for e in effects} | {comparison["contrast"]: comparison}
        row = {"Model": name}
        for term in shown:
            effect = terms.get(term, {})
            row[term_label(term)] = (f"{format_number(effect.get('estimate'))}\n"
                                     f"{format_interval(effect.get('ci_low'), effect.get('ci_high'))}")
        row["Verdict"] = verdict
        rows.append(row)
    caption = (f"{' and '.join(term_label(t) for t in shown)} (points per doubling, {ci} "
               f"underneath) in the plain model and in the model with {words.noun} identity "
               "effects, whose verdict is the analysis's.")
    return Table("model_comparison", caption, pd.DataFrame(rows))


def identity_table(tasks: list[dict], confidence: float = 0.95,
                   resampling: str = "parametric", words: MemberWords = TASK_WORDS
                   ) -> Table:
    """Identity effect of each intermediate task (or source language): the outcome of a mix of
    that member alone at the design's centre volume, and its difference from the mean member,
    with intervals."""
    ci = f"{format_level(confidence)} CI"
    ordered = sorted(tasks, key=lambda row: -row["estimate"])
    frame = pd.DataFrame([{
        words.noun.capitalize(): row["task"],
        "Alone": (f"{format_number(row['estimate'])}\n"
                  f"{format_interval(row['ci_low'], row['ci_high'])}"),
        f"vs. mean {words.noun}": (f"{format_number(row['relative'])}\n"
                          f"{format_interval(row['relative_ci_low'], row['relative_ci_high'])}"),
        "Mixes": format_count(row["n_mixes"]),
        "Mean share": format_number(row["mean_share"]),
    } for row in ordered])
    caption = (f"Identity effect of each {words.qualified} (points): the expected outcome of a "
               f"mix of that {words.noun} alone (full share) at the design's centre volume, and "
               f"its difference from the mean over {words.plural}, each with its {ci} from the "
               f"{interval_kind(resampling)} underneath; the number of mixes holding the {words.noun} "
               f"and its mean share in them. Sorted by the identity effect.")
    return Table("identity", caption, frame)


def per_target_table(rows: list[dict], confidence: float = 0.95,
                     resampling: str = "crossed cluster") -> Table:
    """Diversity and volume effects and their difference per target task, with intervals."""
    targets = list(dict.fromkeys(row["target"] for row in rows))
    terms = list(dict.fromkeys(row["term"] for row in rows))
    cells = {(row["target"], row["term"]): row for row in rows}

    def cell(target: str, term: str) -> str:
        row = cells.get((target, term), {})
        return (f"{format_number(row.get('estimate'))}\n"
                f"{format_interval(row.get('ci_low'), row.get('ci_high'))}")

    frame = pd.DataFrame([{"Target": target_label(target)}
                          | {term_label(term): cell(target, term) for term in terms}
                          for target in targets])
    named = " and ".join(terms[:2]) if len(terms) > 1 else terms[0]
    caption = (f"{named.capitalize()} effects per target task (points per doubling)"
               + (" and their difference" if len(terms) > 2 else "")
               + f", from one model with a {named.replace(' and ', ' and a ')} slope per target, "
               f"with {format_level(confidence)} {interval_kind(resampling)} intervals underneath.")
    return Table("per_target", caption, frame)
