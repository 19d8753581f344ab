"""The random-slope structure is reduced only where the fit has a variance at zero, in the order
correlated -> uncorrelated -> zero-variance slopes dropped (a correlation at +-1 alone keeps the
correlated fit); likelihood-ratio pruning only on request."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from test_lmm import orthogonal_noise
from transferstats.analysis.slope_reduction import eligible_slopes, reduce_slopes


def grid(slope_sds, proportional=False, n_groups=12, per_group=60, mix_sd=0.5, noise=0.3, seed=0,
         exact=False, mix_free=False):
    """y = 1 + x + z + a_g + b_g x + c_g z + m_mix + e, the group effects independent, or the x
    slope proportional to the intercept (a correlation of exactly 1). ``exact``: the noise
    orthogonal to [1, x, z] within groups (fit without mixes), so that a zero slope variance or a
    correlation of 1 is estimated on the boundary, as it is; ``mix_free``: the noise centred
    within mixes, so that the mix variance is estimated at zero."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per_group)
    mix = rng.integers(0, 20, len(g))
    x, z = rng.normal(size=len(g)), rng.normal(size=len(g))
    a = rng.normal(0, 1, n_groups)
    b = 0.7 * a if proportional else rng.normal(0, slope_sds[0], n_groups)
    c = rng.normal(0, slope_sds[1], n_groups)
    rest = rng.normal(0, mix_sd, 20)[mix] + rng.normal(0, noise, len(g))
    if exact:
        rest = orthogonal_noise(g, [x, z], noise, rng)
    if mix_free:
        rest = rest - pd.Series(rest).groupby(mix).transform("mean").to_numpy()
    y = 1 + x + z + a[g] + b[g] * x + c[g] * z + rest
    return pd.DataFrame({"y": y, "x": x, "z": z, "g": g, "mix": mix})


def reduced(data, random=("g", "mix"), **kwargs):
    return reduce_slopes(data, "y", ["x", "z"], list(random), {"g": ["x", "z"]}, **kwargs)


def test_slopes_that_vary_keep_the_correlated_structure():
    result = reduced(grid([0.8, 0.6]))
    assert result.structure == "(1 + x + z | g) + (1 | mix)"
    assert len(result.steps) == 1 and not result.fit.is_singular


def test_a_correlation_at_one_alone_keeps_the_correlated_slopes():
    result = reduced(grid([None, 0.6], proportional=True, exact=True), random=["g"])
    assert [s.singular[0].kind for s in result.steps[:1]] == ["correlation at +-1"]
    assert result.structure == "(1 + x + z | g)"
    assert "kept correlated" in result.steps[0].decision and len(result.steps) == 1


def test_a_slope_without_variance_is_dropped_after_the_uncorrelated_fit():
    result = reduced(grid([0.0, 0.6], exact=True), random=["g"])
    assert result.structure == "(1 | g) + (0 + z | g)"
    assert [step.decision.split(";")[-1].strip() for step in result.steps] == [
        "refitted uncorrelated", "dropped the slopes at zero variance: x by g", "kept"]
    assert "x by g: variance at zero" in result.describe()


def test_a_zero_variance_intercept_factor_does_not_reduce_the_slopes():
    result = reduced(grid([0.8, 0.6], mix_sd=0.0, mix_free=True))
    assert result.structure == "(1 + x + z | g) + (1 | mix)"
    assert result.fit.is_singular  # (1 | mix) at zero, as in the intercept-only model


def test_likelihood_ratio_pruning_only_on_request():
    data = grid([0.8, 0.2], per_group=15, noise=1.0, seed=2)  # z's slope SD small against its SE
    assert reduced(data).structure == "(1 + x + z | g) + (1 | mix)"
    pruned = reduced(data, prune_alpha=0.2)
    assert pruned.structure == "(1 + x | g) + (1 | mix)"
    assert "likelihood ratio chi2(3)" in pruned.steps[-1].decision


def test_steps_frame_lists_each_fit():
    frame = reduced(grid([0.0, 0.6], exact=True), random=["g"]).steps_frame()
    assert list(frame.columns) == ["structure", "singular", "decision"]
    assert frame["structure"].iloc[0] == "(1 + x + z | g)"
    assert frame["singular"].iloc[-1] == ""


@pytest.mark.parametrize("slopes", [{"mix": ["x"]}])
def test_unknown_slope_factor_is_refused(slopes):
    with pytest.raises(ValueError, match="not among the random factors"):
        reduce_slopes(grid([0.5, 0.5]), "y", ["x"], ["g"], slopes)


def test_eligible_slopes_need_three_levels_and_variation_within_them():
    data = grid([0.8, 0.6])
    assert eligible_slopes(data, {"g": ["x", "z"]}).slopes == {"g": ("x", "z")}
    two = data[data["g"] < 2]
    result = eligible_slopes(two, {"g": ["x"]})
    assert result.slopes == {} and result.reasons == (
        "no slopes by g: it has 2 levels in the data, and slopes between levels need at least 3",)
    constant = data.assign(w=data["g"] * 1.0)  # constant within each level of g
    result = eligible_slopes(constant, {"g": ["x", "w"]})
    assert result.slopes == {"g": ("x",)}
    assert result.reasons == ("no slope of w by g: it varies within 0 of the 12 levels, and a "
                              "slope needs variation within at least 3",)
