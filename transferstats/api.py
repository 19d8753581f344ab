"""The Python API: what a notebook needs, in one flat namespace (``import transferstats as ts``).

``ts.analyze`` is what ``transferstats analyze`` runs; ``ts.load_results`` reads and validates;
``ts.fit_crossed`` is the crossed random-intercept solver, usable on any data, and with
``slopes=`` (or ``ts.fit_formula`` in lme4's notation) fits random slopes, whose fixed effects
``ts.satterthwaite`` and ``ts.kenward_roger`` test with small-sample df;
``ts.simulate_results`` writes a grid from the documented generative model. docs/api.md walks
through them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from transferstats import loading
from transferstats.analysis.inference import satterthwaite
from transferstats.analysis.kenward_roger import kenward_roger
from transferstats.analysis.lmm import MixedFit, fit_formula
from transferstats.analysis.mixed import CrossedFit, fit_crossed, likelihood_ratio_test
from transferstats.analysis.pipeline import analyze_loaded
from transferstats.analysis.result import AnalysisResult
from transferstats.analysis.slope_reduction import reduce_slopes
from transferstats.analysis.spec import AnalysisSpec, TaskSource, load_spec, read_tasks
from transferstats.loading import LoadedResults
from transferstats.parallel import scheduler_address
from transferstats.problems import Problem, ResultsError
from transferstats.simulate import SimulationSettings, simulate_results
from transferstats.tasks import Task, get_task, register_task, task_scope

Results = str | Path | pd.DataFrame


def analyze(results: Results, *, spec: str | Path | None = None, jobs: int | None = None,
            scheduler: str | None = None, **settings) -> AnalysisResult:
    """Test whether the diversity of what a model is trained on helps transfer more than volume.

    Loads and validates the results, describes the design (what varies, what is left out and
    why), derives diversity, volume and the outcome, fits the crossed mixed model -- with
    target-specific slopes and Wald t intervals on Satterthwaite's degrees of freedom where the
    design allows them, else random intercepts with a bootstrap of languages and mixes -- and
    gives the verdict (docs/statistics.md). It
    writes nothing; :meth:`AnalysisResult.write_report` writes the report. ``transferstats
    analyze`` on the command line is this function followed by ``write_report``, so the same
    settings give the same numbers.

    Parameters
    ----------
    results : str, pathlib.Path or pandas.DataFrame
        A results folder (one folder per run at any depth), a flat table (``.csv``,
        ``.parquet``, ``.jsonl``) or a DataFrame with the flat-table columns ``run_id, model,
        mix, mix_tasks, target_task, seed, language, metric, split, value``
        (docs/results-contract.md). A DataFrame is validated like a file; problems name its
        index labels.
    spec : str or pathlib.Path, optional
        An analysis specification (TOML, docs/analysis-spec.md). Keyword settings override it.
    jobs : int, optional
        Bootstrap worker processes (default: all cores).
    scheduler : str, optional
        Where the bootstrap refits run (docs/parallel.md): a Dask scheduler's address
        (``"tcp://host:8786"``, or a ``LocalCluster``'s ``scheduler_address``), which needs
        ``pip install "transferstats[dask]"``; ``"local"``: local processes. Default (as
        ``analysis/default.toml``'s ``scheduler = ""``): dask's ``scheduler-address``
        (``DASK_SCHEDULER_ADDRESS``) when set, else local processes. The numbers are the same
        wherever the refits run.
    **settings
        Any analysis setting, with the name and default it has in ``analysis/default.toml`` and
        on the command line:

        - ``name`` (``"report"``): the report's name.
        - ``outcome`` (``"auto"``): ``auto`` (``improvement`` when the results hold baseline
          runs, else ``score``), ``improvement``, ``score``, ``nonenglish_mean``,
          ``transfer_gap`` or ``worst_language``.
        - ``diversity`` (``"n_tasks"``): ``n_tasks``, ``n_formats`` (task mixes only) or
          ``effective_tasks``.
        - ``identity`` (``"auto"``), ``covariates`` (``()``; ``"target_in_mix"`` is built in).
        - ``metric`` (``"headline"``): each target's headline metric, or a metric name.
        - ``split`` (``"auto"``: each target's only split, else ``test``; a split name for
          every target; or a dict ``{target: split}``), ``model`` (``""``: the only one),
          ``include_english`` (``"auto"``: left out for task mixes, kept for language mixes;
          ``True`` or ``False``), ``interaction`` (``True``), ``target_mix`` (``True``: a random
          intercept per (mix, target) cell where the cells hold several rows).
        - ``random_slopes`` (``"auto"``: correlated slopes of diversity and volume by target
          where the design allows them; ``"on"``, ``"off"``), ``df_method``
          (``"satterthwaite"`` or ``"kenward-roger"``).
        - ``resamples`` (1000), ``seed`` (0), ``level`` (0.95), ``interval`` (``"bca"`` or
          ``"percentile"``), ``units`` (``("language", "mix")``).
        - ``max_correlation`` (0.9), ``power`` (0.8).
        - ``tasks``: your own tasks, as a TOML file with ``[tasks.<id>]`` tables, a
          ``{id: {role, format, metric, ...}}`` dict, or a list of these. They are known for
          this call only, added to those of ``spec``.

    Returns
    -------
    AnalysisResult
        ``verdict``, ``effects``, ``design``, ``summary()``, ``write_report()``, the tables.

    Raises
    ------
    ValueError
        An unknown setting or a bad value, named.
    ResultsError
        The input cannot be analysed; ``error.problems`` lists every problem with its file and
        line, key or row.

    See Also
    --------
    load_results : load and validate without analysing.

    References
    ----------
    .. [1] Phang, J. et al. (2020). English intermediate-task training improves zero-shot
       cross-lingual transfer too. AACL-IJCNLP. arXiv:2005.13013.
    .. [2] Bates, D., Maechler, M., Bolker, B. & Walker, S. (2015). Fitting linear
       mixed-effects models using lme4. Journal of Statistical Software 67(1).
    .. [3] Efron, B. (1987). Better bootstrap confidence intervals. JASA 82(397), 171-185.

    Examples
    --------
    >>> import transferstats as ts
    >>> result = ts.analyze("examples/results", resamples=200, seed=1)  # doctest: +SKIP
    >>> result.verdict  # doctest: +SKIP
    'supported'
    >>> result.effects[["term", "estimate", "ci_low", "ci_high"]]  # doctest: +SKIP
    >>> result.write_report("reports/example")  # doctest: +SKIP
    """
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
        raise ValueError(f"'jobs' must be a positive integer (worker processes), got {jobs!r}")
    analysis_spec = load_spec(spec, scheduler=scheduler, **settings)
    scheduler_address(analysis_spec.scheduler)  # no Dask: say so now, not after the fit
    with task_scope(analysis_spec.tasks):
        loaded = loading.load_results(results)
        return analyze_loaded(loaded, analysis_spec, n_jobs=jobs)


def load_results(results: Results, *, tasks: TaskSource | list[TaskSource] | None = None,
                 strict: bool = True) -> LoadedResults:
    """Load and validate results: every problem is collected, each naming where it is.

    Parameters
    ----------
    results : str, pathlib.Path or pandas.DataFrame
        A results folder, a flat table file, or a DataFrame in the flat-table form.
    tasks : str, pathlib.Path, dict or list, optional
        Your own tasks (as for :func:`analyze`), known while loading only.
    strict : bool, default True
        Raise :class:`ResultsError` when there is any error; with ``False`` the errors are
        returned in ``problems`` with whatever could be read.

    Returns
    -------
    LoadedResults
        ``scores`` (one row per score of the complete runs), ``runs`` (one row per run),
        ``problems``, ``errors``, ``warnings``.

    Examples
    --------
    >>> loaded = ts.load_results("results/", strict=False)  # doctest: +SKIP
    >>> [str(problem) for problem in loaded.errors]  # doctest: +SKIP
    """
    with task_scope(read_tasks(tasks)):
        return loading.load_results(results, strict=strict)


__all__ = [
    "AnalysisResult",
    "AnalysisSpec",
    "CrossedFit",
    "LoadedResults",
    "MixedFit",
    "Problem",
    "ResultsError",
    "SimulationSettings",
    "Task",
    "analyze",
    "fit_crossed",
    "fit_formula",
    "get_task",
    "kenward_roger",
    "likelihood_ratio_test",
    "load_results",
    "load_spec",
    "reduce_slopes",
    "register_task",
    "satterthwaite",
    "simulate_results",
    "task_scope",
]
