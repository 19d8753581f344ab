"""The layout rules the codebase keeps: the analysis depends only on the results contract, the
task registry and the language codes, and ``import transferstats`` stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "transferstats"
# What the analysis (and its report) may import from the package: itself, the contract (writer
# and reader), the problem list, the task registry, the language codes (members of language
# mixes) and the parallel layer every bootstrap and simulation runs on.
ANALYSIS_MAY_IMPORT = ("transferstats.analysis", "transferstats.report", "transferstats.results",
                       "transferstats.loading", "transferstats.problems", "transferstats.tasks",
                       "transferstats.languages", "transferstats.parallel")


def _package_imports(path: Path) -> set[str]:
    imports = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("transferstats"):
            imports.add(node.module)
        elif isinstance(node, ast.Import):
            imports |= {alias.name for alias in node.names if alias.name.startswith("transferstats")}
    return imports


def test_the_analysis_imports_only_the_contract_and_the_task_registry():
    offending = {}
    for folder in ("analysis", "report"):
        for path in sorted((PACKAGE / folder).glob("*.py")):
            bad = {m for m in _package_imports(path)
                   if m != "transferstats" and not m.startswith(ANALYSIS_MAY_IMPORT)}
            if bad:
                offending[str(path.relative_to(PACKAGE))] = sorted(bad)
    assert not offending


def test_import_transferstats_loads_neither_the_analysis_nor_torch():
    code = ("import sys, transferstats; "
            "print(sorted(m for m in ('torch', 'statsmodels', 'matplotlib', 'transferstats.api') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_the_analysis_never_imports_the_training_stack():
    code = ("import sys, transferstats as ts; ts.analyze; import transferstats.report.render; "
            "import transferstats.commands.analyze; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'submitit') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
