"""Which bootstrap each model gets, decided from the design before any resample is drawn.

The crossed cluster bootstrap resamples mixes and languages. Where a factor's variation rests on
a few mixes (the lone 52-language mix of a fixed-budget grid is left out of 36% of resamples),
many resamples lose it and cannot be fitted, and the intervals of the rest are conditional on the
lucky draws. :func:`resampling_plan` predicts that share with
:func:`~transferstats.analysis.diagnostics.predict_resample_failures` and, past
:data:`~transferstats.analysis.diagnostics.FAILURE_SHARE_LIMIT`, gives the model the parametric
bootstrap, which keeps the design (every mix) and redraws the random effects and residuals, with
intervals widened to t on the mix degrees of freedom; the reason, with the cause named, goes into
the results. A model with identity effects gets the parametric bootstrap in any case
(:mod:`transferstats.analysis.parametric`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from transferstats.analysis.description import Description
from transferstats.analysis.diagnostics import (
    FAILURE_SHARE_LIMIT,
    ResampleFailurePrediction,
    predict_resample_failures,
)
from transferstats.analysis.model import ModelStructure


@dataclass(frozen=True)
class ResamplingPlan:
    """The bootstrap of each model: ``None`` is the crossed cluster bootstrap, a number the
    parametric one widened to t on that many degrees of freedom; ``why`` says why, in words
    computed from the design (empty for the default)."""

    primary_df: float | None
    plain_df: float | None
    why: str
    prediction: ResampleFailurePrediction | None

    @property
    def failures_predicted(self) -> bool:
        return bool(self.why) and self.prediction is not None


def resampling_plan(data: pd.DataFrame, structure: ModelStructure, description: Description,
                    units: tuple[str, ...]) -> ResamplingPlan:
    """The bootstrap of the primary and the plain model (see the module docstring)."""
    factors = [t for t in ("diversity", "volume") if t in structure.mix_terms]
    prediction = None
    if factors and units:
        prediction = predict_resample_failures(data, units, factors,
                                               value_labels=_labels(description))
    lost = prediction is not None and (
        (prediction.table["failure_share"] > FAILURE_SHARE_LIMIT).any()
        or prediction.any_failure_share > FAILURE_SHARE_LIMIT)
    if not lost:
        return ResamplingPlan(structure.identity.mix_df, None, "", prediction)
    assert prediction is not None
    df = float(mix_degrees_of_freedom(data, list(structure.mix_terms)))
    causes = prediction.warnings() or [
        f"the fixed effects lose full rank in {prediction.any_failure_share:.0%} of resamples"]
    if df < 1:
        why = ("resampling " + " and ".join(units) + " will leave resamples without the "
               "variation the model needs: " + "; ".join(causes) + ". The parametric bootstrap "
               "cannot stand in: the mixes leave no degrees of freedom for the mix variance "
               "beside the mix-level effects, so the crossed bootstrap is kept and no direction "
               "is claimed where its failed resamples pass 5%")
        return ResamplingPlan(structure.identity.mix_df, None, why, prediction)
    why = ("resampling " + " and ".join(units) + " would leave resamples without the variation "
           "the model needs: " + "; ".join(causes) + f". The intervals come from the parametric "
           f"bootstrap instead, which keeps every mix (t on {df:g} mix degrees of freedom)")
    return ResamplingPlan(structure.identity.mix_df or df, df, why, prediction)


def mix_degrees_of_freedom(data: pd.DataFrame, mix_terms: list[str]) -> int:
    """Mixes minus the rank of the per-mix design (intercept and the mix-level terms): the
    degrees of freedom of the mix variance (Pinheiro & Bates 2000, section 2.4.2)."""
    per_mix = data.drop_duplicates("mix")
    design = np.column_stack([np.ones(len(per_mix)), per_mix[mix_terms].to_numpy(float)])
    return int(len(per_mix) - np.linalg.matrix_rank(design))


def _labels(description: Description) -> dict[str, Callable[[float], str]]:
    """Words for a factor's centred log2 value: "52 languages", "62,000 training examples"."""
    centre, words = description.check.centre_log2, description.words
    noun = {"n_tasks": words.plural, "effective_tasks": f"effective {words.plural}",
            "n_formats": "task formats"}[description.diversity]
    return {"diversity": lambda value: f"{2 ** (value + centre['diversity']):.3g} {noun}",
            "volume": lambda value: f"{2 ** (value + centre['volume']):,.0f} {words.examples}"}
