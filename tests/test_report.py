"""The report writer: files, figures, LaTeX, Markdown, HTML in a real browser, atomic replacement."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.text import Text

from report_fixtures import TRUE_EFFECTS, make_result, make_unfittable_result
from transferstats.report import figures, render, tables
from transferstats.report.render import inline_html, write_report
from transferstats.report.tables import md_escape

FIGURES = ("effects_forest", "bootstrap_difference", "identity_effects", "per_target", "residuals",
           "improvement_heatmap", "interaction", "languages")
LATEX_TABLES = ("effects", "model_comparison", "identity", "per_target", "variance_components",
                "improvement", "languages", "pairwise", "left_out")
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def result():
    return make_result()


@pytest.fixture(scope="module")
def report(result, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("reports") / "example"
    return out_dir, write_report(result, out_dir)


def test_writes_every_file(report, result):
    out_dir, paths = report
    assert not result.problems.empty
    expected = {"report.md", "report.html", "estimates.json", "problems.tsv"}
    expected |= {f"figures/{name}.{fmt}" for name in FIGURES for fmt in ("png", "pdf")}
    expected |= {f"tables/{name}.tex" for name in LATEX_TABLES}
    assert set(paths) == expected
    for relative, path in paths.items():
        assert path == out_dir / relative
        assert path.is_file() and path.stat().st_size > 0
    assert [p.name for p in out_dir.parent.iterdir()] == ["example"], "no temporary folder left"
    # Every problem, one per line after the header, even those the report's table groups.
    assert len(paths["problems.tsv"].read_text().splitlines()) == len(result.problems) + 1


def test_figures_are_png_and_vector_pdf_with_text_as_text(report):
    out_dir, _ = report
    for name in FIGURES:
        assert (out_dir / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pdf = (out_dir / "figures" / f"{name}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF")
        # pdf.fonttype 42 embeds TrueType fonts (FontFile2); Type 3 fonts would be outlines.
        assert b"/FontFile2" in pdf and b"/Type3" not in pdf, name


def test_figure_text_is_at_least_8_points(result):
    estimates = result.estimates
    drawn = [
        figures.improvement_heatmap(result.improvement_table),
        figures.effects_forest(estimates["effects"], estimates["comparison"]),
        figures.interaction_plot(result.interaction_table),
        figures.language_dotplot(result.language_table),
        figures.bootstrap_difference(result.bootstrap_draws["diversity - volume"],
                                     estimates["comparison"]),
        figures.residual_diagnostics(result.model_data["fitted"], result.model_data["residual"]),
        figures.identity_forest(estimates["identity"]["tasks"]),
        figures.per_target_forest(estimates["per_target"]),
    ]
    for figure in drawn:
        width, _ = figure.get_size_inches()
        assert width in (figures.SINGLE_COLUMN, figures.DOUBLE_COLUMN)
        figure.canvas.draw()
        sizes = [t.get_fontsize() for t in figure.findobj(Text) if t.get_text() and t.get_visible()]
        assert sizes and min(sizes) >= 8


def test_estimates_json_round_trips_with_nan_as_null(report, result):
    out_dir, _ = report

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    loaded = json.loads((out_dir / "estimates.json").read_text(), parse_constant=refuse)
    interaction = next(e for e in loaded["effects"] if e["term"] == "diversity:volume")
    assert math.isnan(result.effect("diversity:volume")["p_value"])
    assert interaction["p_value"] is None
    assert loaded["effects"][0] == result.estimates["effects"][0]
    assert loaded["comparison"] == result.estimates["comparison"]
    assert loaded["verdict"] == result.verdict
    assert loaded["source"]["truth"]["diversity_effect"] == TRUE_EFFECTS["diversity"]


def _unescaped(text: str, character: str) -> int:
    return len(re.findall(rf"(?<!\\){re.escape(character)}", text))


@pytest.mark.parametrize("name", LATEX_TABLES)
def test_latex_tables_are_booktabs_and_well_formed(report, name):
    out_dir, _ = report
    latex = (out_dir / "tables" / f"{name}.tex").read_text()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert latex.count(rule) == 1, rule
    assert _unescaped(latex, "{") == _unescaped(latex, "}")
    assert latex.startswith(r"% Requires \usepackage{booktabs} and \usepackage{graphicx}.")
    column_format = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", latex).group(1)
    rows = latex.split(r"\toprule")[1].split(r"\bottomrule")[0]
    rows = [line for line in rows.splitlines() if line.strip().endswith(r"\\")]
    assert len(rows) >= 2
    for row in rows:
        assert _unescaped(row, "&") == len(column_format) - 1, row
    assert re.search(r"\\label\{tab:" + name + "}", latex)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="needs pdflatex (TeX Live) to compile")
def test_latex_tables_compile_in_a_two_column_paper(report, tmp_path):
    out_dir, _ = report
    inputs = "\n".join(rf"\input{{{(out_dir / 'tables' / f'{name}.tex').as_posix()}}}"
                       for name in LATEX_TABLES)
    (tmp_path / "paper.tex").write_text(
        "\\documentclass[twocolumn]{article}\n\\usepackage[T1]{fontenc}\n"
        "\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
        f"\\begin{{document}}\n{inputs}\n\\end{{document}}\n")
    completed = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                                "paper.tex"], cwd=tmp_path, capture_output=True, text=True,
                               timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert "Overfull \\hbox" not in completed.stdout


def test_improvement_table_has_phang_layout(report, result):
    out_dir, _ = report
    latex = (out_dir / "tables" / "improvement.tex").read_text()
    header = latex.split(r"\toprule")[1].split(r"\midrule")[0]
    assert header.strip().startswith("Mix of intermediate tasks & XNLI & PAWS-X")
    assert header.strip().endswith(r"Avg \\")
    assert r"\begin{table*}" in latex, "a column per target needs the full page width"
    first_mix = result.improvement_table["mix"].iloc[0]
    assert latex.index(tables.latex_escape(first_mix)) < latex.index(r"{\scriptsize [")


def test_markdown_states_the_verdict_and_its_numbers(report, result):
    out_dir, _ = report
    markdown = (out_dir / "report.md").read_text()
    estimates = result.estimates
    assert "**Verdict: inconclusive**" in markdown
    assert "diversity effect 0.87 points per doubling of the number of tasks" in markdown
    assert "volume effect 0.63 points per doubling of intermediate examples" in markdown
    assert "difference diversity − volume 0.24 points per doubling (95% CI [−0.17, 0.66])" in markdown
    assert "minimum detectable difference 0.48 points per doubling at 80% power" in markdown
    assert estimates["verdict_reason"].split(";")[1].strip() in markdown
    assert "These results are simulated by `transferstats simulate` with known effects: " \
           "diversity 0.90, volume 0.60" in markdown
    for message in result.problems["message"]:
        assert message in markdown, "every problem (and dropped run) is listed"
    for reference in ("arXiv:2005.13013", "arXiv:2003.11080", "lme4", "Efron", "Owen", "Holm"):
        assert reference in markdown
    for number, name in enumerate(FIGURES, start=1):
        assert f"![Figure {number}](figures/{name}.png)" in markdown


def test_html_is_self_contained(report):
    out_dir, _ = report
    page = (out_dir / "report.html").read_text()
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == len(FIGURES)
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert "Verdict: inconclusive" in page


def _browser_check(page: Path, work: Path) -> tuple[dict, str]:
    """Open a copy of ``page`` in headless Chromium with a probe script that records errors and
    image states into the DOM; return the probe's findings and Chromium's log."""
    probe = """<script>
window.__errors = [];
window.addEventListener("error", function (event) {
  var what = event.message || (event.target && event.target.src) || "error";
  window.__errors.push(String(what).slice(0, 200));
}, true);
window.addEventListener("load", function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    return {complete: img.complete, width: img.naturalWidth};
  });
  var out = document.createElement("pre");
  out.id = "report-check";
  out.textContent = JSON.stringify({errors: window.__errors, images: images});
  document.body.appendChild(out);
});
</script>"""
    probed = work / "probed.html"
    probed.write_text(page.read_text().replace("<head>", "<head>\n" + probe, 1))
    completed = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={work / 'profile'}", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=600)
    found = re.search(r'<pre id="report-check">(.*?)</pre>', completed.stdout, re.S)
    assert found, f"the probe did not run; chromium said:\n{completed.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1))), completed.stderr


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                  "(apt-get install chromium)")
def test_html_opens_in_chromium_without_errors_and_with_images_loaded(report, tmp_path):
    out_dir, _ = report
    findings, log = _browser_check(out_dir / "report.html", tmp_path)
    assert findings["errors"] == []
    assert len(findings["images"]) == len(FIGURES)
    assert all(image["complete"] and image["width"] > 0 for image in findings["images"])
    assert not [line for line in log.splitlines() if ":CONSOLE" in line]


def test_failed_write_keeps_the_previous_report(tmp_path, monkeypatch, result):
    out_dir = tmp_path / "report"
    write_report(result, out_dir)
    before = {p.relative_to(out_dir): p.read_bytes() for p in out_dir.rglob("*") if p.is_file()}

    def fail(estimates):
        raise RuntimeError("disk full")

    # The last file written: everything else is already in the temporary folder.
    monkeypatch.setattr(render, "estimates_json", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(result, out_dir, title="A new title")
    after = {p.relative_to(out_dir): p.read_bytes() for p in out_dir.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["report"], "the temporary folder is removed"


def test_rewrite_replaces_the_whole_folder(tmp_path):
    out_dir = tmp_path / "report"
    out_dir.mkdir()
    (out_dir / "stale.txt").write_text("from an earlier report")
    paths = write_report(make_result(interaction=False, simulated=False), out_dir,
                         title="Real runs")
    assert not (out_dir / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
    markdown = paths["report.md"].read_text()
    assert markdown.startswith("# Real runs\n")
    assert "simulated" not in markdown.lower()
    assert "Diversity × volume" not in markdown


def test_unfittable_design_still_reports(tmp_path):
    paths = write_report(make_unfittable_result(), tmp_path / "report")
    markdown = paths["report.md"].read_text()
    assert "**Verdict: confounded**" in markdown
    assert "only diversity varies across the 9 mixes" in markdown
    assert "figures/effects_forest.png" not in paths and "figures/residuals.png" not in paths
    assert "figures/improvement_heatmap.pdf" in paths
    assert json.loads(paths["estimates.json"].read_text())["comparison"]["estimate"] is None


def test_markdown_subset_converts_to_escaped_html():
    text = "**Verdict** *maybe* `a_b <c>` " + md_escape("x*y*z _id_ <b>")
    assert str(inline_html(text)) == ("<strong>Verdict</strong> <em>maybe</em> "
                                      "<code>a_b &lt;c&gt;</code> x*y*z _id_ &lt;b&gt;")
    assert md_escape("target_language") == "target_language"
    assert str(inline_html(md_escape("a|b \\ c"))) == "a|b \\ c"
    table = tables.Table("t", "", pd.DataFrame({"Message": ["a | b", "x\ny"]}))
    assert tables.to_markdown(table).splitlines()[2:] == [r"| a \| b |", "| x y |"]


def test_numbers_are_formatted_for_print():
    assert tables.format_number(-0.5) == "−0.50"
    assert tables.format_number(-0.004) == "0.00"
    assert tables.format_number(None) == tables.format_number(math.nan) == "–"
    assert tables.format_p(4e-5) == "< 0.001" and tables.format_p(0.0412) == "0.041"
    assert tables.latex_escape("mnli+squad_v1 −0.2 95%") == r"mnli+squad\_v1 $-$0.2 95\%"


def test_confounded_verdict_quotes_no_effects():
    blocks = render.compose(make_result(verdict="confounded"))
    verdict = next(b for b in blocks if b.kind == "callout" and b.name == "verdict-confounded")
    assert "cannot separate diversity from volume" in verdict.text
    assert "diversity effect" not in verdict.text
    assert any("shown for completeness" in b.text for b in blocks if b.kind == "paragraph")


def test_identity_and_per_target_sections_tell_both_stories(report, result):
    out_dir, _ = report
    markdown = (out_dir / "report.md").read_text()
    plain = result.estimates["plain"]
    # The disagreement is stated next to the verdict and in its section, with its rule.
    assert markdown.count("The apparent diversity effect is explained by which tasks the mixes "
                          "contain") == 2
    assert "disagree when their verdicts differ" in markdown
    assert "## Which tasks: identity effects" in markdown and "## Per target" in markdown
    assert "| Plain (no task identity) | 1.45 [1.15, 1.75] |" in markdown
    assert f"| {plain['verdict']} |" in markdown
    assert "| mnli | 4.10 [3.20, 5.00] |" in markdown, "identity effects sorted, with intervals"
    assert "The effects differ between targets" in markdown and "χ²(" in markdown
    assert "parametric bootstrap" in markdown and "El Karoui" in markdown
    # The methods say how each model's intervals were made, each with its own method.
    methods = markdown[markdown.index("## Methods"):]
    assert ("come from a parametric bootstrap (Davison & Hinkley 1997)" in methods
            and "antithetic pairs (Hall 1989)" in methods and "on 11 degrees of freedom" in methods)
    assert ("The plain model's intervals come from a crossed cluster bootstrap (pigeonhole "
            "bootstrap; Owen 2007) resampling language, mix, with BCa intervals") in methods
    assert "`target_in_mix`" in markdown, "covariates are described"
    for reference in ("Kirwan", "Connolly", "Loreau"):
        assert reference in markdown
    loaded = json.loads((out_dir / "estimates.json").read_text())
    assert loaded["identity"]["used"] is True
    assert {"task", "estimate", "ci_low", "ci_high"} <= set(loaded["identity"]["tasks"][0])
    assert {"target", "term", "estimate", "ci_low", "ci_high"} <= set(loaded["per_target"][0])
    assert loaded["plain"]["effects"][0]["estimate"] == 1.45


def test_without_identity_the_report_says_why(tmp_path):
    paths = write_report(make_result(identity=False), tmp_path / "report")
    markdown = paths["report.md"].read_text()
    assert "The primary model is the plain one: task identity effects are not estimable" in markdown
    assert ("come from a crossed cluster bootstrap (pigeonhole bootstrap; Owen 2007) resampling "
            "language, mix") in markdown and "parametric bootstrap (Davison" not in markdown
    assert "figures/identity_effects.png" not in paths and "tables/identity.tex" not in paths
    assert "figures/per_target.png" in paths


def test_the_verdict_says_how_far_to_trust_the_interval():
    """The coverage the study measured on a design like the analysed one follows the verdict;
    a confounded verdict, which quotes no interval, leaves it out."""
    coverage = {"design": "small", "mixes": 12, "languages": 4, "target_mix_sd": 0.5,
                "target_mix_in_model": True, "bootstrap": "crossed cluster", "interval": "BCa",
                "grids": 33, "covered": 30, "coverage": 0.909, "mc_low": 0.764, "mc_high": 0.969,
                "width_ratio": 1.29}
    for verdict, shown in (("inconclusive", True), ("confounded", False)):
        result = replace(make_result(verdict=verdict), coverage=coverage)
        paragraphs = [b.text for b in render.compose(result) if b.kind == "paragraph"]
        said = [t for t in paragraphs if t.startswith("How far to trust the interval")]
        assert bool(said) is shown
        if shown:
            assert "30 of 33 simulated grids of 12 mixes with target-by-mix variation" in said[0]
